import NIOCore
import TorusCore

// The wire form of the peer protocol (`docs/peer-protocol.md`, version 1).
//
// Design:
// - `PeerFrame` is the unit on the wire: HELLO, HELLO_ACK, or one `PeerMessage`.
// - PUT_REPLY and GET_REPLY carry the ref they answer for, so that `StoreError.notFound(ref)`
//   and `.corrupt(ref)` decode to exactly the value that was encoded. `PeerMessage`'s replies
//   do not hold the ref when they succeed, so `PeerFrame.message` takes it next to the message
//   (`replyRef`). The encoder requires a ref for those two replies: `replyRef`, or the one an
//   error carries; when both are given they must be equal. The decoder always sets `replyRef`
//   on those two replies and never on other messages, so a frame built that way decodes to
//   an equal frame.
// - `PeerCodec` is sans-I/O (frames to and from `ByteBuffer`); `PeerFrameDecoder` and
//   `PeerFrameEncoder` put it into a NIO pipeline. A decoding error is a `PeerProtocolError`
//   and means the connection must close: none can be resynchronized.

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
        case .message(.putBlock(let id, _, _, _, _), _), .message(.putReply(let id, _), _),
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
        case let (.putBlock(i, r, d, u, x), .putBlock(j, s, e, v, y)): i == j && r == s && u == v && d == e && x == y
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

/// Encodes and decodes peer frames (`docs/peer-protocol.md`); no I/O.
///
/// A frame is a 24-byte header (magic, version, type, flags, payload length, request id,
/// CRC-32C of the first 20 bytes), the payload, and the payload's CRC-32C; little-endian.
public enum PeerCodec {
    public static let magic: UInt32 = 0x5053_5254
    public static let version: UInt8 = 1
    public static let headerSize = 24
    public static let trailerSize = 4
    /// One 64 MiB block plus room for its fields.
    public static let maxPayloadLength = (64 << 20) + (4 << 10)

    /// Bytes `encode` writes for `frame`; throws what `encode` would throw.
    public static func encodedSize(of frame: PeerFrame) throws(PeerProtocolError) -> Int {
        headerSize + (try payloadLength(of: frame)) + trailerSize
    }

    /// Appends `frame` to `buffer`. Throws (writing nothing) when the payload would exceed
    /// `maxPayloadLength` or a reply's ref is missing or inconsistent (see `PeerFrame.message`).
    /// Sizes in `StoreError.wrongSize` are sent as u32 (saturating; blocks are far smaller).
    public static func encode(_ frame: PeerFrame, into buffer: inout ByteBuffer) throws(PeerProtocolError) {
        let length = try payloadLength(of: frame)
        buffer.reserveCapacity(minimumWritableBytes: headerSize + length + trailerSize)
        let start = buffer.writerIndex
        buffer.writeInteger(magic, endianness: .little)
        buffer.writeInteger(version)
        buffer.writeInteger(frame.type.rawValue)
        buffer.writeInteger(UInt16(0), endianness: .little)
        buffer.writeInteger(UInt32(length), endianness: .little)
        buffer.writeInteger(frame.requestID.raw, endianness: .little)
        buffer.writeInteger(checksum(buffer, at: start, length: 20), endianness: .little)
        let payloadStart = buffer.writerIndex
        try writePayload(frame, into: &buffer)
        assert(buffer.writerIndex - payloadStart == length, "payload length mismatch for \(frame.type)")
        buffer.writeInteger(checksum(buffer, at: payloadStart, length: length), endianness: .little)
    }

    /// Decodes the frame at the start of `buffer`'s readable bytes and consumes it, or returns
    /// nil (consuming nothing) until the whole frame is there. Fails as soon as the bytes at
    /// hand prove the stream bad: the magic and version with the first 5 bytes, the header
    /// CRC, flags, length limit and type with the header alone, so it never waits for (nor
    /// buffers) more than one frame of at most `maxPayloadLength`.
    public static func decode(from buffer: inout ByteBuffer) throws(PeerProtocolError) -> PeerFrame? {
        guard let header = try peekHeader(buffer) else { return nil }
        let total = headerSize + header.length + trailerSize
        guard buffer.readableBytes >= total else { return nil }
        let payloadStart = buffer.readerIndex + headerSize
        let stored = buffer.getInteger(at: payloadStart + header.length, endianness: .little, as: UInt32.self)!
        let computed = checksum(buffer, at: payloadStart, length: header.length)
        guard stored == computed else { throw .payloadChecksumMismatch(stored: stored, computed: computed) }
        var reader = PayloadReader(buffer: buffer.getSlice(at: payloadStart, length: header.length)!, type: header.type)
        let frame = try decodePayload(header, &reader)
        buffer.moveReaderIndex(forwardBy: total)
        return frame
    }

    /// CRC-32C of `length` bytes of `buffer` at absolute index `index`, without copying.
    static func checksum(_ buffer: ByteBuffer, at index: Int, length: Int) -> UInt32 {
        buffer.getSlice(at: index, length: length)!.withUnsafeReadableBytes { CRC32C.checksum($0) }
    }
}

// MARK: - Encoding

/// Reply status byte of PUT_REPLY and GET_REPLY.
private enum ReplyStatus: UInt8 {
    case ok = 0, notFound, corrupt, noSpace, ioError, wrongSize
}

extension PeerCodec {
    private static let statusAndRef = 1 + BlockRef.encodedSize
    private static let wrongSizeFields = 8

    private static func payloadLength(of frame: PeerFrame) throws(PeerProtocolError) -> Int {
        let length: Int
        switch frame {
        case .hello: length = 4 + PeerClusterID.size + 1
        case .helloAck: length = 4 + 1
        case let .message(message, replyRef): length = try payloadLength(of: message, replyRef: replyRef)
        }
        guard length <= maxPayloadLength else { throw .payloadTooLarge(length: length) }
        return length
    }

    private static func payloadLength(of message: PeerMessage, replyRef: BlockRef?) throws(PeerProtocolError) -> Int {
        switch message {
        case .putBlock(_, _, let bytes, _, _):
            try requireNoRef(replyRef, message)
            return BlockRef.encodedSize + 1 + bytes.count
        case .putReply(_, let result):
            _ = try wireRef(replyRef, result.error, .putReply)
            return replyHeadLength(result.error)
        case .getBlock:
            try requireNoRef(replyRef, message)
            return BlockRef.encodedSize
        case let .getRange(_, _, offset, length):
            try requireNoRef(replyRef, message)
            guard offset >= 0, offset <= Int(UInt32.max), length >= 0, length <= Int(UInt32.max) else {
                throw .unencodable(.getRange, "range \(offset)+\(length) does not fit in two u32")
            }
            return BlockRef.encodedSize + 8
        case .getReply(_, let result):
            _ = try wireRef(replyRef, result.error, .getReply)
            if case .success(let bytes) = result { return statusAndRef + bytes.count }
            return replyHeadLength(result.error)
        case .deleteBlocks(let refs), .syncBlocks(_, let refs), .syncReply(_, let refs):
            try requireNoRef(replyRef, message)
            return 4 + BlockRef.encodedSize * refs.count
        case .listBlocks(_, _, let limit):
            try requireNoRef(replyRef, message)
            guard limit >= 1, limit <= Int(UInt32.max) else { throw .unencodable(.listBlocks, "limit \(limit) is not in 1...2^32-1") }
            return 1 + BlockRef.encodedSize + 4
        case .listReply(_, let refs, _):
            try requireNoRef(replyRef, message)
            return 1 + 4 + BlockRef.encodedSize * refs.count
        }
    }

    private static func replyHeadLength(_ error: StoreError?) -> Int {
        if case .wrongSize = error { return statusAndRef + wrongSizeFields }
        return statusAndRef
    }

    private static func requireNoRef(_ replyRef: BlockRef?, _ message: PeerMessage) throws(PeerProtocolError) {
        guard let replyRef else { return }
        throw .unencodable(PeerFrame.frameType(of: message), "replyRef \(replyRef) given for a message that is not a put or get reply")
    }

    /// The ref a reply carries on the wire: `replyRef`, or the one its error names.
    private static func wireRef(_ replyRef: BlockRef?, _ error: StoreError?, _ type: PeerFrameType) throws(PeerProtocolError) -> BlockRef {
        var named: BlockRef?
        switch error {
        case .notFound(let r), .corrupt(let r): named = r
        default: named = nil
        }
        switch (replyRef, named) {
        case let (r?, n?) where r != n: throw .unencodable(type, "replyRef \(r) differs from the error's ref \(n)")
        case let (r?, _): return r
        case let (nil, n?): return n
        case (nil, nil): throw .unencodable(type, "a reply needs replyRef (the ref it answers for)")
        }
    }

    private static func writePayload(_ frame: PeerFrame, into b: inout ByteBuffer) throws(PeerProtocolError) {
        switch frame {
        case let .hello(node, cluster, maxVersion):
            b.writeInteger(node.raw, endianness: .little)
            b.writeBytes(cluster.bytes)
            b.writeInteger(maxVersion)
        case let .helloAck(node, version):
            b.writeInteger(node.raw, endianness: .little)
            b.writeInteger(version)
        case let .message(message, replyRef):
            try writePayload(message, replyRef: replyRef, into: &b)
        }
    }

    private static func writePayload(_ message: PeerMessage, replyRef: BlockRef?, into b: inout ByteBuffer) throws(PeerProtocolError) {
        switch message {
        case let .putBlock(_, ref, bytes, durable, restore):
            writeRef(ref, into: &b)
            b.writeInteger(UInt8(durable ? 1 : 0) | UInt8(restore ? 2 : 0))
            b.writeBytes(bytes)
        case let .putReply(_, result):
            writeReplyHead(try wireRef(replyRef, result.error, .putReply), result.error, into: &b)
        case let .getBlock(_, ref):
            writeRef(ref, into: &b)
        case let .getRange(_, ref, offset, length):
            writeRef(ref, into: &b)
            b.writeInteger(UInt32(offset), endianness: .little)
            b.writeInteger(UInt32(length), endianness: .little)
        case let .getReply(_, result):
            writeReplyHead(try wireRef(replyRef, result.error, .getReply), result.error, into: &b)
            if case .success(let bytes) = result { b.writeBytes(bytes) }
        case .deleteBlocks(let refs), .syncBlocks(_, let refs), .syncReply(_, let refs):
            b.writeInteger(UInt32(refs.count), endianness: .little)
            for ref in refs { writeRef(ref, into: &b) }
        case let .listBlocks(_, after, limit):
            b.writeInteger(UInt8(after == nil ? 0 : 1))
            writeRef(after ?? BlockRef(volume: 0, epoch: 0, sequence: 0, index: 0), into: &b)
            b.writeInteger(UInt32(limit), endianness: .little)
        case let .listReply(_, refs, complete):
            b.writeInteger(UInt8(complete ? 1 : 0))
            b.writeInteger(UInt32(refs.count), endianness: .little)
            for ref in refs { writeRef(ref, into: &b) }
        }
    }

    private static func writeReplyHead(_ ref: BlockRef, _ error: StoreError?, into b: inout ByteBuffer) {
        b.writeInteger(status(of: error).rawValue)
        writeRef(ref, into: &b)
        if case let .wrongSize(expected, got) = error {
            b.writeInteger(UInt32(clamping: expected), endianness: .little)
            b.writeInteger(UInt32(clamping: got), endianness: .little)
        }
    }

    private static func status(of error: StoreError?) -> ReplyStatus {
        switch error {
        case nil: .ok
        case .notFound: .notFound
        case .corrupt: .corrupt
        case .noSpace: .noSpace
        case .ioError: .ioError
        case .wrongSize: .wrongSize
        }
    }

    private static func writeRef(_ ref: BlockRef, into b: inout ByteBuffer) {
        b.writeInteger(ref.volume, endianness: .little)
        b.writeInteger(ref.epoch, endianness: .little)
        b.writeInteger(ref.sequence, endianness: .little)
        b.writeInteger(ref.index, endianness: .little)
    }
}

extension Result {
    fileprivate var error: Failure? {
        if case .failure(let e) = self { return e }
        return nil
    }
}

// MARK: - Decoding

/// The checked fields of a frame header.
private struct PeerFrameHeader {
    var type: PeerFrameType
    var length: Int
    var requestID: RPCID
}

extension PeerCodec {
    /// Validates the header at the start of `b` without consuming it; nil until all 24
    /// bytes are there (a bad magic or version fails earlier).
    private static func peekHeader(_ b: ByteBuffer) throws(PeerProtocolError) -> PeerFrameHeader? {
        let start = b.readerIndex, available = b.readableBytes
        if available >= 4, let m = b.getInteger(at: start, endianness: .little, as: UInt32.self), m != magic {
            throw .badMagic(m)
        }
        if available >= 5, let v = b.getInteger(at: start + 4, as: UInt8.self), v != version {
            throw .unsupportedVersion(v)
        }
        guard available >= headerSize else { return nil }
        let stored = b.getInteger(at: start + 20, endianness: .little, as: UInt32.self)!
        let computed = checksum(b, at: start, length: 20)
        guard stored == computed else { throw .headerChecksumMismatch(stored: stored, computed: computed) }
        let flags = b.getInteger(at: start + 6, endianness: .little, as: UInt16.self)!
        guard flags == 0 else { throw .unknownFlags(flags) }
        let length = Int(b.getInteger(at: start + 8, endianness: .little, as: UInt32.self)!)
        guard length <= maxPayloadLength else { throw .payloadTooLarge(length: length) }
        let rawType = b.getInteger(at: start + 5, as: UInt8.self)!
        guard let type = PeerFrameType(rawValue: rawType) else { throw .unknownType(rawType) }
        let id = b.getInteger(at: start + 12, endianness: .little, as: UInt64.self)!
        return PeerFrameHeader(type: type, length: length, requestID: RPCID(id))
    }

    /// Request ids of HELLO, HELLO_ACK and DELETE_BLOCKS are ignored (sent as 0).
    private static func decodePayload(_ h: PeerFrameHeader, _ r: inout PayloadReader) throws(PeerProtocolError) -> PeerFrame {
        let id = h.requestID
        let frame: PeerFrame
        switch h.type {
        case .hello:
            let node = NodeID(try r.u32())
            let cluster = PeerClusterID(try r.bytes(PeerClusterID.size))!
            frame = .hello(node: node, cluster: cluster, maxVersion: try r.u8())
        case .helloAck:
            frame = .helloAck(node: NodeID(try r.u32()), version: try r.u8())
        case .putBlock:
            let ref = try r.ref()
            let flags = try r.u8()
            guard flags <= 3 else { throw r.malformed("put flags byte is \(flags), not 0-3") }
            frame = .message(.putBlock(id, ref, r.rest(), durable: flags & 1 != 0, restore: flags & 2 != 0))
        case .putReply:
            let (ref, error) = try r.replyHead()
            let result: Result<Void, StoreError> = if let error { .failure(error) } else { .success(()) }
            frame = .message(.putReply(id, result), replyRef: ref)
        case .getBlock:
            frame = .message(.getBlock(id, try r.ref()))
        case .getRange:
            let ref = try r.ref()
            let offset = Int(try r.u32())
            frame = .message(.getRange(id, ref, offset: offset, length: Int(try r.u32())))
        case .getReply:
            let (ref, error) = try r.replyHead()
            let result: Result<[UInt8], StoreError> = if let error { .failure(error) } else { .success(r.rest()) }
            frame = .message(.getReply(id, result), replyRef: ref)
        case .deleteBlocks:
            frame = .message(.deleteBlocks(try r.refs()))
        case .syncBlocks:
            frame = .message(.syncBlocks(id, try r.refs()))
        case .syncReply:
            frame = .message(.syncReply(id, present: try r.refs()))
        case .listBlocks:
            let has = try r.u8()
            guard has <= 1 else { throw r.malformed("after flag is \(has), not 0 or 1") }
            let after = try r.ref()
            let limit = Int(try r.u32())
            guard limit >= 1 else { throw r.malformed("limit is 0") }
            frame = .message(.listBlocks(id, after: has == 1 ? after : nil, limit: limit))
        case .listReply:
            let complete = try r.u8()
            guard complete <= 1 else { throw r.malformed("complete flag is \(complete), not 0 or 1") }
            frame = .message(.listReply(id, refs: try r.refs(), complete: complete == 1))
        }
        try r.end()
        return frame
    }
}

/// Reads a payload's fields; every shortfall is a `malformedPayload` of the frame's type.
private struct PayloadReader {
    var buffer: ByteBuffer
    let type: PeerFrameType

    func malformed(_ why: String) -> PeerProtocolError { .malformedPayload(type, why) }

    mutating func u8() throws(PeerProtocolError) -> UInt8 {
        guard let v = buffer.readInteger(as: UInt8.self) else { throw truncated(1) }
        return v
    }

    mutating func u32() throws(PeerProtocolError) -> UInt32 {
        guard let v = buffer.readInteger(endianness: .little, as: UInt32.self) else { throw truncated(4) }
        return v
    }

    mutating func ref() throws(PeerProtocolError) -> BlockRef {
        guard buffer.readableBytes >= BlockRef.encodedSize else { throw truncated(BlockRef.encodedSize) }
        return readRef()
    }

    mutating func bytes(_ count: Int) throws(PeerProtocolError) -> [UInt8] {
        guard let v = buffer.readBytes(length: count) else { throw truncated(count) }
        return v
    }

    /// The remaining bytes, copied once.
    mutating func rest() -> [UInt8] {
        buffer.readBytes(length: buffer.readableBytes)!
    }

    /// count u32, then exactly count × ref.
    mutating func refs() throws(PeerProtocolError) -> [BlockRef] {
        let count = Int(try u32())
        let need = count * BlockRef.encodedSize
        guard buffer.readableBytes == need else {
            throw malformed("count \(count) needs \(need) bytes of refs, \(buffer.readableBytes) follow")
        }
        var refs: [BlockRef] = []
        refs.reserveCapacity(count)
        for _ in 0..<count { refs.append(readRef()) }
        return refs
    }

    /// status u8, ref, and for `wrongSize` expected u32 + got u32.
    mutating func replyHead() throws(PeerProtocolError) -> (BlockRef, StoreError?) {
        let raw = try u8()
        guard let status = ReplyStatus(rawValue: raw) else { throw malformed("unknown status \(raw)") }
        let ref = try ref()
        switch status {
        case .ok: return (ref, nil)
        case .notFound: return (ref, .notFound(ref))
        case .corrupt: return (ref, .corrupt(ref))
        case .noSpace: return (ref, .noSpace)
        case .ioError: return (ref, .ioError)
        case .wrongSize:
            let expected = Int(try u32())
            return (ref, .wrongSize(expected: expected, got: Int(try u32())))
        }
    }

    func end() throws(PeerProtocolError) {
        guard buffer.readableBytes == 0 else { throw malformed("\(buffer.readableBytes) unexpected trailing bytes") }
    }

    private func truncated(_ wanted: Int) -> PeerProtocolError {
        malformed("truncated: needs \(wanted) more bytes, \(buffer.readableBytes) left")
    }

    private mutating func readRef() -> BlockRef {
        let v = buffer.readInteger(endianness: .little, as: UInt64.self)!
        let e = buffer.readInteger(endianness: .little, as: UInt64.self)!
        let s = buffer.readInteger(endianness: .little, as: UInt64.self)!
        let i = buffer.readInteger(endianness: .little, as: UInt64.self)!
        return BlockRef(volume: v, epoch: e, sequence: s, index: i)
    }
}

// MARK: - Pipeline handlers

/// Inbound: bytes to `PeerFrame`s. Use as `ByteToMessageHandler(PeerFrameDecoder())`.
///
/// Handles frames split across reads at any byte and many frames in one read. A
/// `PeerProtocolError` goes to `errorCaught`; the connection handler must then close the
/// channel (the decoder accepts nothing more after an error).
public struct PeerFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = PeerFrame

    public init() {}

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try PeerCodec.decode(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }
}

/// Outbound: `PeerFrame`s to bytes, one exactly sized buffer per frame (so a 64 MiB block
/// does not leave a 64 MiB buffer behind). An unencodable frame fails its write promise and
/// is reported to `errorCaught`; nothing is written for it.
public final class PeerFrameEncoder: ChannelOutboundHandler, Sendable {
    public typealias OutboundIn = PeerFrame
    public typealias OutboundOut = ByteBuffer

    public init() {}

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = Self.unwrapOutboundIn(data)
        do {
            var out = context.channel.allocator.buffer(capacity: try PeerCodec.encodedSize(of: frame))
            try PeerCodec.encode(frame, into: &out)
            context.write(Self.wrapOutboundOut(out), promise: promise)
        } catch {
            promise?.fail(error)
            context.fireErrorCaught(error)
        }
    }
}
