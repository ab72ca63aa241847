import NIOCore
import TorusCore

// Decoding: the payload of every frame type, once `PeerCodec.decode` has checked the header
// and both CRCs.

extension PeerCodec {
    /// Request ids of HELLO, HELLO_ACK and DELETE_BLOCKS are ignored (sent as 0).
    static func decodePayload(_ h: PeerFrameHeader, _ r: inout PayloadReader) throws(PeerProtocolError) -> PeerFrame {
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
            guard flags <= 7 else { throw r.malformed("put flags byte is \(flags), not 0-7") }
            frame = .message(.putBlock(id, ref, r.rest(), durable: flags & 1 != 0, restore: flags & 2 != 0, copy: flags & 4 != 0))
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
struct PayloadReader {
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

    mutating func u64() throws(PeerProtocolError) -> UInt64 {
        guard let v = buffer.readInteger(endianness: .little, as: UInt64.self) else { throw truncated(8) }
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

    /// status u8, ref, and for `wrongSize` expected u32 + got u32, for `sealed` the epoch u64.
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
        case .sealed: return (ref, .sealed(epoch: try u64()))
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
