/// Little-endian encoding helpers for on-disk and on-wire formats.
///
/// Writes go by pointer into a buffer that grows by doubling: journal sectors and map pages
/// are encoded on every put and commit (cost: docs/storage-core.md, "Cost notes").
public struct ByteWriter: Sendable {
    /// The first `count` bytes are written; the rest is zeros until written or padded.
    private var storage: [UInt8]
    public private(set) var count = 0

    public init(capacity: Int = 64) {
        // Zero-filled, not left uninitialized: a copy of the writer copies the whole buffer,
        // and Swift does not allow reading bytes that were never initialized.
        storage = [UInt8](repeating: 0, count: max(capacity, 8))
    }

    /// The bytes written (the buffer is trimmed to them, without copying, on first access).
    public var bytes: [UInt8] {
        mutating get {
            if storage.count > count { storage.removeLast(storage.count - count) }
            return storage
        }
    }

    @inline(__always) private mutating func reserve(_ n: Int) {
        if count + n > storage.count {
            storage.append(contentsOf: repeatElement(0, count: max(storage.count, count + n - storage.count)))
        }
    }

    @inline(__always) private mutating func put<T: FixedWidthInteger>(_ v: T) {
        let n = MemoryLayout<T>.size
        reserve(n)
        let at = count
        storage.withUnsafeMutableBytes { $0.storeBytes(of: v.littleEndian, toByteOffset: at, as: T.self) }
        count += n
    }

    public mutating func u8(_ v: UInt8) { put(v) }
    public mutating func u16(_ v: UInt16) { put(v) }
    public mutating func u32(_ v: UInt32) { put(v) }
    public mutating func u64(_ v: UInt64) { put(v) }

    /// Appends `n` bytes that `body` stores through one raw buffer (one uniqueness check for
    /// many fields). The bytes arrive zeroed: `body` stores only the non-zero ones.
    public mutating func append(_ n: Int, _ body: (UnsafeMutableRawBufferPointer) -> Void) {
        reserve(n)
        let at = count
        storage.withUnsafeMutableBytes { body(UnsafeMutableRawBufferPointer(rebasing: $0[at..<(at + n)])) }
        count += n
    }

    public mutating func raw(_ b: some Collection<UInt8>) {
        let n = b.count
        reserve(n)
        let at = count
        storage.withUnsafeMutableBufferPointer { dst in
            let target = UnsafeMutableBufferPointer(rebasing: dst[at..<(at + n)])
            let copied: Void? = b.withContiguousStorageIfAvailable { src in
                if n > 0 { target.baseAddress!.update(from: src.baseAddress!, count: n) }
            }
            if copied == nil { _ = target.initialize(from: b) }
        }
        count += n
    }

    /// Appends zero bytes up to `count` total length. Nothing to write: every byte past
    /// `count` is already zero (the buffer grows with zeros, and `bytes` trims it to `count`).
    public mutating func pad(to total: Int) {
        guard total > count else { return }
        reserve(total - count)
        #if DEBUG
        let at = count
        precondition(storage[at..<total].allSatisfy { $0 == 0 }, "ByteWriter: bytes past the written ones are not zero")
        #endif
        count = total
    }

    /// Overwrites four bytes already written (a checksum computed over what follows it).
    public mutating func patch(u32 v: UInt32, at offset: Int) {
        precondition(offset >= 0 && offset + 4 <= count, "patch past the end")
        storage.withUnsafeMutableBytes { $0.storeBytes(of: v.littleEndian, toByteOffset: offset, as: UInt32.self) }
    }

    /// The bytes in `range` of what is written so far (no copy).
    public func written(_ range: Range<Int>) -> ArraySlice<UInt8> {
        precondition(range.upperBound <= count, "slice past the end")
        return storage[range]
    }
}

/// Bounds-checked little-endian reader; every read returns nil past the end instead of trapping,
/// so corrupt input becomes an error, never a crash.
public struct ByteReader: Sendable {
    public let bytes: ArraySlice<UInt8>
    public private(set) var position: Int
    public init(_ bytes: [UInt8]) { self.bytes = bytes[...]; position = bytes.startIndex }
    public init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes; position = bytes.startIndex }
    public var remaining: Int { bytes.endIndex - position }
    public mutating func u8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { position += 1 }
        return bytes[position]
    }
    public mutating func u16() -> UInt16? { uint(2).map { UInt16(truncatingIfNeeded: $0) } }
    public mutating func u32() -> UInt32? { uint(4).map { UInt32(truncatingIfNeeded: $0) } }
    public mutating func u64() -> UInt64? { uint(8) }
    public mutating func raw(_ n: Int) -> ArraySlice<UInt8>? {
        guard n >= 0, remaining >= n else { return nil }
        defer { position += n }
        return bytes[position..<(position + n)]
    }
    private mutating func uint(_ n: Int) -> UInt64? {
        guard remaining >= n else { return nil }
        let offset = position - bytes.startIndex
        let v: UInt64 = bytes.withUnsafeBytes { b in
            switch n {
            case 8: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            case 4: UInt64(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            case 2: UInt64(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
            default: preconditionFailure("ByteReader reads 2, 4 or 8 bytes at a time, not \(n)")
            }
        }
        position += n
        return v
    }
}
