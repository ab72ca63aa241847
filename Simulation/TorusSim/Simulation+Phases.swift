import TorusCore

/// The phases after the load with faults: liveness (everything healed, the load must make
/// progress) and the final check (heal everything, lose power everywhere, reopen, read every
/// sector back, then let the collector finish).
extension Simulation {
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
            checkSnapshots()
            if collector != nil && options.checkGarbage && violation == nil {
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
