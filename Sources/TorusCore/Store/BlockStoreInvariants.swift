/// The block store's invariants, checked after every step by tests and the simulator.
extension BlockStore {
    /// Traps, naming the broken invariant, if the store's state is impossible.
    /// Costs O(slots + index + in-flight requests).
    public func checkInvariants() {
        var free = 0, writing = 0, used = 0, freeing = 0
        for s in slots {
            switch s {
            case .free: free += 1
            case .writing: writing += 1
            case .used: used += 1
            case .freeing: freeing += 1
            }
        }
        precondition(free + writing + used + freeing == config.totalSlots, "slot states do not add up to the total")
        precondition(free == freeList.count, "\(free) free slots but \(freeList.count) in the free list")
        var listed = [Bool](repeating: false, count: config.totalSlots)
        for s in freeList {
            precondition(slots[s] == .free && !listed[s], "free list holds slot \(s) twice or in state \(slots[s])")
            listed[s] = true
        }
        checkInFlight(writing: writing)
        precondition(used == index.count, "\(used) used slots but \(index.count) refs in the index")
        // The durable index first, into per-slot tables: the live walk below then compares each
        // durable ref with what its slot holds, instead of one hash lookup per ref (this walk
        // runs when the store's tables are cold, and those lookups missed the cache).
        var durablyOwned = [Bool](repeating: false, count: config.totalSlots)
        // Raw memory, not zero-filled arrays (128 KiB a walk): a slot's entry is initialized
        // when its flag is set and read only then.
        let durableRef = UnsafeMutablePointer<BlockRef>.allocate(capacity: config.totalSlots)
        let durableCRC = UnsafeMutablePointer<UInt32>.allocate(capacity: config.totalSlots)
        defer {
            durableRef.deallocate()  // trivial types: nothing to deinitialize
            durableCRC.deallocate()
        }
        for (ref, d) in durableIndex {
            precondition(
                slots[d.slot] == .used || slots[d.slot] == .freeing,
                "durable \(ref) on slot \(d.slot) in state \(slots[d.slot])")
            precondition(!durablyOwned[d.slot], "durable \(ref) shares slot \(d.slot)")
            durablyOwned[d.slot] = true
            (durableRef + d.slot).initialize(to: ref)
            (durableCRC + d.slot).initialize(to: d.crc)
        }
        // One flag per slot, not the owning ref (33 bytes a slot): this walk runs over every
        // slot. The other owner is looked up only to name it when the check fails.
        var owned = [Bool](repeating: false, count: config.totalSlots)
        for (ref, e) in index {
            precondition(slots[e.slot] == .used, "\(ref) on slot \(e.slot) in state \(slots[e.slot])")
            if owned[e.slot] {
                let other = index.first { $0.key != ref && $0.value.slot == e.slot }?.key
                preconditionFailure("\(ref) and \(other.map { "\($0)" } ?? "?") share slot \(e.slot)")
            }
            precondition(e.putSeq < nextSeq, "\(ref) inserted by future change \(e.putSeq)")
            owned[e.slot] = true
            if e.putSeq <= durableThroughSeq {
                // Its slot holds at most one durable ref (checked above): it must be this one.
                precondition(durablyOwned[e.slot] && durableRef[e.slot] == ref,
                             "\(ref) is durable but the durable index does not have it on slot \(e.slot)")
                precondition(durableCRC[e.slot] == e.crc, "durable \(ref) differs from its index entry")
            }
        }
        precondition(freeing == freeingCount, "\(freeing) freeing slots but count is \(freeingCount)")
        checkChanges()
        if let j = journal {
            precondition(
                j.nextSector >= 1 && j.nextSector <= config.journalRegionSectors,
                "journal cursor at sector \(j.nextSector) outside the region")
            precondition(j.generation < nextGeneration, "live generation \(j.generation) not below next \(nextGeneration)")
        }
        if let c = cycle {
            precondition(c.batchCount <= unjournaled.count, "cycle batch of \(c.batchCount) exceeds unjournaled changes")
            precondition(c.batchCount <= config.journalBatchLimitRecords, "cycle batch over its limit")
            if case let .awaitingWrites(waiting) = c.phase {
                precondition(waiting.allSatisfy { puts[$0] != nil }, "cycle awaits a write that is not in flight")
            }
        }
    }

    private func checkInFlight(writing: Int) {
        precondition(writing == puts.count, "\(writing) writing slots but \(puts.count) puts in flight")
        precondition(putByRef.count == puts.count, "put-by-ref map out of step with puts in flight")
        var expected = reads.count + durableWaiters.count + queuedSyncs.count + (cycle?.syncs.count ?? 0)
        for (op, p) in puts {
            precondition(slots[p.slot] == .writing, "put \(op.raw) writes slot \(p.slot) in state \(slots[p.slot])")
            precondition(putByRef[p.ref] == op, "put \(op.raw) of \(p.ref) missing from the by-ref map")
            precondition(index[p.ref] == nil, "\(p.ref) is in the index while its put is in flight")
            precondition(!p.requesters.isEmpty, "put \(op.raw) has no requester")
            expected += p.requesters.count
        }
        precondition(outstandingReplies == expected, "\(outstandingReplies) replies outstanding, \(expected) counted")
        precondition(
            outstandingReplies <= config.outstandingRepliesLimitRequests,
            "\(outstandingReplies) replies outstanding over the limit")
    }

    private func checkChanges() {
        precondition(unjournaled.count - cancelledCount <= 2 * config.totalSlots, "\(unjournaled.count) unjournaled changes")
        var previous = durableThroughSeq
        var deletes = 0, cancelled = 0
        for c in unjournaled {
            if c.cancelled {
                cancelled += 1
                precondition(c.record.op == .put && index[c.record.ref]?.putSeq != c.seq, "cancelled change \(c.seq) is live")
            }
            precondition(c.seq > previous && c.seq < nextSeq, "change seq \(c.seq) out of order")
            previous = c.seq
            if c.record.op == .delete {
                deletes += 1
                precondition(slots[c.record.slot] == .freeing, "pending delete of slot \(c.record.slot) not freeing")
            }
        }
        precondition(deletes == freeingCount, "\(deletes) pending deletes but \(freeingCount) freeing slots")
        precondition(cancelled == cancelledCount, "\(cancelled) cancelled puts but the count is \(cancelledCount)")
        for w in durableWaiters {
            precondition(w.seq > durableThroughSeq && w.seq < nextSeq, "durable put waits for change \(w.seq)")
        }
    }
}
