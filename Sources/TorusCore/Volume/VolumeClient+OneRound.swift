/// One round per FLUSH: a log commit sends its record as soon as every block the snapshot
/// names has its put under way, and completes once the record and the blocks are durable.
/// A record may thus be durable before a block it names, but only the last one (the next is
/// built once this FLUSH completed); recovery keeps it only if each such block has a durable
/// copy, and seals refuse the old writer's late puts (docs/design.md, "One round per FLUSH").
extension VolumeClient {
    /// Called while the flush waits for write-backs: sends its record now if it can.
    mutating func sendRecordEarly(_ targets: FlushTargets) {
        guard config.oneRoundFlush, phase == .ready, var f = flush, f.early == nil, append == nil, !f.takesSnapshot,
              let seg = segment, !checkpointDue, now < leaseValidUntil else { return }
        // Cheap test first: every remaining target needs a write-back in flight.
        guard targets.blocks.count - targets.cursor <= writebacks.count else { return }
        var pending: [(index: Int, entry: MapEntry?)] = []
        for k in targets.cursor..<targets.blocks.count {
            let idx = targets.blocks[k]
            guard let e = cache[idx] else { return }
            if e.writtenVersion >= targets.versions[k] { continue }
            guard let wb = writebacks[idx], wb.version >= targets.versions[k] else { return }
            pending.append((Int(idx), wb.data.isEmpty ? nil : wb.entry))
        }
        var pages = dirtyPages
        for p in pending { pages.insert(p.index / entriesPerPage) }
        var snapshot = MapSnapshot(of: entries, pages: pages.sorted(), entriesPerPage: entriesPerPage)
        for p in pending { snapshot.set(p.index, p.entry) }
        f.snapshot = snapshot
        f.snapshotPages = pages.sorted()
        f.floor = collectionFloor()
        guard let record = logRecord(for: f), !record.changes.isEmpty else { return }
        dirtyPages.removeAll()
        f.early = EarlyRecord(position: record.position)
        flush = f
        nextPosition += 1
        stats.earlyAppends += 1
        sendLogPut(seg, position: record.position, bytes: record.encoded(blockSize: info.blockSize), isHeader: false)
    }

    /// Whether the running flush sent a record naming `entry` for block `idx` (its write-back
    /// completing then changes no page the next flush must commit).
    func earlyRecordNames(_ idx: Int, _ entry: MapEntry?) -> Bool {
        guard let f = flush, f.early != nil else { return false }
        return f.snapshot.entry(idx, committed: committed) == entry
    }

    /// The flush's blocks are durable and its record was sent early: complete, wait for the
    /// record, or (it failed) commit by checkpoint.
    mutating func finishEarlyRecord() {
        var f = flush!
        let early = f.early!
        if early.failed {
            f.snapshotPages = Set(f.snapshotPages).union(checkpointPages).sorted()
            flush = f
            return writeMap()
        }
        f.stage = .append
        flush = f
        if early.durable { logCommitDurable(position: early.position) }
    }

    /// The early record's append completed (durable on every node) or failed.
    mutating func earlyAppendReplied(_ position: UInt64, ok: Bool) {
        guard var f = flush, var early = f.early, early.position == position else { return }
        if ok {
            early.durable = true
        } else {
            early.failed = true
            stats.abandonedSegments += 1
            abandonSegment(end: nextPosition)
            keepUntilSettled(f)
        }
        f.early = early
        flush = f
    }
}
