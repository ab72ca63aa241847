/// A volume's checkpoint, stored in the metadata store and replaced only by compare-and-swap:
/// which root is current, its generation, the writer epoch that wrote it, and the log segment
/// whose records continue it (docs/design.md, "The commit log").
public struct VolumeHead: Hashable, Sendable {
    public var epoch: UInt64
    public var generation: UInt64
    /// The map root; a fresh clone's names its origin's root (`origin` set).
    public var root: MapEntry?
    /// Garbage-collection floor: no later commit of this epoch names a block of this epoch with
    /// a smaller sequence that this head does not name (0: unknown, collect nothing of this epoch).
    public var floor: UInt64
    /// The segment FLUSHes append to after this checkpoint (nil: heads from before the log).
    public var log: LogSegment?
    /// Blocks of this volume below this mark may be named by a snapshot: writers leave the ones
    /// they replace to the collector instead of deleting them (docs/snapshots.md).
    public var keepBelow: SnapshotMark?
    static let magic: UInt32 = 0x5448_4544  // "THED"

    public init(epoch: UInt64, generation: UInt64, root: MapEntry?, floor: UInt64 = 0, log: LogSegment? = nil,
                keepBelow: SnapshotMark? = nil) {
        self.epoch = epoch
        self.generation = generation
        self.root = root
        self.floor = floor
        self.log = log
        self.keepBelow = keepBelow
    }

    // Bits of the flags byte (heads from before snapshots have 0 or 1 there).
    static let hasRoot: UInt8 = 1, rootHasOrigin: UInt8 = 2, hasMark: UInt8 = 4

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 80)
        w.u32(Self.magic); w.u64(epoch); w.u64(generation)
        let origin = root?.origin ?? 0
        w.u8((root != nil ? Self.hasRoot : 0) | (origin != 0 ? Self.rootHasOrigin : 0) | (keepBelow != nil ? Self.hasMark : 0))
        if let root {
            w.u64(root.epoch); w.u64(root.sequence); w.u32(root.crc)
            if origin != 0 { w.u64(origin) }
        }
        if let keepBelow { w.u64(keepBelow.epoch); w.u64(keepBelow.sequence) }
        if floor > 0 || log != nil { w.u64(floor) }
        if let log { log.encode(into: &w) }
        w.u32(CRC32C.checksum(w.bytes))
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> VolumeHead? {
        guard let body = checksummedBody(bytes) else { return nil }
        var r = ByteReader(body)
        guard r.u32() == magic, let e = r.u64(), let g = r.u64(), let flags = r.u8(), flags < 8 else { return nil }
        var root: MapEntry?
        if flags & hasRoot != 0 {
            guard let re = r.u64(), let rs = r.u64(), let rc = r.u32() else { return nil }
            root = MapEntry(epoch: re, sequence: rs, crc: rc)
            if flags & rootHasOrigin != 0 {
                guard let o = r.u64(), o != 0, o <= MapEntry.originMax else { return nil }
                root!.origin = o
            }
        } else if flags & rootHasOrigin != 0 {
            return nil
        }
        var keepBelow: SnapshotMark?
        if flags & hasMark != 0 {
            guard let me = r.u64(), let ms = r.u64() else { return nil }
            keepBelow = SnapshotMark(epoch: me, sequence: ms)
        }
        // Heads written before the floor existed end here; before the log, after the floor.
        let floor = r.remaining >= 8 ? r.u64()! : 0
        var log: LogSegment?
        if r.remaining > 0 {
            guard let l = LogSegment.decode(from: &r) else { return nil }
            log = l
        }
        return VolumeHead(epoch: e, generation: g, root: root, floor: floor, log: log, keepBelow: keepBelow)
    }
}

/// A point in a volume's writes: its own blocks with a smaller (epoch, sequence) were
/// written before it.
public struct SnapshotMark: Hashable, Sendable, Comparable {
    public var epoch: UInt64
    public var sequence: UInt64
    public init(epoch: UInt64, sequence: UInt64) {
        self.epoch = epoch
        self.sequence = sequence
    }
    public static func < (a: SnapshotMark, b: SnapshotMark) -> Bool { (a.epoch, a.sequence) < (b.epoch, b.sequence) }
    /// Whether `ref`, a block of the volume this mark belongs to, was written before it.
    public func precedes(_ ref: BlockRef) -> Bool { (ref.epoch, ref.sequence) < (epoch, sequence) }
}
