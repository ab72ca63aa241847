/// A volume's log segment: the epoch that appends to it, the position of its header (records
/// follow from `start + 1`) and the R nodes that hold every record (docs/design.md, "The commit log").
public struct LogSegment: Hashable, Sendable {
    public var epoch: UInt64
    public var start: UInt64
    public var nodes: [NodeID]
    /// Set by a recovery before it serves anything: the last record of the log. Records after
    /// it are not part of the log, whatever a node holds, so a later recovery cannot find a
    /// longer log than the one that was served.
    public var end: UInt64?

    public init(epoch: UInt64, start: UInt64, nodes: [NodeID], end: UInt64? = nil) {
        self.epoch = epoch
        self.start = start
        self.nodes = nodes
        self.end = end
    }

    /// The block holding the record (or, at `start`, the header) at `position`.
    public func ref(volume: UInt64, position: UInt64) -> BlockRef {
        BlockRef(volume: volume, epoch: epoch, sequence: position, index: BlockRef.logIndex)
    }

    func encode(into w: inout ByteWriter) {
        w.u64(epoch); w.u64(start); w.u8(UInt8(nodes.count))
        for n in nodes { w.u32(n.raw) }
        if let end { w.u64(end) }
    }

    static func decode(from r: inout ByteReader) -> LogSegment? {
        guard let e = r.u64(), let s = r.u64(), let n = r.u8(), n > 0 else { return nil }
        var nodes: [NodeID] = []
        for _ in 0..<n {
            guard let id = r.u32() else { return nil }
            nodes.append(NodeID(id))
        }
        let end = r.remaining >= 8 ? r.u64() : nil
        return LogSegment(epoch: e, start: s, nodes: nodes, end: end)
    }
}

/// One commit in a volume's log: the map entries a FLUSH changed, with the generation and
/// garbage-collection floor of the map they make. A segment's header is a record with no
/// changes at the segment's first position. One block, checksummed, naming its own place
/// (volume, epoch, position) so a copy found anywhere else is refused.
public struct LogRecord: Equatable, Sendable {
    public struct Change: Equatable, Sendable {
        public var index: UInt64
        /// The block's new version (nil: unmapped by a trim).
        public var entry: MapEntry?
        public init(index: UInt64, entry: MapEntry?) {
            self.index = index
            self.entry = entry
        }
    }

    public var volume: UInt64
    public var epoch: UInt64
    public var position: UInt64
    public var generation: UInt64
    public var floor: UInt64
    public var changes: [Change]

    public init(volume: UInt64, epoch: UInt64, position: UInt64, generation: UInt64, floor: UInt64, changes: [Change]) {
        self.volume = volume
        self.epoch = epoch
        self.position = position
        self.generation = generation
        self.floor = floor
        self.changes = changes
    }

    static let magic: UInt32 = 0x544C_4F47  // "TLOG"
    static let headerSize = 48
    static let changeSize = 29

    /// How many changes fit one record of `blockSize` bytes.
    public static func capacity(blockSize: Int) -> Int { (blockSize - headerSize - 4) / changeSize }

    public func encoded(blockSize: Int) -> [UInt8] {
        precondition(changes.count <= Self.capacity(blockSize: blockSize), "log record overflows its block")
        var w = ByteWriter(capacity: blockSize)
        w.u32(Self.magic); w.u64(volume); w.u64(epoch); w.u64(position); w.u64(generation); w.u64(floor)
        w.u32(UInt32(changes.count))
        for c in changes {
            w.u64(c.index)
            if let e = c.entry {
                w.u8(1); w.u64(e.epoch); w.u64(e.sequence); w.u32(e.crc)
            } else {
                w.u8(0); w.u64(0); w.u64(0); w.u32(0)
            }
        }
        w.u32(CRC32C.checksum(w.bytes))
        w.pad(to: blockSize)
        return w.bytes
    }

    /// The record in `bytes` if it is intact and is the one at (volume, epoch, position).
    public static func decode(_ bytes: [UInt8], volume: UInt64, epoch: UInt64, position: UInt64) -> LogRecord? {
        var r = ByteReader(bytes)
        guard r.u32() == magic, r.u64() == volume, r.u64() == epoch, r.u64() == position,
              let g = r.u64(), let f = r.u64(), let n = r.u32() else { return nil }
        let used = headerSize + Int(n) * changeSize
        guard used + 4 <= bytes.count else { return nil }
        var tail = ByteReader(bytes[used..<(used + 4)])
        guard tail.u32() == CRC32C.checksum(bytes[..<used]) else { return nil }
        var changes: [Change] = []
        changes.reserveCapacity(Int(n))
        for _ in 0..<n {
            guard let i = r.u64(), let has = r.u8(), let e = r.u64(), let s = r.u64(), let c = r.u32() else { return nil }
            changes.append(Change(index: i, entry: has == 1 ? MapEntry(epoch: e, sequence: s, crc: c) : nil))
        }
        return LogRecord(volume: volume, epoch: epoch, position: position, generation: g, floor: f, changes: changes)
    }
}
