extension BlockStore {
    /// The durable index laid out by slot: the one put record of each slot a durable ref holds.
    ///
    /// A durable ref owns its slot alone (a deleted slot is reused only once its delete is
    /// durable), so a table by slot answers "which durable ref is on this slot" without a hash
    /// lookup, and lists the records in slot order without a sort. The invariant walk and
    /// the compaction's snapshot both use it. Raw memory for the records: an entry is
    /// initialized when its slot's flag is set and read only then (no zero fill of 48 bytes a
    /// slot on every walk).
    struct DurableSlots: ~Copyable {
        private var present: [Bool]
        private let records: UnsafeMutablePointer<BlockStoreFormat.Record>
        private(set) var count = 0

        /// Traps if two durable refs share a slot.
        init(_ durable: [BlockRef: DurableEntry], totalSlots: Int) {
            present = [Bool](repeating: false, count: totalSlots)
            records = .allocate(capacity: totalSlots)
            for (ref, d) in durable {
                precondition(!present[d.slot], "durable \(ref) shares slot \(d.slot)")
                insert(BlockStoreFormat.Record(op: .put, ref: ref, slot: d.slot, crc: d.crc))
            }
        }

        deinit { records.deallocate() }  // trivial type: nothing to deinitialize

        /// The put record of the durable ref on `slot`, if one is there.
        func record(at slot: Int) -> BlockStoreFormat.Record? { present[slot] ? records[slot] : nil }

        /// Puts `r` on its slot, which must be empty.
        mutating func insert(_ r: BlockStoreFormat.Record) {
            precondition(!present[r.slot], "\(r.ref) put on slot \(r.slot), which a durable ref holds")
            present[r.slot] = true
            (records + r.slot).initialize(to: r)
            count += 1
        }

        /// Empties `slot`, which must hold a record.
        mutating func remove(slot: Int) {
            precondition(present[slot], "slot \(slot) holds no durable ref")
            present[slot] = false
            count -= 1
        }

        /// Every record, in slot order.
        func inSlotOrder() -> [BlockStoreFormat.Record] {
            var out: [BlockStoreFormat.Record] = []
            out.reserveCapacity(count)
            for s in 0..<present.count where present[s] { out.append(records[s]) }
            return out
        }
    }
}
