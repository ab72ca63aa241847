/// Puts, gets, deletes and syncs, and the completions of their data reads and writes.
extension BlockStore {
    mutating func put(_ id: StoreRequestID, _ ref: BlockRef, _ data: [UInt8], durable: Bool, restore: Bool = false,
                      _ out: inout [StoreOutput]) {
        guard data.count == config.blockSize else {
            out.append(.reply(.put(id, .failure(.wrongSize(expected: config.blockSize, got: data.count)))))
            return
        }
        let crc = CRC32C.checksum(data)
        if let e = index[ref] {
            guard e.crc == crc else { return out.append(.reply(.put(id, .failure(.corrupt(ref))))) }
            if !durable || e.putSeq <= durableThroughSeq { return out.append(.reply(.put(id, .success(())))) }
            guard admit(id, &out) else { return }
            durableWaiters.append(DurableWaiter(id: id, seq: e.putSeq))
            return
        }
        if let op = putByRef[ref] {
            // A retry or duplicate while the first write is in flight: share its outcome.
            guard puts[op]!.crc == crc else { return out.append(.reply(.put(id, .failure(.corrupt(ref))))) }
            guard admit(id, &out) else { return }
            puts[op]!.requesters.append(Requester(id: id, durable: durable))
            puts[op]!.deleteRequested = false
            return
        }
        guard freeList.count > keptFree(for: ref, restore: restore), let slot = freeList.last else {
            return out.append(.reply(.put(id, .failure(.noSpace))))
        }
        guard admit(id, &out) else { return }
        freeList.removeLast()
        precondition(slots[slot] == .free, "allocated slot \(slot) is \(slots[slot]), not free")
        slots[slot] = .writing
        let op = nextOp()
        puts[op] = PendingPut(
            ref: ref, slot: slot, crc: crc, requesters: [Requester(id: id, durable: durable)], deleteRequested: false)
        putByRef[ref] = op
        out.append(.disk(op, .write(offset: config.slotOffset(slot), bytes: data)))
    }

    /// Free slots a put must leave: the reserve for new blocks; two for a copy restoring
    /// redundancy, so that a seal (a writer needs one to open the volume at all) always finds
    /// one, and the next while the older seal it replaces is being deleted; one for a
    /// recovery's rewrite of a log record (it cannot open the volume without it).
    private func keptFree(for ref: BlockRef, restore: Bool) -> Int {
        if ref.index == BlockRef.sealIndex { return 0 }
        if ref.index == BlockRef.logIndex && restore { return min(1, config.reserveSlots) }
        return restore ? min(2, config.reserveSlots) : config.reserveSlots
    }

    /// Counts a request that will be answered later; over the limit, fails it with `.ioError`.
    private mutating func admit(_ id: StoreRequestID, _ out: inout [StoreOutput]) -> Bool {
        guard outstandingReplies < config.outstandingRepliesLimitRequests else {
            out.append(.reply(.put(id, .failure(.ioError))))
            return false
        }
        outstandingReplies += 1
        return true
    }

    mutating func get(_ id: StoreRequestID, _ ref: BlockRef, _ range: Range<Int>?, _ out: inout [StoreOutput]) {
        if let range, range.isEmpty || range.lowerBound < 0 || range.upperBound > config.blockSize {
            return out.append(.reply(.get(id, .failure(.wrongSize(expected: config.blockSize, got: range.upperBound)))))
        }
        guard let e = index[ref] else { return out.append(.reply(.get(id, .failure(.notFound(ref))))) }
        guard outstandingReplies < config.outstandingRepliesLimitRequests else {
            return out.append(.reply(.get(id, .failure(.ioError))))
        }
        outstandingReplies += 1
        issueRead(PendingRead(id: id, ref: ref, putSeq: e.putSeq, range: range), e, &out)
    }

    /// Reads the sectors a range covers when their checksums are known, else the whole block.
    private mutating func issueRead(_ read: PendingRead, _ e: Entry, _ out: inout [StoreOutput]) {
        var read = read
        read.sectors = nil
        var offset = config.slotOffset(e.slot), length = config.blockSize
        if let range = read.range, sectorSums.lookup(slot: e.slot, blockCRC: e.crc) != nil {
            let size = sectorSums.sectorSize
            let sectors = range.lowerBound / size..<(range.upperBound + size - 1) / size
            read.sectors = sectors
            offset += UInt64(sectors.lowerBound * size)
            length = sectors.count * size
        }
        let op = nextOp()
        reads[op] = read
        out.append(.disk(op, .read(offset: offset, length: length)))
    }

    mutating func delete(_ refs: [BlockRef], _ out: inout [StoreOutput]) {
        var changed = false
        for ref in refs {
            if index[ref] != nil {
                removeFromIndex(ref)
                changed = true
            } else if let op = putByRef[ref] {
                puts[op]!.deleteRequested = true
            }
        }
        // A new delete deserves a fresh attempt even right after a failed cycle.
        if changed { lastCycleFailed = false }
    }

    mutating func sync(_ id: StoreRequestID, _ refs: [BlockRef], _ out: inout [StoreOutput]) {
        guard outstandingReplies < config.outstandingRepliesLimitRequests else {
            return out.append(.reply(.sync(id, present: presentDurable(refs))))
        }
        outstandingReplies += 1
        queuedSyncs.append(SyncWaiter(id: id, refs: refs, requiredSeq: nil))
    }

    /// Removes `ref` from the index and records its delete; the slot waits for durability.
    /// A ref whose put no journal write has seen yet (not durable, not in a batch a cycle
    /// fixed) needs no record at all: its put is cancelled and the slot is free at once. No
    /// journal prefix can name it, so no recovery can see the slot's new contents under it.
    /// Overwritten blocks that were never synced thus cost neither a journal record nor a sync.
    mutating func removeFromIndex(_ ref: BlockRef) {
        let e = index.removeValue(forKey: ref)!
        precondition(slots[e.slot] == .used, "deleting \(ref) from slot \(e.slot) in state \(slots[e.slot])")
        sectorSums.forget(slot: e.slot)
        if e.putSeq > durableThroughSeq, let i = unjournaledIndex(seq: e.putSeq), i >= fixedBatchCount {
            precondition(unjournaled[i].record.op == .put && unjournaled[i].record.ref == ref && !unjournaled[i].cancelled,
                         "cancelling \(ref): change \(e.putSeq) is \(unjournaled[i])")
            unjournaled[i].cancelled = true
            cancelledCount += 1
            slots[e.slot] = .free
            freeList.append(e.slot)
            dropCancelledIfMany()
            return
        }
        slots[e.slot] = .freeing
        freeingCount += 1
        appendChange(BlockStoreFormat.Record(op: .delete, ref: ref, slot: e.slot, crc: e.crc))
    }

    /// Changes at the front of `unjournaled` that the running cycle has fixed as its batch.
    var fixedBatchCount: Int {
        guard let c = cycle else { return 0 }
        if case .awaitingWrites = c.phase { return 0 }
        return c.batchCount
    }

    /// Position of the change with sequence `seq` (sequences increase along the array).
    func unjournaledIndex(seq: UInt64) -> Int? {
        var lo = 0, hi = unjournaled.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if unjournaled[mid].seq < seq { lo = mid + 1 } else { hi = mid }
        }
        return lo < unjournaled.count && unjournaled[lo].seq == seq ? lo : nil
    }

    /// Keeps cancelled entries from piling up while no cycle runs (amortized: only when they
    /// are most of the list, and never inside a fixed batch).
    mutating func dropCancelledIfMany() {
        guard cancelledCount >= min(1024, config.totalSlots), cancelledCount * 2 > unjournaled.count else { return }
        let fixed = fixedBatchCount
        var kept = Array(unjournaled[0..<fixed])
        kept.reserveCapacity(unjournaled.count - cancelledCount + fixed)
        var dropped = 0
        for c in unjournaled[fixed...] {
            if c.cancelled { dropped += 1 } else { kept.append(c) }
        }
        unjournaled = kept
        cancelledCount -= dropped
    }

    @discardableResult
    mutating func appendChange(_ record: BlockStoreFormat.Record) -> UInt64 {
        let seq = nextSeq
        nextSeq += 1
        unjournaled.append(Change(seq: seq, record: record))
        return seq
    }

    // MARK: Data completions

    mutating func dataWritten(
        _ id: DiskOpID, _ put: PendingPut, _ result: Result<Void, DiskError>, _ out: inout [StoreOutput]
    ) {
        putByRef[put.ref] = nil
        precondition(slots[put.slot] == .writing, "write \(id.raw) completed for slot \(put.slot) in state \(slots[put.slot])")
        if case var .awaitingWrites(waiting) = cycle?.phase {
            waiting.remove(id)
            cycle!.phase = .awaitingWrites(waiting)
        }
        switch result {
        case .failure:
            slots[put.slot] = .free
            freeList.append(put.slot)
            for r in put.requesters { reply(.put(r.id, .failure(.ioError)), &out) }
        case .success:
            precondition(index[put.ref] == nil, "\(put.ref) entered the index while its write \(id.raw) was in flight")
            slots[put.slot] = .used
            sectorSums.forget(slot: put.slot)
            let seq = appendChange(BlockStoreFormat.Record(op: .put, ref: put.ref, slot: put.slot, crc: put.crc))
            index[put.ref] = Entry(slot: put.slot, crc: put.crc, putSeq: seq)
            for r in put.requesters {
                if r.durable {
                    durableWaiters.append(DurableWaiter(id: r.id, seq: seq))
                } else {
                    reply(.put(r.id, .success(())), &out)
                }
            }
            if put.deleteRequested { removeFromIndex(put.ref) }
        }
        if case let .awaitingWrites(waiting) = cycle?.phase, waiting.isEmpty { captureBatch(&out) }
    }

    mutating func dataRead(_ read: PendingRead, _ result: Result<[UInt8], DiskError>, _ out: inout [StoreOutput]) {
        guard let e = index[read.ref] else { return reply(.get(read.id, .failure(.notFound(read.ref))), &out) }
        guard e.putSeq == read.putSeq else {
            // Deleted and put again while the read was in flight: read the new slot.
            return issueRead(PendingRead(id: read.id, ref: read.ref, putSeq: e.putSeq, range: read.range), e, &out)
        }
        if let sectors = read.sectors, let range = read.range, case let .success(bytes) = result {
            guard let sums = sectorSums.lookup(slot: e.slot, blockCRC: e.crc) else {
                return issueRead(read, e, &out)  // the table moved on meanwhile: read the whole block
            }
            let size = sectorSums.sectorSize
            let good = bytes.count == sectors.count * size && (trustsSectorReads || sectors.allSatisfy { s in
                let at = (s - sectors.lowerBound) * size
                return CRC32C.checksum(bytes[at..<at + size]) == sums[sums.startIndex + s]
            })
            if good {
                let skip = sectors.lowerBound * size
                return reply(.get(read.id, .success(Array(bytes[range.lowerBound - skip..<range.upperBound - skip]))), &out)
            }
            removeFromIndex(read.ref)
            return reply(.get(read.id, .failure(.corrupt(read.ref))), &out)
        }
        switch result {
        case let .success(bytes) where bytes.count == config.blockSize && CRC32C.checksum(bytes) == e.crc:
            guard let range = read.range else { return reply(.get(read.id, .success(bytes)), &out) }
            sectorSums.learn(slot: e.slot, blockCRC: e.crc, block: bytes)
            reply(.get(read.id, .success(Array(bytes[range]))), &out)
        case .success:
            removeFromIndex(read.ref)
            reply(.get(read.id, .failure(.corrupt(read.ref))), &out)
        case .failure:
            removeFromIndex(read.ref)
            reply(.get(read.id, .failure(.ioError)), &out)
        }
    }

    /// Emits a reply to a request counted in `outstandingReplies`.
    mutating func reply(_ r: StoreReply, _ out: inout [StoreOutput]) {
        precondition(outstandingReplies > 0, "reply \(r) to a request that was not outstanding")
        outstandingReplies -= 1
        out.append(.reply(r))
    }
}
