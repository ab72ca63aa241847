import TorusCore

/// Captures a `MetadataStateMachine` as a `MetadataSnapshot` and rebuilds one from it by
/// replaying a synthetic history through the public `apply` (the machine has no restore API;
/// how: docs/metadata.md, "The embedded store"). A restore is checked against the snapshot's
/// `digest()`, so it is exact or it fails. Limits for the caller:
/// - restoring costs O(revision + Σ versions) applies (never more than replaying the journal
///   the snapshot replaced, but not O(state));
/// - the rebuilt machine's watch history holds the synthetic events, so watches must not start
///   at or before the snapshot's revision (`EmbeddedMetadataStore.oldestWatchableRevision`).
enum MetadataSnapshotRestore {
    struct Failure: Error { var reason: String }

    static func capture(_ machine: MetadataStateMachine, nextAutoLeaseID: Int64) -> MetadataSnapshot {
        let leases = machine.leaseIDs.map { id in
            let lease = machine.lease(id)!
            return MetadataSnapshot.Lease(id: id, ttlSeconds: lease.ttlSeconds, expiry: lease.expiry)
        }
        return MetadataSnapshot(revision: machine.revision, nextAutoLeaseID: nextAutoLeaseID, digest: machine.digest(),
                                leases: leases, kvs: machine.range("", prefix: true))
    }

    static func restore(_ snapshot: MetadataSnapshot, now: Instant) throws(Failure) -> MetadataStateMachine {
        var machine = MetadataStateMachine()
        // 1. The next automatic lease id (throwaway leases have no keys, so revoking them
        //    does not change the revision).
        var next: Int64 = 1
        while next < snapshot.nextAutoLeaseID {
            guard case .lease(let id, _) = machine.apply(.leaseGrant(ttlSeconds: machine.minLeaseTTLSeconds, id: 0), now: now).0,
                  id == next else { throw Failure(reason: "could not advance the lease id counter") }
            _ = machine.apply(.leaseRevoke(id: id), now: now)
            next = id + 1
        }
        // 2. Leases.
        for lease in snapshot.leases {
            let ttl = UInt64(clamping: lease.ttlSeconds) &* 1_000_000_000
            guard lease.ttlSeconds >= 1, lease.expiry.nanoseconds >= ttl else {
                throw Failure(reason: "lease \(lease.id) has expiry \(lease.expiry) before its TTL \(lease.ttlSeconds)s")
            }
            let granted = machine.apply(.leaseGrant(ttlSeconds: lease.ttlSeconds, id: lease.id),
                                        now: Instant(nanoseconds: lease.expiry.nanoseconds - ttl)).0
            guard granted == .lease(id: lease.id, ttlSeconds: lease.ttlSeconds) else {
                throw Failure(reason: "lease \(lease.id) could not be granted: \(granted)")
            }
        }
        // 3. Keys and revisions.
        let plan = try Plan(snapshot, maxTxnOps: machine.maxTxnOps)
        let filler = try plan.fillerSchedule()
        var puts: [MetaOp] = []
        try plan.forEachRevision { (revision: Int64, keys: [Int]) throws(Failure) in
            puts.removeAll(keepingCapacity: true)
            for k in keys {
                let kv = snapshot.kvs[k]
                puts.append(.put(key: kv.key, value: kv.value, lease: kv.lease))
            }
            switch filler.op(at: revision, changedKeys: keys.count) {
            case .put: puts.append(.put(key: plan.fillerKey, value: [], lease: 0))
            case .delete: puts.append(.delete(key: plan.fillerKey, prefix: false))
            case nil: break
            }
            guard case .txn(let result) = machine.apply(.txn(MetaTxn(success: puts)), now: now).0, result.revision == revision else {
                throw Failure(reason: "synthetic transaction did not produce revision \(revision)")
            }
        }
        guard machine.revision == snapshot.revision, machine.digest() == snapshot.digest else {
            throw Failure(reason: machine.revision != snapshot.revision
                ? "rebuilt revision \(machine.revision) differs from the snapshot's \(snapshot.revision)"
                : "rebuilt state differs from the snapshot (digest mismatch)")
        }
        return machine
    }

    // MARK: - The synthetic history

    enum FillerOp { case put, delete }

    /// When the filler key is put or deleted: every revision without key changes needs one
    /// change, and the filler must be gone at the end.
    struct FillerSchedule {
        var emptyCount = 0
        var firstEmpty: Int64?
        var lastEmpty: Int64?
        /// Revisions with key changes and room for one more op, before and after `firstEmpty`.
        var spareBefore: Int64?
        var spareAfter: Int64?

        func op(at revision: Int64, changedKeys: Int) -> FillerOp? {
            if changedKeys == 0 {
                if emptyCount >= 2 { return revision == lastEmpty ? .delete : .put }
                return spareBefore != nil ? .delete : .put
            }
            guard emptyCount == 1 else { return nil }
            if revision == spareBefore { return .put }
            if spareBefore == nil && revision == spareAfter { return .delete }
            return nil
        }
    }

    private struct Plan {
        let snapshot: MetadataSnapshot
        let maxTxnOps: Int
        let fillerKey: String
        /// (revision, key index) of the puts at createRevision and modRevision, by revision.
        let fixed: [(revision: Int64, key: Int)]
        /// Keys with version ≥ 3 (they need puts between create and mod), by createRevision.
        let multi: [Int]

        init(_ snapshot: MetadataSnapshot, maxTxnOps: Int) throws(Failure) {
            self.snapshot = snapshot
            self.maxTxnOps = maxTxnOps
            let leaseIDs = Set(snapshot.leases.map(\.id))
            var fixed: [(revision: Int64, key: Int)] = []
            var keys: Set<String> = []
            for (i, kv) in snapshot.kvs.enumerated() {
                let (c, m, v) = (kv.createRevision, kv.modRevision, kv.version)
                guard !kv.key.isEmpty, keys.insert(kv.key).inserted, c >= 2, c <= m, m <= snapshot.revision, v >= 1,
                      v == 1 ? c == m : v - 2 <= m - c - 1,
                      kv.lease == 0 || leaseIDs.contains(kv.lease) else {
                    throw Failure(reason: "key \(kv.key) has inconsistent revisions (create \(c), mod \(m), version \(v)) or lease")
                }
                fixed.append((c, i))
                if m != c { fixed.append((m, i)) }
            }
            self.fixed = fixed.sorted { ($0.revision, $0.key) < ($1.revision, $1.key) }
            self.multi = snapshot.kvs.indices.filter { snapshot.kvs[$0].version >= 3 }
                .sorted { (snapshot.kvs[$0].createRevision, $0) < (snapshot.kvs[$1].createRevision, $1) }
            var filler = "\u{0}torus-restore-filler"
            while keys.contains(filler) { filler += "~" }
            fillerKey = filler
        }

        /// Calls `body` for every revision 2…`revision` with the keys put in it.
        func forEachRevision(_ body: (Int64, [Int]) throws(Failure) -> Void) throws(Failure) {
            var remaining = snapshot.kvs.map { max(0, $0.version - 2) }
            var heap = DeadlineHeap()
            var nextFixed = 0, nextMulti = 0
            var keys: [Int] = [], taken: [(deadline: Int64, key: Int)] = []
            var revision: Int64 = 2
            while revision <= snapshot.revision {
                keys.removeAll(keepingCapacity: true)
                while nextFixed < fixed.count && fixed[nextFixed].revision == revision {
                    keys.append(fixed[nextFixed].key)
                    nextFixed += 1
                }
                while nextMulti < multi.count && snapshot.kvs[multi[nextMulti]].createRevision < revision {
                    heap.push((snapshot.kvs[multi[nextMulti]].modRevision - 1, multi[nextMulti]))
                    nextMulti += 1
                }
                guard keys.count <= maxTxnOps else { throw Failure(reason: "more than \(maxTxnOps) keys changed in revision \(revision)") }
                taken.removeAll(keepingCapacity: true)
                while keys.count < maxTxnOps, let entry = heap.pop() {
                    guard entry.deadline >= revision else { throw Failure(reason: "no room for the versions of key \(snapshot.kvs[entry.key].key)") }
                    keys.append(entry.key)
                    remaining[entry.key] -= 1
                    taken.append(entry)
                }
                for entry in taken where remaining[entry.key] > 0 { heap.push(entry) }
                try body(revision, keys)
                revision += 1
            }
            guard heap.isEmpty else { throw Failure(reason: "no room for every key version") }
        }

        func fillerSchedule() throws(Failure) -> FillerSchedule {
            var s = FillerSchedule()
            var lastSpare: Int64?
            let cap = maxTxnOps
            try forEachRevision { (revision: Int64, keys: [Int]) throws(Failure) in
                if keys.isEmpty {
                    s.emptyCount += 1
                    if s.firstEmpty == nil { s.firstEmpty = revision; s.spareBefore = lastSpare }
                    s.lastEmpty = revision
                } else if keys.count < cap {
                    lastSpare = revision
                    if s.firstEmpty != nil && s.spareAfter == nil { s.spareAfter = revision }
                }
            }
            if s.emptyCount == 1 && s.spareBefore == nil && s.spareAfter == nil {
                throw Failure(reason: "no revision has room for the filler key")
            }
            return s
        }
    }

    /// A binary min-heap of (deadline, key index).
    private struct DeadlineHeap {
        private var items: [(deadline: Int64, key: Int)] = []
        var isEmpty: Bool { items.isEmpty }

        private static func less(_ a: (deadline: Int64, key: Int), _ b: (deadline: Int64, key: Int)) -> Bool {
            (a.deadline, a.key) < (b.deadline, b.key)
        }

        mutating func push(_ item: (deadline: Int64, key: Int)) {
            items.append(item)
            var i = items.count - 1
            while i > 0 {
                let parent = (i - 1) / 2
                guard Self.less(items[i], items[parent]) else { break }
                items.swapAt(i, parent)
                i = parent
            }
        }

        mutating func pop() -> (deadline: Int64, key: Int)? {
            guard let top = items.first else { return nil }
            let last = items.removeLast()
            if !items.isEmpty {
                items[0] = last
                var i = 0
                while true {
                    let l = 2 * i + 1, r = l + 1
                    var smallest = i
                    if l < items.count && Self.less(items[l], items[smallest]) { smallest = l }
                    if r < items.count && Self.less(items[r], items[smallest]) { smallest = r }
                    guard smallest != i else { break }
                    items.swapAt(i, smallest)
                    i = smallest
                }
            }
            return top
        }
    }
}
