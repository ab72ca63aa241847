/// The disk boundary of the core.
///
/// State machines never touch a disk: they emit `DiskRequest`s tagged with a `DiskOpID` and
/// later receive the matching `DiskCompletion`. Drivers (`SimDisk` in the simulator, a file
/// disk in production) perform them.
///
/// Contract the core relies on, and which every driver must honour:
/// - a `write` is not durable until a `sync` *issued after the write completed* completes;
/// - a crash may lose any subset of non-durable writes and may tear the sectors of a write
///   in flight (each sector holds either its old or its new contents, or garbage for the
///   one sector being written);
/// - completions may arrive in any order; the core waits for the completions it depends on.
public struct DiskOpID: WordHashable, Comparable, Sendable {
    public var raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public static func < (a: DiskOpID, b: DiskOpID) -> Bool { a.raw < b.raw }
    public var hashWord: UInt64 { raw }
}

public enum DiskRequest: Sendable {
    case read(offset: UInt64, length: Int)
    case write(offset: UInt64, bytes: [UInt8])
    case sync
}

public enum DiskError: Error, Hashable, Sendable {
    /// The range could not be read (latent sector error) or written.
    case ioError(offset: UInt64)
    case outOfRange(offset: UInt64, length: Int)
}

public enum DiskCompletion: Sendable {
    case read(Result<[UInt8], DiskError>)
    case written(Result<Void, DiskError>)
    case synced(Result<Void, DiskError>)
}

/// Size facts of a disk as the block store sees it.
public struct DiskGeometry: Hashable, Sendable {
    /// Atomic write unit; journal sectors are written whole and never rewritten in place.
    public var sectorSize: Int
    public var capacityBytes: UInt64
    public init(sectorSize: Int = 4096, capacityBytes: UInt64) {
        precondition(sectorSize > 0 && sectorSize.nonzeroBitCount == 1, "sector size must be a power of two")
        self.sectorSize = sectorSize
        self.capacityBytes = capacityBytes
    }
}
