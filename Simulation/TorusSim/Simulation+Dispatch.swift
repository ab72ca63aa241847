import TorusCore

/// The event loop's one step: each event is traced (hashed), then handled.
extension Simulation {
    func dispatch(_ e: Event) {
        switch e {
        case .deliver(let from, let to, let msg, let si, let ri):
            traceEvent(.messageDelivered, UInt64(from.raw) << 20 | UInt64(to.raw), msg.kindCode)
            if traceSink != nil { traceNote("    \(Self.detail(msg))") }
            deliver(from: from, to: to, msg, senderIncarnation: si, receiverIncarnation: ri)
        case .disk(let n, let inc, let id, let req):
            traceEvent(.diskOpDone, UInt64(n), id.raw)
            diskOpDone(node: n, incarnation: inc, id, req)
        case .metaRequest(let writer, let inc, let id, let req):
            traceEvent(.metadataRequest, id.raw)
            writerMetadataRequest(e, writer: writer, incarnation: inc, id, req)
        case .metaReply(let writer, let inc, let id, let response):
            traceEvent(.metadataReply, id.raw, UInt64(writer.raw))
            writerMetadataReply(e, writer: writer, incarnation: inc, id, response)
        case .clientTick(let writer, let inc, let at):
            traceEvent(.writerTick, UInt64(writer.raw))
            writerTick(e, writer: writer, incarnation: inc, at: at)
        case .leaseTick:
            traceEvent(.leaseTick)
            store.tick(now: now)
            if finalPhase == nil || !queue.isEmpty { queue.push(now + Nanoseconds.milliseconds(100), .leaseTick) }
        case .workload(let vol, let slot, let gen):
            traceEvent(.workloadOp, UInt64(slot), UInt64(vol))
            cur = vol
            if gen == slotGeneration { issueOp(slot: slot) }
        case .fault:
            traceEvent(.faultTimer)
            if loadRunning && livenessFrom == nil { injectFault() }
        case .heal(let h):
            traceEvent(.heal)
            heal(h)
        case .endOfLoad:
            traceEvent(.endOfLoad)
            beginFinal()
        case .finalCheck(let step):
            traceEvent(.finalStep)
            finalStep(step)
        case .scheduled(let i):
            traceEvent(.scheduledFault, UInt64(i))
            applyScheduledFault(i)
        case .clog(let node, let fault):
            traceEvent(.clog, UInt64(node.raw))
            clog(node, fault: fault)
        case .endOfSafety:
            traceEvent(.endOfSafety)
            beginLiveness()
        case .resumePaused(let vol):
            traceEvent(.pausedWriterResumes, UInt64(vol))
            cur = vol
            resumePaused()
        case .successorTakesOver(let vol, let writer, let incarnation):
            cur = vol
            successorTakesOver(writer, incarnation: incarnation)
        case .scrub(let n, let inc):
            traceEvent(.scrub, UInt64(n))
            scrub(node: n, incarnation: inc)
        case .collectorTick:
            traceEvent(.collectorTick)
            guard collector != nil else { return }
            handleCollector(collector!.tick(now: now))
        case .collectorMeta(let id, let req):
            traceEvent(.metadataRequest, id.raw)
            guard let response = store.handle(req, now: now) else { return }
            queue.push(now + metadataDelay(), .collectorMetaReply(id, response))
        case .collectorMetaReply(let id, let response):
            traceEvent(.metadataReply, id.raw, UInt64(Self.collectorID.raw))
            guard collector != nil else { return }
            handleCollector(collector!.metadataReply(id, response, now: now))
        case .ringUpdate(let vol):
            traceEvent(.ringUpdate, UInt64(vol))
            deliverRing(volume: vol)
        case .snapshot(let vol):
            snapshotTimer(volume: vol)
        case .clone(let vol):
            cloneNewestSnapshot(of: vol)
        case .rollback(let vol):
            rollbackTimer(volume: vol)
        }
    }

    /// A disk op of node `n` completes (unless the node restarted since it was issued).
    func diskOpDone(node n: Int, incarnation inc: UInt64, _ id: DiskOpID, _ req: DiskRequest) {
        guard slots[n].incarnation == inc, slots[n].node != nil else { return }
        let completion: DiskCompletion
        switch req {
        case .read(let offset, let length):
            if !slots[n].disk.validRange(offset, length) {
                completion = .read(.failure(.outOfRange(offset: offset, length: length)))
            } else if let bytes = slots[n].disk.readChecked(offset: offset, length: length) {
                completion = .read(.success(bytes))
            } else {
                traceNote("node\(n + 1)  latent sector error reading \(length) bytes at \(offset)")
                completion = .read(.failure(.ioError(offset: offset)))
            }
        case .write:
            slots[n].disk.completeWrite(id)
            completion = .written(.success(()))
        case .sync:
            slots[n].disk.sync()
            completion = .synced(.success(()))
        }
        let outputs = slots[n].node!.diskCompleted(id, completion)
        perform(node: n, outputs)
    }

    /// One network hop to or from the metadata store, slower while `metadata-slow` lasts.
    func metadataDelay() -> Nanoseconds {
        var delay = network.latency()
        if metadataSlow.value > 0 { delay = delay + metaSlowRandom.duration(.zero, metadataSlow) }
        return delay
    }

    /// A writer's metadata request reaches the store; the reply goes back over the network.
    func writerMetadataRequest(_ e: Event, writer: NodeID, incarnation inc: UInt64, _ id: MetaRequestID, _ req: MetaRequest) {
        cur = volumeIndex(ofWriter: writer)
        if writer != clientID, holdForPaused(writer, e) { return }
        guard !network.isBlocked(writer, NodeID(0)), let response = store.handle(req, now: now) else { return }
        if case .txn(let r) = response, r.succeeded, case .txn(let t) = req { checkFencing(t) }
        queue.push(now + metadataDelay(), .metaReply(writer: writer, incarnation: inc, id, response))
    }

    /// The store's reply reaches the writer (or the paused writer it was meant for).
    func writerMetadataReply(_ e: Event, writer: NodeID, incarnation inc: UInt64, _ id: MetaRequestID, _ response: MetaResponse) {
        cur = volumeIndex(ofWriter: writer)
        if writer != clientID {
            if holdForPaused(writer, e) { return }
            guard let p = paused, p.clientID == writer, !network.isBlocked(NodeID(0), writer) else { return }
            handlePaused(paused!.metadataReply(id, response, now: pausedNow()))
            return
        }
        guard inc == clientIncarnation, client != nil, !network.isBlocked(NodeID(0), clientID) else { return }
        handleClient(client!.metadataReply(id, response, now: writerNow()))
    }

    /// A writer's timer fires (by its own clock, which may run apart from virtual time).
    func writerTick(_ e: Event, writer: NodeID, incarnation inc: UInt64, at: Instant) {
        cur = volumeIndex(ofWriter: writer)
        if writerNow() < at {
            // The writer's clock was set back after this tick was planned: not due yet for it.
            queue.push(max(now + Nanoseconds(1000), virtualTime(ofWriterTime: at)), e)
            return
        }
        if writer != clientID {
            if holdForPaused(writer, e) { return }
            guard let p = paused, p.clientID == writer else { return }
            handlePaused(paused!.tick(now: pausedNow()))
            return
        }
        guard inc == clientIncarnation, client != nil else { return }
        clientTimerAt = nil
        handleClient(client!.tick(now: writerNow()))
    }

    /// A fault from the scenario's schedule, applied while the safety phase lasts.
    func applyScheduledFault(_ i: Int) {
        let f = options.schedule[i]
        if loadRunning && livenessFrom == nil {
            applyFault(f.kind, node: f.node.map { $0 - 1 }, duration: f.duration, volume: f.volume.map { $0 - 1 })
        }
    }

    /// One step of a swizzle-clog: every writer loses its links to `node` until the fault heals.
    func clog(_ node: NodeID, fault: UInt64) {
        if livenessFrom == nil && finalPhase == nil {
            for vs in vols {
                network.block(vs.clientID, node, fault: fault)
                network.block(node, vs.clientID, fault: fault)
            }
        }
    }

    /// Node `n` scrubs its next block, and plans the one after.
    func scrub(node n: Int, incarnation inc: UInt64) {
        guard slots[n].incarnation == inc, slots[n].node != nil, let every = options.scrubInterval else { return }
        perform(node: n, slots[n].node!.scrubNext())
        if finalPhase == nil || finalPhase == .collect || !queue.isEmpty { queue.push(now + every, .scrub(node: n, incarnation: inc)) }
    }
}
