/// The write-back cache: inserting blocks, the eviction order, room for one more block, and
/// the writes waiting for room.
extension VolumeClient {
    mutating func insert(_ block: UInt64, data: [UInt8], loading: Bool) {
        precondition(cache[block] == nil, "block \(block) inserted twice")
        useCounter += 1
        // Versions come from one counter so a block evicted and cached again never goes back.
        cache[block] = CacheEntry(data: data, version: versionCounter, writtenVersion: versionCounter,
                                  loading: loading, lastUse: useCounter, dirtySince: now)
        cacheBytes += info.blockSize
        noteEvictable(block)
    }

    /// Records a clean, loaded block without a write-back in the eviction order (after its
    /// `lastUse` changed or it became evictable). Drops stale entries when they pile up.
    mutating func noteEvictable(_ block: UInt64) {
        guard let e = cache[block], !e.isDirty, !e.loading, writebacks[block] == nil, !isPinned(block) else { return }
        evictionOrder.push(UseKey(lastUse: e.lastUse, block: block))
        if evictionOrder.count > 2 * cache.count + 64 {
            var live: [UseKey] = []
            for (idx, e) in cache where !e.isDirty && !e.loading && writebacks[idx] == nil && !isPinned(idx) {
                live.append(UseKey(lastUse: e.lastUse, block: idx))
            }
            evictionOrder.rebuild(live)
        }
    }

    /// Ensures one more block fits, evicting the least recently used clean block if needed.
    mutating func makeRoom() -> Bool {
        if cacheBytes + info.blockSize <= config.cacheBytesMax { return true }
        while let top = evictionOrder.pop() {
            guard let e = cache[top.block], !e.isDirty, !e.loading, writebacks[top.block] == nil,
                  e.lastUse == top.lastUse, !isPinned(top.block) else { continue }  // stale (or pinned: back once synced)
            cache[top.block] = nil
            cacheBytes -= info.blockSize
            return true
        }
        return false
    }

    /// Retries blocked writes in order after cache space was freed.
    mutating func drainBlocked() {
        guard !draining else { return }  // the outer call's loop picks up what changed
        draining = true
        defer { draining = false }
        while let first = blocked.first {
            let p = first.piece
            // Only proceed if this write can now be placed; keep FIFO order per block.
            if cache[p.block] == nil && !makeRoom() { return }
            blocked.removeFirst()
            let c = blockedPerBlock[p.block]! - 1
            blockedPerBlock[p.block] = c == 0 ? nil : c
            if c == 0 {
                writePiece(p, first.data)
            } else {
                // Earlier writes for this block are ahead in the queue: apply directly in order.
                blockedPerBlock[p.block] = nil
                writePiece(p, first.data)
                blockedPerBlock[p.block] = c
            }
        }
    }
}
