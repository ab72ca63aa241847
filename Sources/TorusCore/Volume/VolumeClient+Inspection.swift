/// What drivers, checkers and the simulator read of a client: its invariants, the refs it
/// may still need, and a one-line state summary.
extension VolumeClient {
    /// `checkInvariants()` on the client where it is stored, for a caller that keeps the client
    /// in a class property: calling the non-mutating form through the property copies the whole
    /// client first. Nothing is changed.
    public mutating func checkInvariantsInPlace() { checkInvariants() }

    /// Internal consistency; run after every step in debug builds and by the simulator.
    public func checkInvariants() {
        precondition(entries.count == Int(info.blockCount) && committed.count == entries.count
                     && pageRefs.count == info.pageCount, "map arrays do not match the volume size")
        precondition(flush == nil || flush!.snapshot.isEmpty || flush!.snapshot.count == entries.count,
                     "the map grew under a flush")
        var bytes = 0, dirty = 0
        for (idx, e) in cache {
            bytes += info.blockSize
            if e.isDirty { dirty += info.blockSize }
            precondition(e.data.isEmpty || e.data.count == info.blockSize, "cache entry \(idx) has wrong size")
            precondition(e.writtenVersion <= e.version, "cache entry \(idx) written ahead of its version")
            if e.loading { precondition(fetches[idx] != nil, "loading entry \(idx) without a fetch") }
        }
        precondition(bytes == cacheBytes, "cache byte count drifted: \(bytes) vs \(cacheBytes)")
        precondition(dirty == dirtyBytes, "dirty byte count drifted: \(dirty) vs \(dirtyBytes)")
        precondition(cacheBytes <= config.cacheBytesMax, "cache over its limit")
        for idx in writebacks.keys where idx < BlockRef.mapIndexBase {
            precondition(cache[idx] != nil, "write-back of \(idx) without its cache entry")
        }
        if phase == .fenced { precondition(ops.isEmpty && flush == nil, "fenced client still has ops") }
        var perNode: [NodeID: Int] = [:]
        for nodes in unsynced.values { for n in nodes { perNode[n, default: 0] += 1 } }
        precondition(perNode == unsyncedPerNode, "unsynced counts per node drifted")
        for ref in unsynced.keys where isCurrent(ref) {
            // The cache is the only sure copy of a block version not yet durable everywhere.
            precondition(cache[ref.index] != nil, "unsynced block \(ref.index) left the cache")
        }
        // The lazy eviction and write-back orders cover every block they must (checked on a
        // deterministic 32nd of the calls: building the sets is the costliest check here, and
        // a block left out of an order stays left out, so a sample still finds it).
        guard useCounter % 32 == 0 else { return }
        let useKeys = Set(evictionOrder.elements)
        let dirtyKeys = Set(dirtyOrder.elements)
        for (idx, e) in cache where !e.loading && writebacks[idx] == nil {
            if e.isDirty {
                precondition(dirtyKeys.contains(DirtyKey(since: e.dirtySince, block: idx)), "dirty block \(idx) missing from the write-back order")
            } else if !isPinned(idx) {
                precondition(useKeys.contains(UseKey(lastUse: e.lastUse, block: idx)), "clean block \(idx) missing from the eviction order")
            }
        }
    }

    /// The data block each index of the committed map names (nil: never written or trimmed),
    /// as an absolute ref (a clone's shared blocks carry their origin volume).
    public func committedBlock(_ index: Int) -> BlockRef? {
        committed[index].map { $0.ref(volume: info.id, index: UInt64(index)) }
    }
    public var committedBlockCount: Int { committed.count }

    /// Every block the committed head reaches: data blocks, map pages and the root (for
    /// the simulator's convergence checker and, later, garbage collection).
    public var committedRefs: [BlockRef] {
        var refs: [BlockRef] = []
        for (i, e) in committed.enumerated() { if let e { refs.append(e.ref(volume: info.id, index: UInt64(i))) } }
        for (p, e) in pageRefs.enumerated() { if let e { refs.append(e.ref(volume: info.id, index: BlockRef.mapIndexBase + UInt64(p))) } }
        if let r = rootEntry { refs.append(r.ref(volume: info.id, index: BlockRef.rootIndex)) }
        return refs
    }

    /// The records (and header) of the segment this writer appends to, and of the segments
    /// its next checkpoint retires.
    public var liveLogRefs: [BlockRef] {
        var refs = segment.map { seg in (seg.start..<nextPosition).map { seg.ref(volume: info.id, position: $0) } } ?? []
        for (seg, end) in retiredSegments { refs += (seg.start..<end).map { seg.ref(volume: info.id, position: $0) } }
        return refs
    }

    /// Whether this writer may still read `ref` or name it in a future commit (the simulator's
    /// oracle for the garbage collector: deleting such a ref would be a bug). Not counted: the
    /// committed map and root where newer versions replaced them (a commit whose reply has not
    /// arrived may already have made them garbage), refs an unknown-outcome commit named (only
    /// kept from our own deletes), and map pages that the next commit rewrites anyway.
    public func mayNeed(_ ref: BlockRef) -> Bool {
        guard phase != .fenced else { return false }
        if ref.volume != info.id { return mayNeedShared(ref) }
        if ref.index == BlockRef.sealIndex { return ref.epoch == epoch }
        if ref.index == BlockRef.logIndex {
            // Our segment, the one a checkpoint under way opens, and the one being recovered.
            if let seg = recovery?.segment, seg.epoch == ref.epoch, ref.sequence >= seg.start { return true }
            // Once a checkpoint's head CAS is sent it may have landed, retiring our segment.
            let retiring = flush.map { $0.commitSent && $0.newSegment != nil } ?? false
            return [retiring ? nil : segment, flush?.newSegment].contains { seg in
                seg.map { $0.epoch == ref.epoch && ref.sequence >= $0.start && ref.sequence < nextPosition } ?? false
            }
        }
        if writebacks.values.contains(where: { $0.ref == ref }) { return true }
        if fetches.values.contains(where: { $0.ref == ref }) { return true }
        func same(_ e: MapEntry?) -> Bool { e.map { $0.epoch == ref.epoch && $0.sequence == ref.sequence } ?? false }
        if ref.index == BlockRef.rootIndex { return same(flush?.newRoot) }
        if ref.index >= BlockRef.mapIndexBase {
            let p = Int(ref.index - BlockRef.mapIndexBase)
            guard p < pageRefs.count else { return false }
            if let f = flush, p < f.newPageRefs.count, same(f.newPageRefs[p]) { return true }
            let rewritten = dirtyPages.contains(p) || (flush?.snapshotPages.contains(p) ?? false)
            return same(pageRefs[p]) && !rewritten
        }
        let i = Int(ref.index)
        guard i < entries.count else { return false }
        return same(entries[i]) || (flush.map { i < $0.snapshot.count && same($0.snapshot.entry(i, committed: committed)) } ?? false)
    }

    /// A clone's block of its origin: needed while its map names it (or a read fetches it).
    func mayNeedShared(_ ref: BlockRef) -> Bool {
        if fetches.values.contains(where: { $0.ref == ref }) { return true }
        // The root and pages a commit under way replaces may be garbage once it lands.
        if ref.index == BlockRef.rootIndex { return flush?.commitSent != true && rootEntry?.ref(volume: info.id, index: ref.index) == ref }
        if ref.isLogBlock { return false }
        if ref.index >= BlockRef.mapIndexBase {
            let p = Int(ref.index - BlockRef.mapIndexBase)
            let rewritten = dirtyPages.contains(p) || (flush?.snapshotPages.contains(p) ?? false)
            return p < pageRefs.count && !rewritten && pageRefs[p]?.ref(volume: info.id, index: ref.index) == ref
        }
        let i = Int(ref.index)
        return i < entries.count && entries[i]?.ref(volume: info.id, index: ref.index) == ref
    }

    /// A one-line account of what the client is waiting for (for liveness failure reports).
    public var stateSummary: String {
        var parts = ["phase=\(phase)", "epoch=\(epoch)", "gen=\(generation)", "ops=\(ops.count)",
                     "queuedBeforeOpen=\(queuedBeforeOpen.count)", "blocked=\(blocked.count)",
                     "cache=\(cacheBytes / info.blockSize)blk dirty=\(dirtyBytes / info.blockSize)blk"]
        if phase == .opening { parts.append("open=\(open)") }
        if let f = flush { parts.append("flush=\(f.stage) waiters=\(f.waiters.count)") }
        if let r = recovery {
            parts.append("recovery=\(r.stage) at=\(r.position) sealed=\(r.sealed) witnesses=\(r.witnesses) retryAt=\(r.retryAt.map { "\($0)" } ?? "-")")
        }
        if let s = segment { parts.append("segment=e\(s.epoch)@\(s.start)\(s.nodes) next=\(nextPosition)") }
        parts.append("flushQueue=\(flushQueue.count)")
        if !unsynced.isEmpty || !syncing.isEmpty { parts.append("unsynced=\(unsynced.count) syncing=\(syncing.sorted())") }
        let wb = writebacks.keys.sorted().prefix(3).map { "\($0):\(writebacks[$0]!.remaining)" }
        parts.append("writebacks=\(writebacks.count) \(wb)")
        let fe = fetches.keys.sorted().prefix(3).map { "\($0):round\(fetches[$0]!.round)" }
        parts.append("fetches=\(fetches.count) \(fe)")
        parts.append("rpcs=\(rpcs.count) meta=\(metaPending.count) leaseValidUntil=\(leaseValidUntil) now=\(now)")
        return parts.joined(separator: " ")
    }
}
