/// The commit log, writer side: a FLUSH commits by appending one record to its segment's
/// nodes, or by checkpoint (docs/design.md, "The commit log"). Opening: `+Recovery`.
extension VolumeClient {
    /// What a log RPC was for.
    enum LogRPC: Sendable {
        case append(position: UInt64)
        /// Recovery copying a kept record to a witness that lacks it.
        case rewrite(position: UInt64)
        case seal
        case read(position: UInt64)
        /// Recovery asking a sealed node to make the last record's blocks durable.
        case checkBlocks
        /// Recovery copying a kept block that has fewer than `replication` durable copies.
        case copyRead(BlockRef)
        case copyPut(BlockRef)
    }

    enum LogReply {
        case put(Result<Void, StoreError>)
        case get(Result<[UInt8], StoreError>)
        case sync([BlockRef])
    }

    /// A record (or a checkpoint's segment header) being put durably on every segment node.
    struct LogAppend: Sendable {
        var segment: LogSegment
        var position: UInt64
        var remaining: [NodeID]
        var isHeader: Bool
    }

    /// Whether the next commit must be a checkpoint rather than an append.
    var checkpointDue: Bool {
        segment == nil || recordsSinceCheckpoint >= config.checkpointRecords
            || now - lastCheckpointAt >= config.checkpointInterval
            || checkpointGarbage.count >= min(config.checkpointGarbageMax, max(16, entries.count / 2))
    }

    /// A writer whose last commits were records checkpoints once idle (nothing dirty, nothing
    /// being written back) for `checkpointInterval`: read-only followers see the last record
    /// only after that (`+Follow`). A busy writer's next FLUSH shows it to them instead.
    mutating func checkpointIfIdle() {
        guard phase == .ready, !config.readOnly, flush == nil, flushQueue.isEmpty, segment != nil,
              dirtyBytes == 0, writebacks.isEmpty,
              recordsSinceCheckpoint > 0, now - lastCheckpointAt >= config.checkpointInterval, !pageRefs.isEmpty,
              now < leaseValidUntil, idleCheckpointStartedAt.map({ now - $0 >= config.checkpointInterval }) ?? true else { return }
        idleCheckpointStartedAt = now
        if dirtyPages.isEmpty { dirtyPages.insert(0) }
        startFlush(waiters: [])
    }

    /// The snapshot's blocks are durable: commit it by append, or by checkpoint.
    mutating func commitSnapshot() {
        var f = flush!
        if f.early != nil { return finishEarlyRecord() }
        if let seg = segment, !checkpointDue, !f.takesSnapshot, let record = logRecord(for: f) {
            guard now < leaseValidUntil else {
                // Nothing sent: the flush simply fails, and a later one may succeed once renewed.
                return failFlush(.leaseNotRenewed(volume: info.name))
            }
            if config.canary == .ackFlushBeforeCommit {
                // Injected bug: acknowledged with no record, so a crash forgets "durable" data.
                return committedViaLog(f)
            }
            f.stage = .append
            flush = f
            nextPosition += 1
            sendLogPut(seg, position: record.position, bytes: record.encoded(blockSize: info.blockSize), isHeader: false)
            return
        }
        f.snapshotPages = Set(f.snapshotPages).union(checkpointPages).sorted()
        flush = f
        writeMap()
    }

    /// The record of the snapshot's changes since the last commit, or nil if they do not fit one.
    func logRecord(for f: FlushState) -> LogRecord? {
        var changes: [LogRecord.Change] = []
        let capacity = LogRecord.capacity(blockSize: info.blockSize)
        for p in f.snapshotPages {
            for (i, entry) in f.snapshot.changes(inPage: p, from: committed) {
                if changes.count == capacity { return nil }
                changes.append(.init(index: UInt64(i), entry: entry))
            }
        }
        return LogRecord(volume: info.id, epoch: epoch, position: nextPosition, generation: generation + 1,
                         floor: f.floor, changes: changes)
    }

    /// Puts a record or header durably on every node of `seg`.
    mutating func sendLogPut(_ seg: LogSegment, position: UInt64, bytes: [UInt8], isHeader: Bool) {
        append = LogAppend(segment: seg, position: position, remaining: seg.nodes, isHeader: isHeader)
        let ref = seg.ref(volume: info.id, position: position)
        for n in seg.nodes {
            let rpc = allocateRPC(.log(.append(position: position)), node: n)
            out.append(.send(to: n, .putBlock(rpc, ref, bytes, durable: true, restore: phase == .opening)))
        }
    }

    /// A checkpoint's new segment: R nodes by placement of its header, healthy ones first.
    mutating func startSegmentHeader() {
        let position = nextPosition
        nextPosition += 1
        let probe = LogSegment(epoch: epoch, start: position, nodes: [])
        let nodes = Array(healthyFirst(candidates(probe.ref(volume: info.id, position: position))).prefix(info.replication)).sorted()
        let seg = LogSegment(epoch: epoch, start: position, nodes: nodes)
        flush!.newSegment = seg
        let header = LogRecord(volume: info.id, epoch: epoch, position: position, generation: generation + 1,
                               floor: 0, changes: [])
        sendLogPut(seg, position: position, bytes: header.encoded(blockSize: info.blockSize), isHeader: true)
    }

    mutating func logReplied(_ what: LogRPC, from node: NodeID, _ reply: LogReply) {
        switch (what, reply) {
        case (.append(let position), .put(let result)): appendReplied(position, from: node, result)
        case (.rewrite(let position), .put(let result)): rewriteReplied(position, from: node, result)
        case (.seal, .put(let result)): sealReplied(from: node, result)
        case (.read(let position), .get(let result)):
            if config.readOnly { followReplied(position, from: node, result) } else { tailReplied(position, from: node, result) }
        case (.checkBlocks, .sync(let present)): blocksChecked(from: node, present: present)
        case (.copyRead(let ref), .get(let result)): copyRead(ref, from: node, result)
        case (.copyPut(let ref), .put(let result)): copyPut(ref, to: node, result)
        default: break
        }
    }

    /// A log RPC got no answer in time.
    mutating func logRPCExpired(_ what: LogRPC, node: NodeID) {
        noteNode(node, ok: false)
        switch what {
        case .append(let position): appendReplied(position, from: node, .failure(.ioError))
        case .rewrite(let position): rewriteReplied(position, from: node, .failure(.ioError))
        case .seal: sealReplied(from: node, .failure(.ioError))
        case .read(let position):
            if config.readOnly { followReplied(position, from: node, .failure(.ioError)) } else { tailReplied(position, from: node, .failure(.ioError)) }
        case .checkBlocks: blocksChecked(from: node, present: nil)
        case .copyRead(let ref): copyRead(ref, from: node, .failure(.ioError))
        case .copyPut(let ref): copyPut(ref, to: node, .failure(.ioError))
        }
    }

    mutating func appendReplied(_ position: UInt64, from node: NodeID, _ result: Result<Void, StoreError>) {
        guard var a = append, a.position == position, let i = a.remaining.firstIndex(of: node) else { return }
        switch result {
        case .success:
            noteNode(node, ok: true)
            a.remaining.remove(at: i)
            append = a
            let enough = config.canary == .ackBeforeLogReplicas ? a.remaining.count < a.segment.nodes.count : a.remaining.isEmpty
            guard enough else { return }
            append = nil
            if a.isHeader { mapStagePartDone() } else { appended(a) }
        case .failure(.sealed(let newer)):
            append = nil
            becomeFenced("log of epoch \(a.segment.epoch) sealed by epoch \(newer)")
        case .failure where !a.isHeader && flush?.early?.position == position && !isAppendStage:
            append = nil
            earlyAppendReplied(position, ok: false)
        case .failure:
            append = nil
            if a.isHeader {
                // Another set of nodes for the new segment, at a fresh position.
                startSegmentHeader()
            } else {
                // A node may lack this record while another holds it: never append here again.
                // It may also be on every node (a lost reply): a recovery would replay it.
                stats.abandonedSegments += 1
                abandonSegment(end: position)
                guard var f = flush, case .append = f.stage else { return }
                keepUntilSettled(f)
                f.snapshotPages = Set(f.snapshotPages).union(checkpointPages).sorted()
                flush = f
                writeMap()
            }
        }
    }

    /// Stops appending to the current segment; the next checkpoint retires it up to `end`.
    mutating func abandonSegment(end: UInt64) {
        if let seg = segment { retiredSegments.append((seg, end)) }
        segment = nil
    }

    var isAppendStage: Bool {
        guard let f = flush, case .append = f.stage else { return false }
        return true
    }

    /// The record is durable on every node of the segment.
    mutating func appended(_ a: LogAppend) {
        guard isAppendStage else { return earlyAppendReplied(a.position, ok: true) }
        logCommitDurable(position: a.position)
    }

    /// The flush's record and every block it names are durable: the FLUSH completes.
    mutating func logCommitDurable(position: UInt64) {
        let f = flush!
        guard now < leaseValidUntil else {
            abandonSegment(end: nextPosition)
            failFlush(.leaseNotRenewed(volume: info.name), outcomeUnknown: true)
            return
        }
        recordsSinceCheckpoint += 1
        if !f.waiters.isEmpty { lastAckedLog = (epoch, position) }
        committedViaLog(f)
    }

    /// The flush's record is the commit: the map moves on; pages and replaced refs wait for a checkpoint.
    mutating func committedViaLog(_ f: FlushState) {
        precondition(uncertain.isEmpty, "a log commit after a commit of unknown outcome that no checkpoint settled")
        stats.commits += 1
        stats.logCommits += 1
        generation += 1
        for p in f.snapshotPages {
            for (i, entry) in f.snapshot.changes(inPage: p, from: committed) {
                if let old = committed[i] { checkpointGarbage.append(old.ref(volume: info.id, index: UInt64(i))) }
                committed[i] = entry
            }
        }
        checkpointPages.formUnion(f.snapshotPages)
        deferredDeletes.removeAll()  // committed now; a later commit collects them (as for a checkpoint)
        flush = nil
        for w in f.waiters { out.append(.complete(w.op, .success(.done))) }
        pumpFlush()
    }

    /// A checkpoint committed `f.newSegment`: appends go there, and the records it covers go.
    mutating func checkpointed(_ f: FlushState) -> [BlockRef] {
        if let old = segment, let new = f.newSegment { retiredSegments.append((old, new.start)) }
        segment = f.newSegment
        recordsSinceCheckpoint = 0
        lastCheckpointAt = now
        checkpointPages.removeAll()
        let garbage = checkpointGarbage
        checkpointGarbage.removeAll()
        truncateRetired()
        return garbage
    }

    /// Injected bug (`truncate-before-checkpoint`): a checkpoint deletes the records of the
    /// segment it replaces as it starts, before its head CAS made the map that covers them durable.
    mutating func truncateAheadOfCheckpoint() {
        guard config.canary == .truncateBeforeCheckpoint, let seg = segment, nextPosition > seg.start + 1 else { return }
        let refs = (seg.start + 1..<nextPosition).map { seg.ref(volume: info.id, position: $0) }
        for n in seg.nodes { out.append(.send(to: n, .deleteBlocks(refs))) }
    }

    /// Deletes the records (and headers) of the retired segments from their nodes.
    mutating func truncateRetired() {
        for (seg, end) in retiredSegments {
            let refs = (seg.start..<max(seg.start + 1, end)).map { seg.ref(volume: info.id, position: $0) }
            for n in seg.nodes { out.append(.send(to: n, .deleteBlocks(refs))) }
        }
        retiredSegments.removeAll()
    }
}
