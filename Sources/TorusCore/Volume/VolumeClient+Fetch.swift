/// Block fetches: from the replicas in turn (whole or a byte range), retried in rounds, then
/// handed to the reads and writes waiting on them.
extension VolumeClient {
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
            mapBlockFetched(block, data, owner: f.ref.volume)
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
}
