/// Reads, writes and trims: splitting into block pieces, the cache, and block fetches.
extension VolumeClient {
    func validate(_ op: VolumeOp) -> VolumeError? {
        let (offset, length): (UInt64, Int)
        switch op {
        case .flush: return nil
        case .read(let o, let l): (offset, length) = (o, l)
        case .trim(let o, let l):
            if config.readOnly { return .readOnly(volume: info.name) }
            (offset, length) = (o, l)
        case .write(let o, let c, _):
            if config.readOnly { return .readOnly(volume: info.name) }
            (offset, length) = (o, c.byteCount)
        }
        let s = config.sectorSize
        if offset % UInt64(s) != 0 || length % s != 0 || length == 0 {
            return .misaligned(offset: offset, length: length, sectorSize: s)
        }
        if case .trim = op {} else if length > config.requestBytesMax {
            return .tooLarge(length: length, maximum: config.requestBytesMax)
        }
        if offset > info.sizeBytes || UInt64(length) > info.sizeBytes - offset {
            return .outOfRange(offset: offset, length: length, volumeSize: info.sizeBytes)
        }
        return nil
    }

    mutating func execute(_ id: OpID, _ op: VolumeOp) {
        if let e = validate(op) {
            out.append(.complete(id, .failure(e)))
            return
        }
        switch op {
        case .flush where config.readOnly:
            out.append(.complete(id, .success(.done)))  // nothing is ever dirty
        case .flush:
            flushQueue.append(FlushWaiter(op: id))
            pumpFlush()
        case .read(let offset, let length):
            let pieces = split(id, offset, length)
            ops[id] = PendingOp(kind: .read, remaining: pieces.count,
                                parts: Array(repeating: [], count: pieces.count), firstBlock: pieces[0].block)
            for p in pieces { readPiece(p) }
        case .write(let offset, let chunks, let fua):
            let pieces = split(id, offset, chunks.byteCount)
            ops[id] = PendingOp(kind: .write(fua: fua), remaining: pieces.count)
            // Pieces and chunks both run in order: walk them together.
            var c = 0, chunkStart = 0
            var joined: [UInt8]?  // for pieces that span chunks
            for p in pieces {
                while chunkStart + chunks[c].count <= p.bufferOffset {
                    chunkStart += chunks[c].count
                    c += 1
                }
                let lo = p.bufferOffset - chunkStart
                if lo + p.length <= chunks[c].count {
                    writePiece(p, chunks[c][lo..<(lo + p.length)])  // a whole chunk is kept without a copy
                } else {
                    if joined == nil { joined = chunks.joined }
                    writePiece(p, joined![p.bufferOffset..<(p.bufferOffset + p.length)])
                }
            }
        case .trim(let offset, let length):
            // Trim = zeros, applied block by block; whole zero blocks are unmapped on write-back.
            let pieces = split(id, offset, length)
            ops[id] = PendingOp(kind: .trim, remaining: pieces.count)
            let zeros = Array(repeating: UInt8(0), count: info.blockSize)
            for p in pieces { writePiece(p, zeros[0..<p.length]) }
        }
    }

    func split(_ id: OpID, _ offset: UInt64, _ length: Int) -> [Piece] {
        var pieces: [Piece] = []
        var pos = offset
        let end = offset + UInt64(length)
        let bs = UInt64(info.blockSize)
        while pos < end {
            let block = pos / bs
            let inBlock = Int(pos % bs)
            let n = Int(min(bs - UInt64(inBlock), end - pos))
            pieces.append(Piece(op: id, block: block, offsetInBlock: inBlock, length: n, bufferOffset: Int(pos - offset)))
            pos += UInt64(n)
        }
        return pieces
    }

    // MARK: Reads

    mutating func readPiece(_ p: Piece) {
        let sequential = lastReadEnd.map {
            ($0.block == p.block && $0.offset == p.offsetInBlock)
                || ($0.block + 1 == p.block && $0.offset == info.blockSize && p.offsetInBlock == 0)
        } ?? false
        lastReadEnd = (p.block, p.offsetInBlock + p.length)
        if var e = cache[p.block], !e.loading {
            useCounter += 1
            e.lastUse = useCounter
            cache[p.block] = e
            noteEvictable(p.block)
            copyOut(p, from: e.data)
            pieceDone(p.op, nil)
        } else if fetches[p.block] != nil {
            fetches[p.block]!.waiters.append(.read(p))
        } else if let entry = entries[Int(p.block)] {
            let small = p.length <= config.rangeReadBytesMax && p.length < info.blockSize
            startFetch(p.block, entry, waiter: .read(p),
                       range: small && !sequential ? p.offsetInBlock..<(p.offsetInBlock + p.length) : nil)
        } else {
            if zeroBlock.count != info.blockSize { zeroBlock = Array(repeating: 0, count: info.blockSize) }
            setPart(p, zeroBlock[0..<p.length])  // never written: zeros
            pieceDone(p.op, nil)
        }
    }

    /// The piece's bytes from a whole block: a slice of it, not a copy.
    mutating func copyOut(_ p: Piece, from data: [UInt8]) {
        setPart(p, data[p.offsetInBlock..<(p.offsetInBlock + p.length)])
    }

    mutating func setPart(_ p: Piece, _ bytes: ArraySlice<UInt8>) {
        precondition(bytes.count == p.length, "read piece of \(p.length) bytes got \(bytes.count)")
        let index = Int(p.block - ops[p.op]!.firstBlock)
        ops[p.op]!.parts[index] = bytes
    }

    mutating func pieceDone(_ op: OpID, _ error: VolumeError?) {
        guard var pending = ops[op] else { return }
        pending.remaining -= 1
        if let error, pending.error == nil { pending.error = error }
        guard pending.remaining == 0 else {
            ops[op] = pending
            return
        }
        ops[op] = nil
        if let error = pending.error {
            out.append(.complete(op, .failure(error)))
            return
        }
        switch pending.kind {
        case .read:
            precondition(!pending.parts.contains { $0.isEmpty }, "read \(op) completed with a piece never filled in")
            out.append(.complete(op, .success(.read(parts: pending.parts))))
        case .write(fua: true):
            flushQueue.append(FlushWaiter(op: op))
            pumpFlush()
        case .write(fua: false), .trim: out.append(.complete(op, .success(.done)))
        }
    }

    // MARK: Writes

    mutating func writePiece(_ p: Piece, _ data: ArraySlice<UInt8>) {
        if blockedPerBlock[p.block] != nil {
            enqueueBlocked(p, data)
            return
        }
        if let e = cache[p.block] {
            if e.loading {
                fetches[p.block]!.waiters.append(.write(p, data))
            } else {
                apply(p, data)
            }
            return
        }
        let whole = p.offsetInBlock == 0 && p.length == info.blockSize
        let mapped = entries[Int(p.block)]
        guard makeRoom() else {
            enqueueBlocked(p, data)
            return
        }
        if whole {
            insert(p.block, data: Array(data), loading: false)  // one copy, no zero fill
            apply(p, data, copied: true)
        } else if mapped == nil {
            insert(p.block, data: Array(repeating: 0, count: info.blockSize), loading: false)
            apply(p, data)
        } else if fetches[p.block] != nil {
            insert(p.block, data: [], loading: true)
            fetches[p.block]!.waiters.append(.write(p, data))
        } else {
            insert(p.block, data: [], loading: true)
            startFetch(p.block, mapped!, waiter: .write(p, data))
        }
    }

    mutating func enqueueBlocked(_ p: Piece, _ data: ArraySlice<UInt8>) {
        blocked.append(BlockedWrite(piece: p, data: data))
        blockedPerBlock[p.block, default: 0] += 1
        scheduleWriteback(ageOnly: false)
    }

    /// Applies a write piece to its cached block (`copied`: the block already holds the data).
    mutating func apply(_ p: Piece, _ data: ArraySlice<UInt8>, copied: Bool = false) {
        var e = cache.removeValue(forKey: p.block)!
        precondition(!e.loading, "write applied to block \(p.block) while it is loading")
        let becameDirty = !e.isDirty
        if becameDirty {
            dirtyBytes += info.blockSize
            e.dirtySince = now
        }
        if !copied {
            if p.length == e.data.count {
                // A whole block: new storage, so a write-back still holding the old bytes does not
                // make this a copy of the old block followed by a copy of the new one.
                e.data = Array(data)
            } else {
                e.data.replaceSubrange(p.offsetInBlock..<(p.offsetInBlock + p.length), with: data)
            }
        }
        versionCounter += 1
        e.version = versionCounter
        useCounter += 1
        e.lastUse = useCounter
        cache[p.block] = e
        // A clean block has no write-back in flight, so it joins the write-back order now.
        if becameDirty { dirtyOrder.push(DirtyKey(since: e.dirtySince, block: p.block)) }
        pieceDone(p.op, nil)
        if dirtyBytes > config.dirtyBytesHigh { scheduleWriteback(ageOnly: false) }
    }

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

    // MARK: Fetches

    mutating func startFetch(_ block: UInt64, _ entry: MapEntry, waiter: FetchWaiter, range: Range<Int>? = nil) {
        let ref = entry.ref(volume: info.id, index: block)
        var f = Fetch(ref: ref, crc: entry.crc, nodes: healthyFirst(readCandidates(ref)))
        f.waiters.append(waiter)
        f.range = range
        fetches[block] = f
        if range == nil { stats.blockFetches += 1 } else { stats.rangeFetches += 1 }
        sendGet(block)
    }

    mutating func sendGet(_ block: UInt64) {
        var f = fetches[block]!
        let node = f.nodes[f.nextNode % f.nodes.count]
        f.nextNode += 1
        f.retryAt = nil
        fetches[block] = f
        let rpc = allocateRPC(.get(block: block), node: node)
        if let r = f.range {
            out.append(.send(to: node, .getRange(rpc, f.ref, offset: r.lowerBound, length: r.count)))
        } else {
            out.append(.send(to: node, .getBlock(rpc, f.ref)))
        }
    }

    mutating func getReplied(_ rpc: RPCID, from node: NodeID, _ result: Result<[UInt8], StoreError>) {
        guard let pending = rpcs.removeValue(forKey: rpc), case .get(let block) = pending.purpose,
              pending.node == node, let f = fetches[block] else { return }
        noteNode(node, ok: true)
        if case .failure(let e) = result, e == .corrupt(f.ref) || e == .ioError || e == .notFound(f.ref) {
            // The node dropped its bad (or unreadable) copy, or lost it (wiped, or its repair
            // died with an earlier writer). Fetch the whole block from the next one, so the
            // good bytes are at hand to put the copy back (read-repair).
            fetches[block]!.badCopies.append(node)
            fetches[block]!.range = nil
            fetchFailed(block)
            return
        }
        if let range = f.range {
            // The node verified the whole block against its checksum; the frame's checksum
            // covered the bytes on the wire.
            if case .success(let data) = result, data.count == range.count {
                fetches[block] = nil
                rangeFetched(block, f, range, data)
            } else {
                fetchFailed(block)
            }
            return
        }
        if case .success(let data) = result, data.count == info.blockSize, CRC32C.checksum(data) == f.crc {
            fetches[block] = nil
            // Only while the map still names this version (an old one may be deleted by now).
            if block >= BlockRef.mapIndexBase || entries[Int(block)]?.ref(volume: info.id, index: block) == f.ref {
                repairBadCopies(f, data)
            }
            fetched(block, f, data)
        } else {
            fetchFailed(block)
        }
    }

    /// Read-repair: a durable put of the good bytes to every node whose copy failed its
    /// checksum (or could not be read), retried on timeout or error up to `repairAttemptsMax`.
    mutating func repairBadCopies(_ f: Fetch, _ data: [UInt8]) {
        guard !config.readOnly else { return }
        // Not onto a node being drained: its copies are on their way out.
        let targets = Set(candidates(f.ref))
        for node in Set(f.badCopies).sorted() where repairs.count < Self.repairsInFlightMax && targets.contains(node) {
            stats.readRepairs += 1
            sendRepair(Repair(ref: f.ref, data: data, node: node, attempts: 0, deadline: now))
        }
    }

    mutating func sendRepair(_ r: Repair) {
        var r = r
        r.attempts += 1
        r.deadline = now + config.rpcTimeout
        let rpc = RPCID(nextRPC)
        nextRPC += 1
        repairs[rpc] = r
        out.append(.send(to: r.node, .putBlock(rpc, r.ref, r.data, durable: true, restore: true)))
    }

    mutating func repairReplied(_ rpc: RPCID, from node: NodeID, _ result: Result<Void, StoreError>) {
        guard let r = repairs[rpc], r.node == node else { return }
        repairs[rpc] = nil
        if case .failure = result, r.attempts < Self.repairAttemptsMax { sendRepair(r) }
    }

    /// Tries the next replica; after a full round, waits and starts another round.
    mutating func fetchFailed(_ block: UInt64) {
        stats.readRetries += 1
        var f = fetches[block]!
        if f.nextNode % f.nodes.count != 0 {
            fetches[block] = f
            sendGet(block)
            return
        }
        f.round += 1
        if config.readOnly && block < BlockRef.mapIndexBase {
            // The writer may have replaced the block since our last refresh (and deleted the
            // old version): look at the head now, and follow the map if it moved.
            if !refreshing { nextRefreshAt = now }
            if let current = entries[Int(block)], current.ref(volume: info.id, index: block) == f.ref {
                // Still the block the map names: retry below.
            } else {
                fetches[block] = nil
                for w in f.waiters { if case .read(let p) = w { readPiece(p) } }
                return
            }
        }
        if f.round >= config.readRoundsMax {
            fetches[block] = nil
            fetchGaveUp(block, f)
            return
        }
        f.retryAt = now + config.retryBackoff
        fetches[block] = f
    }

    /// Serves the reads inside the fetched range; anything else that queued up meanwhile
    /// (reads elsewhere in the block, writes that need the whole block) fetches it whole.
    mutating func rangeFetched(_ block: UInt64, _ f: Fetch, _ range: Range<Int>, _ data: [UInt8]) {
        var rest: [FetchWaiter] = []
        for w in f.waiters {
            if case .read(let p) = w, p.offsetInBlock >= range.lowerBound, p.offsetInBlock + p.length <= range.upperBound {
                let from = p.offsetInBlock - range.lowerBound
                setPart(p, data[from..<(from + p.length)])
                pieceDone(p.op, nil)
            } else {
                rest.append(w)
            }
        }
        guard !rest.isEmpty else { return }
        precondition(fetches[block] == nil, "block \(block) fetched twice at once")
        var full = Fetch(ref: f.ref, crc: f.crc, nodes: f.nodes)
        full.waiters = rest
        fetches[block] = full
        stats.blockFetches += 1
        sendGet(block)
    }

    mutating func fetched(_ block: UInt64, _ f: Fetch, _ data: [UInt8]) {
        if block >= BlockRef.mapIndexBase {
            mapBlockFetched(block, data)
            return
        }
        let stale = config.readOnly && entries[Int(block)]?.ref(volume: info.id, index: block) != f.ref
        if stale {
            // A refresh moved the map on meanwhile: serve these reads, cache nothing.
        } else if let e = cache[block] {
            precondition(e.loading, "fetched block \(block) already cached")
            var filled = e
            filled.data = data
            filled.loading = false
            cache[block] = filled
            noteEvictable(block)
        } else if makeRoom() {
            insert(block, data: data, loading: false)
        }
        for w in f.waiters {
            switch w {
            case .read(let p):
                if let e = cache[block] { copyOut(p, from: e.data) } else { copyOut(p, from: data) }
                pieceDone(p.op, nil)
            case .write(let p, let d):
                apply(p, d)
            case .open:
                preconditionFailure("open waiter on data block \(block)")
            }
        }
        drainBlocked()
    }

    mutating func fetchGaveUp(_ block: UInt64, _ f: Fetch) {
        if block >= BlockRef.mapIndexBase {
            // The committed map could not be read: keep trying (replicas may come back).
            stats.mapReadFailures += 1
            openRetryAt = now + config.lockRetryInterval
            return
        }
        if let e = cache[block], e.loading {
            cache[block] = nil
            cacheBytes -= info.blockSize
        }
        for w in f.waiters {
            switch w {
            case .read(let p), .write(let p, _): pieceDone(p.op, .readFailed(block: block))
            case .open: break
            }
        }
        drainBlocked()
    }

    // MARK: Timeouts

    /// Runs on every tick. Each table is first scanned for anything due, without allocating:
    /// most ticks find nothing, and sorting the keys of every table on every tick was about 1%
    /// of the simulator's soak scenario. What is due is handled in key order, as before.
    mutating func expireRPCs() {
        var expired: [RPCID] = []
        for (id, pending) in rpcs where pending.deadline <= now { expired.append(id) }
        expired.sort()
        for id in expired {
            let pending = rpcs.removeValue(forKey: id)!
            switch pending.purpose {
            case .get(let block):
                noteNode(pending.node, ok: false)
                if fetches[block] != nil { fetchFailed(block) }
            case .put(let block):
                noteNode(pending.node, ok: false)
                if writebacks[block] != nil { putFailed(block, node: pending.node, retryAfterBackoff: false) }
            case .sync(let refs):
                syncFailed(pending.node, refs)
            }
        }
        if repairs.values.contains(where: { $0.deadline <= now }) {
            for rpc in repairs.keys.sorted() where repairs[rpc]!.deadline <= now {
                let r = repairs.removeValue(forKey: rpc)!
                if r.attempts < Self.repairAttemptsMax { sendRepair(r) }
            }
        }
        func due(_ at: Instant?) -> Bool { at.map { $0 <= now } ?? false }
        if fetches.values.contains(where: { due($0.retryAt) }) {
            for block in fetches.keys.sorted() {
                if due(fetches[block]?.retryAt) { sendGet(block) }
            }
        }
        guard writebacks.values.contains(where: { due($0.retryAt) }) else { return }
        for block in writebacks.keys.sorted() {
            if due(writebacks[block]?.retryAt) {
                let nodes = writebacks[block]!.retryNodes
                writebacks[block]!.retryAt = nil
                writebacks[block]!.retryNodes = []
                for n in nodes where writebacks[block]!.remaining.contains(n) { resendPut(block, to: n) }
            }
        }
    }
}
