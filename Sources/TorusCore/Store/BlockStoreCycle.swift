/// The journal pipeline: sync cycles (group commit) and compactions into a new generation.
extension BlockStore {
    /// What the one in-flight cycle is waiting for.
    enum Phase: Hashable, Sendable {
        /// Data writes issued before the cycle started that have not completed.
        case awaitingWrites(Set<DiskOpID>)
        case journalWrite(DiskOpID, sectors: Int)
        case journalSync(DiskOpID, sectors: Int)
        case snapshotWrite(DiskOpID)
        case snapshotSync(DiskOpID)
        case headerWrite(DiskOpID)
        case headerSync(DiskOpID)

        var op: DiskOpID? {
            switch self {
            case .awaitingWrites: nil
            case let .journalWrite(op, _), let .journalSync(op, _), let .snapshotWrite(op),
                let .snapshotSync(op), let .headerWrite(op), let .headerSync(op):
                op
            }
        }
    }

    /// A new generation being written into `target`.
    struct Compaction: Hashable, Sendable {
        var target: JournalRegion
        var generation: UInt64
        var snapshotSectors: Int
    }

    struct Cycle: Sendable {
        var phase: Phase
        /// Sync requests this cycle answers (those queued when it started).
        var syncs: [SyncWaiter]
        /// The first `batchCount` entries of `unjournaled`, fixed when the data sync is issued.
        var batchCount: Int
        var compaction: Compaction?
    }

    /// Whether an idle store should start a cycle now.
    var wantsCycle: Bool {
        if !queuedSyncs.isEmpty || !durableWaiters.isEmpty { return true }
        if puts.values.contains(where: { p in p.requesters.contains { $0.durable } }) { return true }
        // After a failure only waiting requests retry, so a dead disk cannot make us spin.
        if lastCycleFailed { return false }
        return needsNewGeneration || deletesDue
            || unjournaled.count - cancelledCount >= config.lazyCommitThresholdRecords
    }

    /// Deleted slots come back only through a cycle. While data is being written and plenty of
    /// slots are free, deletes wait for a cycle that runs anyway (each cycle costs a disk
    /// sync, and overwrites delete all the time); once free slots run short, or no put is
    /// writing (a garbage-collection pass, a quiet moment), a delete starts one.
    var deletesDue: Bool {
        freeingCount > 0
            && (puts.isEmpty || freeList.count < config.totalSlots / 4 || freeingCount >= config.totalSlots / 8)
    }

    mutating func startCycleIfWanted(_ out: inout [StoreOutput]) {
        guard cycle == nil, wantsCycle else { return }
        let waiting = Set(puts.keys)
        cycle = Cycle(phase: .awaitingWrites(waiting), syncs: queuedSyncs, batchCount: 0, compaction: nil)
        queuedSyncs = []
        if waiting.isEmpty { captureBatch(&out) }
    }

    /// Step 2: every data write the batch depends on has completed; fix the batch.
    mutating func captureBatch(_ out: inout [StoreOutput]) {
        let n = min(unjournaled.count, config.journalBatchLimitRecords)
        cycle!.batchCount = n
        for i in cycle!.syncs.indices where cycle!.syncs[i].requiredSeq == nil {
            cycle!.syncs[i].requiredSeq = nextSeq - 1
        }
        if !needsNewGeneration && !unjournaled[0..<n].contains(where: { !$0.cancelled }) {
            // Nothing to journal (at most cancelled puts, which need no record).
            commitBatch()
            return finishCycle(failed: false, &out)
        }
        // No sync of the data first: the journal's sync covers both, and recovery checks the
        // last write's puts against their slots (`BlockStore.recover`).
        appendOrCompact(&out)
    }

    mutating func cycleStepCompleted(_ phase: Phase, _ completion: DiskCompletion, _ out: inout [StoreOutput]) {
        switch (phase, completion) {
        case let (.journalWrite(_, sectors), .written(.success)):
            let op = nextOp()
            cycle!.phase = .journalSync(op, sectors: sectors)
            out.append(.disk(op, .sync))
        case let (.journalSync(_, sectors), .synced(.success)):
            journal!.nextSector += sectors
            commitBatch()
            finishCycle(failed: false, &out)
        case (.snapshotWrite, .written(.success)):
            let op = nextOp()
            cycle!.phase = .snapshotSync(op)
            out.append(.disk(op, .sync))
        case (.snapshotSync, .synced(.success)):
            writeRegionHeader(&out)
        case (.headerWrite, .written(.success)):
            let op = nextOp()
            cycle!.phase = .headerSync(op)
            out.append(.disk(op, .sync))
        case (.headerSync, .synced(.success)):
            let c = cycle!.compaction!
            journal = JournalCursor(region: c.target, generation: c.generation, nextSector: 1 + c.snapshotSectors)
            needsNewGeneration = false
            compactionsCompleted += 1
            commitBatch()
            finishCycle(failed: false, &out)
        case (.journalWrite, .written(.failure)), (.journalSync, .synced(.failure)),
            (.snapshotWrite, .written(.failure)), (.snapshotSync, .synced(.failure)),
            (.headerWrite, .written(.failure)), (.headerSync, .synced(.failure)):
            // What reached the journal is unknown: never append to this generation again.
            needsNewGeneration = true
            finishCycle(failed: true, &out)
        default:
            preconditionFailure("cycle phase \(phase) completed with \(completion)")
        }
    }

    /// Step 3: append the batch to the live region, or start a new generation when one is due
    /// or the batch does not fit.
    private mutating func appendOrCompact(_ out: inout [StoreOutput]) {
        let records = unjournaled[0..<cycle!.batchCount].filter { !$0.cancelled }.map(\.record)
        let sectors = config.sectorsFor(records: records.count)
        guard !needsNewGeneration, let j = journal, !records.isEmpty,
              j.nextSector + sectors <= config.journalRegionSectors else {
            return beginCompaction(&out)
        }
        let bytes = BlockStoreFormat.encodeSectors(
            records, generation: j.generation, firstSequence: j.nextSector, config: config)
        let op = nextOp()
        cycle!.phase = .journalWrite(op, sectors: sectors)
        let offset = config.regionOffset(j.region) + UInt64(j.nextSector * config.sectorSize)
        out.append(.disk(op, .write(offset: offset, bytes: bytes)))
    }

    /// The region appends went to last (or recovery read from); compactions target the other.
    private var liveRegion: JournalRegion? { journal?.region ?? recoveryReport.region }

    /// Writes a snapshot of the durable index with the batch folded in (its data is durable
    /// since step 2) into the other region, under a fresh generation.
    private mutating func beginCompaction(_ out: inout [StoreOutput]) {
        let target = liveRegion?.other ?? .a
        let generation = nextGeneration
        nextGeneration += 1
        let records = snapshotRecords()
        let sectors = config.sectorsFor(records: records.count)
        precondition(
            sectors <= config.snapshotSectorsMax,
            "snapshot of \(records.count) refs exceeds \(config.snapshotSectorsMax) sectors")
        cycle!.compaction = Compaction(target: target, generation: generation, snapshotSectors: sectors)
        guard sectors > 0 else { return writeRegionHeader(&out) }
        let bytes = BlockStoreFormat.encodeSectors(records, generation: generation, firstSequence: 1, config: config)
        let op = nextOp()
        cycle!.phase = .snapshotWrite(op)
        out.append(.disk(op, .write(offset: config.regionOffset(target) + UInt64(config.sectorSize), bytes: bytes)))
    }

    /// The durable index with the cycle's batch folded in, as put records in slot order (so
    /// the snapshot's bytes do not depend on the dictionary's order): laid out by slot in one
    /// pass, with no copy of the index and no sort (docs/storage-core.md, "Cost notes").
    private func snapshotRecords() -> [BlockStoreFormat.Record] {
        var table = DurableSlots(durableIndex, totalSlots: config.totalSlots)
        // The batch, in change order. Whether a ref is in the snapshot so far: its last change
        // in the batch, else whether the durable index has it.
        var changed: [BlockRef: Bool] = [:]
        for c in unjournaled[0..<cycle!.batchCount] where !c.cancelled {
            let r = c.record
            let had = changed[r.ref] ?? (durableIndex[r.ref] != nil)
            switch r.op {
            case .put:
                precondition(!had, "journaled put of \(r.ref) while it is durable")
                table.insert(r)
            case .delete:
                precondition(had && table.record(at: r.slot)?.ref == r.ref,
                             "journaled delete of \(r.ref) slot \(r.slot) not durable there")
                table.remove(slot: r.slot)
            }
            changed[r.ref] = r.op == .put
        }
        return table.inSlotOrder()
    }

    private mutating func writeRegionHeader(_ out: inout [StoreOutput]) {
        let c = cycle!.compaction!
        let header = BlockStoreFormat.encodeRegionHeader(
            .init(generation: c.generation, snapshotSectors: c.snapshotSectors), config: config)
        let op = nextOp()
        cycle!.phase = .headerWrite(op)
        out.append(.disk(op, .write(offset: config.regionOffset(c.target), bytes: header)))
    }

    private static func apply(_ r: BlockStoreFormat.Record, to index: inout [BlockRef: DurableEntry]) {
        // One hash lookup each: the old value comes back from the update.
        switch r.op {
        case .put:
            let old = index.updateValue(DurableEntry(slot: r.slot, crc: r.crc), forKey: r.ref)
            precondition(old == nil, "journaled put of \(r.ref) while it is durable")
        case .delete:
            let old = index.removeValue(forKey: r.ref)
            precondition(old?.slot == r.slot, "journaled delete of \(r.ref) slot \(r.slot) not durable there")
        }
    }

    /// Step 5: the batch is durable; deleted slots become reusable.
    mutating func commitBatch() {
        let n = cycle!.batchCount
        guard n > 0 else { return }
        for c in unjournaled[0..<n] {
            if c.cancelled {
                cancelledCount -= 1
                continue
            }
            Self.apply(c.record, to: &durableIndex)
            if c.record.op == .delete {
                let slot = c.record.slot
                precondition(slots[slot] == .freeing, "durable delete of slot \(slot) in state \(slots[slot])")
                slots[slot] = .free
                freeList.append(slot)
                freeingCount -= 1
            }
        }
        durableThroughSeq = unjournaled[n - 1].seq
        unjournaled.removeFirst(n)
    }

    /// Ends the cycle: answers covered durable puts and the cycle's syncs. On failure the batch
    /// stays unjournaled, the durable puts it covered fail with `.ioError` and every sync of
    /// the cycle is answered with what is durable.
    private mutating func finishCycle(failed: Bool, _ out: inout [StoreOutput]) {
        let c = cycle!
        cycle = nil
        let failedThroughSeq = failed && c.batchCount > 0 ? unjournaled[c.batchCount - 1].seq : 0
        var keep: [DurableWaiter] = []
        for w in durableWaiters {
            if w.seq <= durableThroughSeq {
                reply(.put(w.id, .success(())), &out)
            } else if w.seq <= failedThroughSeq {
                reply(.put(w.id, .failure(.ioError)), &out)
            } else {
                keep.append(w)
            }
        }
        durableWaiters = keep
        // A sync whose changes did not all fit in this batch waits for the next cycle, ahead
        // of the syncs that arrived later; after a failure it is answered with what is durable.
        var carried: [SyncWaiter] = []
        for s in c.syncs {
            if failed || s.requiredSeq! <= durableThroughSeq {
                reply(.sync(s.id, present: presentDurable(s.refs)), &out)
            } else {
                carried.append(s)
            }
        }
        queuedSyncs = carried + queuedSyncs
        lastCycleFailed = failed
        if failed { cyclesFailed += 1 }
    }
}
