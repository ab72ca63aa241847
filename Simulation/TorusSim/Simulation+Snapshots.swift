import TorusCore

/// Snapshots under simulation: the writer takes one every `snapshotInterval` during the load
/// (the oldest beyond three is deleted), a model records what each may hold, the collector's
/// oracle refuses deletes of blocks a snapshot reaches, and the final check reads every
/// snapshot in the metadata store from the nodes' disks.
extension Simulation {
    static let snapshotsKept = 3

    func snapshotTimer(volume i: Int) {
        guard let interval = options.snapshotInterval, loadRunning, violation == nil else { return }
        queue.push(now + interval, .snapshot(volume: i))
        cur = i
        guard !v.deleted, client?.phase == .ready, !inflight.values.contains(where: \.isSnapshot) else { return }
        deleteOldestSnapshot()
        var busy: [(sector: Int, value: UInt64)] = []
        for id in inflight.keys.sorted() {  // in op order: the model's lists, hence its reports, never depend on hashing
            let op = inflight[id]!
            switch op.kind {
            case .write: for k in 0..<op.sectorCount { busy.append((Int(op.firstSector) + k, op.value)) }
            case .trim: for k in 0..<op.sectorCount { busy.append((Int(op.firstSector) + k, 0)) }
            case .read, .flush, .snapshot: break
            }
        }
        let name = "s\(v.snapshots.count + 1)"
        v.snapshots.append(SnapshotModel(name: name, volume: model, inFlight: busy, at: now))
        traceNote("snapshot   \(volume.name)@\(name) asked for")
        let id = OpID(nextOp)
        nextOp += 1
        inflight[id] = InflightOp(kind: .snapshot(v.snapshots.count - 1), slot: 0, firstSector: 0, sectorCount: 0, value: 0)
        handleClient(client!.submit(id, .snapshot(name: name), now: writerNow()))
    }

    /// A write or trim was submitted: a snapshot being taken may or may not hold it.
    func snapshotsSeeWrite(firstSector: UInt64, count: Int, value: UInt64) {
        for k in v.snapshots.indices where v.snapshots[k].windowOpen {
            v.snapshots[k].written(firstSector: firstSector, count: count, value: value)
        }
    }

    func snapshotCompleted(_ k: Int, ok: Bool) {
        v.snapshots[k].windowOpen = false
        v.snapshots[k].outcome = ok ? .committed : .unknown
        // The commit that completed the op is the snapshot's checkpoint: the map is its map.
        if ok, let c = client { v.snapshotRefs[v.snapshots[k].name] = Set(c.committedRefs) }
        traceNote("snapshot   \(volume.name)@\(v.snapshots[k].name) \(ok ? "taken" : "failed (it may exist)")")
    }

    /// The writer is gone: a snapshot it was taking may exist or not; no later write is in it.
    func snapshotsLoseWriter() {
        for k in v.snapshots.indices where v.snapshots[k].windowOpen {
            v.snapshots[k].windowOpen = false
            v.snapshots[k].outcome = .unknown
        }
    }

    /// Keeps at most `snapshotsKept` snapshots: deletes the oldest (its key only; the
    /// collector reclaims its blocks).
    func deleteOldestSnapshot() {
        let taken = v.snapshots.indices.filter { v.snapshots[$0].outcome == .committed }
        guard taken.count >= Self.snapshotsKept, let k = taken.first else { return }
        let key = VolumeInfo.snapshotKey(volume.name, v.snapshots[k].name)
        guard case .txn(let r)? = store.handle(.txn(MetaTxn(success: [.delete(key: key, prefix: false)])), now: now), r.succeeded else { return }
        v.snapshots[k].outcome = .deleted
        v.snapshotRefs[v.snapshots[k].name] = nil
        traceNote("snapshot   \(volume.name)@\(v.snapshots[k].name) deleted")
    }

    /// Oracle: no snapshot that exists reaches `ref`.
    func snapshotReaching(_ ref: BlockRef) -> String? {
        for vs in vols {
            for (name, refs) in vs.snapshotRefs.sorted(by: { $0.key < $1.key }) where refs.contains(ref) { return "\(vs.volume.name)@\(name)" }
        }
        return nil
    }

    // MARK: Final check

    /// Every snapshot in the metadata store holds what its model allows, read from durable
    /// copies on the nodes; every snapshot taken and not deleted is there.
    func checkSnapshots() {
        for i in vols.indices where violation == nil && !vols[i].deleted && !vols[i].snapshots.isEmpty {
            cur = i
            var found: Set<String> = []
            for (name, record) in storedSnapshots(of: volume) {
                found.insert(name)
                guard let k = v.snapshots.firstIndex(where: { $0.name == name }), v.snapshots[k].outcome != .deleted else {
                    violation = SectorModel.Violation(promise: .noWrongData, detail: "snapshot \(volume.name)@\(name) exists but was never taken or was deleted")
                    return
                }
                guard let walk = walkSnapshot(record, of: volume) else {
                    violation = SectorModel.Violation(promise: .durability,
                                                      detail: "snapshot \(volume.name)@\(name): its map has no intact copy on any node")
                    return
                }
                checkSnapshotData(k, walk.entries)
            }
            if let lost = v.snapshots.first(where: { $0.outcome == .committed && !found.contains($0.name) }), violation == nil {
                violation = SectorModel.Violation(promise: .durability, detail: "snapshot \(volume.name)@\(lost.name) was taken but is gone")
            }
        }
    }

    func checkSnapshotData(_ k: Int, _ entries: [MapEntry?]) {
        let bs = options.blockSize, perBlock = bs / SectorModel.sectorSize
        let zeros = [UInt8](repeating: 0, count: bs)
        for (b, e) in entries.enumerated() where violation == nil {
            var data = zeros
            if let e {
                guard let bytes = durableBlock(e.ref(volume: volume.id, index: UInt64(b)), crc: e.crc) else {
                    violation = SectorModel.Violation(promise: .durability,
                                                      detail: "snapshot \(volume.name)@\(v.snapshots[k].name): block \(b) has no intact copy on any node")
                    return
                }
                data = bytes
            }
            for j in 0..<perBlock {
                let s = b * perBlock + j
                guard s < v.snapshots[k].allowed.count else { break }
                if let bad = v.snapshots[k].check(sector: s, data[(j * SectorModel.sectorSize)..<((j + 1) * SectorModel.sectorSize)]) {
                    violation = bad
                    return
                }
            }
        }
    }

    /// The snapshots the metadata store holds for `info` (of this volume id).
    func storedSnapshots(of info: VolumeInfo) -> [(String, SnapshotRecord)] {
        let prefix = VolumeInfo.snapshotsPrefix(info.name)
        guard case .txn(let r)? = store.handle(.txn(MetaTxn(success: [.range(key: prefix, prefix: true)])), now: now),
              case .range(let kvs)? = r.results.first else { return [] }
        return kvs.compactMap { kv in
            SnapshotRecord.decode(kv.value).flatMap { $0.volumeID == info.id ? (String(kv.key.dropFirst(prefix.count)), $0) : nil }
        }
    }

    /// A snapshot's map read from durable copies: its entries and every ref it reaches.
    func walkSnapshot(_ record: SnapshotRecord, of info: VolumeInfo) -> (entries: [MapEntry?], refs: Set<BlockRef>)? {
        let rootRef = record.root.ref(volume: info.id, index: BlockRef.rootIndex)
        guard let rootBytes = durableBlock(rootRef, crc: record.root.crc),
              let root = BlockMapCodec.decodeRoot(rootBytes, volume: rootRef.volume, reader: info.id) else { return nil }
        var refs: Set<BlockRef> = [rootRef]
        let perPage = BlockMapCodec.entriesPerPage(blockSize: info.blockSize)
        // The last block may be partial: it counts.
        let blocks = (record.sizeBytes + UInt64(info.blockSize) - 1) / UInt64(info.blockSize)
        var entries = [MapEntry?](repeating: nil, count: Int(blocks))
        for (p, pe) in root.pages.enumerated() {
            guard let pe else { continue }
            let pageRef = pe.ref(volume: info.id, index: BlockRef.mapIndexBase + UInt64(p))
            guard let bytes = durableBlock(pageRef, crc: pe.crc),
                  let page = BlockMapCodec.decodePage(bytes, volume: pageRef.volume, page: UInt64(p), reader: info.id) else { return nil }
            refs.insert(pageRef)
            for (j, e) in page.enumerated() where p * perPage + j < entries.count {
                entries[p * perPage + j] = e
                if let e { refs.insert(e.ref(volume: info.id, index: UInt64(p * perPage + j))) }
            }
        }
        return (entries, refs)
    }

    /// The bytes of `ref` from any node whose durable copy matches `crc`.
    func durableBlock(_ ref: BlockRef, crc: UInt32) -> [UInt8]? {
        for n in slots.indices {
            guard let store = slots[n].node?.store, store.isDurable(ref), let (offset, c) = store.location(of: ref), c == crc,
                  let bytes = slots[n].disk.readChecked(offset: offset, length: store.config.blockSize),
                  CRC32C.checksum(bytes) == crc else { continue }
            return bytes
        }
        return nil
    }

    /// Every ref a stored snapshot reaches (live for the reclaim check).
    func snapshotLiveRefs() -> Set<BlockRef> {
        var live: Set<BlockRef> = []
        for vs in vols where !vs.deleted {
            for (_, record) in storedSnapshots(of: vs.volume) { if let w = walkSnapshot(record, of: vs.volume) { live.formUnion(w.refs) } }
        }
        return live
    }
}
