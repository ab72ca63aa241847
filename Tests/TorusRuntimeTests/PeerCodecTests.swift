import NIOCore
import NIOEmbedded
import Testing
import TorusCore
@testable import TorusRuntime

private func ref(_ n: UInt64) -> BlockRef {
    BlockRef(volume: 7, epoch: 3, sequence: 1000 + n, index: n)
}

private func pattern(_ seed: UInt8, count: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
}

private let cluster = PeerClusterID(Array(1...16))!

/// Every frame type, and every reply status of PUT_REPLY and GET_REPLY.
private let sampleFrames: [PeerFrame] = [
    .hello(node: NodeID(3), cluster: cluster, maxVersion: 1),
    .helloAck(node: NodeID(0xFFFF_FFFF), version: 1),
    .message(.putBlock(RPCID(1), ref(1), pattern(1, count: 4096), durable: true)),
    .message(.putBlock(RPCID(2), ref(2), [], durable: false)),
    .message(.putBlock(RPCID(3), ref(3), pattern(3, count: 64), durable: true, restore: true)),
    .message(.putBlock(RPCID(5), ref(5), pattern(5, count: 64), durable: true, restore: false, copy: true)),
    .message(.putReply(RPCID(1), .success(())), replyRef: ref(1)),
    .message(.putReply(RPCID(3), .failure(.notFound(ref(3)))), replyRef: ref(3)),
    .message(.putReply(RPCID(4), .failure(.corrupt(ref(4)))), replyRef: ref(4)),
    .message(.putReply(RPCID(5), .failure(.noSpace)), replyRef: ref(5)),
    .message(.putReply(RPCID(6), .failure(.ioError)), replyRef: ref(6)),
    .message(.putReply(RPCID(7), .failure(.wrongSize(expected: 4096, got: 100))), replyRef: ref(7)),
    .message(.putReply(RPCID(15), .failure(.sealed(epoch: 0x0102_0304_0506_0708))), replyRef: ref(15)),
    .message(.getBlock(RPCID(.max), ref(8))),
    .message(.getRange(RPCID(20), ref(8), offset: 4096, length: 8192)),
    .message(.getRange(RPCID(21), ref(8), offset: 0xFFFF_FFFF, length: 0)),
    .message(.getReply(RPCID(8), .success(pattern(8, count: 4096))), replyRef: ref(8)),
    .message(.getReply(RPCID(9), .success([])), replyRef: ref(9)),
    .message(.getReply(RPCID(10), .failure(.notFound(ref(10)))), replyRef: ref(10)),
    .message(.getReply(RPCID(11), .failure(.corrupt(ref(11)))), replyRef: ref(11)),
    .message(.getReply(RPCID(12), .failure(.noSpace)), replyRef: ref(12)),
    .message(.getReply(RPCID(13), .failure(.ioError)), replyRef: ref(13)),
    .message(.getReply(RPCID(14), .failure(.wrongSize(expected: 1, got: 0xFFFF_FFFF))), replyRef: ref(14)),
    .message(.deleteBlocks([])),
    .message(.deleteBlocks([ref(15), ref(16), ref(17)])),
    .message(.syncBlocks(RPCID(15), [ref(18), ref(19)])),
    .message(.syncBlocks(RPCID(16), [])),
    .message(.syncReply(RPCID(15), present: [ref(18)])),
    .message(.listBlocks(RPCID(30), after: nil, limit: 4096)),
    .message(.listBlocks(RPCID(31), after: ref(20), limit: 1)),
    .message(.listReply(RPCID(30), refs: [ref(21), ref(22)], complete: false)),
    .message(.listReply(RPCID(31), refs: [], complete: true)),
]

private func encoded(_ frame: PeerFrame) throws -> ByteBuffer {
    var buffer = ByteBuffer()
    try PeerCodec.encode(frame, into: &buffer)
    return buffer
}

private func encodedAll(_ frames: [PeerFrame]) throws -> ByteBuffer {
    var buffer = ByteBuffer()
    for frame in frames { try PeerCodec.encode(frame, into: &buffer) }
    return buffer
}

private func decoderChannel() -> EmbeddedChannel {
    EmbeddedChannel(handler: ByteToMessageHandler(PeerFrameDecoder()))
}

private func readAll(_ channel: EmbeddedChannel) throws -> [PeerFrame] {
    var frames: [PeerFrame] = []
    while let frame = try channel.readInbound(as: PeerFrame.self) { frames.append(frame) }
    return frames
}

/// A frame with valid CRCs built field by field, for frames the encoder would never produce.
private func rawFrame(
    magic: UInt32 = PeerCodec.magic, version: UInt8 = PeerCodec.version, type: UInt8, flags: UInt16 = 0,
    id: UInt64 = 0, payload: [UInt8], declaredLength: UInt32? = nil
) -> ByteBuffer {
    var b = ByteBuffer()
    b.writeInteger(magic, endianness: .little)
    b.writeInteger(version)
    b.writeInteger(type)
    b.writeInteger(flags, endianness: .little)
    b.writeInteger(declaredLength ?? UInt32(payload.count), endianness: .little)
    b.writeInteger(id, endianness: .little)
    b.writeInteger(CRC32C.checksum(b.getBytes(at: 0, length: 20)!), endianness: .little)
    b.writeBytes(payload)
    b.writeInteger(CRC32C.checksum(payload), endianness: .little)
    return b
}

private func refBytes(_ r: BlockRef) -> [UInt8] {
    var b = ByteBuffer()
    for v in [r.volume, r.epoch, r.sequence, r.index] { b.writeInteger(v, endianness: .little) }
    return b.readBytes(length: 32)!
}

private func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

/// Feeds `bytes` to a fresh decoder channel and returns the error it reports.
private func rejection(_ bytes: ByteBuffer) -> PeerProtocolError? {
    let channel = decoderChannel()
    defer { _ = try? channel.finish() }
    let error = #expect(throws: PeerProtocolError.self) { try channel.writeInbound(bytes) }
    return error
}

@Suite("PeerCodec")
struct PeerCodecTests {
    @Test("CRC-32C sanity: \"123456789\" is 0xE3069283")
    func crcSanity() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }

    @Test("golden bytes of a GET_BLOCK frame")
    func goldenGetBlock() throws {
        let frame = PeerFrame.message(.getBlock(RPCID(0x0102_0304_0506_0708), BlockRef(volume: 1, epoch: 2, sequence: 3, index: 4)))
        let bytes = try encoded(frame).readableBytesView.map { $0 }
        // Computed independently (bitwise CRC-32C in Python).
        let golden: [UInt8] = [
            0x54, 0x52, 0x53, 0x50, 0x03, 0x05, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00,
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x05, 0x8C, 0x35, 0xE5,
            0x01, 0, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0,
            0x03, 0, 0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0, 0, 0, 0, 0,
            0x12, 0xF7, 0xA1, 0xF4,
        ]
        #expect(bytes == golden)
        #expect(bytes.count == PeerCodec.headerSize + 32 + PeerCodec.trailerSize)
        #expect(Array(bytes[0..<4]) == Array("TRSP".utf8))  // magic 0x50535254, little-endian
        #expect(bytes[4] == 3)  // version
        #expect(bytes[5] == PeerFrameType.getBlock.rawValue)
        #expect(bytes[6] == 0 && bytes[7] == 0)  // flags
        #expect(Array(bytes[8..<12]) == le32(32))  // payload length
        #expect(Array(bytes[12..<20]) == [8, 7, 6, 5, 4, 3, 2, 1])  // request id
        #expect(Array(bytes[20..<24]) == le32(CRC32C.checksum(Array(bytes[0..<20]))))
        #expect(Array(bytes[56..<60]) == le32(CRC32C.checksum(Array(bytes[24..<56]))))
    }

    @Test("reply payloads: status, ref, and for wrong size expected and got")
    func replyLayout() throws {
        let r = ref(5)
        let wrong = try encoded(.message(.getReply(RPCID(9), .failure(.wrongSize(expected: 4096, got: 12))), replyRef: r))
        let w = wrong.readableBytesView.map { $0 }
        #expect(Array(w[8..<12]) == le32(41))
        #expect(w[24] == 5)
        #expect(Array(w[25..<57]) == refBytes(r))
        #expect(Array(w[57..<61]) == le32(4096))
        #expect(Array(w[61..<65]) == le32(12))

        let ok = try encoded(.message(.getReply(RPCID(9), .success([0xAA, 0xBB])), replyRef: r)).readableBytesView.map { $0 }
        #expect(Array(ok[8..<12]) == le32(35))
        #expect(ok[24] == 0 && Array(ok[25..<57]) == refBytes(r) && Array(ok[57..<59]) == [0xAA, 0xBB])

        let codes: [(StoreError, UInt8)] = [(.notFound(r), 1), (.corrupt(r), 2), (.noSpace, 3), (.ioError, 4)]
        for (error, code) in codes {
            let p = try encoded(.message(.putReply(RPCID(1), .failure(error)), replyRef: r)).readableBytesView.map { $0 }
            #expect(Array(p[8..<12]) == le32(33))
            #expect(p[24] == code && Array(p[25..<57]) == refBytes(r))
        }
        let d = try encoded(.message(.deleteBlocks([r]), replyRef: nil)).readableBytesView.map { $0 }
        #expect(Array(d[12..<20]) == [UInt8](repeating: 0, count: 8))  // one-way: request id 0
        #expect(Array(d[24..<28]) == le32(1) && Array(d[28..<60]) == refBytes(r))
    }

    @Test("every frame type and reply status round-trips through the encoder and decoder handlers")
    func roundTrip() throws {
        let encoder = EmbeddedChannel(handler: PeerFrameEncoder())
        let decoder = decoderChannel()
        for frame in sampleFrames {
            try encoder.writeOutbound(frame)
            let bytes = try #require(try encoder.readOutbound(as: ByteBuffer.self))
            #expect(bytes == (try encoded(frame)))
            #expect(bytes.readableBytes == (try PeerCodec.encodedSize(of: frame)))
            #expect(bytes.getInteger(at: 5, as: UInt8.self) == frame.type.rawValue)
            #expect(bytes.getInteger(at: 12, endianness: .little, as: UInt64.self) == frame.requestID.raw)
            try decoder.writeInbound(bytes)
            #expect(try readAll(decoder) == [frame])
        }
        #expect(try encoder.finish().isClean)
        #expect(try decoder.finish().isClean)
    }

    @Test("an error that names its ref needs no replyRef; the decoder fills it in")
    func refFromError() throws {
        let message = PeerMessage.getReply(RPCID(4), .failure(.corrupt(ref(4))))
        var buffer = try encoded(.message(message))
        #expect(try PeerCodec.decode(from: &buffer) == .message(message, replyRef: ref(4)))
        #expect(buffer.readableBytes == 0)
    }

    @Test("replies without their ref, with a conflicting ref, and refs on other messages are not encoded")
    func unencodable() throws {
        let refused: [PeerFrame] = [
            .message(.putReply(RPCID(1), .success(()))),
            .message(.getReply(RPCID(1), .success([1]))),
            .message(.getReply(RPCID(1), .failure(.noSpace))),
            .message(.putReply(RPCID(1), .failure(.wrongSize(expected: 1, got: 2)))),
            .message(.putReply(RPCID(1), .failure(.notFound(ref(1)))), replyRef: ref(2)),
            .message(.getBlock(RPCID(1), ref(1)), replyRef: ref(1)),
        ]
        for frame in refused {
            var buffer = ByteBuffer()
            let error = #expect(throws: PeerProtocolError.self) { try PeerCodec.encode(frame, into: &buffer) }
            guard case .unencodable(let type, _)? = error else { Issue.record("\(String(describing: error))"); continue }
            #expect(type == frame.type)
            #expect(buffer.readableBytes == 0)
        }
        let channel = EmbeddedChannel(handler: PeerFrameEncoder())
        #expect(throws: PeerProtocolError.self) { try channel.writeOutbound(refused[0]) }
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        _ = try? channel.finish()
    }

    @Test("a payload over the limit is not encoded")
    func encodeOverLimit() {
        let big = PeerFrame.message(.putBlock(RPCID(1), ref(1), [UInt8](repeating: 0, count: PeerCodec.maxPayloadLength - 32), durable: false))
        var buffer = ByteBuffer()
        #expect(throws: PeerProtocolError.payloadTooLarge(length: PeerCodec.maxPayloadLength + 1)) {
            try PeerCodec.encode(big, into: &buffer)
        }
        #expect(buffer.readableBytes == 0)
    }

    @Test("input fed one byte at a time yields each frame exactly when its last byte arrives")
    func byteByByte() throws {
        let channel = decoderChannel()
        var ends: Set<Int> = []
        var offset = 0
        for frame in sampleFrames {
            offset += try PeerCodec.encodedSize(of: frame)
            ends.insert(offset)
        }
        let all = try encodedAll(sampleFrames)
        var decoded: [PeerFrame] = []
        for i in 0..<all.readableBytes {
            try channel.writeInbound(all.getSlice(at: i, length: 1)!)
            let got = try readAll(channel)
            #expect(got.count == (ends.contains(i + 1) ? 1 : 0), "after byte \(i + 1)")
            decoded += got
        }
        #expect(decoded == sampleFrames)
        #expect(try channel.finish().isClean)
    }

    @Test("many frames in one buffer, and the sans-I/O decoder consumes nothing of a partial frame")
    func manyFramesInOneBuffer() throws {
        let channel = decoderChannel()
        try channel.writeInbound(try encodedAll(sampleFrames + sampleFrames))
        #expect(try readAll(channel) == sampleFrames + sampleFrames)
        #expect(try channel.finish().isClean)

        let whole = try encodedAll(Array(sampleFrames.prefix(3)))
        var partial = whole.getSlice(at: 0, length: whole.readableBytes - 1)!
        #expect(try PeerCodec.decode(from: &partial) == sampleFrames[0])
        #expect(try PeerCodec.decode(from: &partial) == sampleFrames[1])
        let before = partial.readerIndex
        #expect(try PeerCodec.decode(from: &partial) == nil)
        #expect(partial.readerIndex == before)
    }

    @Test("a 64 MiB block arriving in 64 KiB pieces")
    func largestBlock() throws {
        var block = [UInt8](repeating: 0x5A, count: 64 << 20)
        block[0] = 1; block[block.count / 2] = 2; block[block.count - 1] = 3
        let frame = PeerFrame.message(.putBlock(RPCID(77), ref(77), block, durable: true))
        let bytes = try encoded(frame)
        let channel = decoderChannel()
        var offset = 0
        while offset < bytes.readableBytes {
            let n = min(64 << 10, bytes.readableBytes - offset)
            try channel.writeInbound(bytes.getSlice(at: offset, length: n)!)
            offset += n
        }
        let frames = try readAll(channel)
        #expect(frames.count == 1)
        // Compared without printing 64 MiB on failure.
        let same = frames.first == frame
        #expect(same, "the decoded 64 MiB PUT_BLOCK differs from the one sent")
        #expect(try channel.finish().isClean)
    }

    @Test("bad magic is refused as soon as its 4 bytes arrive")
    func badMagic() throws {
        let good = try encoded(sampleFrames[2])
        var bad = good
        bad.setInteger(UInt8(0x55), at: 0)
        #expect(rejection(bad) == .badMagic(0x5053_5255))
        #expect(rejection(bad.getSlice(at: 0, length: 4)!) == .badMagic(0x5053_5255))
        #expect(rejection(rawFrame(magic: 0x5452_5350, type: 5, payload: refBytes(ref(1)))) == .badMagic(0x5452_5350))
    }

    @Test("versions 1 (before the commit log), 2 (seals for records only) and 4 are refused")
    func badVersion() throws {
        for v: UInt8 in [1, 2, 4] {
            let frame = rawFrame(version: v, type: 5, payload: refBytes(ref(1)))
            #expect(rejection(frame) == .unsupportedVersion(v))
            #expect(rejection(frame.getSlice(at: 0, length: 5)!) == .unsupportedVersion(v))
        }
    }

    @Test("nonzero flags are refused")
    func flags() {
        #expect(rejection(rawFrame(type: 5, flags: 1, payload: refBytes(ref(1)))) == .unknownFlags(1))
        #expect(rejection(rawFrame(type: 5, flags: 0x8000, payload: refBytes(ref(1)))) == .unknownFlags(0x8000))
    }

    @Test("a corrupted header byte fails the header CRC, whichever byte it is")
    func headerCRC() throws {
        let good = try encoded(sampleFrames[10])
        for index in 5..<24 {
            var bad = good
            bad.setInteger(good.getInteger(at: index, as: UInt8.self)! ^ 0x10, at: index)
            guard case .headerChecksumMismatch? = rejection(bad) else {
                Issue.record("byte \(index): expected a header CRC mismatch"); continue
            }
        }
    }

    @Test("a corrupted payload or trailer byte fails the payload CRC")
    func payloadCRC() throws {
        let good = try encoded(.message(.putBlock(RPCID(1), ref(1), pattern(1, count: 64), durable: true)))
        for index in [24, 24 + 33, good.readableBytes - 5, good.readableBytes - 1] {
            var bad = good
            bad.setInteger(good.getInteger(at: index, as: UInt8.self)! ^ 0x01, at: index)
            guard case .payloadChecksumMismatch? = rejection(bad) else {
                Issue.record("byte \(index): expected a payload CRC mismatch"); continue
            }
        }
    }

    @Test("a declared length over the limit is refused from the header alone")
    func lengthOverLimit() throws {
        let limit = PeerCodec.maxPayloadLength
        let over = rawFrame(type: 3, payload: [], declaredLength: UInt32(limit + 1)).getSlice(at: 0, length: 24)!
        #expect(rejection(over) == .payloadTooLarge(length: limit + 1))
        let huge = rawFrame(type: 3, payload: [], declaredLength: .max).getSlice(at: 0, length: 24)!
        #expect(rejection(huge) == .payloadTooLarge(length: Int(UInt32.max)))

        // Exactly the limit is legal: the decoder waits for the payload.
        let channel = decoderChannel()
        try channel.writeInbound(rawFrame(type: 3, payload: [], declaredLength: UInt32(limit)).getSlice(at: 0, length: 24)!)
        #expect(try channel.readInbound(as: PeerFrame.self) == nil)
        _ = try? channel.finish()
    }

    @Test("unknown types are refused")
    func unknownType() {
        #expect(rejection(rawFrame(type: 0, payload: [])) == .unknownType(0))
        #expect(rejection(rawFrame(type: 13, payload: [])) == .unknownType(13))
        #expect(rejection(rawFrame(type: 255, payload: [1, 2, 3])) == .unknownType(255))
    }

    @Test("payloads of the wrong size or layout for their type are refused")
    func malformed() {
        let r = refBytes(ref(1))
        let cases: [(UInt8, [UInt8], PeerFrameType)] = [
            (5, Array(r.dropLast()), .getBlock),  // GET_BLOCK, 31 bytes
            (5, r + [0], .getBlock),  // GET_BLOCK, 33 bytes
            (1, le32(1) + [UInt8](repeating: 0, count: 16), .hello),  // no max version
            (2, le32(1) + [1, 0], .helloAck),
            (3, r, .putBlock),  // no flags byte
            (3, r + [8, 9], .putBlock),  // unknown flag bit
            (4, [0] + r + [0], .putReply),  // trailing byte
            (4, [6] + r, .putReply),  // unknown status
            (4, [5] + r + le32(1), .putReply),  // wrong size without "got"
            (4, [1], .putReply),  // no ref
            (6, [2] + r + [0], .getReply),  // error with bytes
            (6, [], .getReply),
            (7, le32(2) + r, .deleteBlocks),  // count says 2, one ref follows
            (8, le32(0) + r, .syncBlocks),  // count says 0, one ref follows
            (8, [0, 0], .syncBlocks),  // no count
            (9, le32(1) + Array(r.dropLast()), .syncReply),
            (9, le32(.max), .syncReply),
            (11, [2] + r + le32(1), .listBlocks),  // after flag neither 0 nor 1
            (11, [0] + r + le32(0), .listBlocks),  // limit 0
            (11, [0] + r, .listBlocks),  // no limit
            (12, [2] + le32(0), .listReply),  // complete neither 0 nor 1
            (12, [1] + le32(1), .listReply),  // count says 1, no ref follows
        ]
        for (type, payload, expected) in cases {
            let error = rejection(rawFrame(type: type, id: 1, payload: payload))
            guard case .malformedPayload(let t, _)? = error, t == expected else {
                Issue.record("type \(type) payload \(payload.count) bytes: \(String(describing: error))"); continue
            }
        }
    }

    @Test("after a refused frame the decoder delivers nothing more")
    func nothingAfterError() throws {
        let channel = decoderChannel()
        defer { _ = try? channel.finish() }
        var bytes = rawFrame(type: 5, flags: 2, payload: refBytes(ref(1)))
        bytes.writeImmutableBuffer(try encoded(sampleFrames[0]))
        #expect(throws: PeerProtocolError.unknownFlags(2)) { try channel.writeInbound(bytes) }
        _ = try? channel.writeInbound(try encoded(sampleFrames[1]))
        #expect(try readAll(channel).isEmpty)
    }
}
