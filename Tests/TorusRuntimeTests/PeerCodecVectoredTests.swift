import NIOCore
import NIOEmbedded
import Testing
import TorusCore
@testable import TorusRuntime

private func ref(_ n: UInt64) -> BlockRef {
    BlockRef(volume: 9, epoch: 2, sequence: 500 + n, index: n)
}

private func pattern(_ seed: UInt8, count: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ Int(seed)) }
}

/// The encoder lends big blocks to NIO (head, block, trailer: one writev) instead of copying
/// them: the bytes on the wire must be exactly those of `PeerCodec.encode`.
@Suite("PeerCodec vectored encoding")
struct PeerCodecVectoredTests {
    static let frames: [PeerFrame] = [
        .message(.putBlock(RPCID(1), ref(1), pattern(1, count: 64 << 10), durable: true)),
        .message(.putBlock(RPCID(2), ref(2), pattern(2, count: 16 << 10), durable: false, restore: true)),
        .message(.getReply(RPCID(3), .success(pattern(3, count: 64 << 10))), replyRef: ref(3)),
        .message(.putBlock(RPCID(4), ref(4), pattern(4, count: 4096), durable: true)),  // copied
        .message(.getReply(RPCID(5), .failure(.notFound(ref(5)))), replyRef: ref(5)),  // no bulk
    ]

    @Test("each frame leaves the encoder handler with the bytes encode writes, lent when big")
    func sameBytesAsEncode() throws {
        let channel = EmbeddedChannel(handler: PeerFrameEncoder())
        for frame in Self.frames {
            var expected = ByteBuffer()
            try PeerCodec.encode(frame, into: &expected)
            try channel.writeOutbound(frame)
            var got = ByteBuffer()
            var parts = 0
            while var part = try channel.readOutbound(as: ByteBuffer.self) {
                got.writeBuffer(&part)
                parts += 1
            }
            #expect(got == expected, "\(frame.type)")
            let lent = (PeerCodec.bulk(of: frame)?.count ?? 0) >= BorrowedBytes.minimumLent
            #expect(parts == (lent ? 3 : 1), "\(frame.type): \(parts) buffers")
        }
        #expect(try channel.finish().isClean)
    }

    @Test("the lent frames decode back to equal frames")
    func roundTrip() throws {
        let encoder = EmbeddedChannel(handler: PeerFrameEncoder())
        let decoder = EmbeddedChannel(handler: ByteToMessageHandler(PeerFrameDecoder()))
        for frame in Self.frames {
            try encoder.writeOutbound(frame)
            while let part = try encoder.readOutbound(as: ByteBuffer.self) { try decoder.writeInbound(part) }
            #expect(try decoder.readInbound(as: PeerFrame.self) == frame)
        }
        #expect(try encoder.finish().isClean)
        #expect(try decoder.finish().isClean)
    }
}
