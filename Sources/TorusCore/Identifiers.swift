/// A key that hashes as one machine word, mixed with a multiply-xorshift finalizer instead of
/// SipHash.
///
/// The core's hot maps are keyed by counters and block refs it makes itself (not by input an
/// attacker picks), so SipHash buys nothing there (cost: docs/storage-core.md, "Cost notes").
/// `_rawHashValue(seed:)` is the standard library's own customization point for exactly this
/// (the integer types implement it); dictionaries and sets still seed it per instance, so
/// iteration order stays as arbitrary as before and nothing may depend on it. (The hook is
/// underscored: should a Swift release drop it, deleting `_rawHashValue` below falls back to
/// SipHash over `hashWord`, with no other change.)
public protocol WordHashable: Hashable {
    /// All of the key's identity in one word (equal keys give equal words).
    var hashWord: UInt64 { get }
}

extension WordHashable {
    @inlinable public func hash(into hasher: inout Hasher) { hasher.combine(hashWord) }
    @inlinable public func _rawHashValue(seed: Int) -> Int {
        // SplitMix64's finalizer over the word and the table's seed.
        var z = hashWord ^ (UInt64(bitPattern: Int64(seed)) &* 0x9E37_79B9_7F4A_7C15)
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Int(truncatingIfNeeded: z ^ (z >> 31))
    }
}

/// A storage node's identity in the cluster (stable across restarts).
public struct NodeID: WordHashable, Comparable, Sendable, CustomStringConvertible {
    public var raw: UInt32
    public init(_ raw: UInt32) { self.raw = raw }
    public static func < (a: NodeID, b: NodeID) -> Bool { a.raw < b.raw }
    public var description: String { "n\(raw)" }
    public var hashWord: UInt64 { UInt64(raw) }
}

/// Names exactly one immutable block content forever.
///
/// `epoch` is the writer epoch that produced it and `sequence` is unique per (volume, epoch),
/// so two different contents can never share a ref: a node either holds a ref with the right
/// bytes (checksum-verified) or does not hold it. `index` is the block's position in the volume,
/// or `BlockRef.mapIndexBase + n` for map page `n` and `BlockRef.rootIndex` for the map root.
/// Log records and segment headers have `logIndex` (sequence = log position), seals `sealIndex`.
public struct BlockRef: WordHashable, Comparable, Sendable, CustomStringConvertible {
    public var volume: UInt64
    public var epoch: UInt64
    public var sequence: UInt64
    public var index: UInt64

    public static let encodedSize = 32
    public static let rootIndex: UInt64 = .max
    public static let mapIndexBase: UInt64 = 1 << 62
    /// A commit-log record or segment header: (volume, segment epoch, position, logIndex).
    public static let logIndex: UInt64 = .max - 1
    /// A seal: (volume, sealing epoch, 0, sealIndex). Its node refuses older epochs' records.
    public static let sealIndex: UInt64 = .max - 2

    /// Log records, headers and seals: blocks of the commit log, not of the map.
    public var isLogBlock: Bool { index == Self.logIndex || index == Self.sealIndex }

    public init(volume: UInt64, epoch: UInt64, sequence: UInt64, index: UInt64) {
        self.volume = volume
        self.epoch = epoch
        self.sequence = sequence
        self.index = index
    }

    public static func < (a: BlockRef, b: BlockRef) -> Bool {
        (a.volume, a.epoch, a.sequence, a.index) < (b.volume, b.epoch, b.sequence, b.index)
    }

    public var description: String { "v\(volume)/e\(epoch)/s\(sequence)/i\(index)" }

    /// One word for four: refs are hashed on every store and cache lookup. Equality still
    /// compares all fields.
    public var hashWord: UInt64 {
        sequence &* 0x9E37_79B9_7F4A_7C15 ^ index &* 0xC2B2_AE3D_27D4_EB4F ^ epoch << 40 ^ volume << 52
    }

    /// A stable 64-bit key for placement hashing.
    public var placementKey: UInt64 {
        StableHasher.mix(StableHasher.mix(volume, epoch), StableHasher.mix(sequence, index))
    }

    public func encode(into w: inout ByteWriter) {
        w.append(Self.encodedSize) { store(into: $0, at: 0) }
    }

    /// Stores the `encodedSize` bytes of `encode(into:)` at `offset` of `p`.
    @inline(__always) func store(into p: UnsafeMutableRawBufferPointer, at offset: Int) {
        p.storeBytes(of: volume.littleEndian, toByteOffset: offset, as: UInt64.self)
        p.storeBytes(of: epoch.littleEndian, toByteOffset: offset + 8, as: UInt64.self)
        p.storeBytes(of: sequence.littleEndian, toByteOffset: offset + 16, as: UInt64.self)
        p.storeBytes(of: index.littleEndian, toByteOffset: offset + 24, as: UInt64.self)
    }

    public static func decode(from r: inout ByteReader) -> BlockRef? {
        guard let v = r.u64(), let e = r.u64(), let s = r.u64(), let i = r.u64() else { return nil }
        return BlockRef(volume: v, epoch: e, sequence: s, index: i)
    }
}

/// A block's index in its volume as a `WordHashable` key (see `BlockTable`).
public struct BlockIndexKey: WordHashable, Sendable {
    public var index: UInt64
    @inlinable public init(_ index: UInt64) { self.index = index }
    @inlinable public var hashWord: UInt64 { index }
}

/// A dictionary from block index to `Value` that hashes its keys as one word (`WordHashable`)
/// instead of running SipHash over each UInt64: the writer's cache, fetch and write-back
/// tables are probed several times per block I/O. Iterates as `(key: UInt64, value: Value)`,
/// in no particular order, like the dictionary it wraps.
public struct BlockTable<Value>: Sequence {
    @usableFromInline var storage: [BlockIndexKey: Value] = [:]

    public init() {}

    @inlinable public subscript(key: UInt64) -> Value? {
        get { storage[BlockIndexKey(key)] }
        set { storage[BlockIndexKey(key)] = newValue }
        _modify { yield &storage[BlockIndexKey(key)] }
    }

    @inlinable public subscript(key: UInt64, default value: @autoclosure () -> Value) -> Value {
        get { storage[BlockIndexKey(key), default: value()] }
        _modify { yield &storage[BlockIndexKey(key), default: value()] }
    }

    /// Runs `body` on the value for `key` in place (nil if there is none): unlike copying the
    /// value out and storing it back, the arrays inside it are not copied on write.
    @inlinable public mutating func update<R>(_ key: UInt64, _ body: (inout Value) throws -> R) rethrows -> R? {
        guard let i = storage.index(forKey: BlockIndexKey(key)) else { return nil }
        return try body(&storage.values[i])
    }

    @inlinable @discardableResult
    public mutating func removeValue(forKey key: UInt64) -> Value? { storage.removeValue(forKey: BlockIndexKey(key)) }
    @inlinable public mutating func removeAll() { storage.removeAll() }
    @inlinable public var count: Int { storage.count }
    @inlinable public var isEmpty: Bool { storage.isEmpty }
    @inlinable public var keys: LazyMapSequence<Dictionary<BlockIndexKey, Value>.Keys, UInt64> { storage.keys.lazy.map(\.index) }
    @inlinable public var values: Dictionary<BlockIndexKey, Value>.Values { storage.values }

    public struct Iterator: IteratorProtocol {
        @usableFromInline var base: Dictionary<BlockIndexKey, Value>.Iterator
        @inlinable init(_ base: Dictionary<BlockIndexKey, Value>.Iterator) { self.base = base }
        @inlinable public mutating func next() -> (key: UInt64, value: Value)? {
            base.next().map { (key: $0.key.index, value: $0.value) }
        }
    }
    @inlinable public func makeIterator() -> Iterator { Iterator(storage.makeIterator()) }
}

extension BlockTable: Sendable where Value: Sendable {}
extension BlockTable: Equatable where Value: Equatable {}
