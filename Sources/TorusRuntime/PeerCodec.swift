import NIOCore
import TorusCore

// The wire form of the peer protocol (`docs/peer-protocol.md`, version 3). `PeerFrame` is the
// unit on the wire: HELLO, HELLO_ACK, or one `PeerMessage`. A PUT_REPLY or GET_REPLY carries
// the ref it answers (`PeerFrame.replyRef`, as a successful `PeerMessage` reply holds none):
// the encoder requires it (or the ref an error carries; if both are given they must be equal)
// and the decoder sets it on those two replies only, so such a frame decodes to an equal one.
// `PeerFrameDecoder` and `PeerFrameEncoder` put this sans-I/O codec into a NIO pipeline. A
// decoding error is a `PeerProtocolError`: the connection must close (none can be resynced).

/// Encodes and decodes peer frames (`docs/peer-protocol.md`); no I/O.
///
/// A frame is a 24-byte header (magic, version, type, flags, payload length, request id,
/// CRC-32C of the first 20 bytes), the payload, and the payload's CRC-32C; little-endian.
public enum PeerCodec {
    public static let magic: UInt32 = 0x5053_5254
    /// 2: the commit log (seals, log records, the `sealed` status). 3: seals refuse a sealed
    /// volume's older writers' block puts, so maintenance copies say so (put flag 4). A peer of
    /// another version is refused at its first frame.
    public static let version: UInt8 = 3
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

    /// The size of the frame at the start of `buffer`'s readable bytes (header, payload and
    /// trailer) once its header is there, else nil; throws what `decode` would throw for the
    /// bytes at hand. Consumes nothing.
    static func frameSize(atStartOf buffer: ByteBuffer) throws(PeerProtocolError) -> Int? {
        guard let header = try peekHeader(buffer) else { return nil }
        return headerSize + header.length + trailerSize
    }

    /// CRC-32C of `length` bytes of `buffer` at absolute index `index`, without copying.
    static func checksum(_ buffer: ByteBuffer, at index: Int, length: Int) -> UInt32 {
        buffer.getSlice(at: index, length: length)!.withUnsafeReadableBytes { CRC32C.checksum($0) }
    }
}

// MARK: - The frame header

/// The checked fields of a frame header.
struct PeerFrameHeader {
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
}
