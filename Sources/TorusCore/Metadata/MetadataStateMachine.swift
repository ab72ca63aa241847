/// A deterministic, in-memory model of the etcd v3 subset Torus uses, with etcd 3.4 semantics:
/// one revision per changing transaction, key versions, transactions validated before anything
/// applies (an erroring one changes nothing), leases outside the revisioned keyspace (revoked
/// by `expireLeases(now:)`), and watches that may start in the past while the bounded history
/// holds that revision. The exact rules: docs/metadata.md, "etcd semantics".
///
/// Pure: no I/O, no clock (time is passed in), no randomness, and no output depends on
/// `Dictionary`/`Set` iteration order.
public struct MetadataStateMachine: Sendable {
    /// etcd's `MaxLeaseTTL`.
    public static let maxLeaseTTLSeconds: Int64 = 9_000_000_000

    /// The current store revision (etcd's header revision).
    public private(set) var revision: Int64 = 1
    /// The oldest revision a watch may start from; older starts fail with `.compacted`.
    public private(set) var compactRevision: Int64 = 1
    /// How many watch events of history are retained for watches starting in the past.
    public let historyEventsMax: Int
    /// Grants below this TTL are raised to it (etcd's `minLeaseTTL`).
    public let minLeaseTTLSeconds: Int64
    /// Maximum compares, and ops per branch, in one transaction (etcd `--max-txn-ops`).
    public let maxTxnOps: Int

    private var kvs: [MetaKeyBytes: MetaKeyValue] = [:]
    private var sortedKeys: [MetaKeyBytes] = []          // strictly increasing, same keys as `kvs`
    private var leases: [Int64: MetaLease] = [:]
    private var nextLeaseID: Int64 = 1
    private var history: [MetaWatchEvent] = []           // live events are history[historyStart...]
    private var historyStart = 0
    private var watches: [MetaWatch] = []                 // sorted by id
    private var nextWatchID: Int64 = 1

    public init() { self.init(historyEventsMax: 10_000) }

    public init(historyEventsMax: Int, minLeaseTTLSeconds: Int64 = 1, maxTxnOps: Int = 128) {
        precondition(historyEventsMax >= 0 && minLeaseTTLSeconds >= 1 && maxTxnOps >= 1)
        self.historyEventsMax = historyEventsMax
        self.minLeaseTTLSeconds = minLeaseTTLSeconds
        self.maxTxnOps = maxTxnOps
    }

    // MARK: - Requests

    /// Applies one request at time `now`, returning its response and the watch notifications it
    /// caused (at most one per watch, ordered by watch id).
    public mutating func apply(_ request: MetaRequest, now: Instant) -> (MetaResponse, [WatchNotification]) {
        switch request {
        case .txn(let txn):
            return applyTxn(txn)
        case .leaseGrant(let ttl, let requested):
            guard ttl >= 1, ttl <= Self.maxLeaseTTLSeconds else { return (.error(.invalidTTL(ttl)), []) }
            if requested != 0, leases[requested] != nil { return (.error(.leaseExists(requested)), []) }
            var id = requested
            if id == 0 {
                while leases[nextLeaseID] != nil { nextLeaseID += 1 }
                id = nextLeaseID
                nextLeaseID += 1
            }
            let granted = max(ttl, minLeaseTTLSeconds)
            leases[id] = MetaLease(id: id, ttlSeconds: granted, expiry: Self.expiry(now, granted))
            return (.lease(id: id, ttlSeconds: granted), [])
        case .leaseKeepAlive(let id):
            guard var lease = leases[id], lease.expiry > now else { return (.error(.leaseNotFound(id)), []) }
            lease.expiry = Self.expiry(now, lease.ttlSeconds)
            leases[id] = lease
            return (.lease(id: id, ttlSeconds: lease.ttlSeconds), [])
        case .leaseRevoke(let id):
            guard leases[id] != nil else { return (.error(.leaseNotFound(id)), []) }
            return (.revoked(id: id), revokeLease(id))
        case .leaseTimeToLive(let id):
            guard let lease = leases[id], lease.expiry > now else { return (.error(.leaseNotFound(id)), []) }
            let remaining = Int64((lease.expiry - now).value / 1_000_000_000)
            return (.lease(id: id, ttlSeconds: remaining), [])
        }
    }

    /// Revokes every lease whose expiry is ≤ `now`, in (expiry, id) order, deleting its keys in
    /// one revision per lease that has keys. Returns the resulting notifications in order.
    public mutating func expireLeases(now: Instant) -> [WatchNotification] {
        let expired = leases.values.filter { $0.expiry <= now }
            .sorted { ($0.expiry, $0.id) < ($1.expiry, $1.id) }
        var notifications: [WatchNotification] = []
        for lease in expired { notifications += revokeLease(lease.id) }
        return notifications
    }

    /// The earliest expiry among existing leases (possibly already past), nil when none exist.
    public func nextLeaseExpiry() -> Instant? {
        leases.values.map(\.expiry).min()
    }

    // MARK: - Watches

    /// Registers a watch on `key` (or every key starting with it when `prefix`), delivering
    /// changes with revision ≥ `fromRevision`; `fromRevision` ≤ 0 means "changes after now".
    /// Past revisions are replayed from the bounded history in the returned notifications (one
    /// notification holding every replayed event, or none). Fails with `.compacted` when
    /// `fromRevision` < `compactRevision`, and `.emptyKey` for an empty non-prefix key.
    public mutating func watch(key: String, prefix: Bool, fromRevision: Int64) -> Result<(WatchID, [WatchNotification]), MetaError> {
        if key.isEmpty && !prefix { return .failure(.emptyKey) }
        let start = fromRevision <= 0 ? revision + 1 : fromRevision
        if start < compactRevision { return .failure(.compacted(revision: compactRevision)) }
        let watch = MetaWatch(id: WatchID(raw: nextWatchID), key: MetaKeyBytes(key), prefix: prefix, startRevision: start)
        nextWatchID += 1
        watches.append(watch)
        // First retained event with revision >= start (history is sorted by revision).
        var lo = historyStart, hi = history.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if history[mid].revision < start { lo = mid + 1 } else { hi = mid }
        }
        let replay = history[lo...].filter { watch.matches(MetaKeyBytes($0.kv.key)) }
        return .success((watch.id, replay.isEmpty ? [] : [WatchNotification(watch: watch.id, events: replay)]))
    }

    /// Stops a watch; unknown ids are ignored.
    public mutating func cancelWatch(_ id: WatchID) {
        watches.removeAll { $0.id == id }
    }

    // MARK: - Reads (not part of the replicated request stream)

    /// The current key/value for `key`, nil when absent.
    public func get(_ key: String) -> MetaKeyValue? { kvs[MetaKeyBytes(key)] }

    /// The current key/values for `key` or its prefix, sorted by UTF-8 bytes.
    public func range(_ key: String, prefix: Bool) -> [MetaKeyValue] {
        indices(MetaKeyBytes(key), prefix: prefix).map { kvs[sortedKeys[$0]]! }
    }

    /// The number of keys currently stored.
    public var keyCount: Int { kvs.count }

    /// Ids of existing leases (including expired ones not yet revoked), ascending.
    public var leaseIDs: [Int64] { leases.keys.sorted() }

    /// A lease's granted TTL, expiry and attached keys (sorted), nil when it does not exist.
    public func lease(_ id: Int64) -> (ttlSeconds: Int64, expiry: Instant, keys: [String])? {
        guard let lease = leases[id] else { return nil }
        return (lease.ttlSeconds, lease.expiry, lease.keys.sorted().map { kvs[$0]!.key })
    }

    /// Ids of active watches, ascending.
    public var watchIDs: [WatchID] { watches.map(\.id) }

    /// A stable digest of the replicated state (revision, key/values, leases), for comparing
    /// replicas and runs. Watches and history are excluded.
    public func digest() -> UInt64 {
        var h = StableHasher()
        h.combine(UInt64(bitPattern: revision))
        for key in sortedKeys {
            let kv = kvs[key]!
            h.combine(kv.key); h.combine(UInt64(kv.value.count)); h.combine(kv.value)
            for n in [kv.createRevision, kv.modRevision, kv.version, kv.lease] { h.combine(UInt64(bitPattern: n)) }
        }
        for id in leaseIDs {
            let lease = leases[id]!
            h.combine(UInt64(bitPattern: id)); h.combine(UInt64(bitPattern: lease.ttlSeconds))
            h.combine(lease.expiry.nanoseconds)
        }
        return h.value
    }

    /// Traps when an internal invariant does not hold. O(state size); for tests and checkers.
    public func checkInvariants() {
        precondition(revision >= 1, "revision starts at 1")
        precondition(compactRevision >= 1 && compactRevision <= revision + 1, "compact revision out of range")
        precondition(sortedKeys.count == kvs.count, "key index and store disagree")
        for (i, key) in sortedKeys.enumerated() {
            precondition(i == 0 || sortedKeys[i - 1] < key, "key index not strictly sorted")
            guard let kv = kvs[key] else { preconditionFailure("indexed key missing from store") }
            precondition(MetaKeyBytes(kv.key) == key && !key.bytes.isEmpty, "key mismatch")
            precondition(kv.version >= 1, "stored key has version < 1")
            precondition(kv.createRevision > 1 && kv.createRevision <= kv.modRevision, "createRevision out of range")
            precondition(kv.modRevision <= revision, "modRevision beyond store revision")
            precondition(kv.version <= kv.modRevision - kv.createRevision + 1, "more versions than revisions")
            if kv.lease != 0 {
                precondition(leases[kv.lease]?.keys.contains(key) == true, "key attached to missing lease")
            }
        }
        for (id, lease) in leases {
            precondition(id != 0 && lease.id == id, "lease id mismatch")
            precondition(lease.ttlSeconds >= minLeaseTTLSeconds && lease.ttlSeconds <= Self.maxLeaseTTLSeconds, "lease TTL out of range")
            for key in lease.keys { precondition(kvs[key]?.lease == id, "lease lists a key not attached to it") }
        }
        precondition(nextLeaseID >= 1, "next lease id not positive")
        precondition(history.count - historyStart <= historyEventsMax, "history over its bound")
        var previous = compactRevision
        for event in history[historyStart...] {
            precondition(event.revision >= previous && event.revision <= revision, "history not in revision order")
            precondition(event.kind == .put || (event.kv.version == 0 && event.previous != nil), "malformed delete event")
            previous = event.revision
        }
        for (i, watch) in watches.enumerated() {
            precondition(i == 0 || watches[i - 1].id < watch.id, "watches not sorted by id")
            precondition(watch.id.raw < nextWatchID, "watch id not yet assigned")
        }
    }

    // MARK: - Transactions

    private mutating func applyTxn(_ txn: MetaTxn) -> (MetaResponse, [WatchNotification]) {
        if let error = validate(txn) { return (.error(error), []) }
        let succeeded = txn.compares.allSatisfy(holds)
        let ops = succeeded ? txn.success : txn.failure
        for case .put(_, _, let lease) in ops where lease != 0 && leases[lease] == nil {
            return (.error(.leaseNotFound(lease)), [])
        }
        let newRevision = revision + 1
        var results: [MetaOpResult] = []
        var events: [MetaWatchEvent] = []
        for op in ops {
            switch op {
            case .range(let key, let prefix):
                // Reads see earlier writes of this txn, stamped with the new revision (as etcd).
                results.append(.range(range(key, prefix: prefix)))
            case .put(let key, let value, let lease):
                let event = put(key, value: value, lease: lease, at: newRevision)
                results.append(.put(previous: event.previous))
                events.append(event)
            case .delete(let key, let prefix):
                let deleted = delete(MetaKeyBytes(key), prefix: prefix, at: newRevision)
                results.append(.delete(deleted: deleted.compactMap(\.previous)))
                events += deleted
            }
        }
        let notifications = commit(events, at: newRevision)
        return (.txn(MetaTxnResult(succeeded: succeeded, revision: revision, results: results)), notifications)
    }

    /// Request-level checks (etcd's `checkTxnRequest` and `checkIntervals`), on both branches.
    private func validate(_ txn: MetaTxn) -> MetaError? {
        let count = max(txn.compares.count, txn.success.count, txn.failure.count)
        if count > maxTxnOps { return .tooManyOps(count) }
        if txn.compares.contains(where: { $0.key.isEmpty }) { return .emptyKey }
        for branch in [txn.success, txn.failure] {
            var deletes: [(key: MetaKeyBytes, prefix: Bool)] = []
            for op in branch {
                switch op {
                case .range(let key, let prefix): if key.isEmpty && !prefix { return .emptyKey }
                case .put(let key, _, _): if key.isEmpty { return .emptyKey }
                case .delete(let key, let prefix):
                    if key.isEmpty && !prefix { return .emptyKey }
                    deletes.append((MetaKeyBytes(key), prefix))
                }
            }
            var puts: Set<MetaKeyBytes> = []
            for case .put(let key, _, _) in branch {
                let bytes = MetaKeyBytes(key)
                let deleted = deletes.contains { $0.prefix ? bytes.hasPrefix($0.key) : bytes == $0.key }
                if deleted || !puts.insert(bytes).inserted { return .duplicateKeyInTxn(key) }
            }
        }
        return nil
    }

    /// etcd's `applyCompare` for a single key.
    private func holds(_ compare: MetaCompare) -> Bool {
        let kv = kvs[MetaKeyBytes(compare.key)]
        let order: Int
        func cmp(_ a: Int64, _ b: Int64) -> Int { a < b ? -1 : (a == b ? 0 : 1) }
        switch compare.target {
        case .value(let value):
            guard let kv else { return false }
            order = metaCompareBytes(kv.value, value)
        case .version(let n): order = cmp(kv?.version ?? 0, n)
        case .createRevision(let n): order = cmp(kv?.createRevision ?? 0, n)
        case .modRevision(let n): order = cmp(kv?.modRevision ?? 0, n)
        case .lease(let n): order = cmp(kv?.lease ?? 0, n)
        }
        switch compare.result {
        case .equal: return order == 0
        case .notEqual: return order != 0
        case .less: return order < 0
        case .greater: return order > 0
        }
    }

    // MARK: - Mutations

    private mutating func put(_ key: String, value: [UInt8], lease: Int64, at rev: Int64) -> MetaWatchEvent {
        let bytes = MetaKeyBytes(key)
        let previous = kvs[bytes]
        if let previous {
            if previous.lease != 0 { leases[previous.lease]?.keys.remove(bytes) }
        } else {
            sortedKeys.insert(bytes, at: lowerBound(bytes))
        }
        if lease != 0 { leases[lease]!.keys.insert(bytes) }
        let kv = MetaKeyValue(key: key, value: value, createRevision: previous?.createRevision ?? rev,
                              modRevision: rev, version: (previous?.version ?? 0) + 1, lease: lease)
        kvs[bytes] = kv
        return MetaWatchEvent(kind: .put, kv: kv, previous: previous)
    }

    /// Deletes the matching keys in key order; returns their delete events (`previous` = the
    /// deleted key/value).
    private mutating func delete(_ key: MetaKeyBytes, prefix: Bool, at rev: Int64) -> [MetaWatchEvent] {
        let range = indices(key, prefix: prefix)
        var events: [MetaWatchEvent] = []
        for bytes in sortedKeys[range] {
            let old = kvs.removeValue(forKey: bytes)!
            if old.lease != 0 { leases[old.lease]?.keys.remove(bytes) }
            let tombstone = MetaKeyValue(key: old.key, value: [], createRevision: 0, modRevision: rev, version: 0, lease: 0)
            events.append(MetaWatchEvent(kind: .delete, kv: tombstone, previous: old))
        }
        sortedKeys.removeSubrange(range)
        return events
    }

    /// Removes a lease and deletes its keys (sorted) in one revision, like etcd's lessor.
    private mutating func revokeLease(_ id: Int64) -> [WatchNotification] {
        guard let lease = leases.removeValue(forKey: id) else { return [] }
        let newRevision = revision + 1
        var events: [MetaWatchEvent] = []
        for key in lease.keys.sorted() { events += delete(key, prefix: false, at: newRevision) }
        return commit(events, at: newRevision)
    }

    /// Makes `events` (all of revision `rev`) visible: bumps the revision if there are any,
    /// records them in the bounded history and fans them out to the watches.
    private mutating func commit(_ events: [MetaWatchEvent], at rev: Int64) -> [WatchNotification] {
        guard !events.isEmpty else { return [] }
        precondition(rev == revision + 1)
        revision = rev
        history += events
        while history.count - historyStart > historyEventsMax {
            let dropped = history[historyStart].revision
            while historyStart < history.count && history[historyStart].revision == dropped { historyStart += 1 }
            compactRevision = dropped + 1
        }
        if historyStart > 1024 && historyStart * 2 > history.count {
            history.removeFirst(historyStart)
            historyStart = 0
        }
        let keys = events.map { MetaKeyBytes($0.kv.key) }
        var notifications: [WatchNotification] = []
        for watch in watches where watch.startRevision <= rev {
            let matching = events.indices.filter { watch.matches(keys[$0]) }.map { events[$0] }
            if !matching.isEmpty { notifications.append(WatchNotification(watch: watch.id, events: matching)) }
        }
        return notifications
    }

    // MARK: - Key index

    private func lowerBound(_ key: MetaKeyBytes) -> Int {
        var lo = 0, hi = sortedKeys.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sortedKeys[mid] < key { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Positions in `sortedKeys` of `key`, or of every key with prefix `key`.
    private func indices(_ key: MetaKeyBytes, prefix: Bool) -> Range<Int> {
        let lo = lowerBound(key)
        var hi = lo
        if prefix {
            while hi < sortedKeys.count && sortedKeys[hi].hasPrefix(key) { hi += 1 }
        } else if hi < sortedKeys.count && sortedKeys[hi] == key {
            hi += 1
        }
        return lo..<hi
    }

    private static func expiry(_ now: Instant, _ ttlSeconds: Int64) -> Instant {
        let (sum, overflow) = now.nanoseconds.addingReportingOverflow(UInt64(ttlSeconds) * 1_000_000_000)
        return Instant(nanoseconds: overflow ? .max : sum)
    }
}
