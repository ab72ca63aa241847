import TorusCore

extension EtcdGateway {
    /// One message of a `/v3/watch` stream (one JSON object per line).
    enum WatchMessage: Equatable, Sendable {
        /// The watch exists; `revision` is the store's revision when it was created.
        case created(revision: Int64)
        case events([MetaWatchEvent], revision: Int64)
        /// etcd ended the watch: its start is older than the compacted history (or another reason).
        case canceled(compactRevision: Int64, reason: String)
        /// Progress notification or anything else without events.
        case other
    }

    /// The body of `POST /v3/watch`: watch `key` (or the prefix) from `fromRevision` (0: now),
    /// with the previous key/value in every event.
    static func watchCreate(key: String, prefix: Bool, fromRevision: Int64) -> [UInt8] {
        let (from, end) = keyRange(key, prefix: prefix)
        let create = EtcdAPI.WatchCreateRequest(key: from, rangeEnd: end,
                                                startRevision: fromRevision > 0 ? EtcdInt64(fromRevision) : nil, prevKV: true)
        return EtcdCodec.encode(EtcdAPI.WatchRequest(createRequest: create))
    }

    /// Decodes one line of a watch stream.
    static func decodeWatch(_ line: some Collection<UInt8>) throws(MalformedReply) -> WatchMessage {
        let reply: EtcdAPI.Reply<EtcdAPI.WatchLine>
        do { reply = try EtcdCodec.decode(EtcdAPI.Reply<EtcdAPI.WatchLine>.self, from: line) } catch {
            throw MalformedReply(reason: "watch stream: \(error.reason)")
        }
        if let error = serverError(reply.error, status: 200) {
            throw MalformedReply(reason: "watch stream error \(error.code): \(error.message)")
        }
        let result: EtcdAPI.WatchResponse
        switch reply.body {
        case .success(let line):
            guard let r = line.result else { throw MalformedReply(reason: "watch message without result") }
            result = r
        case .failure(let error): throw MalformedReply(reason: "watch stream: \(EtcdCodec.describe(error))")
        }
        if result.canceled == true {
            return .canceled(compactRevision: result.compactRevision.orZero, reason: result.cancelReason ?? "")
        }
        let revision = result.header?.revision.orZero ?? 0
        if result.created == true { return .created(revision: revision) }
        guard let items = result.events, !items.isEmpty else { return .other }
        var events: [MetaWatchEvent] = []
        for item in items {
            let kind: MetaWatchEvent.Kind
            switch item.type ?? "PUT" {
            case "PUT": kind = .put
            case "DELETE": kind = .delete
            case let other: throw MalformedReply(reason: "watch event of unknown type \(other)")
            }
            guard let kv = item.kv else { throw MalformedReply(reason: "watch event without kv") }
            events.append(MetaWatchEvent(kind: kind, kv: keyValue(kv), previous: item.prevKV.map(keyValue)))
        }
        return .events(events, revision: revision)
    }
}
