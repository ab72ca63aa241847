import TorusCore

/// The mapping between `MetaRequest`/`MetaResponse` and etcd 3.4's v3 JSON gateway, without I/O.
///
/// Gateway conventions (docs/platform.md; message types in `EtcdMessages.swift`): keys and
/// values are base64, int64s are JSON strings, false/zero/empty fields are omitted.
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
            let body = EtcdAPI.TxnRequest(compare: nonEmpty(txn.compares.map(compare)),
                                          success: nonEmpty(txn.success.map(op)), failure: nonEmpty(txn.failure.map(op)))
            return Call(path: "/v3/kv/txn", body: EtcdCodec.encode(body))
        case .leaseGrant(let ttl, let id):
            let body = EtcdAPI.LeaseGrantRequest(TTL: EtcdInt64(ttl), ID: id != 0 ? EtcdInt64(id) : nil)
            return Call(path: "/v3/lease/grant", body: EtcdCodec.encode(body))
        case .leaseKeepAlive(let id):
            return Call(path: "/v3/lease/keepalive", body: EtcdCodec.encode(EtcdAPI.LeaseRequest(ID: EtcdInt64(id))))
        case .leaseRevoke(let id):
            return Call(path: "/v3/lease/revoke", body: EtcdCodec.encode(EtcdAPI.LeaseRequest(ID: EtcdInt64(id))))
        case .leaseTimeToLive(let id):
            return Call(path: "/v3/lease/timetolive", body: EtcdCodec.encode(EtcdAPI.LeaseRequest(ID: EtcdInt64(id))))
        }
    }

    /// An omitted array is empty.
    private static func nonEmpty<T>(_ items: [T]) -> [T]? { items.isEmpty ? nil : items }

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

    /// `key` and, for a prefix, `range_end`.
    static func keyRange(_ key: String, prefix: Bool) -> (key: EtcdBytes, rangeEnd: EtcdBytes?) {
        guard prefix else { return (EtcdBytes(key), nil) }
        let (from, end) = prefixRange(key)
        return (EtcdBytes(from), EtcdBytes(end))
    }

    private static func compare(_ c: MetaCompare) -> EtcdAPI.Compare {
        let result: String
        switch c.result {
        case .equal: result = "EQUAL"
        case .notEqual: result = "NOT_EQUAL"
        case .less: result = "LESS"
        case .greater: result = "GREATER"
        }
        var compare = EtcdAPI.Compare(key: EtcdBytes(c.key), target: "", result: result)
        switch c.target {
        case .value(let v): (compare.target, compare.value) = ("VALUE", EtcdBytes(v))
        case .version(let n): (compare.target, compare.version) = ("VERSION", EtcdInt64(n))
        case .createRevision(let n): (compare.target, compare.createRevision) = ("CREATE", EtcdInt64(n))
        case .modRevision(let n): (compare.target, compare.modRevision) = ("MOD", EtcdInt64(n))
        case .lease(let n): (compare.target, compare.lease) = ("LEASE", EtcdInt64(n))
        }
        return compare
    }

    private static func op(_ op: MetaOp) -> EtcdAPI.RequestOp {
        switch op {
        case .range(let key, let prefix):
            let (from, end) = keyRange(key, prefix: prefix)
            return EtcdAPI.RequestOp(requestRange: .init(key: from, rangeEnd: end))
        case .put(let key, let value, let lease):
            return EtcdAPI.RequestOp(requestPut: .init(key: EtcdBytes(key), value: EtcdBytes(value), prevKV: true,
                                                       lease: lease != 0 ? EtcdInt64(lease) : nil))
        case .delete(let key, let prefix):
            let (from, end) = keyRange(key, prefix: prefix)
            return EtcdAPI.RequestOp(requestDeleteRange: .init(key: from, rangeEnd: end, prevKV: true))
        }
    }

    // MARK: - Replies

    /// Decodes the reply to `request` (HTTP `status` and `body`). Error replies become
    /// `.serverError`, except where etcd answers 200 for a missing lease (keepalive without TTL,
    /// timeToLive with TTL -1), which become `.error(.leaseNotFound)`.
    static func decode(_ request: MetaRequest, status: Int, body: [UInt8]) throws(MalformedReply) -> Decoded {
        switch request {
        case .txn(let txn):
            return try reply(EtcdAPI.TxnResponse.self, status: status, body: body) { r throws(MalformedReply) in
                .txn(try txnResult(txn, r))
            }
        case .leaseGrant:
            let r: EtcdAPI.LeaseGrantResponse
            switch try reply(EtcdAPI.LeaseGrantResponse.self, status: status, body: body) {
            case .success(let grant): r = grant
            case .failure(let error): return .serverError(error)
            }
            if let message = r.error, !message.isEmpty {
                return .serverError(ServerError(status: status, code: 0, message: message))
            }
            guard let id = r.ID?.value, let ttl = r.TTL?.value else {
                throw MalformedReply(reason: "lease grant reply without ID or TTL")
            }
            return .response(.lease(id: id, ttlSeconds: ttl))
        case .leaseKeepAlive(let id):
            // An expired or unknown lease answers 200 without TTL (TTL 0 is omitted).
            return try reply(EtcdAPI.LeaseResponse.self, status: status, body: body, streaming: true) { r throws(MalformedReply) in
                let ttl = r.TTL.orZero
                return ttl > 0 ? .lease(id: id, ttlSeconds: ttl) : .error(.leaseNotFound(id))
            }
        case .leaseRevoke(let id):
            return try reply(EtcdAPI.EmptyResponse.self, status: status, body: body) { _ throws(MalformedReply) in .revoked(id: id) }
        case .leaseTimeToLive(let id):
            // -1 for an unknown lease; below 0 for one that expired but is not revoked yet.
            return try reply(EtcdAPI.LeaseResponse.self, status: status, body: body) { r throws(MalformedReply) in
                let ttl = r.TTL.orZero
                return ttl >= 0 ? .lease(id: id, ttlSeconds: ttl) : .error(.leaseNotFound(id))
            }
        }
    }

    /// The `version` of a `GET /version` reply (`{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}`).
    static func decodeVersion(status: Int, body: [UInt8]) throws(MalformedReply) -> String {
        let reply: EtcdAPI.VersionResponse
        do { reply = try EtcdCodec.decode(EtcdAPI.VersionResponse.self, from: body) } catch {
            throw MalformedReply(reason: "HTTP \(status): \(error.reason)")
        }
        guard status == 200, let version = reply.etcdserver else {
            throw MalformedReply(reason: "HTTP \(status) without etcdserver version")
        }
        return version
    }

    /// The reply's body as `Body`, or the etcd error it carries. A streaming reply is read from
    /// its first non-empty line, and its `{"result":…}` wrapper is removed.
    private static func reply<Body: Decodable>(_: Body.Type, status: Int, body: [UInt8],
                                               streaming: Bool = false) throws(MalformedReply) -> Result<Body, ServerError> {
        let reply: EtcdAPI.Reply<Body>
        do {
            if streaming {
                reply = try EtcdCodec.decode(EtcdAPI.StreamedReply<Body>.self, from: firstLine(body)).reply
            } else {
                reply = try EtcdCodec.decode(EtcdAPI.Reply<Body>.self, from: body)
            }
        } catch {
            throw MalformedReply(reason: "HTTP \(status): \(error.reason)")
        }
        if let error = serverError(reply.error, status: status) { return .failure(error) }
        guard status == 200 else { throw MalformedReply(reason: "HTTP \(status) without an etcd error") }
        switch reply.body {
        case .success(let body): return .success(body)
        case .failure(let error): throw MalformedReply(reason: EtcdCodec.describe(error))
        }
    }

    private static func reply<Body: Decodable>(_ type: Body.Type, status: Int, body: [UInt8], streaming: Bool = false,
                                               _ response: (Body) throws(MalformedReply) -> MetaResponse) throws(MalformedReply) -> Decoded {
        switch try reply(type, status: status, body: body, streaming: streaming) {
        case .success(let body): return .response(try response(body))
        case .failure(let error): return .serverError(error)
        }
    }

    /// The first non-empty line of a streaming reply (the whole body when there is none).
    private static func firstLine(_ body: [UInt8]) -> ArraySlice<UInt8> {
        for line in body.split(separator: UInt8(ascii: "\n")) where line.contains(where: { $0 > 0x20 }) { return line }
        return body[...]
    }

    private static func txnResult(_ txn: MetaTxn, _ reply: EtcdAPI.TxnResponse) throws(MalformedReply) -> MetaTxnResult {
        let succeeded = reply.succeeded ?? false
        let ops = succeeded ? txn.success : txn.failure
        let responses = reply.responses ?? []
        guard responses.count == ops.count else {
            throw MalformedReply(reason: "\(responses.count) op responses for \(ops.count) ops")
        }
        var results: [MetaOpResult] = []
        for (op, response) in zip(ops, responses) { results.append(try opResult(op, response)) }
        guard let revision = reply.header?.revision?.value else { throw MalformedReply(reason: "reply without header.revision") }
        return MetaTxnResult(succeeded: succeeded, revision: revision, results: results)
    }

    private static func opResult(_ op: MetaOp, _ response: EtcdAPI.ResponseOp) throws(MalformedReply) -> MetaOpResult {
        switch op {
        case .range:
            guard let r = response.responseRange else { throw MalformedReply(reason: "expected response_range") }
            return .range((r.kvs ?? []).map(keyValue))
        case .put:
            guard let r = response.responsePut else { throw MalformedReply(reason: "expected response_put") }
            return .put(previous: r.prevKV.map(keyValue))
        case .delete:
            guard let r = response.responseDeleteRange else { throw MalformedReply(reason: "expected response_delete_range") }
            let deleted = (r.prevKVs ?? []).map(keyValue)
            guard r.deleted.orZero == Int64(deleted.count) else {
                throw MalformedReply(reason: "deleted count differs from prev_kvs")
            }
            return .delete(deleted: deleted)
        }
    }

    static func keyValue(_ kv: EtcdAPI.KeyValue) -> MetaKeyValue {
        MetaKeyValue(key: String(decoding: kv.key.bytes, as: UTF8.self), value: kv.value?.bytes ?? [],
                     createRevision: kv.createRevision.orZero, modRevision: kv.modRevision.orZero,
                     version: kv.version.orZero, lease: kv.lease.orZero)
    }
}

/// Decodes an etcd JSON reply as the client would, for the fuzzer (`torus-fuzz metadata`):
/// true if it decoded, false if it was refused as malformed. Never traps.
public func etcdReplyDecodes(_ request: MetaRequest, status: Int, body: [UInt8]) -> Bool {
    (try? EtcdGateway.decode(request, status: status, body: body)) != nil
}
