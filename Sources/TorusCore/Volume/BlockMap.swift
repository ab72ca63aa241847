/// Where one version of a block lives: its ref's (epoch, sequence) plus the CRC32C of its bytes,
/// so a reader verifies end to end that it got exactly the content the map names.
public struct MapEntry: Hashable, Sendable {
    public var epoch: UInt64
    public var sequence: UInt64
    public var crc: UInt32
    public init(epoch: UInt64, sequence: UInt64, crc: UInt32) {
        self.epoch = epoch
        self.sequence = sequence
        self.crc = crc
    }
    public func ref(volume: UInt64, index: UInt64) -> BlockRef {
        BlockRef(volume: volume, epoch: epoch, sequence: sequence, index: index)
    }
    static let encodedSize = 24
}

/// The volume's block map as copy-on-write pages.
///
/// Layout: the volume head (in the metadata store) names a root block; the root lists the map
/// pages; each page lists `entriesPerPage` block entries. Pages and root are ordinary immutable
/// blocks, so a commit writes only the pages that changed plus a new root.
public enum BlockMapCodec {
    static let pageMagic: UInt32 = 0x5450_4147  // "TPAG"
    static let rootMagic: UInt32 = 0x5452_4F54  // "TROT"
    static let headerSize = 32

    public static func entriesPerPage(blockSize: Int) -> Int { (blockSize - headerSize) / MapEntry.encodedSize }

    public static func encodePage(volume: UInt64, page: UInt64, entries: ArraySlice<MapEntry?>, blockSize: Int) -> [UInt8] {
        precondition(entries.count <= entriesPerPage(blockSize: blockSize), "page \(page) overflows")
        var w = ByteWriter(capacity: blockSize)
        w.u32(pageMagic); w.u64(volume); w.u64(page); w.u32(UInt32(entries.count))
        w.pad(to: headerSize)
        for e in entries { encode(e, into: &w) }
        w.pad(to: blockSize)
        return w.bytes
    }

    public static func decodePage(_ bytes: [UInt8], volume: UInt64, page: UInt64) -> [MapEntry?]? {
        var r = ByteReader(bytes)
        guard r.u32() == pageMagic, r.u64() == volume, r.u64() == page, let n = r.u32() else { return nil }
        guard r.raw(headerSize - 24) != nil, Int(n) <= r.remaining / MapEntry.encodedSize else { return nil }
        var out: [MapEntry?] = []
        out.reserveCapacity(Int(n))
        for _ in 0..<n {
            guard let e = decode(&r) else { return nil }
            out.append(e)
        }
        return out
    }

    public static func encodeRoot(volume: UInt64, generation: UInt64, pages: [MapEntry?], blockSize: Int) -> [UInt8] {
        precondition(pages.count <= entriesPerPage(blockSize: blockSize), "root overflows")
        var w = ByteWriter(capacity: blockSize)
        w.u32(rootMagic); w.u64(volume); w.u64(generation); w.u32(UInt32(pages.count))
        w.pad(to: headerSize)
        for e in pages { encode(e, into: &w) }
        w.pad(to: blockSize)
        return w.bytes
    }

    public static func decodeRoot(_ bytes: [UInt8], volume: UInt64) -> (generation: UInt64, pages: [MapEntry?])? {
        var r = ByteReader(bytes)
        guard r.u32() == rootMagic, r.u64() == volume, let g = r.u64(), let n = r.u32() else { return nil }
        guard r.raw(headerSize - 24) != nil, Int(n) <= r.remaining / MapEntry.encodedSize else { return nil }
        var out: [MapEntry?] = []
        for _ in 0..<n {
            guard let e = decode(&r) else { return nil }
            out.append(e)
        }
        return (g, out)
    }

    private static func encode(_ e: MapEntry?, into w: inout ByteWriter) {
        if let e {
            w.u64(e.epoch); w.u64(e.sequence); w.u32(e.crc); w.u32(1)
        } else {
            w.u64(0); w.u64(0); w.u32(0); w.u32(0)
        }
    }

    private static func decode(_ r: inout ByteReader) -> MapEntry?? {
        guard let e = r.u64(), let s = r.u64(), let c = r.u32(), let f = r.u32() else { return nil }
        switch f {
        case 0: return .some(nil)
        case 1: return .some(MapEntry(epoch: e, sequence: s, crc: c))
        default: return nil
        }
    }
}

/// A volume's checkpoint, stored in the metadata store and replaced only by compare-and-swap:
/// which root is current, its generation, the writer epoch that wrote it, and the log segment
/// whose records continue it (docs/design.md, "The commit log").
public struct VolumeHead: Hashable, Sendable {
    public var epoch: UInt64
    public var generation: UInt64
    public var root: MapEntry?
    /// Garbage-collection floor: no later commit of this epoch names a block of this epoch with
    /// a smaller sequence that this head does not name (0: unknown, collect nothing of this epoch).
    public var floor: UInt64
    /// The segment FLUSHes append to after this checkpoint (nil: heads from before the log).
    public var log: LogSegment?
    static let magic: UInt32 = 0x5448_4544  // "THED"

    public init(epoch: UInt64, generation: UInt64, root: MapEntry?, floor: UInt64 = 0, log: LogSegment? = nil) {
        self.epoch = epoch
        self.generation = generation
        self.root = root
        self.floor = floor
        self.log = log
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.u32(Self.magic); w.u64(epoch); w.u64(generation)
        if let root {
            w.u8(1); w.u64(root.epoch); w.u64(root.sequence); w.u32(root.crc)
        } else {
            w.u8(0)
        }
        if floor > 0 || log != nil { w.u64(floor) }
        if let log { log.encode(into: &w) }
        w.u32(CRC32C.checksum(w.bytes))
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> VolumeHead? {
        guard let body = checksummedBody(bytes) else { return nil }
        var r = ByteReader(body)
        guard r.u32() == magic, let e = r.u64(), let g = r.u64(), let has = r.u8() else { return nil }
        var root: MapEntry?
        if has != 0 {
            guard let re = r.u64(), let rs = r.u64(), let rc = r.u32() else { return nil }
            root = MapEntry(epoch: re, sequence: rs, crc: rc)
        }
        // Heads written before the floor existed end here; before the log, after the floor.
        let floor = r.remaining >= 8 ? r.u64()! : 0
        var log: LogSegment?
        if r.remaining > 0 {
            guard let l = LogSegment.decode(from: &r) else { return nil }
            log = l
        }
        return VolumeHead(epoch: e, generation: g, root: root, floor: floor, log: log)
    }
}

/// A volume's static description, stored under its name in the metadata store.
public struct VolumeInfo: Hashable, Sendable {
    public var name: String
    public var id: UInt64
    public var sizeBytes: UInt64
    public var blockSize: Int
    public var replication: Int

    public init(name: String, id: UInt64, sizeBytes: UInt64, blockSize: Int, replication: Int) {
        self.name = name
        self.id = id
        self.sizeBytes = sizeBytes
        self.blockSize = blockSize
        self.replication = replication
    }

    public var blockCount: UInt64 { (sizeBytes + UInt64(blockSize) - 1) / UInt64(blockSize) }
    public var pageCount: Int {
        Int((blockCount + UInt64(BlockMapCodec.entriesPerPage(blockSize: blockSize)) - 1)
            / UInt64(BlockMapCodec.entriesPerPage(blockSize: blockSize)))
    }

    static let infoMagic: UInt32 = 0x5456_4F4C  // "TVOL"

    /// The stored form of a volume's description (checksummed).
    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.u32(Self.infoMagic); w.u64(id); w.u64(sizeBytes); w.u32(UInt32(blockSize)); w.u32(UInt32(replication))
        let name = Array(self.name.utf8)
        w.u32(UInt32(name.count)); w.raw(name)
        w.u32(CRC32C.checksum(w.bytes))
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> VolumeInfo? {
        guard let body = checksummedBody(bytes) else { return nil }
        var r = ByteReader(body)
        guard r.u32() == infoMagic, let id = r.u64(), let size = r.u64(), let bs = r.u32(), let rep = r.u32(),
              let n = r.u32(), let name = r.raw(Int(n)), bs > 0, rep > 0 else { return nil }
        return VolumeInfo(name: String(decoding: name, as: UTF8.self), id: id, sizeBytes: size, blockSize: Int(bs),
                          replication: Int(rep))
    }

    public static func infoKey(_ name: String) -> String { "/torus/volumes/\(name)/info" }
    public static let volumesPrefix = "/torus/volumes/"

    /// Metadata keys of this volume (documented in docs/metadata.md once the etcd layer lands).
    public static func headKey(_ name: String) -> String { "/torus/volumes/\(name)/head" }
    public static func lockKey(_ name: String) -> String { "/torus/volumes/\(name)/lock" }
    public static func epochKey(_ name: String) -> String { "/torus/volumes/\(name)/epoch" }
}

/// The bytes before a trailing CRC32C, or nil when the checksum does not match.
func checksummedBody(_ bytes: [UInt8]) -> ArraySlice<UInt8>? {
    guard bytes.count >= 8 else { return nil }
    let body = bytes[..<(bytes.count - 4)]
    var tail = ByteReader(bytes[(bytes.count - 4)...])
    return tail.u32() == CRC32C.checksum(body) ? body : nil
}

/// Little helpers for storing integers as metadata values.
public enum MetaValue {
    public static func u64(_ v: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: 8)
        w.u64(v)
        return w.bytes
    }
    public static func u64(_ b: [UInt8]) -> UInt64? {
        guard b.count == 8 else { return nil }
        var r = ByteReader(b)
        return r.u64()
    }
}
