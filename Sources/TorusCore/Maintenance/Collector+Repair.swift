/// Repair and rebalancing: copies for refs short of copies or off their placement.
extension Collector {
    /// Queues a copy for every reachable ref with fewer than `replication` copies, counting
    /// the nodes that answered this pass and, optimistically, placement candidates down for
    /// less than `repairGrace`. Targets: candidates in ring order (where readers look) that
    /// answered and hold none, new failure domains first.
    ///
    /// Rebalancing, when the ring is the one in the metadata store: a ref with enough copies
    /// but some off its placement (a node joined or is draining, or a writer used a fallback
    /// while a placement node was away) is copied to the placement nodes that answered and
    /// lack it, one per copy off the placement. A ref whose every placement node holds it
    /// loses its other copies (`trims`), once the ring has been in force for `ringSettle`.
    mutating func planRepairs() {
        var holders: [BlockRef: [NodeID]] = [:]
        for node in inventory.keys.sorted() {
            for ref in inventory[node]! where volumes[ref.volume]?.reachable[ref] != nil {
                holders[ref, default: []].append(node)
            }
        }
        let alive = Set(inventory.keys)
        let domainOf = Dictionary(uniqueKeysWithValues: ring.members.map { ($0.node, $0.domain) })
        let drainingNodes = Set(ring.members.filter(\.draining).map(\.node))
        let rebalance = storedRingVersion == ring.version
        let trimming = rebalance && now - ringSince >= config.ringSettle
        var shortNow: Set<BlockRef> = []
        var misplacedNow: Set<BlockRef> = []
        defer {
            shortLastPass = shortNow
            misplacedLastPass = misplacedNow
        }
        var repairs: [Copy] = [], moves: [Copy] = []
        for id in volumes.keys.sorted() {
            let v = volumes[id]!
            guard !v.failed else { continue }
            let r = v.info.replication
            for ref in v.reachable.keys.sorted() {
                let have = holders[ref] ?? []
                for n in have where drainingNodes.contains(n) { passDraining[n, default: 0] += 1 }
                let cands = ring.candidates(for: ref.placementKey, replication: r,
                                            fallbacks: ring.fallbacks(replication: r, max: config.fallbackNodesMax))
                let resting = cands.filter { !alive.contains($0) && (downSince[$0].map { now - $0 < config.repairGrace } ?? true) }
                let count = have.count + resting.count
                guard count < r else {
                    guard rebalance else { continue }
                    let home = Array(cands.prefix(r))
                    let extras = have.filter { !home.contains($0) }
                    guard !extras.isEmpty else { continue }
                    let missing = home.filter { alive.contains($0) && !have.contains($0) && (fullUntil[$0].map { $0 <= now } ?? true) }
                    if missing.isEmpty {
                        if home.allSatisfy(have.contains) {
                            if trimming {
                                trims.append(Trim(ref: ref, home: home, extras: extras))
                            } else {
                                passMisplaced += 1  // the extra copy waits for the ring to settle
                            }
                        }
                        continue
                    }
                    passMisplaced += 1
                    misplacedNow.insert(ref)
                    guard misplacedLastPass.contains(ref) else { continue }
                    for target in missing.prefix(extras.count) {
                        moves.append(Copy(ref: ref, crc: v.reachable[ref]!, sources: have, nextSource: 0,
                                          target: target, spares: [], data: nil, move: true))
                    }
                    continue
                }
                shortNow.insert(ref)
                guard shortLastPass.contains(ref) else { continue }
                passShort += 1
                guard !have.isEmpty else {
                    passUnrepairable += 1
                    continue
                }
                var domains = Set(have.map { domainOf[$0] ?? "" })
                var eligible = cands.filter { alive.contains($0) && !have.contains($0) }
                for _ in 0..<(r - count) {
                    guard !eligible.isEmpty else { break }
                    let pick = eligible.firstIndex { !domains.contains(domainOf[$0] ?? "") || domainOf[$0] == "" } ?? 0
                    let target = eligible.remove(at: pick)
                    domains.insert(domainOf[target] ?? "")
                    repairs.append(Copy(ref: ref, crc: v.reachable[ref]!, sources: have, nextSource: 0,
                                        target: target, spares: eligible, data: nil))
                }
            }
        }
        // Popped from the end: repairs first (redundancy before balance), oldest refs first.
        for c in (repairs + moves).reversed() { copyQueues[c.target, default: []].append(c) }
        copyTargets = copyQueues.keys.sorted()
        copyCursor = 0
        copiesQueued = repairs.count + moves.count
    }

    /// Starts copies while under the concurrency limit, round-robin over the target nodes,
    /// each receiving at most `repairBytesPerSecond`.
    mutating func pumpCopies() {
        guard stage == .repairing else { return }
        // The rate is kept on average: a copy may start up to one tick early, so starts between
        // ticks are not lost when every copy in flight has finished.
        starting: while copyRPCs.count < config.repairConcurrencyMax, copiesQueued > 0 {
            for k in 0..<copyTargets.count {
                let target = copyTargets[(copyCursor + k) % copyTargets.count]
                guard copyQueues[target]?.isEmpty == false, now + config.tickInterval >= nextCopyAt[target, default: .zero] else { continue }
                let c = copyQueues[target]!.removeLast()
                copiesQueued -= 1
                copyCursor = (copyCursor + k + 1) % copyTargets.count
                if config.repairBytesPerSecond > 0, let size = volumes[c.ref.volume]?.info.blockSize {
                    let gap = Nanoseconds(UInt64(size) * 1_000_000_000 / config.repairBytesPerSecond)
                    nextCopyAt[target] = max(nextCopyAt[target, default: .zero], now) + gap
                }
                sendCopyGet(c)
                continue starting
            }
            break  // every target with copies waiting is at its rate
        }
        if copyRPCs.isEmpty && copiesQueued == 0 {
            passRepairTime = now - repairStartedAt
            beginTrimming()
        }
    }

    mutating func sendCopyGet(_ c: Copy) {
        var c = c
        guard c.nextSource < c.sources.count * config.attemptsMax else { return copyFailed() }
        let node = c.sources[c.nextSource % c.sources.count]
        c.nextSource += 1
        let rpc = RPCID(nextRPC)
        nextRPC += 1
        copyRPCs[rpc] = CopyRPC(copy: c, node: node, deadline: now + config.rpcTimeout)
        out.append(.send(to: node, .getBlock(rpc, c.ref)))
    }

    mutating func sendCopyPut(_ c: Copy) {
        let rpc = RPCID(nextRPC)
        nextRPC += 1
        copyRPCs[rpc] = CopyRPC(copy: c, node: c.target, deadline: now + config.rpcTimeout)
        // A repair restores redundancy (it may use a near-full node's reserve); a move is a new
        // placement (it may not).
        out.append(.send(to: c.target, .putBlock(rpc, c.ref, c.data!, durable: true, restore: !c.move, copy: true)))
    }

    mutating func copyFetched(_ rpc: RPCID, from node: NodeID, _ result: Result<[UInt8], StoreError>) {
        guard let pending = copyRPCs[rpc], pending.node == node, pending.copy.data == nil else { return }
        copyRPCs[rpc] = nil
        var c = pending.copy
        if case .success(let bytes) = result, CRC32C.checksum(bytes) == c.crc {
            c.data = bytes
            sendCopyPut(c)
        } else {
            sendCopyGet(c)
        }
        pumpCopies()
    }

    mutating func copyPut(_ rpc: RPCID, from node: NodeID, _ result: Result<Void, StoreError>) {
        guard let pending = copyRPCs[rpc], pending.node == node, pending.copy.data != nil else { return }
        copyRPCs[rpc] = nil
        switch result {
        case .success where pending.copy.move:
            passMoved += 1
            passBytesMoved += UInt64(pending.copy.data!.count)
            stats.movesMade += 1
            stats.bytesMoved += UInt64(pending.copy.data!.count)
        case .success:
            passCopied += 1
            passBytesCopied += UInt64(pending.copy.data!.count)
            stats.copiesMade += 1
            stats.bytesCopied += UInt64(pending.copy.data!.count)
        case .failure(let e):
            // A full node gets no moves for a few passes (its blocks stay where they are).
            if e == .noSpace { fullUntil[node] = now + config.passInterval * 3 }
            retryCopyElsewhere(pending.copy)
        }
        pumpCopies()
    }

    /// The target refused or did not answer: the next spare target, or give up this pass.
    mutating func retryCopyElsewhere(_ c: Copy) {
        var c = c
        guard !c.spares.isEmpty else { return copyFailed() }
        c.target = c.spares.removeFirst()
        sendCopyPut(c)
    }

    mutating func copyFailed() {
        passCopyFailures += 1
    }

    mutating func expireCopies() {
        for rpc in copyRPCs.keys.sorted() {
            guard let p = copyRPCs[rpc], p.deadline <= now else { continue }
            copyRPCs[rpc] = nil
            if p.copy.data == nil { sendCopyGet(p.copy) } else { retryCopyElsewhere(p.copy) }
        }
    }
}
