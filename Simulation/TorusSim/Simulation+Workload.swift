import TorusCore

/// The workload generator and the writer process.
extension Simulation {
    func thinkTime() -> Nanoseconds {
        // Exponential-ish: uniform in [0, 2 × mean].
        workRandom.duration(.zero, options.thinkTimeMean * 2)
    }

    // MARK: Writer process

    func startWriter() {
        guard !v.deleted else { return }
        client = VolumeClient(info: volume, ring: ring, clientID: clientID, config: clientConfig, seed: clientSeeds.next())
        writerDown = false
        handleClient(client!.start(now: writerNow()))
    }

    /// The writer's clock: virtual time plus its offset (clock-jump), never running backwards.
    func writerNow() -> Instant {
        guard writerSkew != 0 || lastWriterNow > now else { return now }
        let shifted = Int64(now.nanoseconds) + writerSkew
        let t = Instant(nanoseconds: UInt64(max(0, shifted)))
        if t > lastWriterNow { lastWriterNow = t }
        return lastWriterNow
    }

    /// When the writer's clock reads `at`, in virtual time (not before now).
    func virtualTime(ofWriterTime at: Instant) -> Instant {
        let t = Int64(at.nanoseconds) - writerSkew
        return max(now, Instant(nanoseconds: UInt64(max(0, t))))
    }

    static func isCommit(_ req: MetaRequest, volume: String) -> Bool {
        guard case .txn(let t) = req else { return false }
        return t.success.contains { if case .put(let k, _, _) = $0 { return k == VolumeInfo.headKey(volume) } else { return false } }
    }

    /// The writer process dies: every volatile state is gone, in-flight ops never complete.
    func crashWriter() {
        guard client != nil else { return }
        retireWriter()
        client = nil
        clientIncarnation += 1
        writerDown = true
    }

    /// The model's side of losing the current writer (crash or takeover): its in-flight ops
    /// never complete, and what it acknowledged without a flush may be lost.
    func retireWriter() {
        retiredLogCommits += client?.stats.logCommits ?? 0
        var inFlightWrites: [(UInt64, UInt64)] = []
        for id in inflight.keys.sorted() {
            let op = inflight[id]!
            switch op.kind {
            case .write, .trim:
                for k in 0..<op.sectorCount { inFlightWrites.append((op.firstSector + UInt64(k), op.value == 0 ? 0 : op.value)) }
            case .read, .flush, .snapshot: break
            }
        }
        model.writerCrashed(inFlight: inFlightWrites)
        snapshotsLoseWriter()
        inflight.removeAll()
        for i in sectorBusy.indices { sectorBusy[i] = 0 }
        repairs += client!.stats.readRepairs
        fallbackPuts += client!.stats.putFallbacks
        clientTimerAt = nil
        writerRestarts += 1
        // Abandon the slots' pending think-time events and restart them once the writer is back.
        slotGeneration += 1
    }

    func restartWriterLoad() {
        for s in 0..<options.queueDepth { queue.push(now + thinkTime(), .workload(volume: cur, slot: s, generation: slotGeneration)) }
    }

    /// The armed writer fault strikes as the writer sends a commit (`outputs[i]`).
    func armedFaultStrikes(after i: Int, of outputs: [ClientOutput]) {
        guard let kind = armed else { return }
        armed = nil
        if kind == .writerPause {
            pauseWriter(duration: armedDuration)
            handlePaused(Array(outputs.dropFirst(i + 1)))
        } else {
            // The commit is on its way (or lost with the connection): the writer dies now.
            traceEvent(.writerCrash, 1)
            crashWriter()
            queue.push(now + (armedDuration ?? faultRandom.duration(.milliseconds(10), .seconds(1))), .heal(.restartWriter(cur)))
        }
    }

    /// A writer's append of a log record (not a recovery's restoring copy).
    static func isAppend(_ o: ClientOutput) -> Bool {
        guard case .send(_, .putBlock(_, let ref, _, _, let restore, _)) = o else { return false }
        return ref.index == BlockRef.logIndex && !restore
    }

    func handleClient(_ outputs: [ClientOutput]) {
        if armed == .writerPauseBlocks, client != nil, outputs.contains(where: Self.isAppend) {
            // The record leaves; the rest of the step (the blocks' puts) is held with the writer.
            armed = nil
            for o in outputs where Self.isAppend(o) { if case .send(let to, let msg) = o { send(from: clientID, to: to, msg) } }
            pauseWriter(duration: armedDuration, frozen: true)
            pausedOutbox = outputs.filter { !Self.isAppend($0) }
            return
        }
        for (i, o) in outputs.enumerated() {
            guard client != nil else { return }
            switch o {
            case .send(let to, let msg):
                if armed == .writerPauseAppend, case .putBlock(_, let ref, _, _, _, _) = msg, ref.index == BlockRef.logIndex {
                    // Frozen before the append leaves: it goes out when the writer resumes.
                    armed = nil
                    pauseWriter(duration: armedDuration, frozen: true)
                    pausedOutbox = Array(outputs.dropFirst(i))
                    return
                }
                send(from: clientID, to: to, msg)
                if armed == .writerCrashMidFlush, case .putBlock(_, let ref, _, _, _, _) = msg, ref.index == BlockRef.logIndex {
                    // A log append (or a checkpoint's header) is a commit too; a crash here
                    // leaves the record on some of its nodes only.
                    return armedFaultStrikes(after: i, of: outputs)
                }
            case .metadata(let id, let req):
                // Requests to the store ride one connection: lost or delivered once.
                if let delay = network.deliveries().first {
                    queue.push(now + delay, .metaRequest(writer: clientID, incarnation: clientIncarnation, id, req))
                }
                if armed == .writerPause || armed == .writerCrashMidFlush, Self.isCommit(req, volume: volume.name) {
                    return armedFaultStrikes(after: i, of: outputs)
                }
            case .timer(let writerAt):
                // Every request gets its tick. (Skipping one because an earlier tick was pending
                // stalled a writer whose clock jumped: the earlier tick came too soon for it, and
                // it never asked again for the timer it believed was set.)
                let at = virtualTime(ofWriterTime: writerAt)
                clientTimerAt = at
                queue.push(at, .clientTick(writer: clientID, incarnation: clientIncarnation, at: writerAt))
            case .complete(let id, let result):
                opCompleted(id, result)
                if let c = client { checkLogAcks(c) }
            case .phaseChanged(let phase):
                traceEvent(.writerPhase, phase == .ready ? 1 : 2)
                if let c = client { checkLogAcks(c) }
                if phase == .fenced {
                    // A fenced writer can make nothing visible any more: it is as good as crashed.
                    crashWriter()
                    queue.push(now + Nanoseconds.milliseconds(100), .heal(.restartWriter(cur)))
                    return
                }
                if phase == .ready && (finalPhase == .waitOpen || finalPhase == .readBack) && !v.readBackStarted { finalStep(.readBack) }
                if phase == .ready && paused != nil && pausedResumeWhenSuccessorReady {
                    // The successor holds the new epoch: let the old writer run again now.
                    pausedResumeWhenSuccessorReady = false
                    queue.push(now + Nanoseconds.milliseconds(1), .resumePaused(cur))
                }
            }
        }
    }

    // MARK: Ops

    func issueOp(slot: Int) {
        guard loadRunning, client != nil, violation == nil else { return }
        let sectorCount = sectorBusy.count
        let roll = workRandom.below(100)
        let id = OpID(nextOp)
        nextOp += 1
        let mix = options.opMix
        let readEnd = UInt64(mix.flush + mix.read), trimEnd = readEnd + UInt64(mix.trim)
        let writeEnd = trimEnd + UInt64(mix.write)
        if roll < UInt64(mix.flush) {
            inflight[id] = InflightOp(kind: .flush(mark: model.flushMark), slot: slot, firstSector: 0, sectorCount: 0, value: 0)
            handleClient(client!.submit(id, .flush, now: writerNow()))
            return
        }
        // A range of 1–16 sectors (up to 64 KiB: crosses block boundaries) not overlapping a write in flight.
        // (Never more sectors than the volume has: a 4 KiB volume crashed the workload.)
        // Sizes: 80% up to 4 sectors, 20% up to `opSizeMax` (default 16 sectors, 64 KiB).
        let largest = max(1, options.opSizeMax / SectorModel.sectorSize)
        let count = min(Int(workRandom.below(UInt64(workRandom.chance(0.8) ? min(4, largest) : largest))) + 1, sectorCount)
        var first: UInt64 = 0
        var found = false
        if options.sequential {
            // Each volume's ops follow one another through the volume, wrapping at the end.
            first = v.cursor + UInt64(count) <= UInt64(sectorCount) ? v.cursor : 0
            found = (0..<count).allSatisfy { sectorBusy[Int(first) + $0] == 0 }
            if found { v.cursor = first + UInt64(count) }
        } else {
            for _ in 0..<8 {
                first = workRandom.below(UInt64(sectorCount - count + 1))
                if (0..<count).allSatisfy({ sectorBusy[Int(first) + $0] == 0 }) { found = true; break }
            }
        }
        guard found else {
            queue.push(now + thinkTime(), .workload(volume: cur, slot: slot, generation: slotGeneration))
            return
        }
        let offset = first * UInt64(SectorModel.sectorSize)
        if roll < readEnd {
            // A read marks its range busy too (value 1), so no write overlaps a read in flight.
            inflight[id] = InflightOp(kind: .read, slot: slot, firstSector: first, sectorCount: count, value: 0)
            for k in 0..<count { sectorBusy[Int(first) + k] = 1 }
            handleClient(client!.submit(id, .read(offset: offset, length: count * SectorModel.sectorSize), now: writerNow()))
        } else if roll < trimEnd {
            inflight[id] = InflightOp(kind: .trim, slot: slot, firstSector: first, sectorCount: count, value: 0)
            for k in 0..<count { sectorBusy[Int(first) + k] = 2 }
            snapshotsSeeWrite(firstSector: first, count: count, value: 0)
            handleClient(client!.submit(id, .trim(offset: offset, length: count * SectorModel.sectorSize), now: writerNow()))
        } else {
            let fua = roll >= writeEnd
            let value = nextWriteValue
            nextWriteValue += 1
            let data = SectorModel.writeBytes(value: value, first: first, count: count)
            inflight[id] = InflightOp(kind: .write(fua: fua), slot: slot, firstSector: first, sectorCount: count, value: value)
            for k in 0..<count { sectorBusy[Int(first) + k] = 2 }
            snapshotsSeeWrite(firstSector: first, count: count, value: value)
            handleClient(client!.submit(id, .write(offset: offset, data: data, fua: fua), now: writerNow()))
        }
    }

    func opCompleted(_ id: OpID, _ result: Result<VolumeOpResult, VolumeError>) {
        guard let op = inflight.removeValue(forKey: id) else { return }
        opsCompleted += 1
        if case .snapshot(let k) = op.kind {
            if case .failure(let e) = result, case .noSpace = e { noSpaceErrors += 1 }
            if case .success = result { snapshotCompleted(k, ok: true) } else { snapshotCompleted(k, ok: false) }
            if finalPhase == .waitIdle && allIdle { finalStep(.powerLoss) }
            return
        }
        if livenessFrom != nil && finalPhase == nil {
            if case .success = result { livenessOps += 1 }
            if case (.flush, .success) = (op.kind, result) { livenessFlushes += 1 }
        }
        for k in 0..<op.sectorCount { sectorBusy[Int(op.firstSector) + k] = 0 }
        switch (op.kind, result) {
        case (.flush, .success), (.write(fua: true), .success): if !store.available { flushesDuringOutage += 1 }
        default: break
        }
        switch (op.kind, result) {
        case (.read, .success(.read(let parts))):
            if let v = model.readCompleted(firstSector: op.firstSector, parts: parts) { violation = v }
        case (.read, .failure(let e)):
            readErrors += 1
            if finalPhase != nil {
                violation = SectorModel.Violation(promise: .durability,
                                                  detail: "final read of sectors \(op.firstSector)+\(op.sectorCount) failed: \(e)")
            }
        case (.write(let fua), .success):
            model.writeCompleted(firstSector: op.firstSector, count: op.sectorCount, value: op.value, durable: fua)
        case (.write, .failure(let e)):
            if case .noSpace = e { noSpaceErrors += 1 }
            // The data is in the writer's cache (so visible) but its durability is not acknowledged.
            switch e {
            case .fenced: break
            case .readFailed, .noSpace: model.writeMaybe(firstSector: op.firstSector, count: op.sectorCount, value: op.value)
            default: model.writeCompleted(firstSector: op.firstSector, count: op.sectorCount, value: op.value, durable: false)
            }
        case (.trim, .success):
            model.writeCompleted(firstSector: op.firstSector, count: op.sectorCount, value: 0, durable: false)
        case (.trim, .failure(let e)):
            if case .fenced = e { break }
            model.writeMaybe(firstSector: op.firstSector, count: op.sectorCount, value: 0)
        case (.flush(let mark), .success):
            model.flushCompleted(mark: mark)
        case (.flush, .failure(let e)):
            if case .noSpace = e { noSpaceErrors += 1 }
        case (.read, .success(.done)):
            preconditionFailure("read completed without data")
        case (.snapshot, _):
            preconditionFailure("snapshots complete above")
        }
        if finalPhase == .readBack {
            finalReadNext()
        } else if loadRunning {
            queue.push(now + thinkTime(), .workload(volume: cur, slot: op.slot, generation: slotGeneration))
        } else if finalPhase == .waitIdle && allIdle {
            finalStep(.powerLoss)
        }
    }
}
