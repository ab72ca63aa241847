/// A volume's static description, stored under its name in the metadata store.
public struct VolumeInfo: Hashable, Sendable {
    public var name: String
    public var id: UInt64
    public var sizeBytes: UInt64
    public var blockSize: Int
    public var replication: Int
    /// A clone's parent: the id of the volume its snapshot was taken of (0: not a clone). The
    /// parent cannot be deleted while this volume exists (its map may name the parent's blocks).
    public var origin: UInt64

    public init(name: String, id: UInt64, sizeBytes: UInt64, blockSize: Int, replication: Int, origin: UInt64 = 0) {
        self.name = name
        self.id = id
        self.sizeBytes = sizeBytes
        self.blockSize = blockSize
        self.replication = replication
        self.origin = origin
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
        if origin != 0 { w.u64(origin) }
        w.u32(CRC32C.checksum(w.bytes))
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> VolumeInfo? {
        guard let body = checksummedBody(bytes) else { return nil }
        var r = ByteReader(body)
        guard r.u32() == infoMagic, let id = r.u64(), let size = r.u64(), let bs = r.u32(), let rep = r.u32(),
              let n = r.u32(), let name = r.raw(Int(n)), bs > 0, rep > 0 else { return nil }
        var origin: UInt64 = 0
        if r.remaining > 0 {
            guard let o = r.u64(), o != 0, r.remaining == 0 else { return nil }
            origin = o
        }
        return VolumeInfo(name: String(decoding: name, as: UTF8.self), id: id, sizeBytes: size, blockSize: Int(bs),
                          replication: Int(rep), origin: origin)
    }

    public static func infoKey(_ name: String) -> String { "/torus/volumes/\(name)/info" }
    public static let volumesPrefix = "/torus/volumes/"

    /// Metadata keys of this volume (documented in docs/metadata.md once the etcd layer lands).
    public static func headKey(_ name: String) -> String { "/torus/volumes/\(name)/head" }
    public static func lockKey(_ name: String) -> String { "/torus/volumes/\(name)/lock" }
    public static func epochKey(_ name: String) -> String { "/torus/volumes/\(name)/epoch" }
    public static func snapshotsPrefix(_ name: String) -> String { "/torus/volumes/\(name)/snapshots/" }
    public static func snapshotKey(_ name: String, _ snapshot: String) -> String { snapshotsPrefix(name) + snapshot }

    /// Splits a key under `volumesPrefix` into the volume's name and the rest ("info", "head",
    /// "snapshots/NAME", ...), or nil for a key outside it.
    public static func splitKey(_ key: String) -> (volume: String, field: Substring)? {
        guard key.hasPrefix(volumesPrefix) else { return nil }
        let rest = key.dropFirst(volumesPrefix.count)
        guard let slash = rest.firstIndex(of: "/"), slash != rest.startIndex else { return nil }
        return (String(rest[..<slash]), rest[rest.index(after: slash)...])
    }
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
