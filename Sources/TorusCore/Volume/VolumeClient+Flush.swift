/// FLUSH: write back, sync, then commit by log append (`+Log`) or by checkpoint: the changed map
/// pages, a new root and the next segment's header, then the head by CAS.
extension VolumeClient {
    var entriesPerPage: Int { BlockMapCodec.entriesPerPage(blockSize: info.blockSize) }

    /// Starts the next flush if none is running. All queued waiters share it.
    mutating func pumpFlush() {
        guard phase == .ready, flush == nil, !flushQueue.isEmpty else { return }
        let waiters = flushQueue
        flushQueue.removeAll()
        startFlush(waiters: waiters)
    }

    /// Starts a flush for `waiters` (none: a checkpoint nobody waits for).
    mutating func startFlush(waiters: [FlushWaiter]) {
        guard phase == .ready, flush == nil else { return }
        // Every dirty block is in the write-back order or has a write-back in flight (an
        // invariant), so the whole cache need not be walked.
        var blocks = Set<UInt64>()
        for k in dirtyOrder.elements where cache[k.block]?.isDirty == true { blocks.insert(k.block) }
        for idx in writebacks.keys where cache[idx] != nil { blocks.insert(idx) }
        let targets = blocks.sorted().map { (block: $0, version: cache[$0]!.version) }
        flush = FlushState(waiters: waiters,
                           stage: .writeback(FlushTargets(blocks: targets.map(\.block), versions: targets.map(\.version))))
        // Write-backs start within the in-flight limit, oldest first; each completion starts the
        // next while the flush waits (`writebackCompleted`). Never all at once: slow nodes'
        // timeouts would resend them all (docs/storage-core.md, "Volume writer and commit").
        scheduleWriteback(ageOnly: false)
        advanceFlush()
    }

    /// Moves the running flush forward when its current stage is done.
    mutating func advanceFlush() {
        guard var f = flush, case .writeback(var targets) = f.stage else { return }
        while targets.cursor < targets.blocks.count {
            let idx = targets.blocks[targets.cursor]
            if let e = cache[idx], e.writtenVersion < targets.versions[targets.cursor] {
                f.stage = .writeback(targets)
                flush = f
                if writebacks[idx] == nil && e.isDirty && !e.loading { startWriteback(idx) }
                sendRecordEarly(targets)
                return
            }
            targets.cursor += 1
        }
        takeSnapshot()
    }

    /// Fixes the map this flush commits, then syncs the copies it names (`advanceSync`).
    mutating func takeSnapshot() {
        var f = flush!
        if f.early != nil {
            // Fixed when the record was sent.
            f.stage = .sync
            flush = f
            return advanceSync()
        }
        var changed = dirtyPages.sorted()
        dirtyPages.removeAll()
        // A snapshot needs a checkpoint of its own even when nothing changed.
        if changed.isEmpty && f.takesSnapshot { changed = [0] }
        if changed.isEmpty {
            // Nothing new since the last commit: everything completed is already durable.
            flush = nil
            for w in f.waiters { out.append(.complete(w.op, .success(.done))) }
            pumpFlush()
            return
        }
        f.snapshot = MapSnapshot(of: entries, pages: changed, entriesPerPage: entriesPerPage)
        f.floor = collectionFloor()
        f.snapshotPages = changed
        f.stage = .sync
        flush = f
        advanceSync()
    }

    /// Checkpoint: writes the changed map pages of the snapshot, a new root (durable puts) and
    /// the header of the segment that will follow it.
    mutating func writeMap() {
        truncateAheadOfCheckpoint()
        var f = flush!
        if config.canary != .ackBeforeReplicaSync {
            for ref in unsynced.keys {
                precondition(Int(ref.index) >= f.snapshot.count || f.snapshot.entry(Int(ref.index), committed: committed)?.ref(volume: info.id, index: ref.index) != ref,
                             "writing a map that names \(ref), which is not durable on every replica")
            }
        }
        f.newPageRefs = pageRefs
        var pending = 0
        for p in f.snapshotPages {
            let lo = p * entriesPerPage
            let hi = min(entries.count, lo + entriesPerPage)
            let page = f.snapshot.pages[p].map { $0[...] } ?? committed[lo..<hi]
            let bytes = BlockMapCodec.encodePage(volume: info.id, page: UInt64(p), entries: page,
                                                 blockSize: info.blockSize)
            let key = BlockRef.mapIndexBase + UInt64(p)
            let ref = BlockRef(volume: info.id, epoch: epoch, sequence: nextSequence, index: key)
            nextSequence += 1
            let entry = MapEntry(epoch: epoch, sequence: ref.sequence, crc: CRC32C.checksum(bytes))
            f.newPageRefs[p] = entry
            putBlock(key, ref: ref, entry: entry, version: 0, data: bytes)
            pending += 1
        }
        let rootBytes = BlockMapCodec.encodeRoot(volume: info.id, generation: generation + 1,
                                                 pages: f.newPageRefs, blockSize: info.blockSize)
        let rootRef = BlockRef(volume: info.id, epoch: epoch, sequence: nextSequence, index: BlockRef.rootIndex)
        nextSequence += 1
        let root = MapEntry(epoch: epoch, sequence: rootRef.sequence, crc: CRC32C.checksum(rootBytes))
        f.newRoot = root
        putBlock(BlockRef.rootIndex, ref: rootRef, entry: root, version: 0, data: rootBytes)
        pending += 1
        f.stage = .map(pending: pending + 1)
        flush = f
        startSegmentHeader()
    }

    /// The garbage-collection floor of a commit whose map is `entries` now (see `VolumeHead.floor`):
    /// a later commit can only add refs written back after this instant (sequence from
    /// `nextSequence` on) or by a write-back in flight now. Blocks older than that which this
    /// commit does not name are garbage for good.
    func collectionFloor() -> UInt64 {
        var floor = nextSequence
        for wb in writebacks.values where !wb.data.isEmpty && wb.ref.epoch == epoch {
            floor = min(floor, wb.ref.sequence)
        }
        return floor
    }

    mutating func mapBlockWritten(_ key: UInt64) {
        mapStagePartDone()
    }

    /// A map page, the root or the segment header is durable; the last one sends the commit.
    mutating func mapStagePartDone() {
        guard var f = flush, case .map(let pending) = f.stage else { return }
        if pending > 1 {
            f.stage = .map(pending: pending - 1)
            flush = f
            return
        }
        // A snapshot keeps every block written so far: writers leave them to the collector.
        let mark = f.takesSnapshot ? SnapshotMark(epoch: epoch, sequence: nextSequence) : keepBelow
        f.head = VolumeHead(epoch: epoch, generation: generation + 1, root: f.newRoot, floor: f.floor, log: f.newSegment,
                            keepBelow: mark)
        f.stage = .commit
        flush = f
        if config.canary == .ackFlushBeforeCommit {
            // Injected bug: the commit point is skipped, so a crash forgets "durable" data.
            committed(f, revision: headModRevision)
            return
        }
        sendCommit()
    }

    mutating func sendCommit() {
        let f = flush!
        guard now < leaseValidUntil else {
            failFlush(.leaseNotRenewed(volume: info.name), outcomeUnknown: f.commitSent)
            return
        }
        commitRetryAt = nil
        flush!.commitSent = true
        var compares = [
            MetaCompare(key: VolumeInfo.epochKey(info.name), result: .equal, target: .value(MetaValue.u64(epoch))),
            MetaCompare(key: VolumeInfo.headKey(info.name), result: .equal, target: .modRevision(headModRevision)),
        ]
        if config.canary == .skipEpochCompare { compares.removeFirst() }
        var puts: [MetaOp] = [.put(key: VolumeInfo.headKey(info.name), value: f.head!.encoded(), lease: 0)]
        for name in f.snapshotNames {
            let record = SnapshotRecord(volumeID: info.id, root: f.newRoot!, generation: f.head!.generation, sizeBytes: info.sizeBytes)
            puts.append(.put(key: VolumeInfo.snapshotKey(info.name, name), value: record.encoded(), lease: 0))
        }
        let txn = MetaTxn(
            compares: compares,
            success: puts,
            failure: [.range(key: VolumeInfo.headKey(info.name), prefix: false),
                      .range(key: VolumeInfo.epochKey(info.name), prefix: false)]
        )
        sendMeta(.commit, .txn(txn))
    }

    mutating func commitReplied(_ response: MetaResponse) {
        guard let f = flush, case .commit = f.stage else { return }
        guard case .txn(let result) = response else {
            retryCommitLater()
            return
        }
        if result.succeeded {
            committed(f, revision: result.revision)
            return
        }
        // The compare failed. Either an earlier attempt of this very commit applied (its reply
        // was lost), or another writer took the volume.
        var headKV: MetaKeyValue?
        var epochKV: MetaKeyValue?
        if result.results.count == 2, case .range(let h) = result.results[0], case .range(let e) = result.results[1] {
            headKV = h.first
            epochKV = e.first
        }
        if let epochKV, MetaValue.u64(epochKV.value) == epoch, let headKV {
            if headKV.value == f.head!.encoded() {
                committed(f, revision: headKV.modRevision)
                return
            }
            // Only our epoch can write the head, so this is an earlier commit of ours whose
            // outcome we could not learn. Our pages cover everything since, so build on it.
            guard let theirs = VolumeHead.decode(headKV.value), theirs.epoch == epoch else {
                becomeFenced("head at revision \(headKV.modRevision) is unreadable or from another epoch")
                return
            }
            headModRevision = headKV.modRevision
            generation = max(generation, theirs.generation)
            flush!.head!.generation = generation + 1
            // That commit may have kept a snapshot: its mark holds from now on.
            if let m = theirs.keepBelow, keepBelow.map({ $0 < m }) ?? true { keepBelow = m }
            if let m = keepBelow, flush!.head!.keepBelow.map({ $0 < m }) ?? true { flush!.head!.keepBelow = m }
            sendCommit()
        } else {
            let theirs = epochKV.flatMap { MetaValue.u64($0.value) }.map(String.init) ?? "none"
            becomeFenced("commit rejected: volume epoch is \(theirs), ours is \(epoch)")
        }
    }

    mutating func committed(_ f: FlushState, revision: Int64) {
        stats.commits += 1
        headModRevision = revision
        generation += 1
        keepBelow = f.head?.keepBelow ?? keepBelow
        // Garbage: the old versions of every block this commit replaced, old pages, old root.
        var garbage: [BlockRef] = []
        for p in f.snapshotPages {
            for (i, entry) in f.snapshot.changes(inPage: p, from: committed) {
                if let old = committed[i] { garbage.append(old.ref(volume: info.id, index: UInt64(i))) }
                committed[i] = entry
            }
            if let old = pageRefs[p] { garbage.append(old.ref(volume: info.id, index: BlockRef.mapIndexBase + UInt64(p))) }
        }
        if let old = rootEntry { garbage.append(old.ref(volume: info.id, index: BlockRef.rootIndex)) }
        pageRefs = f.newPageRefs
        rootEntry = f.newRoot
        deferredDeletes.removeAll()  // they are committed now; a later commit collects them
        if !uncertain.isEmpty {
            // The head is ours now: what an earlier unknown commit named and this one does not is garbage.
            for ref in uncertain.sorted() where ref.index < BlockRef.mapIndexBase {
                if Int(ref.index) >= committed.count || committed[Int(ref.index)]?.ref(volume: info.id, index: ref.index) != ref { garbage.append(ref) }
            }
            uncertain.removeAll()
        }
        garbage += checkpointed(f)
        deleteRefs(garbage)
        flush = nil
        for w in f.waiters { out.append(.complete(w.op, .success(.done))) }
        pumpFlush()
    }

    /// A commit of `f` may have landed (a head CAS or a log record whose outcome we never
    /// learned): every block version of its snapshot and the deferred refs are kept until a
    /// later commit settles it.
    mutating func keepUntilSettled(_ f: FlushState) {
        for p in f.snapshotPages {
            for (i, entry) in f.snapshot.changes(inPage: p, from: committed) {
                if let e = entry { uncertain.insert(e.ref(volume: info.id, index: UInt64(i))) }
            }
        }
        for ref in deferredDeletes { uncertain.insert(ref) }
        deferredDeletes.removeAll()
    }

    /// A commit that got no answer or an error is retried while the lease allows; past that,
    /// the flush fails with its outcome unknown.
    mutating func retryCommitLater() {
        guard let f = flush, case .commit = f.stage else { return }
        if config.canary == .noCommitRetry { return }
        if now + config.retryBackoff < leaseValidUntil {
            commitRetryAt = now + config.retryBackoff
        } else {
            failFlush(.metadataUnavailable(volume: info.name), outcomeUnknown: true)
        }
    }

    mutating func failFlush(_ error: VolumeError, outcomeUnknown: Bool = false) {
        guard let f = flush else { return }
        // A record sent early may be on every node: its outcome is unknown, its segment done.
        if let early = f.early, !early.failed { abandonSegment(end: nextPosition) }
        let outcomeUnknown = outcomeUnknown || f.early != nil
        for p in f.snapshotPages { dirtyPages.insert(p) }
        flush = nil
        commitRetryAt = nil
        append = nil
        // A checkpoint that may have landed may have replaced our segment: append no more to it.
        if let new = f.newSegment {
            abandonSegment(end: new.start)
            retiredSegments.append((new, new.start + 1))
        }
        for w in f.waiters { out.append(.complete(w.op, .failure(error))) }
        if outcomeUnknown {
            keepUntilSettled(f)
            pumpFlush()
            return
        }
        // New page and root blocks are garbage; so are blocks whose deletion waited on this commit.
        var garbage = deferredDeletes
        deferredDeletes.removeAll()
        for p in f.snapshotPages where p < f.newPageRefs.count {  // no new pages before the map stage
            if let e = f.newPageRefs[p] { garbage.append(e.ref(volume: info.id, index: BlockRef.mapIndexBase + UInt64(p))) }
        }
        if let r = f.newRoot { garbage.append(r.ref(volume: info.id, index: BlockRef.rootIndex)) }
        deleteRefs(garbage)
        pumpFlush()
    }
}
