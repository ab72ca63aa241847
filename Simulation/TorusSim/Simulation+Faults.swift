import TorusCore

/// Fault injection (the catalogue of `FaultKind`, at random and by schedule), healing, the
/// liveness phase, and the final phase (heal everything, lose power everywhere, reopen,
/// read every sector back).
extension Simulation {
    func nextFaultDelay() -> Nanoseconds { faultRandom.duration(.milliseconds(100), options.faultInterval * 2) }

    var nodesDown: Int { slots.filter { $0.node == nil }.count }

    /// A random fault event: a kind drawn by the weights of `faultMix` (in `FaultKind` order,
    /// then the quiet share), applied with parameters drawn from the seed.
    func injectFault() {
        defer { queue.push(now + nextFaultDelay(), .fault) }
        faultsInjected += 1
        let kinds = FaultKind.allCases.filter { (options.faultMix[$0] ?? 0) > 0 }
        let total = kinds.reduce(options.quietWeight) { $0 + options.faultMix[$1]! }
        guard total > 0 else { return }
        var roll = Int(faultRandom.below(UInt64(total)))
        for k in kinds {
            let w = options.faultMix[k]!
            if roll < w {
                applyFault(k, node: nil, duration: nil, random: true)
                return
            }
            roll -= w
        }
        // The quiet share: nothing this time.
    }

    /// Injects one fault. `node` is 0-based (nil: drawn); `duration` until it heals (nil: drawn).
    /// Random faults keep the cluster recoverable (at most replication - 1 nodes down at once);
    /// scheduled ones do what the scenario says.
    func applyFault(_ kind: FaultKind, node: Int?, duration: Nanoseconds?, volume: Int? = nil, random: Bool = false) {
        func pickNode() -> Int { node ?? Int(faultRandom.below(UInt64(slots.count))) }
        switch kind {
        case .leaseExpiry, .writerCrash, .writerCrashMidFlush, .writerPause, .clockJump:
            // A writer fault hits one volume's writer (drawn only when there are several).
            cur = volume ?? (vols.count > 1 ? Int(faultRandom.below(UInt64(vols.count))) : 0)
        default:
            break
        }
        func lasting(_ lo: Nanoseconds, _ hi: Nanoseconds) -> Nanoseconds { duration ?? faultRandom.duration(lo, hi) }
        switch kind {
        case .crashNode:
            if random { guard nodesDown < options.replication - 1 else { return } }
            let n: Int
            if let node {
                n = node
            } else {
                let up = slots.indices.filter { slots[$0].node != nil }
                guard !up.isEmpty else { return }
                n = up[Int(faultRandom.below(UInt64(up.count)))]
            }
            traceEvent(.nodeCrash, UInt64(n))
            crashNode(n)
            queue.push(now + lasting(.milliseconds(200), .seconds(4)), .heal(.restartNode(n)))
        case .wipeNode:
            if random { guard nodesDown == 0, wipes < options.replication - 1 else { return } }
            let n = pickNode()
            wipes += 1
            traceEvent(.wipeNode, UInt64(n))
            crashNode(n)
            slots[n].disk = SimDisk(geometry: slots[n].config.geometry)
            queue.push(now + lasting(.milliseconds(200), .seconds(4)), .heal(.restartNode(n)))
        case .loseNode:
            let lost = slots.filter(\.lost).count
            if random { guard nodesDown == 0, lost < options.replication - 1 else { return } }
            guard slots.count - lost - 1 >= options.replication else { return }
            let n: Int
            if let node {
                n = node
            } else {
                let left = slots.indices.filter { !slots[$0].lost }
                n = left[Int(faultRandom.below(UInt64(left.count)))]
            }
            guard !slots[n].lost else { return }
            traceEvent(.loseNode, UInt64(n))
            crashNode(n)
            slots[n].lost = true
        case .powerLoss:
            if random { guard nodesDown == 0 else { return } }
            traceEvent(.powerLoss)
            for n in slots.indices {
                crashNode(n)
                queue.push(now + lasting(.milliseconds(100), .seconds(2)), .heal(.restartNode(n)))
            }
        case .partition:
            // Both ways, or only one direction.
            let n = slots[pickNode()].id
            let id = nextFaultID
            nextFaultID += 1
            let mode = faultRandom.below(3)
            // Between the node and the host of the writers (every volume's).
            for w in vols.map(\.clientID) {
                if mode != 1 { network.block(w, n, fault: id) }
                if mode != 2 { network.block(n, w, fault: id) }
            }
            traceEvent(.partition, UInt64(n.raw), mode)
            queue.push(now + lasting(.milliseconds(100), .seconds(3)), .heal(.partition(id)))
        case .partitionOneWay:
            // The node hears the writer but its replies are lost (or the other way round).
            let n = slots[pickNode()].id
            let id = nextFaultID
            nextFaultID += 1
            let repliesLost = faultRandom.chance(0.5)
            for w in vols.map(\.clientID) {
                if repliesLost { network.block(n, w, fault: id) } else { network.block(w, n, fault: id) }
            }
            traceEvent(.oneWayPartition, UInt64(n.raw), repliesLost ? 1 : 0)
            queue.push(now + lasting(.milliseconds(100), .seconds(3)), .heal(.partition(id)))
        case .swizzleClog:
            // Clog a random subset one node at a time, then unclog them in a random order.
            let d = lasting(.seconds(1), .seconds(6))
            var order = Array(slots.indices)
            for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(faultRandom.below(UInt64(i + 1)))) }
            let subset = Array(order.prefix(1 + Int(faultRandom.below(UInt64(slots.count)))))
            let step = Nanoseconds(d.value / UInt64(2 * subset.count))
            traceEvent(.swizzleClog, UInt64(subset.count), d.value)
            var ids: [UInt64] = []
            for (i, n) in subset.enumerated() {
                let id = nextFaultID
                nextFaultID += 1
                ids.append(id)
                queue.push(now + step * UInt64(i), .clog(slots[n].id, fault: id))
            }
            for i in stride(from: ids.count - 1, to: 0, by: -1) { ids.swapAt(i, Int(faultRandom.below(UInt64(i + 1)))) }
            for (j, id) in ids.enumerated() {
                queue.push(now + Nanoseconds(d.value / 2) + step * UInt64(j + 1), .heal(.partition(id)))
            }
        case .metadataOutage:
            guard store.available else { return }
            traceEvent(.metadataOutage)
            store.available = false
            queue.push(now + lasting(.milliseconds(200), .seconds(3)), .heal(.metadata))
        case .lossyNetwork, .slowNetwork:
            guard networkFault == nil else { return }
            networkFault = (network.dropProbability, network.duplicateProbability, network.latencyMax)
            if kind == .lossyNetwork {
                network.dropProbability = max(network.dropProbability, 0.2)
                network.duplicateProbability = max(network.duplicateProbability, 0.1)
            } else {
                network.latencyMax = max(network.latencyMax, .milliseconds(50))
            }
            traceEvent(.networkFault, kind == .lossyNetwork ? 1 : 2)
            queue.push(now + lasting(.seconds(1), .seconds(5)), .heal(.network))
        case .metadataSlow:
            traceEvent(.metadataSlow, options.metadataSlowMax.value)
            metadataSlow = options.metadataSlowMax
            queue.push(now + lasting(.seconds(1), .seconds(10)), .heal(.metadataSpeed))
        case .leaseExpiry:
            guard let c = client, c.leaseID != 0 else { return }
            traceEvent(.leaseExpiry, UInt64(c.leaseID))
            _ = store.apply(.leaseRevoke(id: c.leaseID), now: now)
        case .writerCrash:
            guard client != nil else { return }
            traceEvent(.writerCrash)
            crashWriter()
            queue.push(now + lasting(.milliseconds(10), .seconds(1)), .heal(.restartWriter(cur)))
        case .writerCrashMidFlush, .writerPause:
            // Takes effect when the writer next sends a commit (handleClient).
            guard armed == nil, paused == nil else { return }
            traceEvent(.writerFaultArmed, kind == .writerPause ? 1 : 0)
            armed = kind
            armedDuration = duration
        case .clockJump:
            let max = options.clockSkewMax.value
            guard max > 0 else { return }
            writerSkew = Int64(faultRandom.below(2 * max + 1)) - Int64(max)
            traceEvent(.clockJump, UInt64(bitPattern: writerSkew))
            queue.push(now + lasting(.seconds(1), .seconds(10)), .heal(.clock(cur)))
        case .slowDisk:
            let n = pickNode()
            slots[n].slowFactor = 10 + faultRandom.below(91)
            traceEvent(.slowDisk, UInt64(n), slots[n].slowFactor)
            queue.push(now + lasting(.seconds(1), .seconds(5)), .heal(.diskSpeed(n)))
        case .deleteVolume:
            let left = vols.indices.filter { !vols[$0].deleted }
            guard collector != nil, left.count > 1 else { return }
            let i = volume ?? left[Int(faultRandom.below(UInt64(left.count)))]
            guard !vols[i].deleted else { return }
            deleteVolume(i)
        case .joinNode:
            if random { guard ringChanges < Self.ringChangesMax else { return } }
            joinNode()
        case .drainNode:
            if random { guard ringChanges < Self.ringChangesMax, nodesDown == 0 else { return } }
            drainNode(node)
        case .bitRot, .latentError:
            let media = slots.indices.filter { slots[$0].mediaFaults }
            guard let n = node ?? (media.isEmpty ? nil : media[Int(faultRandom.below(UInt64(media.count)))]) else { return }
            let firstSlotSector = slots[n].config.slotAreaOffset / UInt64(slots[n].config.sectorSize)
            let written = slots[n].disk.writtenSectors(from: firstSlotSector)
            guard !written.isEmpty else { return }
            let sector = written[Int(mediaRandom.below(UInt64(written.count)))]
            if kind == .bitRot {
                slots[n].disk.rot(sector: sector, byte: Int(mediaRandom.below(UInt64(slots[n].config.sectorSize))))
                traceEvent(.bitRot, UInt64(n), sector)
            } else {
                slots[n].disk.makeUnreadable(sector: sector)
                traceEvent(.latentError, UInt64(n), sector)
            }
        }
    }

    /// A write on a media-fault node may land one block away from where it was aimed
    /// (within the slot area: the journal is checksummed and written elsewhere).
    func misdirect(node n: Int, offset: UInt64, length: Int) -> UInt64 {
        let p = options.misdirectedWriteProbability
        guard p > 0, mediaFaultsActive, slots[n].mediaFaults else { return offset }
        let config = slots[n].config
        guard offset >= config.slotAreaOffset, mediaRandom.chance(p) else { return offset }
        let shift = UInt64(config.blockSize)
        let up = offset + shift
        let target = mediaRandom.chance(0.5) && offset >= config.slotAreaOffset + shift ? offset - shift
            : (up + UInt64(length) <= config.geometry.capacityBytes ? up : offset)
        if target != offset { traceEvent(.misdirectedWrite, UInt64(n), offset) }
        return target
    }

    func heal(_ h: Heal) {
        switch h {
        case .restartNode(let n):
            if slots[n].node == nil && !slots[n].lost { bootNode(n) }
        case .partition(let id):
            network.heal(fault: id)
        case .metadata:
            store.available = true
        case .restartWriter(let vol):
            cur = vol
            guard client == nil else { return }
            startWriter()
            if loadRunning { restartWriterLoad() }
        case .metadataSpeed:
            metadataSlow = .zero
        case .network:
            if let (drop, dup, latency) = networkFault {
                networkFault = nil
                network.latencyMax = latency
                if finalPhase == nil && livenessFrom == nil {  // the phases turned drops off for good
                    network.dropProbability = drop
                    network.duplicateProbability = dup
                }
            }
        case .diskSpeed(let n):
            slots[n].slowFactor = 1
        case .clock(let vol):
            vols[vol].writerSkew = 0
        }
    }

    // MARK: Writer takeover

    /// The writer stops running with its commit in flight; a new writer (new id, new lease)
    /// takes over once the old lease expires. The old one resumes after `duration`, or as soon
    /// as its successor is ready: the moment a missing epoch check would let it commit.
    func pauseWriter(duration: Nanoseconds?) {
        guard let c = client, paused == nil else { return }
        traceEvent(.writerPaused, UInt64(c.clientID.raw))
        retireWriter()
        paused = c
        pausedUntil = now + (duration ?? Nanoseconds.seconds(60))
        pausedResumeWhenSuccessorReady = duration == nil
        queue.push(pausedUntil!, .resumePaused(cur))
        clientID = NodeID(clientID.raw + 1)
        clientIncarnation += 1
        startWriter()
        if loadRunning { restartWriterLoad() }
    }

    /// Holds an event for the paused writer until it runs again.
    func holdForPaused(_ writer: NodeID, _ event: Event) -> Bool {
        guard let p = paused, p.clientID == writer, let until = pausedUntil, now < until else { return false }
        pausedHeld.append((now, event))
        return true
    }

    func resumePaused() {
        guard let p = paused, pausedUntil != nil else { return }
        pausedUntil = nil
        traceNote("\(Self.name(UInt64(p.clientID.raw))) resumes with \(pausedHeld.count) held events")
        for (k, (_, e)) in pausedHeld.enumerated() { queue.push(now + Nanoseconds(UInt64(k) * 1000), e) }
        pausedHeld = []
        handlePaused(paused!.tick(now: writerNow()))
    }

    /// Effects of the paused (old) writer: its ops were written off when it was replaced.
    func handlePaused(_ outputs: [ClientOutput]) {
        for o in outputs {
            guard let p = paused else { return }
            switch o {
            case .send(let to, let msg):
                send(from: p.clientID, to: to, msg)
            case .metadata(let id, let req):
                if let delay = network.deliveries().first {
                    queue.push(now + delay, .metaRequest(writer: p.clientID, incarnation: 0, id, req))
                }
            case .timer(let at):
                queue.push(virtualTime(ofWriterTime: at), .clientTick(writer: p.clientID, incarnation: 0, at: at))
            case .complete:
                break
            case .phaseChanged(let phase):
                if phase == .fenced {
                    traceEvent(.pausedWriterFenced, UInt64(p.clientID.raw))
                    dropPaused()
                    return
                }
            }
        }
    }

    func dropPaused() {
        paused = nil
        pausedUntil = nil
        pausedHeld = []
        pausedResumeWhenSuccessorReady = false
    }

    // MARK: Checkers

    /// Fencing: every successful commit must come from the newest epoch granted so far, and
    /// generations only move forward.
    func checkFencing(_ t: MetaTxn) {
        for op in t.success {
            guard case .put(let key, let value, _) = op else { continue }
            if key == VolumeInfo.epochKey(volume.name), let e = MetaValue.u64(value) {
                grantedEpoch = max(grantedEpoch, e)
            } else if key == VolumeInfo.headKey(volume.name), let head = VolumeHead.decode(value) {
                commits += 1
                if head.epoch < grantedEpoch {
                    violation = SectorModel.Violation(
                        promise: .fencing,
                        detail: "head generation \(head.generation) was committed by epoch \(head.epoch) after epoch \(grantedEpoch) was granted")
                } else if let last = lastCommit, head.generation <= last.generation, head.epoch == last.epoch {
                    violation = SectorModel.Violation(
                        promise: .fencing,
                        detail: "head generation went from \(last.generation) back to \(head.generation) within epoch \(head.epoch)")
                }
                lastCommit = (head.epoch, head.generation)
            }
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

    // MARK: Phases

    /// Heals every fault and brings every process back.
    func healEverything() {
        network.healAll()
        if let (_, _, latency) = networkFault {
            network.latencyMax = latency
            networkFault = nil
        }
        network.dropProbability = 0
        network.duplicateProbability = 0
        mediaFaultsActive = false
        store.available = true
        metadataSlow = .zero
        for n in slots.indices {
            slots[n].slowFactor = 1
            if slots[n].node == nil && !slots[n].lost { bootNode(n) }
        }
        for i in vols.indices {
            cur = i
            writerSkew = 0
            armed = nil
            if paused != nil { dropPaused() }
        }
    }

    /// The liveness phase: no more faults, everything healed, the load keeps running and must
    /// make progress.
    func beginLiveness() {
        livenessFrom = now
        healEverything()
        for i in vols.indices where vols[i].client == nil {
            cur = i
            startWriter()
            restartWriterLoad()
        }
        queue.push(now + options.livenessDuration, .endOfLoad)
    }

    func endLiveness() {
        guard let from = livenessFrom, violation == nil else { return }
        if livenessOps == 0 || livenessFlushes == 0 {
            violation = SectorModel.Violation(
                promise: .liveness,
                detail: "in the \((now - from).value / 1_000_000) ms after healing, \(livenessOps) ops and \(livenessFlushes) flushes "
                    + "completed; writers: " + vols.map { $0.client?.stateSummary ?? "down" }.joined(separator: " | "))
        }
    }

    /// Stops new load and faults; heals everything; waits for in-flight ops.
    func beginFinal() {
        if livenessFrom != nil { endLiveness() }
        loadRunning = false
        finalPhase = .waitIdle
        healEverything()
        for i in vols.indices where vols[i].client == nil {
            cur = i
            startWriter()
        }
        queue.push(now + Nanoseconds.seconds(120), .finalCheck(.timeout))
        if allIdle { finalStep(.powerLoss) }
    }

    func finalStep(_ step: FinalStep) {
        switch step {
        case .waitIdle:
            break
        case .powerLoss:
            // Everything loses power at once: only what was acknowledged durable must survive.
            finalPhase = .powerLoss
            traceEvent(.powerLoss, 1)
            for i in vols.indices {
                cur = i
                crashWriter()
            }
            for n in slots.indices { crashNode(n) }
            for n in slots.indices where !slots[n].lost { bootNode(n) }
            finalPhase = .waitOpen
            for i in vols.indices {
                cur = i
                startWriter()
            }
        case .waitOpen:
            break
        case .readBack:
            // This volume's writer is open (`cur`): read it back; others may still be opening.
            finalPhase = .readBack
            v.readBackStarted = true
            finalNextRead = 0
            for _ in 0..<4 { finalReadNext() }
        case .settle:
            // Wait (up to 10 s) for the read-repairs the read-back started; then done.
            if vols.contains(where: { ($0.client?.repairsInFlight ?? 0) > 0 }), now < settleDeadline {
                queue.push(now + Nanoseconds.milliseconds(100), .finalCheck(.settle))
                return
            }
            if collector != nil && options.checkGarbage {
                finalPhase = .collect
                finalStep(.collect)
                return
            }
            finalPhase = nil
            queue = EventQueue()
        case .collect:
            finalCollectPass()
        case .timeout:
            if finalPhase == .waitOpen || finalPhase == .readBack,
               let c = vols.first(where: { !$0.readBackStarted && ($0.client?.stats.mapReadFailures ?? 0) > 0 })?.client {
                violation = SectorModel.Violation(
                    promise: .durability,
                    detail: "the committed block map of \(c.info.name) generation \(c.generation) cannot be read from any replica")
            } else if finalPhase == .collect && violation == nil && finalCollectMisplaced > 0 {
                violation = SectorModel.Violation(
                    promise: .convergence,
                    detail: "after healing, \(finalCollectPasses) collector passes in 120 s still found \(finalCollectMisplaced) "
                        + "committed blocks not exactly on their placement")
            } else if finalPhase == .collect && violation == nil {
                violation = SectorModel.Violation(
                    promise: .reclaim,
                    detail: "after healing, \(finalCollectPasses) collector passes in 120 s did not finish reclaiming garbage")
            } else if finalPhase != nil && violation == nil {
                let stuck = vols.first(where: { !$0.readBackDone }) ?? vols[0]
                violation = SectorModel.Violation(
                    promise: .liveness,
                    detail: "after healing, the final phase was stuck at \(finalPhase!) for 120 s (\(stuck.inflight.count) ops in flight on \(stuck.volume.name)); "
                        + "writer: \(stuck.client?.stateSummary ?? "down")")
            }
        }
    }

    /// Reads the volume back in 64 KiB pieces, a few at a time, each checked by the model.
    func finalReadNext() {
        guard client != nil, violation == nil else { return }
        let chunk: UInt64 = 16
        let total = UInt64(sectorBusy.count)
        guard finalNextRead < total else {
            if inflight.isEmpty { v.readBackDone = true }
            if vols.allSatisfy(\.readBackDone) && finalPhase == .readBack {
                finalPhase = .settle
                settleDeadline = now + Nanoseconds.seconds(10)
                queue.push(now + Nanoseconds.milliseconds(100), .finalCheck(.settle))
            }
            return
        }
        let count = Int(min(chunk, total - finalNextRead))
        let id = OpID(nextOp)
        nextOp += 1
        inflight[id] = InflightOp(kind: .read, slot: 0, firstSector: finalNextRead, sectorCount: count, value: 0)
        let offset = finalNextRead * UInt64(SectorModel.sectorSize)
        finalNextRead += UInt64(count)
        handleClient(client!.submit(id, .read(offset: offset, length: count * SectorModel.sectorSize), now: writerNow()))
    }
}
