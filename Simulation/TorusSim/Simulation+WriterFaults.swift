import TorusCore

/// Faults of the volume writers (of volume `cur`): lease expiry, crashes, a clock jump, and a
/// crash or pause at the next commit; and the takeover that a paused writer lives through.
extension Simulation {
    func applyLeaseExpiry() {
        guard let c = client, c.leaseID != 0 else { return }
        traceEvent(.leaseExpiry, UInt64(c.leaseID))
        _ = store.apply(.leaseRevoke(id: c.leaseID), now: now)
    }

    func applyWriterCrash(duration: Nanoseconds?) {
        guard client != nil else { return }
        traceEvent(.writerCrash)
        crashWriter()
        queue.push(now + lasting(duration, .milliseconds(10), .seconds(1)), .heal(.restartWriter(cur)))
    }

    /// writer-crash-mid-flush and writer-pause take effect when the writer next sends a
    /// commit (handleClient).
    func armWriterFault(_ kind: FaultKind, duration: Nanoseconds?) {
        guard armed == nil, paused == nil else { return }
        traceEvent(.writerFaultArmed, kind == .writerPause ? 1 : kind == .writerPauseAppend ? 2 : kind == .writerPauseBlocks ? 3 : 0)
        armed = kind
        armedDuration = duration
    }

    func applyClockJump(duration: Nanoseconds?) {
        let max = options.clockSkewMax.value
        guard max > 0 else { return }
        writerSkew = Int64(faultRandom.below(2 * max + 1)) - Int64(max)
        traceEvent(.clockJump, UInt64(bitPattern: writerSkew))
        queue.push(now + lasting(duration, .seconds(1), .seconds(10)), .heal(.clock(cur)))
    }

    /// The writer and the metadata store cannot reach each other for `duration`; the nodes
    /// still can. A successor takes over once the writer's lease could have expired.
    func applyWriterMetadataPartition(duration: Nanoseconds?) {
        guard let c = client, paused == nil else { return }
        let id = nextFaultID
        nextFaultID += 1
        network.block(c.clientID, NodeID(0), fault: id)
        network.block(NodeID(0), c.clientID, fault: id)
        traceEvent(.writerMetadataPartition, UInt64(c.clientID.raw))
        queue.push(now + lasting(duration, .seconds(1), .seconds(10)), .heal(.partition(id)))
        let ttl = Nanoseconds.seconds(UInt64(c.config.leaseTTLSeconds))
        queue.push(now + ttl + Nanoseconds.seconds(1), .successorTakesOver(cur, writer: c.clientID, incarnation: clientIncarnation))
    }

    /// The cut-off writer moves aside, running, and a successor starts (unless it crashed and
    /// restarted meanwhile, or the final phase began).
    func successorTakesOver(_ writer: NodeID, incarnation: UInt64) {
        guard let c = client, c.clientID == writer, clientIncarnation == incarnation, paused == nil, finalPhase == nil else { return }
        traceEvent(.successorTakesOver, UInt64(writer.raw))
        pauseWriter(duration: .zero)
    }

    // MARK: Writer takeover

    /// The writer stops running with its commit in flight; a new writer (new id, new lease)
    /// takes over once the old lease expires. The old one resumes after `duration`, or as soon
    /// as its successor is ready: the moment a missing epoch check would let it commit.
    func pauseWriter(duration: Nanoseconds?, frozen: Bool = false) {
        guard let c = client, paused == nil else { return }
        traceEvent(.writerPaused, UInt64(c.clientID.raw))
        vols[cur].pausedAt = now
        vols[cur].pausedFrozen = frozen
        vols[cur].pausedClockLag = 0
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
        // A frozen writer's clock did not see the pause: it still trusts its lease.
        if vols[cur].pausedFrozen { vols[cur].pausedClockLag = Int64(now.nanoseconds - vols[cur].pausedAt.nanoseconds) }
        let outbox = pausedOutbox
        pausedOutbox = []
        handlePaused(outbox)
        guard paused != nil else { return }
        handlePaused(paused!.tick(now: pausedNow()))
    }

    /// The paused writer's clock: the writer's, less the time it was frozen.
    func pausedNow() -> Instant {
        let t = Int64(writerNow().nanoseconds) - vols[cur].pausedClockLag
        return Instant(nanoseconds: UInt64(max(0, t)))
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
                let lagged = Instant(nanoseconds: UInt64(Int64(at.nanoseconds) + vols[cur].pausedClockLag))
                queue.push(virtualTime(ofWriterTime: lagged), .clientTick(writer: p.clientID, incarnation: 0, at: at))
            case .complete:
                checkLogAcks(p)
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
        pausedOutbox = []
        vols[cur].pausedClockLag = 0
        pausedResumeWhenSuccessorReady = false
    }
}
