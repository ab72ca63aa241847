/// Write-back of dirty blocks and map blocks to their replicas.
extension VolumeClient {
    /// Starts write-backs: all dirty blocks when under pressure (blocked writes, high water,
    /// a flush), otherwise only those that have been dirty for a while.
    mutating func scheduleWriteback(ageOnly: Bool) {
        guard phase == .ready else { return }
        let pressure = !blocked.isEmpty || dirtyBytes > config.dirtyBytesHigh
        if ageOnly && !pressure && dirtyBytes == 0 { return }
        var candidates: [(UInt64, UInt64)] = []  // (lastUse, block)
        for (idx, e) in cache where e.isDirty && !e.loading && writebacks[idx] == nil {
            candidates.append((e.lastUse, idx))
        }
        candidates.sort { $0 < $1 }
        let inFlight = writebacks.count
        var budget = max(0, config.writebacksInFlightMax - inFlight)
        // Age-based write-back only touches blocks not written for `writebackDelay`
        // (approximated by use order: the oldest quarter of the dirty set).
        let limit = ageOnly && !pressure ? max(1, candidates.count / 4) : candidates.count
        for (_, idx) in candidates.prefix(limit) where budget > 0 {
            // A zero block completes at once and may have started others re-entrantly.
            guard let e = cache[idx], e.isDirty, !e.loading, writebacks[idx] == nil else { continue }
            startWriteback(idx)
            budget -= 1
        }
    }

    mutating func startWriteback(_ block: UInt64) {
        let e = cache[block]!
        precondition(e.isDirty && !e.loading && writebacks[block] == nil, "write-back of block \(block) in a wrong state")
        stats.writebacks += 1
        if e.data.allSatisfy({ $0 == 0 }) {
            // An all-zero block is unmapped instead of stored.
            writebackCompleted(block, entry: nil, version: e.version)
            return
        }
        let ref = BlockRef(volume: info.id, epoch: epoch, sequence: nextSequence, index: block)
        nextSequence += 1
        let entry = MapEntry(epoch: epoch, sequence: ref.sequence, crc: CRC32C.checksum(e.data))
        putBlock(block, ref: ref, entry: entry, version: e.version, data: e.data)
    }

    /// Puts an immutable block on all its replicas (data or map block).
    mutating func putBlock(_ key: UInt64, ref: BlockRef, entry: MapEntry, version: UInt64, data: [UInt8]) {
        let nodes = placement(ref).sorted()
        writebacks[key] = Writeback(ref: ref, entry: entry, version: version, data: data, remaining: nodes)
        for n in nodes { resendPut(key, to: n) }
    }

    mutating func resendPut(_ key: UInt64, to node: NodeID) {
        let wb = writebacks[key]!
        let rpc = allocateRPC(.put(block: key), node: node)
        let durable = config.canary != .ackBeforeReplicaSync
        out.append(.send(to: node, .putBlock(rpc, wb.ref, wb.data, durable: durable)))
    }

    mutating func putReplied(_ rpc: RPCID, from node: NodeID, _ result: Result<Void, StoreError>) {
        guard let pending = rpcs.removeValue(forKey: rpc), case .put(let key) = pending.purpose,
              pending.node == node, var wb = writebacks[key] else { return }
        switch result {
        case .success:
            guard let i = wb.remaining.firstIndex(of: node) else { return }
            wb.remaining.remove(at: i)
            writebacks[key] = wb
            if wb.remaining.isEmpty {
                writebacks[key] = nil
                if key >= BlockRef.mapIndexBase {
                    mapBlockWritten(key)
                } else {
                    writebackCompleted(key, entry: wb.entry, version: wb.version)
                }
            }
        case .failure:
            // Disk full, I/O error...: the replica must still take it; retry after a pause.
            stats.putRetries += 1
            wb.retryNodes.append(node)
            wb.retryAt = now + config.retryBackoff
            writebacks[key] = wb
        }
    }

    /// The block's new version is durable on all its replicas: point the map at it.
    mutating func writebackCompleted(_ block: UInt64, entry: MapEntry?, version: UInt64) {
        let idx = Int(block)
        let old = entries[idx]
        if old != entry {
            entries[idx] = entry
            dirtyPages.insert(idx / BlockMapCodec.entriesPerPage(blockSize: info.blockSize))
            if let old, old != committed[idx] {
                // Never committed. If an in-flight commit names it, wait for its outcome.
                let ref = old.ref(volume: info.id, index: block)
                if let f = flush, !f.snapshot.isEmpty, f.snapshot[idx] == old {
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
        drainBlocked()
        advanceFlush()
        if !blocked.isEmpty || dirtyBytes > config.dirtyBytesHigh { scheduleWriteback(ageOnly: false) }
    }
}
