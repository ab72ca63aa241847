/// A snapshot: a committed map root of a volume that is kept (key
/// `VolumeInfo.snapshotKey(volume, name)`). Written by the volume's writer in the same
/// compare-and-swap as the checkpoint it names (docs/snapshots.md).
public struct SnapshotRecord: Hashable, Sendable {
    /// The volume's id (a volume recreated under the same name has another).
    public var volumeID: UInt64
    public var root: MapEntry
    public var generation: UInt64
    /// The volume's size when the snapshot was taken (what a clone of it gets).
    public var sizeBytes: UInt64
    static let magic: UInt32 = 0x5453_4E50  // "TSNP"

    public init(volumeID: UInt64, root: MapEntry, generation: UInt64, sizeBytes: UInt64) {
        self.volumeID = volumeID
        self.root = root
        self.generation = generation
        self.sizeBytes = sizeBytes
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.u32(Self.magic); w.u64(volumeID); w.u64(generation); w.u64(sizeBytes)
        w.u64(root.epoch); w.u64(root.sequence); w.u32(root.crc); w.u64(root.origin)
        w.u32(CRC32C.checksum(w.bytes))
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> SnapshotRecord? {
        guard let body = checksummedBody(bytes) else { return nil }
        var r = ByteReader(body)
        guard r.u32() == magic, let v = r.u64(), let g = r.u64(), let size = r.u64(),
              let e = r.u64(), let s = r.u64(), let c = r.u32(), let o = r.u64(), o <= MapEntry.originMax, r.remaining == 0 else { return nil }
        return SnapshotRecord(volumeID: v, root: MapEntry(epoch: e, sequence: s, crc: c, origin: o), generation: g, sizeBytes: size)
    }

    /// 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.', not starting with '-' or '.'.
    public static func validName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64 && !name.hasPrefix("-") && !name.hasPrefix(".")
            && name.utf8.allSatisfy { c in
                (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F || c == 0x2E
            }
    }
}
