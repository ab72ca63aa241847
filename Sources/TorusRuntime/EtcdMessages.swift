#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The etcd v3 JSON gateway's messages (etcd 3.4, `etcdserverpb`), as Codable structs.
///
/// Gateway quirks: keys and values are base64 (`EtcdBytes`), int64s are JSON strings
/// (`EtcdInt64`), and fields that are false, zero or empty are omitted both ways (so nearly
/// every field is optional; a missing one means false, 0 or empty).
enum EtcdAPI {
    // MARK: - Requests

    struct TxnRequest: Codable, Equatable {
        var compare: [Compare]?
        var success: [RequestOp]?
        var failure: [RequestOp]?
    }

    /// One compare: `key`'s `target` against the operand of the same name (always sent, even 0).
    struct Compare: Codable, Equatable {
        var key: EtcdBytes
        var target: String
        var result: String
        var value: EtcdBytes?
        var version: EtcdInt64?
        var createRevision: EtcdInt64?
        var modRevision: EtcdInt64?
        var lease: EtcdInt64?

        enum CodingKeys: String, CodingKey {
            case key, target, result, value, version, lease
            case createRevision = "create_revision", modRevision = "mod_revision"
        }
    }

    struct RequestOp: Codable, Equatable {
        var requestRange: RangeRequest?
        var requestPut: PutRequest?
        var requestDeleteRange: DeleteRangeRequest?

        enum CodingKeys: String, CodingKey {
            case requestRange = "request_range", requestPut = "request_put", requestDeleteRange = "request_delete_range"
        }
    }

    struct RangeRequest: Codable, Equatable {
        var key: EtcdBytes
        var rangeEnd: EtcdBytes?

        enum CodingKeys: String, CodingKey { case key, rangeEnd = "range_end" }
    }

    struct PutRequest: Codable, Equatable {
        var key: EtcdBytes
        var value: EtcdBytes
        var prevKV: Bool
        var lease: EtcdInt64?

        enum CodingKeys: String, CodingKey { case key, value, prevKV = "prev_kv", lease }
    }

    struct DeleteRangeRequest: Codable, Equatable {
        var key: EtcdBytes
        var rangeEnd: EtcdBytes?
        var prevKV: Bool

        enum CodingKeys: String, CodingKey { case key, rangeEnd = "range_end", prevKV = "prev_kv" }
    }

    /// Lease grant (`TTL`, and `ID` when the caller picks it).
    struct LeaseGrantRequest: Codable, Equatable {
        var TTL: EtcdInt64
        var ID: EtcdInt64?
    }

    /// Lease keepalive, revoke and time-to-live: just the lease id.
    struct LeaseRequest: Codable, Equatable {
        var ID: EtcdInt64
    }

    struct WatchRequest: Codable, Equatable {
        var createRequest: WatchCreateRequest

        enum CodingKeys: String, CodingKey { case createRequest = "create_request" }
    }

    struct WatchCreateRequest: Codable, Equatable {
        var key: EtcdBytes
        var rangeEnd: EtcdBytes?
        var startRevision: EtcdInt64?
        var prevKV: Bool

        enum CodingKeys: String, CodingKey { case key, rangeEnd = "range_end", startRevision = "start_revision", prevKV = "prev_kv" }
    }

    // MARK: - Responses

    struct ResponseHeader: Codable, Equatable {
        var revision: EtcdInt64?
    }

    /// A failed txn has no `succeeded`; a branch without ops has no `responses`.
    struct TxnResponse: Codable, Equatable {
        var header: ResponseHeader?
        var succeeded: Bool?
        var responses: [ResponseOp]?
    }

    struct ResponseOp: Codable, Equatable {
        var responseRange: RangeResponse?
        var responsePut: PutResponse?
        var responseDeleteRange: DeleteRangeResponse?

        enum CodingKeys: String, CodingKey {
            case responseRange = "response_range", responsePut = "response_put", responseDeleteRange = "response_delete_range"
        }
    }

    /// A range that found nothing has no `kvs`.
    struct RangeResponse: Codable, Equatable {
        var kvs: [KeyValue]?
    }

    struct PutResponse: Codable, Equatable {
        var prevKV: KeyValue?

        enum CodingKeys: String, CodingKey { case prevKV = "prev_kv" }
    }

    struct DeleteRangeResponse: Codable, Equatable {
        var deleted: EtcdInt64?
        var prevKVs: [KeyValue]?

        enum CodingKeys: String, CodingKey { case deleted, prevKVs = "prev_kvs" }
    }

    /// A key without lease has no `lease`; a deleted key (in a watch event) has only `key` and
    /// `mod_revision`.
    struct KeyValue: Codable, Equatable {
        var key: EtcdBytes
        var value: EtcdBytes?
        var createRevision: EtcdInt64?
        var modRevision: EtcdInt64?
        var version: EtcdInt64?
        var lease: EtcdInt64?

        enum CodingKeys: String, CodingKey {
            case key, value, version, lease
            case createRevision = "create_revision", modRevision = "mod_revision"
        }
    }

    /// A grant can fail with 200 and an `error` text.
    struct LeaseGrantResponse: Codable, Equatable {
        var ID: EtcdInt64?
        var TTL: EtcdInt64?
        var error: String?
    }

    /// Keepalive and time-to-live: an expired or unknown lease has no `TTL` (keepalive) or -1.
    struct LeaseResponse: Codable, Equatable {
        var ID: EtcdInt64?
        var TTL: EtcdInt64?
    }

    /// Revoke: nothing but the header.
    struct EmptyResponse: Codable, Equatable {}

    /// One line of a watch stream: `{"result":{...}}`.
    struct WatchLine: Codable, Equatable {
        var result: WatchResponse?
    }

    struct WatchResponse: Codable, Equatable {
        var header: ResponseHeader?
        var created: Bool?
        var canceled: Bool?
        var compactRevision: EtcdInt64?
        var cancelReason: String?
        var events: [Event]?

        enum CodingKeys: String, CodingKey {
            case header, created, canceled, events
            case compactRevision = "compact_revision", cancelReason = "cancel_reason"
        }
    }

    /// A put event has no `type` (PUT is 0).
    struct Event: Codable, Equatable {
        var type: String?
        var kv: KeyValue?
        var prevKV: KeyValue?

        enum CodingKeys: String, CodingKey { case type, kv, prevKV = "prev_kv" }
    }

    /// `GET /version`: `{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}`.
    struct VersionResponse: Codable, Equatable {
        var etcdserver: String?
    }
}

/// An int64 the way the gateway writes it: a JSON string (a JSON number is accepted too).
struct EtcdInt64: Codable, Equatable, Sendable {
    var value: Int64

    init(_ value: Int64) { self.value = value }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            guard let n = Int64(text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "\"\(text)\" is not an int64")
            }
            value = n
        } else {
            value = try container.decode(Int64.self)
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(String(value))
    }
}

extension Optional where Wrapped == EtcdInt64 {
    /// An omitted int64 is 0.
    var orZero: Int64 { self?.value ?? 0 }
}

/// Bytes the way the gateway writes them: standard base64 (with padding) in a JSON string.
struct EtcdBytes: Codable, Equatable, Sendable {
    var bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }
    init(_ text: String) { bytes = Array(text.utf8) }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let bytes = Base64.decode(text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not base64")
        }
        self.bytes = bytes
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(Base64.encode(bytes))
    }
}

/// Standard base64 (RFC 4648, with padding), as Go's `encoding/json` uses for `[]byte`.
enum Base64 {
    static func encode(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    /// Decodes padded standard base64; nil on any other character, a bad length or a `=`
    /// that is not trailing padding (Foundation alone accepts "Zm=v").
    static func decode(_ text: String) -> [UInt8]? {
        let body = text.utf8.reversed().drop(while: { $0 == UInt8(ascii: "=") })
        guard !body.contains(UInt8(ascii: "=")), let data = Data(base64Encoded: text) else { return nil }
        return Array(data)
    }
}

/// JSON in and out for the gateway, with errors as `EtcdGateway.MalformedReply` reasons.
enum EtcdCodec {
    /// Compact, keys sorted (request bodies are reproducible), `/` unescaped (base64 has it).
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()
    static let decoder = JSONDecoder()

    static func encode(_ value: some Encodable) -> [UInt8] {
        do {
            return Array(try encoder.encode(value))
        } catch {
            // Only non-finite floats or throwing `encode(to:)`s fail, and the gateway types have neither.
            preconditionFailure("encoding an etcd request failed: \(error)")
        }
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: some Collection<UInt8>) throws(EtcdGateway.MalformedReply) -> T {
        do {
            return try decoder.decode(type, from: Data(bytes))
        } catch {
            throw EtcdGateway.MalformedReply(reason: describe(error))
        }
    }

    /// "path.to.field: what was wrong", without Foundation's boilerplate.
    static func describe(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        let context: DecodingError.Context
        switch error {
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c): context = c
        case .keyNotFound(let key, let c):
            return (c.codingPath + [key]).map(\.stringValue).joined(separator: ".") + ": missing"
        @unknown default: return "\(error)"
        }
        let path = context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        let reason = context.underlyingError.map { "\(context.debugDescription) (\($0))" } ?? context.debugDescription
        return path.isEmpty ? reason : "\(path): \(reason)"
    }
}
