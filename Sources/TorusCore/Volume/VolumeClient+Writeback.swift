/// Write-back of dirty blocks and map blocks to their replicas.
extension VolumeClient {
    /// Starts write-backs: under pressure (blocked writes, over the high-water mark) every
    /// dirty block, oldest first; otherwise only blocks dirty for at least `writebackDelay`.
    mutating func scheduleWriteback(ageOnly: Bool) {
        guard phase == .ready, dirtyBytes > 0 else { return }
        let pressure = !blocked.isEmpty || dirtyBytes > config.dirtyBytesHigh
        var budget = max(0, config.writebacksInFlightMax - writebacks.count)
        while budget > 0, let top = dirtyOrder.min {
            guard let e = cache[top.block], e.isDirty, !e.loading, writebacks[top.block] == nil,
                  e.dirtySince == top.since else {
                dirtyOrder.pop()  // stale
                continue
            }
            if ageOnly && !pressure && now - e.dirtySince < config.writebackDelay { break }
            dirtyOrder.pop()
            startWriteback(top.block)
            budget -= 1
        }
    }

    mutating func startWriteback(_ block: UInt64) {
        let e = cache[block]!
        precondition(e.isDirty && !e.loading && writebacks[block] == nil, "write-back of block \(block) in a wrong state")
        stats.writebacks += 1
        if isAllZero(e.data) {
            // An all-zero block is unmapped instead of stored. Completed from `finish()`, not
            // here, so no caller's loop sees the cache change under it.
            writebacks[block] = Writeback(ref: BlockRef(volume: info.id, epoch: epoch, sequence: 0, index: block),
                                          entry: MapEntry(epoch: 0, sequence: 0, crc: 0), version: e.version, data: [],
                                          remaining: [], candidates: [])
            zeroWritebacks.append(block)
            return
        }
        let ref = BlockRef(volume: info.id, epoch: epoch, sequence: nextSequence, index: block)
        nextSequence += 1
        let entry = MapEntry(epoch: epoch, sequence: ref.sequence, crc: CRC32C.checksum(e.data))
        putBlock(block, ref: ref, entry: entry, version: e.version, data: e.data)
    }

    func isAllZero(_ data: [UInt8]) -> Bool {
        data.withUnsafeBytes { raw in
            var i = 0
            while i + 8 <= raw.count {
                if raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) != 0 { return false }
                i += 8
            }
            while i < raw.count {
                if raw[i] != 0 { return false }
                i += 1
            }
            return true
        }
    }

    /// Completes the zero-block write-backs started during this step.
    mutating func completeZeroWritebacks() {
        while !zeroWritebacks.isEmpty {
            let block = zeroWritebacks.removeFirst()
            guard let wb = writebacks.removeValue(forKey: block) else { continue }
            writebackCompleted(block, entry: nil, version: wb.version)
        }
    }

    /// Puts an immutable block on all its replicas (data or map block).
    mutating func putBlock(_ key: UInt64, ref: BlockRef, entry: MapEntry, version: UInt64, data: [UInt8]) {
        let all = candidates(ref)
        let nodes = Array(healthyFirst(all).prefix(info.replication)).sorted()
        // Copies sent straight to a fallback because a placement node is suspect.
        stats.putFallbacks += nodes.filter { !all.prefix(info.replication).contains($0) }.count
        // Deferred syncing keeps every unsynced block cached (pinned), so while they are over
        // their high-water mark new copies are durable instead: writes that outrun the disks
        // then go at the disks' pace, as with durable write-back, rather than in bursts behind
        // syncs of a cache full of pinned blocks.
        let pressure = unsyncedBytes >= config.unsyncedBytesHigh
        // A FLUSH waiting on this copy would sync it next: a durable put saves that round trip.
        let durable = key >= BlockRef.mapIndexBase || config.durableWriteback || pressure || flushIsWritingBack
        if durable && pressure && key < BlockRef.mapIndexBase && !config.durableWriteback { stats.pressureDurableWritebacks += 1 }
        writebacks[key] = Writeback(ref: ref, entry: entry, version: version, data: data, remaining: nodes,
                                    candidates: all, durable: durable)
        for n in nodes { resendPut(key, to: n) }
    }

    /// A put to `node` failed (timeout or error). Retry there, or after repeated failures move
    /// this copy to the next candidate node that holds none, so a down node does not stall
    /// write-back while `replication` other nodes are up.
    mutating func putFailed(_ key: UInt64, node: NodeID, retryAfterBackoff: Bool) {
        guard var wb = writebacks[key], wb.remaining.contains(node) else { return }
        stats.putRetries += 1
        let failures = wb.failures[node, default: 0] + 1
        wb.failures[node] = failures
        var target = node
        // Fresh candidates first; else the one that failed least, if fewer times than this one
        // (a node that was down may be back, and a full node must not keep the copy hostage).
        let others = healthyFirst(wb.candidates).filter { !wb.remaining.contains($0) && !wb.confirmed.contains($0) }
        let alternative = others.first(where: { wb.failures[$0] == nil })
            ?? others.filter { wb.failures[$0]! < failures }.min(by: { wb.failures[$0]! < wb.failures[$1]! })
        if failures >= config.putAttemptsBeforeFallback || isSuspect(node), let next = alternative {
            wb.remaining.removeAll { $0 == node }
            wb.remaining.append(next)
            wb.remaining.sort()
            stats.putFallbacks += 1
            target = next
        }
        if retryAfterBackoff {
            wb.retryNodes.append(target)
            wb.retryAt = now + config.retryBackoff
            writebacks[key] = wb
        } else {
            writebacks[key] = wb
            resendPut(key, to: target)
        }
    }

    mutating func resendPut(_ key: UInt64, to node: NodeID) {
        let wb = writebacks[key]!
        let rpc = allocateRPC(.put(block: key), node: node)
        // Map blocks are written right before the commit, so they are durable at once; data
        // blocks too unless `durableWriteback` is off (then a flush syncs them, VolumeClient+Sync.swift).
        let durable = wb.durable && config.canary != .ackBeforeReplicaSync
        // The recovery's checkpoint makes what it replayed durable: like a repair, it may use
        // the slots a node near full keeps back.
        out.append(.send(to: node, .putBlock(rpc, wb.ref, wb.data, durable: durable, restore: phase == .opening)))
    }

    mutating func putReplied(_ rpc: RPCID, from node: NodeID, _ result: Result<Void, StoreError>) {
        if repairs[rpc] != nil { return repairReplied(rpc, from: node, result) }
        guard let pending = rpcs.removeValue(forKey: rpc), case .put(let key) = pending.purpose,
              pending.node == node, writebacks[key] != nil else { return }
        switch result {
        case .success:
            noteNode(node, ok: true)
            // In place: a copy of the write-back would copy its node arrays on every reply.
            let lastReplica = writebacks.update(key) { wb -> Bool in
                guard let i = wb.remaining.firstIndex(of: node) else { return false }
                wb.remaining.remove(at: i)
                wb.confirmed.append(node)
                return wb.remaining.isEmpty
            }
            if lastReplica == true {
                let wb = writebacks.removeValue(forKey: key)!
                if key >= BlockRef.mapIndexBase {
                    mapBlockWritten(key)
                } else {
                    if !wb.durable { setUnsynced(wb.ref, wb.confirmed) }
                    writebackCompleted(key, entry: wb.entry, version: wb.version)
                }
            }
        case .failure(.sealed(let newer)):
            // A newer writer sealed the volume on this node: we lost it.
            becomeFenced("block put refused: the volume is sealed by epoch \(newer), ours is \(epoch)")
        case .failure(let error):
            var wb = writebacks[key]!
            // Disk full, I/O error...: retry after a pause, or move to a fallback node.
            if error == .noSpace {
                // A full node gets no new copies for a while (then one put probes it again),
                // and this copy moves to the next candidate at once.
                suspects[node] = now + config.suspectDuration
                wb.noSpace.insert(node)
                // Every candidate is full: the copy may go to any other active node (readers
                // look everywhere before giving up). Out of space only when no node of the
                // ring without a copy has room for one.
                if wb.candidates.allSatisfy({ wb.noSpace.contains($0) || wb.confirmed.contains($0) }) {
                    let everyActive = ring.candidates(for: wb.ref.placementKey, replication: info.replication,
                                                      fallbacks: ring.fallbacks(replication: info.replication, max: .max))
                    wb.candidates += everyActive.filter { !wb.candidates.contains($0) }
                }
                writebacks[key] = wb
                if wb.candidates.allSatisfy({ wb.noSpace.contains($0) || wb.confirmed.contains($0) }) { outOfSpace() }
            }
            putFailed(key, node: node, retryAfterBackoff: true)
        }
    }

    /// Every node that may still take a copy of some block refused it for lack of space, so nothing dirty
    /// can be made durable now. Rather than wait for space that may never come: the flush
    /// under way (and the FUA writes waiting on it) fails with `noSpace`, and so do writes
    /// waiting for cache room (the cache is full of dirty blocks that cannot be written
    /// back; such a write may have been applied to some of its blocks, as a failed write may).
    /// Write-backs keep retrying, and each refusal repeats this: garbage collection or a new
    /// node may free space, and then writes and flushes succeed again.
    mutating func outOfSpace() {
        stats.outOfSpace += 1
        var appending = false
        if case .append = flush?.stage { appending = true }
        // An append under way may land on every node: it completes or fails on its own.
        if let f = flush, !f.commitSent, !appending {
            if case .map = f.stage {
                // Abandon this flush's map page and root puts: the next flush writes its own
                // under the same keys, and a late reply to one of these must not count for it.
                var keys: Set<UInt64> = [BlockRef.rootIndex]
                for p in f.snapshotPages { keys.insert(BlockRef.mapIndexBase + UInt64(p)) }
                for k in keys { writebacks[k] = nil }
                rpcs = rpcs.filter { entry in
                    if case .put(let block) = entry.value.purpose, keys.contains(block) { return false }
                    return true
                }
            }
            failFlush(.noSpace(volume: info.name))
        }
        let waiting = blocked
        blocked.removeAll()
        blockedPerBlock.removeAll()
        for w in waiting { pieceDone(w.piece.op, .noSpace(volume: info.name)) }
    }

    /// The block's new version is durable on all its replicas: point the map at it.
    mutating func writebackCompleted(_ block: UInt64, entry: MapEntry?, version: UInt64) {
        let idx = Int(block)
        let old = entries[idx]
        if old != entry {
            entries[idx] = entry
            if !earlyRecordNames(idx, entry) { dirtyPages.insert(idx / BlockMapCodec.entriesPerPage(blockSize: info.blockSize)) }
            if let old, old != committed[idx] {
                // Never committed. If an in-flight commit names it, wait for its outcome.
                let ref = old.ref(volume: info.id, index: block)
                if uncertain.contains(ref) {
                    // A commit whose outcome we never learned names it: the next commit decides.
                } else if let f = flush, !f.snapshot.isEmpty, f.snapshot.entry(idx, committed: committed) == old {
                    deferredDeletes.append(ref)
                } else {
                    deleteRefs([ref])
                }
            }
        }
        var e = cache[block]!
        let wasDirty = e.isDirty
        e.writtenVersion = max(e.writtenVersion, version)
        if wasDirty && !e.isDirty { dirtyBytes -= info.blockSize }
        cache[block] = e
        if e.isDirty {
            // Written again while this write-back was in flight: back in the write-back order.
            if !e.loading && writebacks[block] == nil { dirtyOrder.push(DirtyKey(since: e.dirtySince, block: block)) }
        } else {
            noteEvictable(block)
        }
        drainBlocked()
        advanceFlush()
        if !blocked.isEmpty || dirtyBytes > config.dirtyBytesHigh || flushIsWritingBack { scheduleWriteback(ageOnly: false) }
    }

    /// A flush waits for write-backs (which then start without waiting for age or pressure).
    var flushIsWritingBack: Bool {
        guard let f = flush, case .writeback = f.stage else { return false }
        return true
    }
}
