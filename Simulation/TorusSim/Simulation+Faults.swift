import TorusCore

/// Fault injection, healing, and the final phase (heal everything, lose power everywhere,
/// reopen, read every sector back).
extension Simulation {
    func nextFaultDelay() -> Nanoseconds { faultRandom.duration(.milliseconds(100), options.faultInterval * 2) }

    var nodesDown: Int { slots.filter { $0.node == nil }.count }

    func injectFault() {
        defer { queue.push(now + nextFaultDelay(), .fault) }
        faultsInjected += 1
        let roll = faultRandom.below(100)
        switch roll {
        case 0..<35:
            // Crash one storage node, keeping at most replication - 1 down at once.
            guard nodesDown < options.replication - 1 else { return }
            let up = slots.indices.filter { slots[$0].node != nil }
            let n = up[Int(faultRandom.below(UInt64(up.count)))]
            traceEvent(20, UInt64(n))
            crashNode(n)
            queue.push(now + faultRandom.duration(.milliseconds(200), .seconds(4)), .heal(.restartNode(n)))
        case 35..<40:
            // Whole-cluster power loss: every node loses its unsynced writes at once.
            guard nodesDown == 0 else { return }
            traceEvent(21)
            for n in slots.indices {
                crashNode(n)
                queue.push(now + faultRandom.duration(.milliseconds(100), .seconds(2)), .heal(.restartNode(n)))
            }
        case 40..<65:
            // Partition the writer from one node: both ways, or only one direction.
            let n = slots[Int(faultRandom.below(UInt64(slots.count)))].id
            let id = nextFaultID
            nextFaultID += 1
            let mode = faultRandom.below(3)
            if mode != 1 { network.block(clientID, n, fault: id) }
            if mode != 2 { network.block(n, clientID, fault: id) }
            traceEvent(22, UInt64(n.raw), mode)
            queue.push(now + faultRandom.duration(.milliseconds(100), .seconds(3)), .heal(.partition(id)))
        case 65..<80:
            guard store.available else { return }
            traceEvent(23)
            store.available = false
            queue.push(now + faultRandom.duration(.milliseconds(200), .seconds(3)), .heal(.metadata))
        case 80..<88:
            guard client != nil else { return }
            traceEvent(24)
            crashWriter()
            queue.push(now + faultRandom.duration(.milliseconds(10), .seconds(1)), .heal(.restartWriter))
        default:
            break  // a quiet interval
        }
    }

    func heal(_ h: Heal) {
        switch h {
        case .restartNode(let n):
            if slots[n].node == nil { bootNode(n) }
        case .partition(let id):
            network.heal(fault: id)
        case .metadata:
            store.available = true
        case .restartWriter:
            guard client == nil else { return }
            startWriter()
            if loadRunning { restartWriterLoad() }
        }
    }

    /// Stops new load and faults; heals everything; waits for in-flight ops.
    func beginFinal() {
        loadRunning = false
        finalPhase = .waitIdle
        network.healAll()
        store.available = true
        for n in slots.indices where slots[n].node == nil { bootNode(n) }
        if client == nil { startWriter() }
        queue.push(now + Nanoseconds.seconds(120), .finalCheck(.timeout))
        if inflight.isEmpty { finalStep(.powerLoss) }
    }

    func finalStep(_ step: FinalStep) {
        switch step {
        case .waitIdle:
            break
        case .powerLoss:
            // Everything loses power at once: only what was acknowledged durable must survive.
            finalPhase = .powerLoss
            crashWriter()
            for n in slots.indices { crashNode(n) }
            for n in slots.indices { bootNode(n) }
            finalPhase = .waitOpen
            startWriter()
        case .waitOpen:
            break
        case .readBack:
            finalPhase = .readBack
            finalNextRead = 0
            for _ in 0..<4 { finalReadNext() }
        case .timeout:
            if finalPhase == .waitOpen, let c = client, c.stats.mapReadFailures > 0 {
                violation = SectorModel.Violation(
                    promise: .durability,
                    detail: "the committed block map of generation \(c.generation) cannot be read from any replica")
            } else if finalPhase != nil && violation == nil {
                violation = SectorModel.Violation(
                    promise: .liveness,
                    detail: "after healing, the final phase was stuck at \(finalPhase!) for 120 s (\(inflight.count) ops in flight); "
                        + "writer: \(client?.stateSummary ?? "down")")
            }
        }
    }

    /// Reads the volume back in 64 KiB pieces, a few at a time, each checked by the model.
    func finalReadNext() {
        guard client != nil, violation == nil else { return }
        let chunk: UInt64 = 16
        let total = UInt64(sectorBusy.count)
        guard finalNextRead < total else {
            if inflight.isEmpty {
                finalPhase = nil
                queue = EventQueue()  // done: nothing else matters
            }
            return
        }
        let count = Int(min(chunk, total - finalNextRead))
        let id = OpID(nextOp)
        nextOp += 1
        inflight[id] = InflightOp(kind: .read, slot: 0, firstSector: finalNextRead, sectorCount: count, value: 0)
        let offset = finalNextRead * UInt64(SectorModel.sectorSize)
        finalNextRead += UInt64(count)
        handleClient(client!.submit(id, .read(offset: offset, length: count * SectorModel.sectorSize), now: now))
    }
}
