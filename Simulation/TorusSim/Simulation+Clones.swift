import TorusCore

/// Clones and rollbacks under simulation, as `SnapshotCatalog` does them on real processes:
/// a clone is a new volume whose head is a snapshot's root; a rollback stops the writer and
/// moves the head to a snapshot's root under a new epoch. The models follow: the clone's (and
/// the rolled-back volume's) sectors hold what the snapshot's model allows.
extension Simulation {
    /// The newest snapshot of volume `i` known taken and still in the store.
    func newestSnapshot(of i: Int) -> (model: Int, record: SnapshotRecord)? {
        let stored = Dictionary(storedSnapshots(of: vols[i].volume), uniquingKeysWith: { a, _ in a })
        guard let k = vols[i].snapshots.lastIndex(where: { $0.outcome == .committed && stored[$0.name] != nil }) else { return nil }
        return (k, stored[vols[i].snapshots[k].name]!)
    }

    func cloneNewestSnapshot(of i: Int) {
        guard loadRunning, violation == nil else { return }
        guard store.available, let (k, record) = newestSnapshot(of: i) else {
            queue.push(now + Nanoseconds.milliseconds(500), .clone(volume: i))
            return
        }
        let source = vols[i].volume
        let id = (vols.map(\.volume.id).max() ?? 0) + 1
        let info = VolumeInfo(name: "\(source.name)-clone\(vols.count)", id: id, sizeBytes: record.sizeBytes, blockSize: source.blockSize,
                              replication: source.replication, origin: source.id)
        let txn = SnapshotTransactions.clone(info, from: record)
        guard case .txn(let r)? = store.handle(.txn(txn), now: now), r.succeeded else { return }
        let vs = VolumeSim(volume: info, clientID: NodeID(Self.writerBase(volume: vols.count)))
        vs.model = SectorModel(base: vols[i].snapshots[k].allowed)
        vols.append(vs)
        cur = vols.count - 1
        traceNote("clone      \(info.name) from \(source.name)@\(vols[i].snapshots[k].name)")
        startWriter()
        restartWriterLoad()
        if let every = options.snapshotInterval { queue.push(now + every, .snapshot(volume: cur)) }
    }

    /// Rolls volume `i` back to its newest snapshot: the writer stops (what it had not flushed
    /// is gone), its lease is revoked, and one transaction (head revision, epoch revision and
    /// no lock compared) writes a new epoch and the snapshot's root. Then a new writer opens.
    func rollbackTimer(volume i: Int) {
        guard let every = options.rollbackInterval, loadRunning, violation == nil else { return }
        queue.push(now + every, .rollback(volume: i))
        cur = i
        // As on a real server: the writer stops first, then the store is asked (it may be down).
        guard client?.phase == .ready, let k = v.snapshots.lastIndex(where: { $0.outcome == .committed }) else { return }
        let lease = client!.leaseID
        traceNote("rollback   \(volume.name) to \(v.snapshots[k].name): writer stopped")
        crashWriter()
        _ = store.handle(.leaseRevoke(id: lease), now: now)
        queue.push(now + Nanoseconds.milliseconds(100), .heal(.restartWriter(i)))
        guard let record = storedSnapshots(of: volume).first(where: { $0.0 == v.snapshots[k].name })?.1,
              case .txn(let got)? = store.handle(.txn(MetaTxn(success: [.range(key: VolumeInfo.headKey(volume.name), prefix: false),
                                                                       .range(key: VolumeInfo.epochKey(volume.name), prefix: false)])), now: now),
              got.results.count == 2, case .range(let heads) = got.results[0], case .range(let epochs) = got.results[1],
              let kv = heads.first,
              let (txn, epoch) = SnapshotTransactions.rollback(volume: volume.name, head: kv, epochKey: epochs.first, to: record) else {
            traceNote("rollback   \(volume.name): the metadata store cannot be read; the writer reopens as it was")
            return
        }
        guard case .txn(let r)? = store.handle(.txn(txn), now: now), r.succeeded else {
            traceNote("rollback   \(volume.name): refused (the lock is still held); the writer reopens as it was")
            return
        }
        checkFencing(txn)
        model = SectorModel(base: v.snapshots[k].allowed)
        traceNote("rollback   \(volume.name) to \(v.snapshots[k].name) under epoch \(epoch)")
    }
}
