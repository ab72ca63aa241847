#if canImport(Glibc)
import Glibc
#endif
import TorusCore

/// Snapshots and clones in the metadata store, read and written synchronously (call from a
/// thread pool or a command line). Taking a snapshot goes through the volume's writer
/// (`VolumeServer+Snapshots`); listing, deleting and cloning are metadata operations.
public enum SnapshotCatalog {
    public struct Entry: Sendable {
        public var volume: String
        public var name: String
        public var record: SnapshotRecord
        /// The store revision that created it (orders snapshots by age).
        public var revision: Int64
    }

    /// Snapshots of `volume` (every volume: nil), oldest first per volume.
    public static func list(_ meta: any MetadataService, volume: String? = nil) throws -> [Entry] {
        let prefix = volume.map(VolumeInfo.snapshotsPrefix) ?? VolumeInfo.volumesPrefix
        let kvs = try range(meta, prefix, "listing snapshots")
        let ids = Dictionary(try ClusterCatalog.listVolumes(meta).map { ($0.name, $0.id) }, uniquingKeysWith: { a, _ in a })
        return kvs.compactMap { kv -> Entry? in
            guard let (v, field) = VolumeInfo.splitKey(kv.key), field.hasPrefix("snapshots/"),
                  let r = SnapshotRecord.decode(kv.value), ids[v] == r.volumeID else { return nil }
            return Entry(volume: v, name: String(field.dropFirst("snapshots/".count)), record: r, revision: kv.createRevision)
        }.sorted { ($0.volume, $0.revision) < ($1.volume, $1.revision) }
    }

    public static func find(_ meta: any MetadataService, volume: String, name: String) throws -> Entry {
        guard try ClusterCatalog.listVolumes(meta).contains(where: { $0.name == volume }) else {
            throw RuntimeError.notFound("no volume named '\(volume)'")
        }
        guard let e = try list(meta, volume: volume).first(where: { $0.name == name }) else {
            throw RuntimeError.notFound("volume '\(volume)' has no snapshot '\(name)'")
        }
        return e
    }

    /// Deletes a snapshot's key; the collector reclaims the blocks only it reached.
    public static func delete(_ meta: any MetadataService, volume: String, name: String) throws {
        _ = try find(meta, volume: volume, name: name)
        try apply(meta, MetaTxn(success: [.delete(key: VolumeInfo.snapshotKey(volume, name), prefix: false)]), "deleting \(volume)@\(name)")
    }

    /// A new volume whose head is the snapshot's root: it shares every block until written.
    /// O(1): one transaction, whatever the size.
    public static func clone(_ meta: any MetadataService, volume: String, snapshot: String, as newName: String) throws -> VolumeInfo {
        guard VolumeServer.validName(newName) else {
            throw RuntimeError.badInput("volume name '\(newName)' must be 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.', not starting with '-'")
        }
        let snap = try find(meta, volume: volume, name: snapshot)
        guard let source = try ClusterCatalog.listVolumes(meta).first(where: { $0.name == volume }) else {
            throw RuntimeError.notFound("no volume named '\(volume)'")
        }
        let counter = "/torus/next-volume-id"
        let c = try range(meta, counter, "reading \(counter)")
        let id = (c.first.flatMap { MetaValue.u64($0.value) } ?? 0) + 1
        guard id <= MapEntry.originMax else { throw RuntimeError.badInput("volume ids are exhausted (\(id)): a clone could not name its origin") }
        let info = VolumeInfo(name: newName, id: id, sizeBytes: snap.record.sizeBytes, blockSize: source.blockSize,
                              replication: source.replication, origin: source.id)
        let txn = SnapshotTransactions.clone(
            info, from: snap.record,
            compares: [.modRevision(counter, is: c.first?.modRevision ?? 0),
                       MetaCompare(key: VolumeInfo.snapshotKey(volume, snapshot), result: .equal, target: .createRevision(snap.revision))],
            puts: [.put(key: counter, value: MetaValue.u64(id), lease: 0)])
        guard try apply(meta, txn, "cloning \(volume)@\(snapshot)") else {
            if try ClusterCatalog.listVolumes(meta).contains(where: { $0.name == newName }) {
                throw RuntimeError.exists("volume '\(newName)' already exists")
            }
            throw RuntimeError.metadata("\(volume)@\(snapshot) or the volume list changed while cloning; try again")
        }
        return info
    }

    /// Points the volume's head at the snapshot's root, under a new epoch (no writer may hold
    /// the volume: the caller stopped its own). The new epoch fences any writer of the old
    /// one, and the old head's log segment is left behind, never replayed; the collector
    /// reclaims what only the old head reached.
    public static func rollback(_ meta: any MetadataService, volume: String, snapshot: String) throws {
        let snap = try find(meta, volume: volume, name: snapshot)
        for _ in 0..<50 {
            let heads = try range(meta, VolumeInfo.headKey(volume), "reading the head of \(volume)")
            let epochs = try range(meta, VolumeInfo.epochKey(volume), "reading the epoch of \(volume)")
            guard let kv = heads.first,
                  let (txn, _) = SnapshotTransactions.rollback(volume: volume, head: kv, epochKey: epochs.first, to: snap.record) else {
                throw RuntimeError.metadata("\(meta.location): the head of '\(volume)' is missing or corrupt")
            }
            if try apply(meta, txn, "rolling \(volume) back") { return }
            // The lock of the writer just stopped goes with its lease: wait for it.
            usleep(100_000)
        }
        throw RuntimeError.refused("volume '\(volume)' is held by a writer (its lock is taken): stop it and try again")
    }

    static func range(_ meta: any MetadataService, _ key: String, _ what: String) throws -> [MetaKeyValue] {
        let prefix = key.hasSuffix("/")
        let r = try meta.apply(.txn(MetaTxn(success: [.range(key: key, prefix: prefix)])), now: SystemClock.now())
        guard case .txn(let t) = r, case .range(let kvs)? = t.results.first else { throw RuntimeError.metadata("\(meta.location): \(what): \(r)") }
        return kvs
    }

    @discardableResult
    static func apply(_ meta: any MetadataService, _ txn: MetaTxn, _ what: String) throws -> Bool {
        let r = try meta.apply(.txn(txn), now: SystemClock.now())
        guard case .txn(let t) = r else { throw RuntimeError.metadata("\(meta.location): \(what): \(r)") }
        return t.succeeded
    }
}
