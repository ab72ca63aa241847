/// Syncing written-back blocks: write-back puts are not durable (a replica answers once the
/// bytes are written), so a FLUSH asks every replica that took such a copy to make it durable
/// before the map that names it is written. Until then the block stays cached (`isPinned`): a
/// lost copy is written again from the cache, and a flush whose snapshot names one starts over.
/// Why, and what keeps it safe: docs/storage-core.md, "Volume writer and commit".
extension VolumeClient {
    /// Whether block `block`'s current version still lacks a durable copy on some replica (its
    /// cache entry must stay: it is the only sure copy).
    func isPinned(_ block: UInt64) -> Bool {
        guard !unsynced.isEmpty, Int(block) < entries.count, let e = entries[Int(block)] else { return false }
        return unsynced[e.ref(volume: info.id, index: block)] != nil
    }

    var unsyncedBytes: Int { unsynced.count * info.blockSize }

    /// The one place `unsynced` changes (no nodes: forget the ref), keeping the per-node counts.
    mutating func setUnsynced(_ ref: BlockRef, _ nodes: [NodeID]) {
        if let old = unsynced[ref] {
            for n in old {
                let c = unsyncedPerNode[n]! - 1
                unsyncedPerNode[n] = c == 0 ? nil : c
            }
        }
        unsynced[ref] = nodes.isEmpty ? nil : nodes
        for n in nodes { unsyncedPerNode[n, default: 0] += 1 }
    }

    /// Background syncs: over the high-water mark, when writes wait for cache room (pinned
    /// blocks cannot be evicted), or when the oldest round is `syncDelay` old.
    mutating func scheduleSync() {
        guard phase == .ready, !unsynced.isEmpty else { return }
        if unsyncedBytes > config.unsyncedBytesHigh || !blocked.isEmpty || now >= lastSyncAt + config.syncDelay {
            syncUnsynced()
        }
    }

    /// Asks every node that holds unsynced copies (and has no sync in flight) to make them durable.
    mutating func syncUnsynced() {
        let idle = unsyncedPerNode.keys.filter { !syncing.contains($0) }
        guard !idle.isEmpty else { return }
        var perNode: [NodeID: [BlockRef]] = [:]
        for (ref, nodes) in unsynced { for n in nodes where !syncing.contains(n) { perNode[n, default: []].append(ref) } }
        for n in perNode.keys.sorted() {
            let refs = perNode[n]!.sorted()
            let rpc = allocateRPC(.sync(refs), node: n, timeout: config.syncTimeout)
            syncing.insert(n)
            stats.syncs += 1
            out.append(.send(to: n, .syncBlocks(rpc, refs)))
        }
        lastSyncAt = now
    }

    mutating func syncReplied(_ rpc: RPCID, from node: NodeID, present: [BlockRef]) {
        guard let pending = rpcs[rpc], pending.node == node, case .sync(let refs) = pending.purpose else { return }
        rpcs[rpc] = nil
        syncing.remove(node)
        noteNode(node, ok: true)
        let durable = Set(present)
        var lost: [BlockRef] = []
        for ref in refs {
            guard var nodes = unsynced[ref], let i = nodes.firstIndex(of: node) else { continue }
            guard durable.contains(ref) else {
                lost.append(ref)
                continue
            }
            nodes.remove(at: i)
            setUnsynced(ref, nodes)
            if nodes.isEmpty && isCurrent(ref) { noteEvictable(ref.index) }
        }
        for ref in lost { copyLost(ref) }
        // Blocks that became evictable make room for writes waiting for it.
        if !blocked.isEmpty { drainBlocked() }
        advanceSync()
    }

    /// No answer in time: ask again (at the next round); a node that keeps failing is taken
    /// to have lost its copies, which are then written again (to healthier nodes first).
    mutating func syncFailed(_ node: NodeID, _ refs: [BlockRef]) {
        syncing.remove(node)
        noteNode(node, ok: false)
        if isSuspect(node) {
            for ref in refs where unsynced[ref]?.contains(node) ?? false { copyLost(ref) }
        }
        advanceSync()
    }

    func isCurrent(_ ref: BlockRef) -> Bool {
        Int(ref.index) < entries.count && entries[Int(ref.index)]?.ref(volume: info.id, index: ref.index) == ref
    }

    /// A replica lost an unsynced copy of `ref` (or cannot be reached): the block is written
    /// again as a new version, which replaces `ref` (deleted like any superseded version).
    mutating func copyLost(_ ref: BlockRef) {
        setUnsynced(ref, [])
        stats.lostCopies += 1
        let block = ref.index
        if isCurrent(ref), writebacks[block] == nil, var e = cache[block], !e.isDirty {
            // Pinned, so still cached; clean, so its bytes are those of `ref`.
            precondition(!e.loading && e.version > 0, "lost copy of block \(block) whose cache entry never was written")
            e.writtenVersion = 0
            e.dirtySince = now
            cache[block] = e
            dirtyBytes += info.blockSize
            dirtyOrder.push(DirtyKey(since: now, block: block))
        }
        // A flush that has not written its map may have counted on this copy: start it over.
        if let f = flush {
            switch f.stage {
            case .writeback, .sync: restartFlush()
            case .append, .map, .commit: break
            }
        }
    }

    /// Drops the running flush's snapshot and starts again from write-back, same waiters first.
    mutating func restartFlush() {
        guard let f = flush else { return }
        for p in f.snapshotPages { dirtyPages.insert(p) }
        if let early = f.early {
            // Its record may be on every node: settled by the checkpoint that follows.
            if !early.failed { abandonSegment(end: nextPosition) }
            keepUntilSettled(f)
        }
        // Versions replaced since the snapshot waited for it; nothing names them now.
        let garbage = deferredDeletes
        deferredDeletes.removeAll()
        deleteRefs(garbage)
        flush = nil
        flushQueue = f.waiters + flushQueue
        stats.flushRestarts += 1
        pumpFlush()
    }

    /// The flush's sync stage: done once no copy its snapshot names is unsynced.
    mutating func advanceSync() {
        guard let f = flush, case .sync = f.stage else { return }
        if config.canary != .ackBeforeReplicaSync {
            for (ref, _) in unsynced {
                let i = Int(ref.index)
                if i < f.snapshot.count, f.snapshot.entry(i, committed: committed)?.ref(volume: info.id, index: ref.index) == ref {
                    return syncUnsynced()
                }
            }
        }
        commitSnapshot()
    }
}
