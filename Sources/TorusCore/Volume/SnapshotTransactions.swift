/// The metadata transactions of clones and rollbacks, one definition for the runtime
/// (`SnapshotCatalog`) and the simulator (docs/snapshots.md).
public enum SnapshotTransactions {
    /// Creates the clone `info` (its `origin` set) with a head naming the snapshot's root as its
    /// origin's block; refused if a volume of that name exists or a `compares` fails.
    public static func clone(_ info: VolumeInfo, from record: SnapshotRecord, compares: [MetaCompare] = [], puts: [MetaOp] = []) -> MetaTxn {
        precondition(info.origin != 0, "a clone names its origin")
        var root = record.root
        if root.origin == 0 { root.origin = info.origin }
        let head = VolumeHead(epoch: 0, generation: record.generation, root: root)
        return MetaTxn(compares: [.absent(VolumeInfo.infoKey(info.name))] + compares,
                       success: puts + [.put(key: VolumeInfo.headKey(info.name), value: head.encoded(), lease: 0),
                                        .put(key: VolumeInfo.infoKey(info.name), value: info.encoded(), lease: 0)])
    }

    /// Points `volume`'s head (read as `head`, with its epoch key `epochKey`) at the snapshot's
    /// root under a new epoch, which fences every writer of the old ones; the old log segment is
    /// never replayed. Guarded by both keys' revisions and the lock's absence (no writer).
    /// Nil when the head does not decode.
    public static func rollback(volume: String, head: MetaKeyValue, epochKey: MetaKeyValue?, to record: SnapshotRecord) -> (txn: MetaTxn, epoch: UInt64)? {
        guard let h = VolumeHead.decode(head.value) else { return nil }
        let epoch = max(h.epoch, epochKey.flatMap { MetaValue.u64($0.value) } ?? 0) + 1
        let new = VolumeHead(epoch: epoch, generation: h.generation + 1, root: record.root, keepBelow: h.keepBelow)
        let txn = MetaTxn(compares: [.modRevision(VolumeInfo.headKey(volume), is: head.modRevision),
                                     .modRevision(VolumeInfo.epochKey(volume), is: epochKey?.modRevision ?? 0),
                                     .absent(VolumeInfo.lockKey(volume))],
                          success: [.put(key: VolumeInfo.epochKey(volume), value: MetaValue.u64(epoch), lease: 0),
                                    .put(key: VolumeInfo.headKey(volume), value: new.encoded(), lease: 0)])
        return (txn, epoch)
    }
}
