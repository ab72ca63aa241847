/// Reads, writes and trims: splitting into block pieces and applying them to the cache.
extension VolumeClient {
    func validate(_ op: VolumeOp) -> VolumeError? {
        let (offset, length): (UInt64, Int)
        switch op {
        case .flush: return nil
        case .snapshot: return config.readOnly ? .readOnly(volume: info.name) : nil
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
        case .snapshot(let name):
            flushQueue.append(FlushWaiter(op: id, snapshot: name))
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
}
