import TorusCore

/// The network between the processes, and the storage nodes on their simulated disks.
extension Simulation {
    // MARK: Network

    func incarnation(of node: NodeID) -> UInt64 {
        if node == Self.collectorID { return 0 }
        if node.raw >= 1000 {
            let vs = vols[volumeIndex(ofWriter: node)]
            return node == vs.clientID ? vs.clientIncarnation : 0  // a paused writer is never restarted under its id
        }
        return slots[Int(node.raw) - 1].incarnation
    }

    func send(from: NodeID, to: NodeID, _ msg: PeerMessage) {
        let si = incarnation(of: from), ri = incarnation(of: to)
        let (first, duplicate) = network.deliveries()
        if let first { queue.push(now + first, .deliver(from: from, to: to, msg, senderIncarnation: si, receiverIncarnation: ri)) }
        if let duplicate { queue.push(now + duplicate, .deliver(from: from, to: to, msg, senderIncarnation: si, receiverIncarnation: ri)) }
    }

    func deliver(from: NodeID, to: NodeID, _ msg: PeerMessage, senderIncarnation: UInt64, receiverIncarnation: UInt64) {
        // A crash resets connections: messages across a crash are lost.
        guard incarnation(of: from) == senderIncarnation, incarnation(of: to) == receiverIncarnation,
              !network.isBlocked(from, to) else { return }
        if to == Self.collectorID {
            if collector != nil { handleCollector(collector!.receive(from: from, msg, now: now)) }
            return
        }
        if to.raw >= 1000 { cur = volumeIndex(ofWriter: to) }
        if to == clientID {
            guard client != nil else { return }
            handleClient(client!.receive(from: from, msg, now: writerNow()))
        } else if to.raw >= 1000 {
            // A paused writer's connections hold what arrives until it runs again.
            if holdForPaused(to, .deliver(from: from, to: to, msg, senderIncarnation: senderIncarnation, receiverIncarnation: receiverIncarnation)) { return }
            guard let p = paused, p.clientID == to else { return }
            handlePaused(paused!.receive(from: from, msg, now: pausedNow()))
        } else {
            let n = Int(to.raw) - 1
            guard slots[n].node != nil else { return }
            let outputs = slots[n].node!.receive(from: from, msg)
            perform(node: n, outputs)
        }
    }

    // MARK: Storage nodes

    func bootNode(_ n: Int) {
        let config = slots[n].config
        let regions = BlockStore.journalRegions(config: config)
        let a = slots[n].disk.readDurable(offset: regions.a.offset, length: regions.a.length)
        let b = slots[n].disk.readDurable(offset: regions.b.offset, length: regions.b.length)
        let disk = slots[n].disk
        let store = BlockStore.recover(config: config, regionA: a, regionB: b,
                                       readSlot: { disk.readDurable(offset: config.slotOffset($0), length: config.blockSize) },
                                       trustLastWrite: options.canary == .storeTrustsLastWrite)
        checkRecoveredStore(store, node: n)
        slots[n].node = StorageNode(id: slots[n].id, store: store)
        slots[n].node!.ignoresSeals = options.canary == .nodeIgnoresSeal
        slots[n].node!.ignoresDataSeals = options.canary == .nodeIgnoresDataSeal
        slots[n].node!.trustsSectorReads = options.canary == .storeTrustsSectors
        slots[n].diskBusyUntil = now
        let outputs = slots[n].node!.start()
        perform(node: n, outputs)
        if let every = options.scrubInterval {
            queue.push(now + every, .scrub(node: n, incarnation: slots[n].incarnation))
        }
    }

    func perform(node n: Int, _ outputs: [StorageNode.Output]) {
        for o in outputs {
            switch o {
            case .send(let to, let msg):
                send(from: slots[n].id, to: to, msg)
            case .disk(let id, let req):
                var service: Nanoseconds
                switch req {
                case .read(_, let l): service = slots[n].random.duration(.microseconds(20), .microseconds(120)) + Nanoseconds(UInt64(l) / 4)
                case .write(let offset, let bytes):
                    precondition(slots[n].disk.validRange(offset, bytes.count), "write outside the disk on \(slots[n].id)")
                    slots[n].disk.issueWrite(id, offset: misdirect(node: n, offset: offset, length: bytes.count), bytes: bytes)
                    service = slots[n].random.duration(.microseconds(20), .microseconds(150)) + Nanoseconds(UInt64(bytes.count) / 4)
                case .sync: service = slots[n].random.duration(.microseconds(100), .microseconds(1500))
                }
                if slots[n].slowFactor > 1 { service = service * slots[n].slowFactor }
                let start = max(now, slots[n].diskBusyUntil)
                slots[n].diskBusyUntil = start + service
                queue.push(start + service, .disk(node: n, incarnation: slots[n].incarnation, id, req))
            }
        }
    }

    func crashNode(_ n: Int) {
        guard slots[n].node != nil else { return }
        slots[n].incarnation += 1
        slots[n].node = nil
        slots[n].disk.crash(random: &slots[n].random, survivalProbability: options.unsyncedSurvivalProbability,
                            tearProbability: options.tornWriteProbability)
    }
}
