import TorusCore

/// The garbage collector under simulation: its messages, metadata requests and ticks, an
/// oracle on every delete it sends, and the final check that it reclaims every unreachable block.
extension Simulation {
    static let collectorID = NodeID(900)

    func startCollector() {
        guard var config = options.collector else { return }
        config.canaryIgnoresHorizon = options.canary == .gcIgnoresHorizon
        config.canaryLeaks = options.canary == .gcLeaks
        config.canaryIgnoresSnapshots = options.canary == .gcIgnoresSnapshots
        // The collector learns the volumes from their info keys (as `torus volume create` writes them).
        for vs in vols {
            let put = MetaTxn(compares: [], success: [.put(key: VolumeInfo.infoKey(vs.volume.name), value: vs.volume.encoded(), lease: 0)],
                              failure: [])
            _ = store.handle(.txn(put), now: now)
        }
        publishRing()
        collector = Collector(id: Self.collectorID, ring: ring, config: config)
        handleCollector(collector!.start(now: now))
    }

    func handleCollector(_ outputs: [CollectorOutput]) {
        for o in outputs {
            switch o {
            case .send(let to, let msg):
                if case .deleteBlocks(let refs) = msg { checkCollectorDelete(refs, on: to) }
                send(from: Self.collectorID, to: to, msg)
            case .trim(let to, let refs):
                checkTrim(refs, on: to)
                send(from: Self.collectorID, to: to, .deleteBlocks(refs))
            case .metadata(let id, let req):
                queue.push(now + network.latency(), .collectorMeta(id, req))
            case .timer(let at):
                queue.push(max(at, now), .collectorTick)
            case .passCompleted(let p):
                traceEvent(.collectorPass, UInt64(p.refsDeleted), UInt64(p.refsListed))
                traceNote("collector  pass \(p.completed ? "done" : "gave up (metadata unreadable)"): \(p.refsDeleted) deleted, "
                          + "\(p.garbagePending) waiting out the grace period, \(p.nodesSkipped) nodes and \(p.volumesSkipped) volumes skipped, "
                          + "\(p.underReplicated) short of copies, \(p.copiesMade) copied, \(p.copiesFailed) copies failed, \(p.unrepairable) unrepairable")
                if p.misplaced > 0 || p.movesMade > 0 || p.copiesTrimmed > 0 || !p.drained.isEmpty {
                    traceNote("collector  rebalance (ring \(p.ringVersion)): \(p.misplaced) off placement, \(p.movesMade) moved, "
                              + "\(p.copiesTrimmed) extra copies deleted, drained: \(p.drained.map(\.description).joined(separator: " "))")
                }
                copiesMade += p.copiesMade
                movesMade += p.movesMade
                bytesMoved += p.bytesMoved
                copiesTrimmed += p.copiesTrimmed
                if !p.drained.isEmpty { removeDrained(p.drained) }
                if finalPhase == .collect { finalCollectPassDone(p) }
            }
        }
    }

    /// Oracle: the collector never deletes a block a live writer may still read or commit.
    func checkCollectorDelete(_ refs: [BlockRef], on node: NodeID) {
        for ref in refs {
            if let snapshot = snapshotReaching(ref) {
                violation = SectorModel.Violation(
                    promise: .durability,
                    detail: "the collector deleted \(ref) on \(Self.name(UInt64(node.raw))), which snapshot \(snapshot) reaches")
                return
            }
            for vs in vols {
                guard let c = vs.client, c.mayNeed(ref) else { continue }
                violation = SectorModel.Violation(
                    promise: .durability,
                    detail: "the collector deleted \(ref) on \(Self.name(UInt64(node.raw))), which \(vs.volume.name)'s writer still needs "
                        + "(writer: \(c.stateSummary))")
                return
            }
        }
    }

    /// Final check: collector passes until one finds no garbage at all.
    func finalCollectPass() {
        guard collector != nil, violation == nil else { return }
        if scrubRoundsAtCollect.isEmpty { scrubRoundsAtCollect = slots.map { $0.node?.scrubStats.rounds ?? 0 } }
        finalCollectPasses += 1
        handleCollector(collector!.requestPass(now: now))
    }

    func finalCollectPassDone(_ p: CollectorPass) {
        let lost = lostRingMembers
        finalCollectMisplaced = p.misplaced
        guard p.completed, p.refsDeleted == 0, p.garbagePending == 0, p.nodesSkipped == lost, p.volumesSkipped == 0,
              p.underReplicated == 0, p.copiesMade == 0, scrubbedSinceCollect,
              p.misplaced == 0, p.movesMade == 0, p.copiesTrimmed == 0, !ring.members.contains(where: \.draining),
              p.ringVersion == ring.version else {
            // Wait out the grace period of what it found, then look again.
            queue.push(now + (options.collector?.grace ?? .zero) + Nanoseconds.milliseconds(10), .finalCheck(.collect))
            return
        }
        checkSnapshots()
        if violation == nil { checkNoGarbage() }
        if violation == nil && lostRingMembers == 0 && options.checkConvergence { checkPlacement() }
        finalPhase = nil
        queue = EventQueue()
    }

    /// With scrubbing, every live node finished a scrub round since the final collection began
    /// (so every bad copy was found before the last pass counted copies).
    var scrubbedSinceCollect: Bool {
        guard options.scrubInterval != nil else { return true }
        // A node that restarted counts its rounds afresh: compare with what it had then.
        return slots.indices.allSatisfy { n in
            guard let node = slots[n].node else { return true }
            return node.scrubStats.rounds > (n < scrubRoundsAtCollect.count ? scrubRoundsAtCollect[n] : 0)
        }
    }

    /// Every block a node holds is reachable from its volume's committed head, is a record of
    /// its writer's log segment, or is the node's newest seal of the volume.
    func checkNoGarbage() {
        var live: Set<BlockRef> = []
        for vs in vols { if let c = vs.client { live.formUnion(c.committedRefs); live.formUnion(c.liveLogRefs) } }
        live.formUnion(snapshotLiveRefs())
        var leaked = 0
        var first: (BlockRef, Int)?
        for n in slots.indices {
            guard let node = slots[n].node else { continue }
            for ref in node.store.refs where !live.contains(ref) {
                if ref.index == BlockRef.sealIndex && node.seals[ref.volume] == ref.epoch { continue }
                leaked += 1
                if first == nil { first = (ref, n) }
            }
        }
        if let (ref, n) = first {
            violation = SectorModel.Violation(
                promise: .reclaim,
                detail: "\(leaked) unreachable blocks remain after the collector found nothing more to delete, e.g. \(ref) on node\(n + 1)"
                    + (vols.first { $0.volume.id == ref.volume }?.client.map { " (writer: \($0.stateSummary))" } ?? ""))
        }
    }
}
