/// Opening a volume whose head names a log segment: seal the segment on its nodes, find the
/// witnesses (sealed nodes holding its header), read the tail from them, replay it over the
/// checkpoint's map, serve, and checkpoint (docs/design.md, "The commit log").
extension VolumeClient {
    struct LogRecovery: Sendable {
        enum Stage: Sendable { case sealing, header, tail }
        var segment: LogSegment
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
        var absent = false
        var records: [LogRecord] = []
        var retryAt: Instant?

        init(segment: LogSegment) { self.segment = segment }
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
        r.absent = false
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
                if r.stage == .header { r.witnesses.append(node) } else { r.found = record }
            }
        case .failure(.notFound):
            noteNode(node, ok: true)
            r.absent = true
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
            return sendTailReads(to: r.witnesses)
        }
        if let record = r.found {
            r.records.append(record)
            r.position += 1
            recovery = r
            return sendTailReads(to: r.witnesses)
        }
        guard r.absent else { return recoveryRetryLater() }
        finishRecovery()
    }

    /// The log ends before the current position: replay it and serve.
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
        // Serve now, and checkpoint in the background: the head moves to our epoch (so the old
        // segment and the old writer's leftovers become garbage), and every FLUSH we
        // acknowledge is a commit after it, so nothing we acknowledge rests on the old segment.
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
        }
    }
}
