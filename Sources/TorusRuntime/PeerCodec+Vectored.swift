import NIOCore
import TorusCore

// Encoding a frame without copying its block: the header and fields go into a small buffer, the
// block's bytes are lent to NIO as they are (`BorrowedBytes`), the trailer follows in a buffer of
// its own, and the three leave in one writev. The bytes on the wire are exactly `encode`'s.

extension PeerCodec {
    /// A frame cut in three for a vectored write: `head` (header and fields), `bulk` (the
    /// block's bytes, not copied) and `trailer` (the payload CRC).
    struct VectoredFrame {
        var head: ByteBuffer
        var bulk: ByteBuffer
        var trailer: ByteBuffer
    }

    /// The bytes a frame ends its payload with that are worth lending instead of copying: the
    /// block of a PUT_BLOCK, the data of a successful GET_REPLY (both written last).
    static func bulk(of frame: PeerFrame) -> [UInt8]? {
        guard case .message(let message, _) = frame else { return nil }
        switch message {
        case .putBlock(_, _, let bytes, _, _, _): return bytes
        case .getReply(_, .success(let bytes)): return bytes
        default: return nil
        }
    }

    /// `frame` with its bulk bytes left out (same fields otherwise).
    private static func withoutBulk(_ frame: PeerFrame) -> PeerFrame {
        guard case .message(let message, let replyRef) = frame else { return frame }
        switch message {
        case let .putBlock(id, ref, _, durable, restore, copy):
            return .message(.putBlock(id, ref, [], durable: durable, restore: restore, copy: copy), replyRef: replyRef)
        case .getReply(let id, .success):
            return .message(.getReply(id, .success([])), replyRef: replyRef)
        default:
            return frame
        }
    }

    /// Encodes `frame` as `encode` does, but with its `bulk` bytes (at least
    /// `BorrowedBytes.minimumLent` of them) lent rather than copied; nil for any other frame.
    static func encodeVectored(_ frame: PeerFrame, allocator: ByteBufferAllocator) throws(PeerProtocolError) -> VectoredFrame? {
        guard let bulk = bulk(of: frame), bulk.count >= BorrowedBytes.minimumLent else { return nil }
        let length = try payloadLength(of: frame)
        let fields = withoutBulk(frame)
        var head = allocator.buffer(capacity: headerSize + length - bulk.count)
        head.writeInteger(magic, endianness: .little)
        head.writeInteger(version)
        head.writeInteger(frame.type.rawValue)
        head.writeInteger(UInt16(0), endianness: .little)
        head.writeInteger(UInt32(length), endianness: .little)
        head.writeInteger(frame.requestID.raw, endianness: .little)
        head.writeInteger(checksum(head, at: 0, length: 20), endianness: .little)
        try writePayload(fields, into: &head)
        assert(head.writerIndex - headerSize + bulk.count == length, "payload length mismatch for \(frame.type)")
        let crc = CRC32C.checksum(bulk, continuing: checksum(head, at: headerSize, length: head.writerIndex - headerSize))
        var trailer = allocator.buffer(capacity: trailerSize)
        trailer.writeInteger(crc, endianness: .little)
        return VectoredFrame(head: head, bulk: BorrowedBytes.wrap(bulk[...]), trailer: trailer)
    }
}
