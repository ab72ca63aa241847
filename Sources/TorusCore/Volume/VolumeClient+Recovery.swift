/// Opening a volume whose head names a log segment: seal the segment on its nodes, find the
/// witnesses (sealed nodes holding its header), read the tail from them, copy each record it
/// keeps to the witnesses that lack it, record the log's end in the head, replay, serve, and
/// checkpoint (docs/design.md, "The commit log").
extension VolumeClient {
    struct LogRecovery: Sendable {
        enum Stage: Sendable { case sealing, header, tail, rewriting, closing }
        var segment: LogSegment
        /// The head as read: the close rewrites it with the log's end.
        var head: VolumeHead
        var stage = Stage.sealing
        /// Nodes whose answer to the current step is still awaited.
        var awaiting: [NodeID] = []
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

        init(segment: LogSegment, head: VolumeHead) {
            self.segment = segment
            self.head = head
        }
    }

    mutating func startRecovery() {
        sendSeals()
    }

    /// Seals the segment with our epoch on every one of its nodes.
    mutating func sendSeals() {
        guard var r = recovery else { return }
        r.stage = .sealing
        r.sealed = []
        r.witnesses = []
        r.awaiting = r.segment.nodes
        r.retryAt = nil
        recovery = r
        let ref = BlockRef(volume: info.id, epoch: epoch, sequence: 0, index: BlockRef.sealIndex)
        let bytes = [UInt8](repeating: 0, count: info.blockSize)
        for n in r.segment.nodes {
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
        guard !r.sealed.isEmpty else { return recoveryRetryLater() }
        r.stage = .header
        r.position = r.segment.start
        recovery = r
        sendTailReads(to: r.sealed.sorted())
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

    mutating func recoveryRetryLater() {
        recovery?.retryAt = now + config.retryBackoff
    }

    /// Called by `tick` once `retryAt` is due.
    mutating func recoveryRetry() {
        guard let r = recovery else { return }
        switch r.stage {
        case .sealing, .header: sendSeals()
        case .tail: sendTailReads(to: r.witnesses)
        case .rewriting: rewriteKept()
        case .closing: closeLog()
        }
    }
}
