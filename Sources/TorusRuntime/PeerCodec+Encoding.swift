import NIOCore
import TorusCore

// Encoding: the payload of every frame type (docs/peer-protocol.md); `PeerCodec.encode` writes
// the header and the CRCs around it.

/// Reply status byte of PUT_REPLY and GET_REPLY.
enum ReplyStatus: UInt8 {
    case ok = 0, notFound, corrupt, noSpace, ioError, wrongSize
    /// A put from an epoch below the node's seal for its volume; the seal's epoch follows.
    case sealed
}

extension PeerCodec {
    private static let statusAndRef = 1 + BlockRef.encodedSize
    private static let wrongSizeFields = 8

    static func payloadLength(of frame: PeerFrame) throws(PeerProtocolError) -> Int {
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
        case .putBlock(_, _, let bytes, _, _, _):
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
        if case .sealed = error { return statusAndRef + 8 }
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

    static func writePayload(_ frame: PeerFrame, into b: inout ByteBuffer) throws(PeerProtocolError) {
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
        case let .putBlock(_, ref, bytes, durable, restore, copy):
            writeRef(ref, into: &b)
            b.writeInteger(UInt8(durable ? 1 : 0) | UInt8(restore ? 2 : 0) | UInt8(copy ? 4 : 0))
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
        if case let .sealed(epoch) = error { b.writeInteger(epoch, endianness: .little) }
    }

    private static func status(of error: StoreError?) -> ReplyStatus {
        switch error {
        case nil: .ok
        case .notFound: .notFound
        case .corrupt: .corrupt
        case .noSpace: .noSpace
        case .ioError: .ioError
        case .wrongSize: .wrongSize
        case .sealed: .sealed
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
