/// Where one version of a block lives: its ref's (epoch, sequence) plus the CRC32C of its bytes,
/// so a reader verifies end to end that it got exactly the content the map names.
///
/// A clone's map also names blocks of the volume it was cloned from: `origin` is that volume's
/// id (0: the volume whose map this is). Such blocks are shared, never deleted by the clone.
public struct MapEntry: Hashable, Sendable {
    public var epoch: UInt64
    public var sequence: UInt64
    public var crc: UInt32
    /// Stored in 32 bits (a volume's map holds one entry per block: 24 bytes, not 32).
    private var originID: UInt32
    public var origin: UInt64 {
        get { UInt64(originID) }
        set {
            precondition(newValue <= Self.originMax, "origin volume id \(newValue) does not fit a map entry")
            originID = UInt32(newValue)
        }
    }
    public init(epoch: UInt64, sequence: UInt64, crc: UInt32, origin: UInt64 = 0) {
        self.epoch = epoch
        self.sequence = sequence
        self.crc = crc
        originID = 0
        self.origin = origin
    }
    /// The ref this entry names in the map of `volume`.
    public func ref(volume: UInt64, index: UInt64) -> BlockRef {
        BlockRef(volume: origin != 0 ? origin : volume, epoch: epoch, sequence: sequence, index: index)
    }
    /// The same entry as read by the map of `reader`, when it was stored in the map of `owner`.
    public func seen(from owner: UInt64, by reader: UInt64) -> MapEntry {
        let absolute = origin != 0 ? origin : owner
        var e = self
        e.origin = absolute == reader ? 0 : absolute
        return e
    }
    static let encodedSize = 24
    /// Flag word of an entry naming another volume's block: this bit plus the volume id.
    static let foreignFlag: UInt32 = 0x8000_0000
    /// Volume ids a map entry can name (the flag word keeps 31 bits for them).
    public static let originMax: UInt64 = UInt64(foreignFlag) - 1
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

    /// Decodes a page of `volume`'s map; `reader` (default: the same volume) is the volume
    /// whose map names the page (a clone reading its origin's page), so origins are its own.
    public static func decodePage(_ bytes: [UInt8], volume: UInt64, page: UInt64, reader: UInt64? = nil) -> [MapEntry?]? {
        var r = ByteReader(bytes)
        guard r.u32() == pageMagic, r.u64() == volume, r.u64() == page, let n = r.u32() else { return nil }
        guard r.raw(headerSize - 24) != nil, Int(n) <= r.remaining / MapEntry.encodedSize else { return nil }
        var out: [MapEntry?] = []
        out.reserveCapacity(Int(n))
        for _ in 0..<n {
            guard let e = decode(&r) else { return nil }
            out.append(e)
        }
        return normalized(out, owner: volume, reader: reader)
    }

    static func normalized(_ entries: [MapEntry?], owner: UInt64, reader: UInt64?) -> [MapEntry?] {
        guard let reader, reader != owner || entries.contains(where: { $0?.origin == owner }) else { return entries }
        return entries.map { $0?.seen(from: owner, by: reader) }
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

    public static func decodeRoot(_ bytes: [UInt8], volume: UInt64, reader: UInt64? = nil) -> (generation: UInt64, pages: [MapEntry?])? {
        var r = ByteReader(bytes)
        guard r.u32() == rootMagic, r.u64() == volume, let g = r.u64(), let n = r.u32() else { return nil }
        guard r.raw(headerSize - 24) != nil, Int(n) <= r.remaining / MapEntry.encodedSize else { return nil }
        var out: [MapEntry?] = []
        for _ in 0..<n {
            guard let e = decode(&r) else { return nil }
            out.append(e)
        }
        return (g, normalized(out, owner: volume, reader: reader))
    }

    private static func encode(_ e: MapEntry?, into w: inout ByteWriter) {
        if let e {
            w.u64(e.epoch); w.u64(e.sequence); w.u32(e.crc); w.u32(e.origin == 0 ? 1 : MapEntry.foreignFlag | UInt32(e.origin))
        } else {
            w.u64(0); w.u64(0); w.u32(0); w.u32(0)
        }
    }

    private static func decode(_ r: inout ByteReader) -> MapEntry?? {
        guard let e = r.u64(), let s = r.u64(), let c = r.u32(), let f = r.u32() else { return nil }
        switch f {
        case 0: return .some(nil)
        case 1: return .some(MapEntry(epoch: e, sequence: s, crc: c))
        case let f where f & MapEntry.foreignFlag != 0 && f != MapEntry.foreignFlag:
            return .some(MapEntry(epoch: e, sequence: s, crc: c, origin: UInt64(f & ~MapEntry.foreignFlag)))
        default: return nil
        }
    }
}
