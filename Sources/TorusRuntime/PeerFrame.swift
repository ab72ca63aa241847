import NIOCore
import TorusCore

// The values of the peer protocol: frames, their types, the cluster identity, and why a frame
// is refused.

/// The 16-byte cluster identity exchanged in HELLO; a node refuses peers of another cluster.
public struct PeerClusterID: Hashable, Sendable, CustomStringConvertible {
    public static let size = 16

    /// Exactly `size` bytes.
    public let bytes: [UInt8]

    /// Nil unless `bytes` holds exactly `size` bytes.
    public init?(_ bytes: [UInt8]) {
        guard bytes.count == Self.size else { return nil }
        self.bytes = bytes
    }

    public var description: String {
        let digits: [Character] = Array("0123456789abcdef")
        return String(bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] })
    }
}

/// The type byte of a frame (header offset 5).
public enum PeerFrameType: UInt8, Hashable, Sendable, CaseIterable {
    case hello = 1
    case helloAck = 2
    case putBlock = 3
    case putReply = 4
    case getBlock = 5
    case getReply = 6
    case deleteBlocks = 7
    case syncBlocks = 8
    case syncReply = 9
    case getRange = 10
    case listBlocks = 11
    case listReply = 12
}

/// One frame of the peer protocol; see the design notes at the top of `PeerCodec.swift`.
public enum PeerFrame: Sendable, Equatable {
    /// Opens a connection: the sender's node id, its cluster, and the highest protocol
    /// version it speaks.
    case hello(node: NodeID, cluster: PeerClusterID, maxVersion: UInt8)
    /// Accepts a HELLO with the version both sides will speak.
    case helloAck(node: NodeID, version: UInt8)
    /// A request, reply or one-way message. `replyRef` is the ref a `putReply` or `getReply`
    /// answers for (required to encode them unless their error carries it; always set by the
    /// decoder on them); it must be nil for every other message.
    case message(PeerMessage, replyRef: BlockRef? = nil)

    /// The type byte this frame is sent with.
    public var type: PeerFrameType {
        switch self {
        case .hello: .hello
        case .helloAck: .helloAck
        case .message(let m, _): Self.frameType(of: m)
        }
    }

    /// The header's request id: the message's `RPCID`, 0 for HELLO, HELLO_ACK and DELETE_BLOCKS.
    public var requestID: RPCID {
        switch self {
        case .hello, .helloAck, .message(.deleteBlocks, _): RPCID(0)
        case .message(.putBlock(let id, _, _, _, _, _), _), .message(.putReply(let id, _), _),
             .message(.getBlock(let id, _), _), .message(.getReply(let id, _), _),
             .message(.syncBlocks(let id, _), _), .message(.syncReply(let id, _), _),
             .message(.getRange(let id, _, _, _), _), .message(.listBlocks(let id, _, _), _),
             .message(.listReply(let id, _, _), _):
            id
        }
    }

    static func frameType(of message: PeerMessage) -> PeerFrameType {
        switch message {
        case .putBlock: .putBlock
        case .putReply: .putReply
        case .getBlock: .getBlock
        case .getReply: .getReply
        case .deleteBlocks: .deleteBlocks
        case .syncBlocks: .syncBlocks
        case .syncReply: .syncReply
        case .getRange: .getRange
        case .listBlocks: .listBlocks
        case .listReply: .listReply
        }
    }

    public static func == (a: PeerFrame, b: PeerFrame) -> Bool {
        switch (a, b) {
        case let (.hello(n, c, v), .hello(m, d, w)): n == m && c == d && v == w
        case let (.helloAck(n, v), .helloAck(m, w)): n == m && v == w
        case let (.message(x, r), .message(y, s)): r == s && Self.same(x, y)
        default: false
        }
    }

    /// Field-by-field equality (`PeerMessage` itself is not `Equatable`).
    private static func same(_ a: PeerMessage, _ b: PeerMessage) -> Bool {
        switch (a, b) {
        case let (.putBlock(i, r, d, u, x, c), .putBlock(j, s, e, v, y, k)): i == j && r == s && u == v && d == e && x == y && c == k
        case let (.putReply(i, x), .putReply(j, y)): i == j && same(x, y)
        case let (.getBlock(i, r), .getBlock(j, s)): i == j && r == s
        case let (.getReply(i, x), .getReply(j, y)): i == j && x == y
        case let (.deleteBlocks(x), .deleteBlocks(y)): x == y
        case let (.syncBlocks(i, x), .syncBlocks(j, y)): i == j && x == y
        case let (.syncReply(i, x), .syncReply(j, y)): i == j && x == y
        case let (.getRange(i, r, o, l), .getRange(j, s, p, m)): i == j && r == s && o == p && l == m
        case let (.listBlocks(i, a, l), .listBlocks(j, b, m)): i == j && a == b && l == m
        case let (.listReply(i, x, c), .listReply(j, y, d)): i == j && x == y && c == d
        default: false
        }
    }

    private static func same(_ a: Result<Void, StoreError>, _ b: Result<Void, StoreError>) -> Bool {
        switch (a, b) {
        case (.success, .success): true
        case let (.failure(x), .failure(y)): x == y
        default: false
        }
    }
}

/// Why a frame was refused. Any of these while decoding means the byte stream cannot be
/// trusted any more: the connection must close.
public enum PeerProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The first four bytes are not `PeerCodec.magic`.
    case badMagic(UInt32)
    /// A version other than `PeerCodec.version`.
    case unsupportedVersion(UInt8)
    /// Reserved flag bits are set.
    case unknownFlags(UInt16)
    case headerChecksumMismatch(stored: UInt32, computed: UInt32)
    case payloadChecksumMismatch(stored: UInt32, computed: UInt32)
    /// The payload is longer than `PeerCodec.maxPayloadLength` (decoding: as declared in the
    /// header, refused before any of it is read; encoding: the frame is refused).
    case payloadTooLarge(length: Int)
    case unknownType(UInt8)
    /// The payload does not have the layout its type requires (size, count, status, flag).
    case malformedPayload(PeerFrameType, String)
    /// Encoding only: a PUT_REPLY or GET_REPLY without its ref, with a ref other than the one
    /// its error carries, or a ref on a message that is not a put or get reply.
    case unencodable(PeerFrameType, String)

    public var description: String {
        switch self {
        case .badMagic(let m): "bad magic 0x\(String(m, radix: 16))"
        case .unsupportedVersion(let v): "unsupported protocol version \(v)"
        case .unknownFlags(let f): "unknown flags 0x\(String(f, radix: 16))"
        case let .headerChecksumMismatch(s, c): "header CRC mismatch (stored \(s), computed \(c))"
        case let .payloadChecksumMismatch(s, c): "payload CRC mismatch (stored \(s), computed \(c))"
        case .payloadTooLarge(let n): "payload of \(n) bytes over the limit of \(PeerCodec.maxPayloadLength)"
        case .unknownType(let t): "unknown frame type \(t)"
        case let .malformedPayload(t, why): "malformed \(t) payload: \(why)"
        case let .unencodable(t, why): "cannot encode \(t): \(why)"
        }
    }
}
