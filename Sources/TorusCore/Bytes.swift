/// Little-endian encoding helpers for on-disk and on-wire formats.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8]
    public init(capacity: Int = 64) { bytes = []; bytes.reserveCapacity(capacity) }
    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { for i in 0..<2 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    public mutating func u32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
    public mutating func u64(_ v: UInt64) { for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
    public mutating func raw(_ b: some Collection<UInt8>) { bytes.append(contentsOf: b) }
    /// Appends zero bytes up to `count` total length.
    public mutating func pad(to count: Int) {
        if bytes.count < count { bytes += [UInt8](repeating: 0, count: count - bytes.count) }
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
        var v: UInt64 = 0
        for i in 0..<n { v |= UInt64(bytes[position + i]) << (8 * UInt64(i)) }
        position += n
        return v
    }
}
