import TorusCore

/// The mapping between `MetaRequest`/`MetaResponse` and etcd 3.4's v3 JSON gateway, without I/O.
///
/// Gateway conventions (see docs/PLATFORM.md): keys and values are base64, int64s are JSON
/// strings, and fields that are false, zero or empty are omitted (a failed txn has no
/// `succeeded`, a range that found nothing has no `kvs`, a key without lease has no `lease`).
/// Keepalive is a streaming call: its reply is one `{"result":{...}}` object per line.
enum EtcdGateway {
    /// One HTTP request to the gateway.
    struct Call: Equatable, Sendable {
        var path: String
        var body: [UInt8]
    }

    /// An etcd error reply: `{"error","message","code"}` (or `{"error":{"grpc_code",...}}` on a
    /// streaming call) with an HTTP status.
    struct ServerError: Error, Equatable, Sendable {
        var status: Int
        var code: Int
        var message: String
    }

    /// The reply was not what the gateway sends for this request.
    struct MalformedReply: Error, Equatable, Sendable {
        var reason: String
    }

    /// What a reply decodes to: a response, or a server error `EtcdClient` maps further.
    enum Decoded: Equatable, Sendable {
        case response(MetaResponse)
        case serverError(ServerError)
    }

    // MARK: - Requests

    static func call(for request: MetaRequest) -> Call {
        switch request {
        case .txn(let txn):
            var members: [EtcdJSON.Member] = []
            if !txn.compares.isEmpty { members.append(.init(key: "compare", value: .array(txn.compares.map(compare)))) }
            if !txn.success.isEmpty { members.append(.init(key: "success", value: .array(txn.success.map(op)))) }
            if !txn.failure.isEmpty { members.append(.init(key: "failure", value: .array(txn.failure.map(op)))) }
            return Call(path: "/v3/kv/txn", body: EtcdJSON.object(members).serialized())
        case .leaseGrant(let ttl, let id):
            var members: [EtcdJSON.Member] = [.init(key: "TTL", value: .int64(ttl))]
            if id != 0 { members.append(.init(key: "ID", value: .int64(id))) }
            return Call(path: "/v3/lease/grant", body: EtcdJSON.object(members).serialized())
        case .leaseKeepAlive(let id):
            return Call(path: "/v3/lease/keepalive", body: EtcdJSON.object(["ID": .int64(id)]).serialized())
        case .leaseRevoke(let id):
            return Call(path: "/v3/lease/revoke", body: EtcdJSON.object(["ID": .int64(id)]).serialized())
        case .leaseTimeToLive(let id):
            return Call(path: "/v3/lease/timetolive", body: EtcdJSON.object(["ID": .int64(id)]).serialized())
        }
    }

    /// etcd's prefix rule (clientv3 `GetPrefixRangeEnd`): the range end of a prefix is the prefix
    /// with trailing 0xFF bytes dropped and its last byte incremented; a prefix that is empty or
    /// all 0xFF reads to the end of the keyspace, spelled key = range_end = "\0".
    static func prefixRange(_ key: String) -> (key: [UInt8], rangeEnd: [UInt8]) {
        var end = Array(key.utf8)
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return (Array(key.utf8), end)
            }
            end.removeLast()
        }
        return key.isEmpty ? ([0], [0]) : (Array(key.utf8), [0])
    }

    static func keyMembers(_ key: String, prefix: Bool) -> [EtcdJSON.Member] {
        guard prefix else { return [.init(key: "key", value: .bytes(Array(key.utf8)))] }
        let (from, end) = prefixRange(key)
        return [.init(key: "key", value: .bytes(from)), .init(key: "range_end", value: .bytes(end))]
    }

    private static func compare(_ c: MetaCompare) -> EtcdJSON {
        let result: String
        switch c.result {
        case .equal: result = "EQUAL"
        case .notEqual: result = "NOT_EQUAL"
        case .less: result = "LESS"
        case .greater: result = "GREATER"
        }
        let target: String, operand: EtcdJSON.Member
        switch c.target {
        case .value(let v): (target, operand) = ("VALUE", .init(key: "value", value: .bytes(v)))
        case .version(let n): (target, operand) = ("VERSION", .init(key: "version", value: .int64(n)))
        case .createRevision(let n): (target, operand) = ("CREATE", .init(key: "create_revision", value: .int64(n)))
        case .modRevision(let n): (target, operand) = ("MOD", .init(key: "mod_revision", value: .int64(n)))
        case .lease(let n): (target, operand) = ("LEASE", .init(key: "lease", value: .int64(n)))
        }
        return .object([
            .init(key: "key", value: .bytes(Array(c.key.utf8))),
            .init(key: "target", value: .string(target)),
            .init(key: "result", value: .string(result)),
            operand,
        ])
    }

    private static func op(_ op: MetaOp) -> EtcdJSON {
        switch op {
        case .range(let key, let prefix):
            return .object(["request_range": .object(keyMembers(key, prefix: prefix))])
        case .put(let key, let value, let lease):
            var members: [EtcdJSON.Member] = [
                .init(key: "key", value: .bytes(Array(key.utf8))),
                .init(key: "value", value: .bytes(value)),
                .init(key: "prev_kv", value: .bool(true)),
            ]
            if lease != 0 { members.append(.init(key: "lease", value: .int64(lease))) }
            return .object(["request_put": .object(members)])
        case .delete(let key, let prefix):
            let members = keyMembers(key, prefix: prefix) + [.init(key: "prev_kv", value: .bool(true))]
            return .object(["request_delete_range": .object(members)])
        }
    }

    // MARK: - Replies

    /// Decodes the reply to `request` (HTTP `status` and `body`). Error replies become
    /// `.serverError`, except where etcd answers 200 for a missing lease (keepalive without TTL,
    /// timeToLive with TTL -1), which become `.error(.leaseNotFound)`.
    static func decode(_ request: MetaRequest, status: Int, body: [UInt8]) throws(MalformedReply) -> Decoded {
        var json: EtcdJSON
        do {
            json = try EtcdJSON.parse(firstLine(body, streaming: request.isKeepAlive))
        } catch {
            throw MalformedReply(reason: "HTTP \(status): \(error)")
        }
        if request.isKeepAlive, let result = json["result"] { json = result }
        if let error = serverError(json, status: status) { return .serverError(error) }
        guard status == 200 else { throw MalformedReply(reason: "HTTP \(status) without an etcd error") }

        switch request {
        case .txn(let txn):
            let succeeded = json["succeeded"]?.boolValue ?? false
            let ops = succeeded ? txn.success : txn.failure
            let responses = json["responses"]?.arrayValue ?? []
            guard responses.count == ops.count else {
                throw MalformedReply(reason: "\(responses.count) op responses for \(ops.count) ops")
            }
            var results: [MetaOpResult] = []
            for (op, response) in zip(ops, responses) { results.append(try opResult(op, response)) }
            return .response(.txn(MetaTxnResult(succeeded: succeeded, revision: try headerRevision(json), results: results)))
        case .leaseGrant:
            if let message = json["error"]?.stringValue, !message.isEmpty {
                return .serverError(ServerError(status: status, code: 0, message: message))
            }
            guard let id = json["ID"]?.int64Value, let ttl = json["TTL"]?.int64Value else {
                throw MalformedReply(reason: "lease grant reply without ID or TTL")
            }
            return .response(.lease(id: id, ttlSeconds: ttl))
        case .leaseKeepAlive(let id):
            // An expired or unknown lease answers 200 without TTL (TTL 0 is omitted).
            let ttl = try int64(json["TTL"], "TTL")
            return .response(ttl > 0 ? .lease(id: id, ttlSeconds: ttl) : .error(.leaseNotFound(id)))
        case .leaseRevoke(let id):
            return .response(.revoked(id: id))
        case .leaseTimeToLive(let id):
            // -1 for an unknown lease; below 0 for one that expired but is not revoked yet.
            let ttl = try int64(json["TTL"], "TTL")
            return .response(ttl >= 0 ? .lease(id: id, ttlSeconds: ttl) : .error(.leaseNotFound(id)))
        }
    }

    /// The `version` of a `GET /version` reply (`{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}`).
    static func decodeVersion(status: Int, body: [UInt8]) throws(MalformedReply) -> String {
        let json: EtcdJSON
        do { json = try EtcdJSON.parse(body) } catch { throw MalformedReply(reason: "HTTP \(status): \(error)") }
        guard status == 200, let version = json["etcdserver"]?.stringValue else {
            throw MalformedReply(reason: "HTTP \(status) without etcdserver version")
        }
        return version
    }

    /// The first non-empty line of a streaming reply; the whole body otherwise.
    private static func firstLine(_ body: [UInt8], streaming: Bool) -> ArraySlice<UInt8> {
        guard streaming else { return body[...] }
        for line in body.split(separator: UInt8(ascii: "\n")) where line.contains(where: { $0 > 0x20 }) { return line }
        return body[...]
    }

    static func serverError(_ json: EtcdJSON, status: Int) -> ServerError? {
        // Unary: {"error":"msg","message":"msg","code":3}. Streaming: {"error":{"grpc_code":5,
        // "http_code":404,"message":"msg","http_status":"Not Found"}}.
        if let nested = json["error"], case .object = nested {
            return ServerError(status: Int(nested["http_code"]?.int64Value ?? Int64(status)),
                               code: Int(nested["grpc_code"]?.int64Value ?? 0),
                               message: nested["message"]?.stringValue ?? "")
        }
        guard status != 200, json["error"] != nil || json["message"] != nil || json["code"] != nil else { return nil }
        return ServerError(status: status, code: Int(json["code"]?.int64Value ?? 0),
                           message: json["message"]?.stringValue ?? json["error"]?.stringValue ?? "")
    }

    private static func headerRevision(_ json: EtcdJSON) throws(MalformedReply) -> Int64 {
        guard let revision = json["header"]?["revision"]?.int64Value else {
            throw MalformedReply(reason: "reply without header.revision")
        }
        return revision
    }

    /// An omitted int64 is 0; a present one must parse.
    static func int64(_ value: EtcdJSON?, _ name: String) throws(MalformedReply) -> Int64 {
        guard let value else { return 0 }
        guard let n = value.int64Value else { throw MalformedReply(reason: "\(name) is not an int64") }
        return n
    }

    private static func opResult(_ op: MetaOp, _ response: EtcdJSON) throws(MalformedReply) -> MetaOpResult {
        switch op {
        case .range:
            guard let r = response["response_range"] else { throw MalformedReply(reason: "expected response_range") }
            return .range(try keyValues(r["kvs"]))
        case .put:
            guard let r = response["response_put"] else { throw MalformedReply(reason: "expected response_put") }
            return .put(previous: try r["prev_kv"].map(keyValue))
        case .delete:
            guard let r = response["response_delete_range"] else { throw MalformedReply(reason: "expected response_delete_range") }
            let deleted = try keyValues(r["prev_kvs"])
            guard try int64(r["deleted"], "deleted") == Int64(deleted.count) else {
                throw MalformedReply(reason: "deleted count differs from prev_kvs")
            }
            return .delete(deleted: deleted)
        }
    }

    private static func keyValues(_ json: EtcdJSON?) throws(MalformedReply) -> [MetaKeyValue] {
        guard let json else { return [] }
        guard let items = json.arrayValue else { throw MalformedReply(reason: "kvs is not an array") }
        var out: [MetaKeyValue] = []
        for item in items { out.append(try keyValue(item)) }
        return out
    }

    static func keyValue(_ json: EtcdJSON) throws(MalformedReply) -> MetaKeyValue {
        guard let keyText = json["key"]?.stringValue, let key = Base64.decode(keyText) else {
            throw MalformedReply(reason: "key/value without a base64 key")
        }
        var value: [UInt8] = []
        if let text = json["value"] {
            guard let s = text.stringValue, let v = Base64.decode(s) else { throw MalformedReply(reason: "value is not base64") }
            value = v
        }
        return MetaKeyValue(key: String(decoding: key, as: UTF8.self), value: value,
                            createRevision: try int64(json["create_revision"], "create_revision"),
                            modRevision: try int64(json["mod_revision"], "mod_revision"),
                            version: try int64(json["version"], "version"),
                            lease: try int64(json["lease"], "lease"))
    }
}

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
        var members = keyMembers(key, prefix: prefix)
        if fromRevision > 0 { members.append(.init(key: "start_revision", value: .int64(fromRevision))) }
        members.append(.init(key: "prev_kv", value: .bool(true)))
        return EtcdJSON.object(["create_request": .object(members)]).serialized()
    }

    /// Decodes one line of a watch stream.
    static func decodeWatch(_ line: some Collection<UInt8>) throws(MalformedReply) -> WatchMessage {
        let json: EtcdJSON
        do { json = try EtcdJSON.parse(line) } catch { throw MalformedReply(reason: "watch stream: \(error)") }
        if let error = serverError(json, status: 200) {
            throw MalformedReply(reason: "watch stream error \(error.code): \(error.message)")
        }
        guard let result = json["result"] else { throw MalformedReply(reason: "watch message without result") }
        if result["canceled"]?.boolValue == true {
            return .canceled(compactRevision: try int64(result["compact_revision"], "compact_revision"),
                             reason: result["cancel_reason"]?.stringValue ?? "")
        }
        let revision = try int64(result["header"]?["revision"], "revision")
        if result["created"]?.boolValue == true { return .created(revision: revision) }
        guard let items = result["events"]?.arrayValue, !items.isEmpty else { return .other }
        var events: [MetaWatchEvent] = []
        for item in items {
            let kind: MetaWatchEvent.Kind
            switch item["type"]?.stringValue ?? "PUT" {
            case "PUT": kind = .put
            case "DELETE": kind = .delete
            case let other: throw MalformedReply(reason: "watch event of unknown type \(other)")
            }
            guard let kv = item["kv"] else { throw MalformedReply(reason: "watch event without kv") }
            events.append(MetaWatchEvent(kind: kind, kv: try keyValue(kv), previous: try item["prev_kv"].map(keyValue)))
        }
        return .events(events, revision: revision)
    }
}

extension EtcdGateway {
    /// The `MetaError` an etcd error reply stands for, nil when it matches none. etcd's messages
    /// do not carry the key, lease or count involved, so those are taken from the request.
    /// gRPC codes Unavailable (14) and DeadlineExceeded (4) — no leader, leader changed, request
    /// timed out — become `.unavailable`: the request may or may not have been applied.
    static func metaError(_ error: ServerError, for request: MetaRequest, endpoint: String) -> MetaError? {
        switch error.message {
        case "etcdserver: duplicate key given in txn request":
            guard case .txn(let txn) = request else { return nil }
            return .duplicateKeyInTxn(duplicateKey(txn) ?? "")
        case "etcdserver: requested lease not found":
            switch request {
            case .txn(let txn):
                let leases = (txn.success + txn.failure).compactMap { op -> Int64? in
                    if case .put(_, _, let lease) = op, lease != 0 { return lease }
                    return nil
                }
                return .leaseNotFound(leases.first ?? 0)
            case .leaseGrant(_, let id), .leaseKeepAlive(let id), .leaseRevoke(let id), .leaseTimeToLive(let id):
                return .leaseNotFound(id)
            }
        case "etcdserver: too many operations in txn request":
            guard case .txn(let txn) = request else { return nil }
            return .tooManyOps(max(txn.compares.count, txn.success.count, txn.failure.count))
        case "etcdserver: key is not provided":
            return .emptyKey
        case "etcdserver: too large lease TTL":
            guard case .leaseGrant(let ttl, _) = request else { return nil }
            return .invalidTTL(ttl)
        case "etcdserver: lease already exists":
            guard case .leaseGrant(_, let id) = request else { return nil }
            return .leaseExists(id)
        default:
            if error.code == 14 || error.code == 4 || error.status == 503 || error.status == 504 {
                return .unavailable("etcd at \(endpoint) answered HTTP \(error.status): \(error.message)")
            }
            return nil
        }
    }

    /// The first key put twice, or put and deleted, in one branch (etcd's `checkIntervals`),
    /// checking `success` then `failure`.
    static func duplicateKey(_ txn: MetaTxn) -> String? {
        for branch in [txn.success, txn.failure] {
            var deletes: [(key: [UInt8], rangeEnd: [UInt8]?)] = []
            for case .delete(let key, let prefix) in branch {
                if prefix {
                    let (from, end) = prefixRange(key)
                    deletes.append((from, end))
                } else {
                    deletes.append((Array(key.utf8), nil))
                }
            }
            var puts: Set<[UInt8]> = []
            for case .put(let key, _, _) in branch {
                let bytes = Array(key.utf8)
                let deleted = deletes.contains { d in
                    guard let end = d.rangeEnd else { return d.key == bytes }
                    // etcd's interval [key, range_end); "\0" as the end means "to the end".
                    let afterStart = !bytes.lexicographicallyPrecedes(d.key)
                    return afterStart && (end == [0] || bytes.lexicographicallyPrecedes(end))
                }
                if deleted || !puts.insert(bytes).inserted { return key }
            }
        }
        return nil
    }
}

extension MetaRequest {
    var isKeepAlive: Bool {
        if case .leaseKeepAlive = self { return true }
        return false
    }
}
