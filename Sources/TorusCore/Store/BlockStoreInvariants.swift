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
        // The durable index first, laid out by slot (which also checks that no two durable
        // refs share a slot): the live walk below then compares each durable ref with what its
        // slot holds, instead of one hash lookup per ref (this walk runs when the store's
        // tables are cold, and those lookups missed the cache).
        let durable = DurableSlots(durableIndex, totalSlots: config.totalSlots)
        for s in 0..<config.totalSlots {
            guard let d = durable.record(at: s) else { continue }
            precondition(slots[s] == .used || slots[s] == .freeing, "durable \(d.ref) on slot \(s) in state \(slots[s])")
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
                guard let d = durable.record(at: e.slot), d.ref == ref else {
                    preconditionFailure("\(ref) is durable but the durable index does not have it on slot \(e.slot)")
                }
                precondition(d.crc == e.crc, "durable \(ref) differs from its index entry")
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
