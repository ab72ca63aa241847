import NIOCore
import Testing
@testable import TorusRuntime

private func block(_ count: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 8) }
}

/// NBD read replies lend slices of cached blocks to NIO (`BorrowedBytes`) instead of copying
/// them: the buffers must hold exactly the slice's bytes, keep them while the block is written
/// to, and give every slice back once NIO lets go of it.
@Suite("NBD replies lend cached blocks to NIO")
struct BorrowedBytesTests {
    @Test func lentBuffersShowTheSliceAndGiveItBack() throws {
        var cached = block(64 << 10)
        let range = 4096..<(4096 + 32 << 10)
        let expected = Array(cached[range])
        let address = cached[range].withUnsafeBytes { $0.baseAddress! }

        func lendTwiceThenWrite() -> (ByteBuffer, ByteBuffer) {
            let a = BorrowedBytes.wrap(cached[range])
            let b = BorrowedBytes.wrap(cached[range])  // one address lent twice
            #expect(a.withUnsafeReadableBytes { $0.baseAddress } == address, "lent, not copied")
            // A write to the cached block after lending copies the block first: the buffers
            // keep the bytes they were given.
            cached[range.lowerBound + 100] ^= 0xFF
            return (a, b)
        }
        do {
            let (a, b) = lendTwiceThenWrite()
            #expect(Array(a.readableBytesView) == expected)
            #expect(Array(b.readableBytesView) == expected)
            #expect(cached[range.lowerBound + 100] == expected[100] ^ 0xFF)
            #expect(BorrowedBytes.isLent(UnsafeMutableRawPointer(mutating: address)))
            withExtendedLifetime((a, b)) {}
        }
        #expect(!BorrowedBytes.isLent(UnsafeMutableRawPointer(mutating: address)), "both buffers gave the slice back")
    }

    @Test func growingALentBufferMovesItToMemoryOfItsOwn() throws {
        let cached = block(32 << 10)
        let address = cached.withUnsafeBytes { $0.baseAddress! }
        func lendAndGrow() -> ByteBuffer {
            var buffer = BorrowedBytes.wrap(cached[...])
            buffer.writeBytes([1, 2, 3])  // past the slice: NIO reallocates through the allocator
            #expect(buffer.withUnsafeReadableBytes { $0.baseAddress } != address)
            #expect(!BorrowedBytes.isLent(UnsafeMutableRawPointer(mutating: address)), "moved out, slice given back")
            return buffer
        }
        let grown = lendAndGrow()
        #expect(Array(grown.readableBytesView) == cached + [1, 2, 3])
        #expect(cached == block(32 << 10), "the lent array itself never changed")
    }
}
