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

/// `PeerFrameReader` (the pipelines' decoder) against `PeerCodec.encode`: frames cut at every
/// byte, many in one read, big blocks in odd pieces, and nothing after a refused frame.
@Suite("PeerCodec frame reader")
struct PeerCodecFrameReaderTests {
    static let frames: [PeerFrame] = PeerCodecVectoredTests.frames + [
        .hello(node: NodeID(3), cluster: PeerClusterID(Array(1...16))!, maxVersion: 1),
        .message(.getRange(RPCID(20), ref(8), offset: 4096, length: 8192)),
        .message(.putReply(RPCID(7), .failure(.wrongSize(expected: 4096, got: 100))), replyRef: ref(7)),
        .message(.deleteBlocks([ref(15), ref(16), ref(17)])),
    ]

    private func bytes(_ frames: [PeerFrame]) throws -> ByteBuffer {
        var buffer = ByteBuffer()
        for frame in frames { try PeerCodec.encode(frame, into: &buffer) }
        return buffer
    }

    private func feed(_ all: ByteBuffer, cuts: [Int]) throws -> [PeerFrame] {
        let channel = EmbeddedChannel(handler: PeerFrameReader())
        var decoded: [PeerFrame] = []
        var at = 0
        for cut in cuts + [all.readableBytes] where cut > at {
            try channel.writeInbound(all.getSlice(at: at, length: cut - at)!)
            while let frame = try channel.readInbound(as: PeerFrame.self) { decoded.append(frame) }
            at = cut
        }
        #expect(try channel.finish().isClean)
        return decoded
    }

    @Test("every cut position of a small sequence, and all in one read")
    func everyCut() throws {
        let small = [Self.frames[4]] + Array(Self.frames.suffix(4))
        let all = try bytes(small)
        #expect(try feed(all, cuts: []) == small)
        #expect(try feed(all, cuts: Array(1..<all.readableBytes)) == small, "one byte at a time")
        for cut in 1..<all.readableBytes {
            #expect(try feed(all, cuts: [cut]) == small, "cut at \(cut)")
        }
    }

    @Test("big frames in reads of odd sizes")
    func oddReads() throws {
        let all = try bytes(Self.frames + Self.frames)
        for step in [7, 4093, 24, 65_536 + 37, 300_001] {
            let cuts = Array(stride(from: step, to: all.readableBytes, by: step))
            #expect(try feed(all, cuts: cuts) == Self.frames + Self.frames, "reads of \(step) bytes")
        }
    }

    @Test("a refused frame goes to errorCaught, and nothing is delivered after it")
    func refused() throws {
        let channel = EmbeddedChannel(handler: PeerFrameReader())
        var good = try bytes([Self.frames[5]])
        var bad = try bytes([Self.frames[6]])
        bad.setInteger(UInt8(0x55), at: 0)
        try channel.writeInbound(good.readSlice(length: 10)!)
        try channel.writeInbound(good)
        #expect(try channel.readInbound(as: PeerFrame.self) == Self.frames[5])
        #expect(throws: PeerProtocolError.badMagic(0x5053_5255)) { try channel.writeInbound(bad.getSlice(at: 0, length: 4)!) }
        try channel.writeInbound(try bytes([Self.frames[5]]))
        #expect(try channel.readInbound(as: PeerFrame.self) == nil)
        _ = try? channel.finish()
    }
}
