@_spi(CustomByteBufferAllocator) import NIOCore
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Byte buffers that lend NIO the memory of an array slice instead of copying it (why:
/// docs/runtime.md, "What runs where").
///
/// `wrap` hands NIO the slice's own memory through NIOCore's SPI
/// `ByteBuffer(takingOwnershipOf:allocator:)` (its allocator functions are C function pointers,
/// hence the global table): `lent` keeps the slice, and so its array's storage, alive until NIO
/// frees the buffer. The bytes cannot change meanwhile: while `lent` holds the storage, a write
/// to the array copies it first, and nobody writes to these buffers (they only go to
/// `Channel.write`). Should NIO ever grow or copy one, the allocator moves the bytes to
/// `malloc`ed memory and returns the slice.
enum BorrowedBytes {
    /// Slices lent out, by the address NIO was given, with how many buffers share that address
    /// (two reads of one cached block lend the same address twice).
    private static let lent = NIOLockedValueBox<[UInt: (slice: ArraySlice<UInt8>, buffers: Int)]>([:])

    static let allocator = ByteBufferAllocator(
        allocate: { malloc($0) },
        reallocate: { pointer, oldSize, newSize in
            guard let pointer, BorrowedBytes.isLent(pointer) else { return realloc(pointer, newSize) }
            let moved = malloc(newSize)!
            moved.copyMemory(from: pointer, byteCount: Int(min(oldSize, newSize)))
            BorrowedBytes.giveBack(pointer)
            return moved
        },
        deallocate: { pointer in BorrowedBytes.giveBack(pointer) },
        copy: { destination, source, count in destination.copyMemory(from: source, byteCount: Int(count)) }
    )

    /// Parts at least this long are lent; shorter ones are cheaper to copy than to track.
    static let minimumLent = 16 << 10

    /// A buffer whose readable bytes are `slice`'s memory (not a copy).
    static func wrap(_ slice: ArraySlice<UInt8>) -> ByteBuffer {
        precondition(!slice.isEmpty && slice.count <= Int(UInt32.max), "only non-empty slices under 4 GiB are lent")
        // The address stays valid after the closure: the table keeps the storage alive and
        // nothing writes to it in place while it is shared (see above).
        let base = slice.withUnsafeBytes { UnsafeMutableRawPointer(mutating: $0.baseAddress!) }
        let key = UInt(bitPattern: base)
        lent.withLockedValue { table in
            if let entry = table[key] {
                table[key] = (entry.slice, entry.buffers + 1)
            } else {
                table[key] = (slice, 1)
            }
        }
        return ByteBuffer(takingOwnershipOf: UnsafeMutableRawBufferPointer(start: base, count: slice.count),
                          allocator: allocator)
    }

    /// How many distinct addresses are lent out now (tests: everything is given back).
    static var outstanding: Int { lent.withLockedValue { $0.count } }

    static func isLent(_ pointer: UnsafeMutableRawPointer) -> Bool {
        lent.withLockedValue { $0[UInt(bitPattern: pointer)] != nil }
    }

    /// NIO is done with a buffer at `pointer`: drop one share of the slice, or free memory
    /// that this allocator `malloc`ed itself.
    private static func giveBack(_ pointer: UnsafeMutableRawPointer) {
        let key = UInt(bitPattern: pointer)
        let wasLent = lent.withLockedValue { table -> Bool in
            guard let entry = table[key] else { return false }
            table[key] = entry.buffers == 1 ? nil : (entry.slice, entry.buffers - 1)
            return true
        }
        if !wasLent { free(pointer) }
    }
}
