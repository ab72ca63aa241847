import TorusCore

extension EtcdAPI {
    /// The error fields of a reply, read leniently (a field of another type counts as absent).
    /// Unary: `{"error":"msg","message":"msg","code":3}`. Streaming: `{"error":{"grpc_code":5,
    /// "http_code":404,"message":"msg","http_status":"Not Found"}}`.
    struct ErrorFields: Decodable, Equatable {
        /// The streaming form's `error` object.
        var nested: NestedError?
        var error: String?
        var message: String?
        var code: Int64?
        /// Whether `error`, `message` or `code` is there at all.
        var present: Bool

        struct NestedError: Equatable {
            var grpcCode: Int64?
            var httpCode: Int64?
            var message: String?
        }

        enum CodingKeys: String, CodingKey { case error, message, code }
        enum NestedKeys: String, CodingKey { case grpcCode = "grpc_code", httpCode = "http_code", message }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            if let n = try? c.nestedContainer(keyedBy: NestedKeys.self, forKey: .error) {
                nested = NestedError(grpcCode: (try? n.decode(EtcdInt64.self, forKey: .grpcCode))?.value,
                                     httpCode: (try? n.decode(EtcdInt64.self, forKey: .httpCode))?.value,
                                     message: try? n.decode(String.self, forKey: .message))
            }
            error = try? c.decode(String.self, forKey: .error)
            message = try? c.decode(String.self, forKey: .message)
            code = (try? c.decode(EtcdInt64.self, forKey: .code))?.value
            present = c.contains(.error) || c.contains(.message) || c.contains(.code)
        }
    }

    /// A reply: its error fields, and its body as `Body` (or why it is not one).
    struct Reply<Body: Decodable>: Decodable {
        var error: ErrorFields
        var body: Result<Body, any Error>

        init(from decoder: any Decoder) throws {
            error = try ErrorFields(from: decoder)
            body = Result { try Body(from: decoder) }
        }
    }

    /// A line of a streaming reply: `{"result":{...}}`, or an error without `result`.
    struct StreamedReply<Body: Decodable>: Decodable {
        var reply: Reply<Body>

        enum CodingKeys: String, CodingKey { case result }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            reply = c.contains(.result) ? try c.decode(Reply<Body>.self, forKey: .result) : try Reply(from: decoder)
        }
    }
}

extension EtcdGateway {
    /// The server error `fields` carry: any nested (streaming) error, or on a status other than
    /// 200 any of `error`, `message`, `code`.
    static func serverError(_ fields: EtcdAPI.ErrorFields, status: Int) -> ServerError? {
        if let nested = fields.nested {
            return ServerError(status: Int(nested.httpCode ?? Int64(status)), code: Int(nested.grpcCode ?? 0),
                               message: nested.message ?? "")
        }
        guard status != 200, fields.present else { return nil }
        return ServerError(status: status, code: Int(fields.code ?? 0), message: fields.message ?? fields.error ?? "")
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
