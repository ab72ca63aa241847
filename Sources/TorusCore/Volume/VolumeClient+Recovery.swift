/// Opening a volume whose head names a log segment: seal the segment on its nodes, find the
/// witnesses (sealed nodes holding its header), read the tail from them, copy each record it
/// keeps to the witnesses that lack it, record the log's end in the head, replay, serve, and
/// checkpoint (docs/design.md, "The commit log").
extension VolumeClient {
    struct LogRecovery: Sendable {
        enum Stage: Sendable { case sealing, header, tail, checking, copying, rewriting, closing }
        var segment: LogSegment
        /// The head as read: the close rewrites it with the log's end.
        var head: VolumeHead
        var stage = Stage.sealing
        /// Nodes whose answer to the current step is still awaited.
        var awaiting: [NodeID] = []
        /// Every node that may hold the segment's records or their blocks: sealed first.
        var sealTargets: [NodeID] = []
        /// Nodes that made our seal durable.
        var sealed: [NodeID] = []
        /// Sealed nodes that hold the segment's header: their "not found" is proof of absence.
        var witnesses: [NodeID] = []
        /// The position being read.
        var position: UInt64 = 0
        var found: LogRecord?
        var foundBytes: [UInt8] = []
        /// Witnesses that answered "not found" for the current position.
        var absentOn: [NodeID] = []
        var records: [LogRecord] = []
        /// Kept records still to put durably on witnesses: (position, bytes, those witnesses).
        var rewrites: [(position: UInt64, bytes: [UInt8], nodes: [NodeID])] = []
        var retryAt: Instant?
        /// Checking the last record's blocks: sealed again first when retried.
        var recheck = false
        var checkRefs: [BlockRef] = []
        /// Per block of the last record, the sealed nodes that hold it durably.
        var holders: [BlockRef: [NodeID]] = [:]
        var checkUnanswered = 0
        /// Kept blocks with too few durable copies, being copied.
        var copies: [BlockRef: CopyJob] = [:]
        var copiesFailed = false

        struct CopyJob: Sendable {
            var data: [UInt8] = []
            var needed: Int
            /// Nodes that may take a copy, best first (the ones tried are removed).
            var untried: [NodeID]
            var inFlight = 0
        }

        init(segment: LogSegment, head: VolumeHead) {
            self.segment = segment
            self.head = head
        }
    }

    mutating func startRecovery() {
        sendSeals()
    }

    /// Seals the volume with our epoch on every node of the segment and of the ring: from then
    /// on they refuse the old writer's records and blocks.
    mutating func sendSeals() {
        guard var r = recovery else { return }
        r.stage = .sealing
        r.sealed = []
        r.witnesses = []
        r.sealTargets = Set(r.segment.nodes + ring.members.map(\.node)).sorted()
        r.awaiting = r.sealTargets
        r.retryAt = nil
        recovery = r
        let ref = BlockRef(volume: info.id, epoch: epoch, sequence: 0, index: BlockRef.sealIndex)
        let bytes = [UInt8](repeating: 0, count: info.blockSize)
        for n in r.sealTargets {
            let rpc = allocateRPC(.log(.seal), node: n)
            out.append(.send(to: n, .putBlock(rpc, ref, bytes, durable: true, restore: true)))
        }
    }

    mutating func sealReplied(from node: NodeID, _ result: Result<Void, StoreError>) {
        guard var r = recovery, r.stage == .sealing, let i = r.awaiting.firstIndex(of: node) else { return }
        r.awaiting.remove(at: i)
        if case .success = result {
            noteNode(node, ok: true)
            r.sealed.append(node)
        }
        recovery = r
        guard r.awaiting.isEmpty else { return }
        if r.recheck { return checkLastRecord() }
        let sealedSegment = r.sealed.filter { r.segment.nodes.contains($0) }
        guard !sealedSegment.isEmpty else { return recoveryRetryLater() }
        r.stage = .header
        r.position = r.segment.start
        recovery = r
        sendTailReads(to: sealedSegment.sorted())
    }

    /// Asks `nodes` for the record (or header) at the current position.
    mutating func sendTailReads(to nodes: [NodeID]) {
        guard var r = recovery else { return }
        r.awaiting = nodes
        r.found = nil
        r.absentOn = []
        r.retryAt = nil
        recovery = r
        let ref = r.segment.ref(volume: info.id, position: r.position)
        for n in nodes {
            let rpc = allocateRPC(.log(.read(position: r.position)), node: n)
            out.append(.send(to: n, .getBlock(rpc, ref)))
        }
    }

    mutating func tailReplied(_ position: UInt64, from node: NodeID, _ result: Result<[UInt8], StoreError>) {
        guard var r = recovery, r.stage == .header || r.stage == .tail, r.position == position,
              let i = r.awaiting.firstIndex(of: node) else { return }
        r.awaiting.remove(at: i)
        switch result {
        case .success(let bytes):
            noteNode(node, ok: true)
            if let record = LogRecord.decode(bytes, volume: info.id, epoch: r.segment.epoch, position: position) {
                if r.stage == .header {
                    r.witnesses.append(node)
                } else {
                    r.found = record
                    r.foundBytes = bytes
                }
            }
        case .failure(.notFound):
            noteNode(node, ok: true)
            r.absentOn.append(node)
        case .failure:
            break  // an error or a bad copy is not absence
        }
        recovery = r
        guard r.awaiting.isEmpty else { return }
        if r.stage == .header {
            // No witness: every node that answered lost its disk or never got the header.
            guard !r.witnesses.isEmpty else { return recoveryRetryLater() }
            r.witnesses.sort()
            r.stage = .tail
            r.position = r.segment.start + 1
            recovery = r
            if let end = r.segment.end, r.position > end { return rewriteKept() }
            return sendTailReads(to: r.witnesses)
        }
        if let record = r.found {
            r.records.append(record)
            // Every witness gets it durably: those that lack it, and those whose copy may not be
            // durable yet (a put in flight when the seal came).
            r.rewrites.append((position, r.foundBytes, r.witnesses))
            r.foundBytes = []
            r.position += 1
            recovery = r
            // A closed log ends where its recovery said, whatever the nodes still hold.
            if let end = r.segment.end, r.position > end { return rewriteKept() }
            return sendTailReads(to: r.witnesses)
        }
        // Up to a closed log's end no record can be absent (a recovery copied it): ask again.
        guard !r.absentOn.isEmpty, r.segment.end == nil else { return recoveryRetryLater() }
        checkLastRecord()
    }

    /// The last record may have been sent with its blocks' puts (one round per FLUSH), so it
    /// is kept only if every block it names has a durable copy on some sealed node. An earlier
    /// record was followed by another only once its FLUSH completed, blocks and all.
    mutating func checkLastRecord() {
        guard var r = recovery, let last = r.records.last, config.canary != .recoveryTrustsLastRecord else { return rewriteKept() }
        let refs = last.changes.compactMap { c in c.index < UInt64(entries.count) ? c.entry?.ref(volume: info.id, index: c.index) : nil }
        guard !refs.isEmpty else { return rewriteKept() }
        r.stage = .checking
        r.recheck = true
        r.retryAt = nil
        r.awaiting = r.sealed.sorted()
        r.checkRefs = refs
        r.holders = [:]
        r.checkUnanswered = 0
        recovery = r
        for n in r.awaiting {
            let rpc = allocateRPC(.log(.checkBlocks), node: n, timeout: config.syncTimeout)
            out.append(.send(to: n, .syncBlocks(rpc, refs)))
        }
        if r.awaiting.isEmpty { decideLastRecord() }
    }

    /// A sealed node made what it holds of the last record's blocks durable (nil: no answer).
    /// An acknowledged FLUSH had each block durable on `replication` nodes: if no node that
    /// answered holds one, and fewer than `replication` did not answer (or were not sealed),
    /// the record was never acknowledged and is dropped. Otherwise ask again.
    mutating func blocksChecked(from node: NodeID, present: [BlockRef]?) {
        guard var r = recovery, r.stage == .checking, let i = r.awaiting.firstIndex(of: node) else { return }
        r.awaiting.remove(at: i)
        if let present {
            noteNode(node, ok: true)
            for ref in present { r.holders[ref, default: []].append(node) }
        } else {
            r.checkUnanswered += 1
        }
        recovery = r
        if r.awaiting.isEmpty { decideLastRecord() }
    }

    mutating func decideLastRecord() {
        guard var r = recovery else { return }
        if r.checkRefs.allSatisfy({ r.holders[$0] != nil }) { return copyUnderReplicated() }
        let unknown = r.sealTargets.count - r.sealed.count + r.checkUnanswered
        guard unknown < info.replication else { return recoveryRetryLater() }
        stats.droppedRecords += 1
        r.records.removeLast()
        r.rewrites.removeLast()
        r.position -= 1
        recovery = r
        rewriteKept()
    }

    /// Puts every record the tail keeps durably on every witness (as restoring puts, which a
    /// sealed node takes): a kept record is served, so it must not depend on one node, nor on
    /// a copy that was not durable yet.
    mutating func rewriteKept() {
        guard var r = recovery else { return }
        r.stage = .rewriting
        r.retryAt = nil
        r.awaiting = []
        recovery = r
        guard !r.rewrites.isEmpty else { return closeLog() }
        for w in r.rewrites {
            let ref = r.segment.ref(volume: info.id, position: w.position)
            for n in w.nodes {
                let rpc = allocateRPC(.log(.rewrite(position: w.position)), node: n)
                out.append(.send(to: n, .putBlock(rpc, ref, w.bytes, durable: true, restore: true)))
                recovery!.awaiting.append(n)
            }
        }
    }

    mutating func rewriteReplied(_ position: UInt64, from node: NodeID, _ result: Result<Void, StoreError>) {
        guard var r = recovery, r.stage == .rewriting, let k = r.rewrites.firstIndex(where: { $0.position == position }),
              let i = r.rewrites[k].nodes.firstIndex(of: node), let a = r.awaiting.firstIndex(of: node) else { return }
        r.awaiting.remove(at: a)
        if case .success = result {
            r.rewrites[k].nodes.remove(at: i)
            if r.rewrites[k].nodes.isEmpty { r.rewrites.remove(at: k) }
        }
        recovery = r
        guard r.awaiting.isEmpty else { return }
        if r.rewrites.isEmpty { closeLog() } else { recoveryRetryLater() }
    }

    /// Records in the head where the log ends, before serving anything from it: a later
    /// recovery that reaches a node we could not must not find a longer log.
    mutating func closeLog() {
        guard var r = recovery else { return }
        guard r.segment.end == nil else { return finishRecovery() }
        r.stage = .closing
        r.retryAt = nil
        recovery = r
        var closed = r.head
        closed.log?.end = r.position - 1
        let txn = MetaTxn(
            compares: [
                MetaCompare(key: VolumeInfo.epochKey(info.name), result: .equal, target: .value(MetaValue.u64(epoch))),
                MetaCompare(key: VolumeInfo.headKey(info.name), result: .equal, target: .modRevision(headModRevision)),
            ],
            success: [.put(key: VolumeInfo.headKey(info.name), value: closed.encoded(), lease: 0)],
            failure: [])
        sendMeta(.closeLog, .txn(txn))
    }

    mutating func closeReplied(_ response: MetaResponse) {
        guard let r = recovery, r.stage == .closing else { return }
        guard case .txn(let result) = response else { return recoveryRetryLater() }
        guard result.succeeded else {
            // Only the lock holder writes the head: someone took the volume from us.
            return becomeFenced("closing the log of epoch \(r.segment.epoch): the head or the epoch changed")
        }
        headModRevision = result.revision
        finishRecovery()
    }

    /// The log's end is settled: replay it and serve.
    mutating func finishRecovery() {
        guard let r = recovery else { return }
        var records = r.records
        if config.canary == .replaySkipsRecord, !records.isEmpty { records.removeLast() }
        stats.replayedRecords += records.count
        recoveredLog = (r.segment.epoch, r.position)
        retiredSegments.append((r.segment, r.position))
        // Replayed records are commits, as our own log commits are: the committed map moves
        // on, and the pages and replaced versions wait for the checkpoint.
        for record in records {
            for c in record.changes where c.index < UInt64(entries.count) {
                let i = Int(c.index)
                guard committed[i] != c.entry else { continue }
                if let old = committed[i] { checkpointGarbage.append(old.ref(volume: info.id, index: UInt64(i))) }
                entries[i] = c.entry
                committed[i] = c.entry
                checkpointPages.insert(i / entriesPerPage)
            }
            generation = max(generation, record.generation)
        }
        // Serve now (the log's end is in the head and every kept record on every witness that
        // answered), and checkpoint in the background: the head moves to our epoch, so the old
        // segment and the old writer's leftovers become garbage.
        recovery = nil
        becomeReady()
        if dirtyPages.isEmpty && !pageRefs.isEmpty { dirtyPages.insert(0) }
        startFlush(waiters: [])
    }

    /// The record is kept, but a block it names may have fewer durable copies than
    /// `replication` (its FLUSH never completed): copy each such block from a holder to nodes
    /// that lack it before the log is closed, as a completed FLUSH would have.
    mutating func copyUnderReplicated() {
        guard var r = recovery else { return }
        r.stage = .copying
        r.copies = [:]
        r.copiesFailed = false
        for ref in r.checkRefs {
            let holders = r.holders[ref]!
            guard holders.count < info.replication else { continue }
            // Any node readers look at: a full placement must not keep the copy hostage.
            let others = healthyFirst(readCandidates(ref)).filter { !holders.contains($0) }
            r.copies[ref] = LogRecovery.CopyJob(needed: min(others.count, info.replication - holders.count), untried: others)
        }
        r.copies = r.copies.filter { $0.value.needed > 0 }
        recovery = r
        guard !r.copies.isEmpty else { return rewriteKept() }
        for ref in r.copies.keys.sorted() {
            let from = r.holders[ref]!.first!
            let rpc = allocateRPC(.log(.copyRead(ref)), node: from)
            out.append(.send(to: from, .getBlock(rpc, ref)))
        }
    }

    mutating func copyRead(_ ref: BlockRef, from node: NodeID, _ result: Result<[UInt8], StoreError>) {
        guard var r = recovery, r.stage == .copying, var job = r.copies[ref], job.data.isEmpty else { return }
        let crc = r.records.last?.changes.first { $0.index == ref.index }?.entry?.crc
        guard case .success(let data) = result, data.count == info.blockSize, CRC32C.checksum(data) == crc else {
            r.copies[ref] = nil
            r.copiesFailed = true
            recovery = r
            return copiesDone()
        }
        job.data = data
        r.copies[ref] = job
        recovery = r
        for _ in 0..<job.needed { sendCopy(ref) }
    }

    /// Puts a copy of `ref` on the next node that may take it (none left: the round failed).
    mutating func sendCopy(_ ref: BlockRef) {
        guard var job = recovery?.copies[ref] else { return }
        guard !job.untried.isEmpty else {
            if job.inFlight == 0 {
                recovery!.copies[ref] = nil
                recovery!.copiesFailed = true
                copiesDone()
            }
            return
        }
        let n = job.untried.removeFirst()
        job.inFlight += 1
        recovery!.copies[ref] = job
        let rpc = allocateRPC(.log(.copyPut(ref)), node: n)
        out.append(.send(to: n, .putBlock(rpc, ref, job.data, durable: true, restore: true, copy: true)))
    }

    mutating func copyPut(_ ref: BlockRef, to node: NodeID, _ result: Result<Void, StoreError>) {
        guard recovery?.stage == .copying, var job = recovery?.copies[ref] else { return }
        job.inFlight -= 1
        if case .success = result {
            noteNode(node, ok: true)
            job.needed -= 1
        }
        recovery!.copies[ref] = job
        if case .failure(let error) = result {
            if error != .noSpace { noteNode(node, ok: false) }
            return sendCopy(ref)
        }
        if job.needed == 0 && job.inFlight == 0 {
            recovery!.copies[ref] = nil
            copiesDone()
        } else if job.inFlight == 0 {
            // Copies still needed and none under way (an earlier put failed and took its
            // target off the list): try the next node, or fail the round (swarm seed 1601).
            sendCopy(ref)
        }
    }

    /// Every copy made: go on; one failed: check again later (sealing anew).
    mutating func copiesDone() {
        guard let r = recovery, r.copies.isEmpty else { return }
        if r.copiesFailed { return recoveryRetryLater() }
        rewriteKept()
    }

    mutating func recoveryRetryLater() {
        recovery?.retryAt = now + config.retryBackoff
    }

    /// Called by `tick` once `retryAt` is due.
    mutating func recoveryRetry() {
        guard let r = recovery else { return }
        switch r.stage {
        case .sealing, .header, .checking, .copying: sendSeals()
        case .tail: sendTailReads(to: r.witnesses)
        case .rewriting: rewriteKept()
        case .closing: closeLog()
        }
    }
}
