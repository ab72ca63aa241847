import TorusCore

/// The checkers beside the sector model: fencing on every commit, and convergence (full,
/// verified redundancy) after the final read-back.
extension Simulation {
    /// Fencing: every successful commit must come from the newest epoch granted so far, and
    /// generations only move forward.
    func checkFencing(_ t: MetaTxn) {
        for op in t.success {
            guard case .put(let key, let value, _) = op else { continue }
            if key == VolumeInfo.epochKey(volume.name), let e = MetaValue.u64(value) {
                grantedEpoch = max(grantedEpoch, e)
                // A writer paused at its head CAS runs again the moment its successor holds the
                // new epoch: before the successor writes the head, so only the epoch compare
                // can stop it.
                if paused != nil && pausedResumeWhenSuccessorReady && !vols[cur].pausedFrozen {
                    pausedResumeWhenSuccessorReady = false
                    queue.push(now + Nanoseconds.milliseconds(1), .resumePaused(cur))
                }
            } else if key == VolumeInfo.headKey(volume.name), let head = VolumeHead.decode(value) {
                // A recovery closing the log rewrites the same checkpoint with the log's end.
                let close = head.log?.end != nil && lastCommit.map { $0 == (head.epoch, head.generation) } == true
                if !close { commits += 1 }
                if head.epoch < grantedEpoch && !close {
                    violation = SectorModel.Violation(
                        promise: .fencing,
                        detail: "head generation \(head.generation) was committed by epoch \(head.epoch) after epoch \(grantedEpoch) was granted")
                } else if let last = lastCommit, head.generation <= last.generation, head.epoch == last.epoch, !close {
                    violation = SectorModel.Violation(
                        promise: .fencing,
                        detail: "head generation went from \(last.generation) back to \(head.generation) within epoch \(head.epoch)")
                }
                lastCommit = (head.epoch, head.generation)
            }
        }
    }

    /// Log fencing: no writer acknowledges a FLUSH by a record that a recovery of its segment
    /// did not find (a fenced writer's append that a node accepted after its seal, or a tail
    /// read that stopped short).
    func checkLogAcks(_ c: VolumeClient) {
        let vs = vols[cur]
        if let a = c.lastAckedLog { vs.ackedLog[a.epoch] = max(vs.ackedLog[a.epoch] ?? 0, a.position) }
        if let r = c.recoveredLog { vs.recoveredLogEnd[r.epoch] = min(vs.recoveredLogEnd[r.epoch] ?? .max, r.end) }
        guard violation == nil else { return }
        for (epoch, acked) in vs.ackedLog.sorted(by: { $0.key < $1.key }) {
            guard let end = vs.recoveredLogEnd[epoch], acked >= end else { continue }
            violation = SectorModel.Violation(
                promise: .fencing,
                detail: "a writer acknowledged a FLUSH by record \(acked) of epoch \(epoch)'s log, which a recovery found to end before \(end)")
            return
        }
    }

    /// Convergence: after the final read-back every block of the committed map (data, map
    /// pages, root) is durable on `replication` distinct nodes, spread over as many zones as
    /// there are (up to `replication`).
    func checkConvergence() {
        for i in vols.indices where violation == nil {
            cur = i
            checkConvergenceOfVolume()
        }
    }

    func checkConvergenceOfVolume() {
        guard finalPhase == nil, let c = client, c.phase == .ready, c.opsInFlight == 0 else { return }
        var short = 0
        var first: (BlockRef, Int)?
        let zonesWanted = options.zones > 0 ? min(options.replication, options.zones) : options.replication
        for ref in c.committedRefs {
            let holders = slots.indices.filter { n in
                guard let store = slots[n].node?.store, store.isDurable(ref) else { return false }
                guard options.verifyCopies else { return true }
                // The bytes on the disk must match (bit rot and latent errors hide in the index).
                guard let (offset, crc) = store.location(of: ref),
                      let bytes = slots[n].disk.readChecked(offset: offset, length: store.config.blockSize) else { return false }
                return CRC32C.checksum(bytes) == crc
            }
            let copies = holders.count
            let zones = options.zones > 0 ? Set(holders.map { $0 % options.zones }).count : copies
            if copies < options.replication || zones < zonesWanted {
                short += 1
                if first == nil { first = (ref, copies) }
            }
        }
        if let (ref, copies) = first {
            violation = SectorModel.Violation(
                promise: .convergence,
                detail: "\(short) committed blocks lack copies or zones after healing, e.g. \(ref) has \(copies) of \(options.replication) copies"
                    + (options.zones > 0 ? " (needs \(zonesWanted) zones)" : ""))
        }
    }

    /// A storage node's recovery: every copy it recovered holds its bytes on the disk, for a
    /// node claims such copies durable. Nodes that may suffer media faults are skipped (their
    /// copies may rot; reads and scrub deal with that).
    func checkRecoveredStore(_ store: BlockStore, node n: Int) {
        guard violation == nil, !slots[n].mediaFaults else { return }
        var after: BlockRef?
        while true {
            let (refs, complete) = store.listRefs(after: after, limit: 1024)
            for ref in refs {
                let (offset, crc) = store.location(of: ref)!
                let bytes = slots[n].disk.readDurable(offset: offset, length: slots[n].config.blockSize)
                guard CRC32C.checksum(bytes) == crc else {
                    violation = SectorModel.Violation(
                        promise: .durability,
                        detail: "node \(slots[n].id) recovered a copy of \(ref) whose slot does not hold its bytes")
                    return
                }
            }
            if complete || refs.isEmpty { return }
            after = refs.last
        }
    }
}
