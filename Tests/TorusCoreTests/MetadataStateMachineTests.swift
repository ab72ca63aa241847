import Testing
@testable import TorusCore

private let t0 = Instant(nanoseconds: 1_000_000_000)
private func at(_ seconds: UInt64, plusMillis ms: UInt64 = 0) -> Instant { t0 + .seconds(seconds) + .milliseconds(ms) }
private func b(_ s: String) -> [UInt8] { Array(s.utf8) }

private extension MetadataStateMachine {
    /// Applies a txn at t0 and returns its result, failing the test on an error response.
    mutating func txn(_ txn: MetaTxn, now: Instant = t0) -> (MetaTxnResult, [WatchNotification]) {
        let (response, notes) = apply(.txn(txn), now: now)
        guard case .txn(let result) = response else {
            Issue.record("expected a txn result, got \(response)")
            return (MetaTxnResult(succeeded: false, revision: -1, results: []), notes)
        }
        checkInvariants()
        return (result, notes)
    }
    mutating func put(_ key: String, _ value: String, lease: Int64 = 0) -> MetaTxnResult {
        txn(MetaTxn(success: [.put(key: key, value: b(value), lease: lease)])).0
    }
    mutating func grant(_ ttl: Int64, now: Instant = t0) -> Int64 {
        guard case .lease(let id, _) = apply(.leaseGrant(ttlSeconds: ttl, id: 0), now: now).0 else {
            Issue.record("grant failed"); return -1
        }
        return id
    }
    mutating func watchOrFail(_ key: String, prefix: Bool, from rev: Int64) -> (WatchID, [WatchNotification]) {
        switch watch(key: key, prefix: prefix, fromRevision: rev) {
        case .success(let r): return r
        case .failure(let e): Issue.record("watch failed: \(e)"); return (WatchID(raw: -1), [])
        }
    }
}

@Test("revision starts at 1 and each mutating txn bumps it by exactly one")
func revisionCounting() {
    var sm = MetadataStateMachine()
    #expect(sm.revision == 1)
    let r = sm.txn(MetaTxn(success: [.put(key: "a", value: b("1"), lease: 0), .put(key: "b", value: b("2"), lease: 0)])).0
    #expect(r.revision == 2 && sm.revision == 2)
    #expect(sm.get("a")?.modRevision == 2 && sm.get("b")?.modRevision == 2 && sm.get("a")?.createRevision == 2)
}

@Test("a read-only txn, or a delete that matches nothing, does not bump the revision")
func readOnlyTxn() {
    var sm = MetadataStateMachine()
    _ = sm.put("a", "1")
    let r = sm.txn(MetaTxn(success: [.range(key: "a", prefix: false), .delete(key: "zzz", prefix: true)])).0
    #expect(r.revision == 2 && sm.revision == 2)
    #expect(r.results == [.range([sm.get("a")!]), .delete(deleted: [])])
}

@Test("create-if-absent via createRevision == 0 succeeds once, then takes the failure branch")
func createIfAbsent() {
    var sm = MetadataStateMachine()
    let create = MetaTxn(compares: [.absent("lock")], success: [.put(key: "lock", value: b("me"), lease: 0)],
                         failure: [.range(key: "lock", prefix: false)])
    let first = sm.txn(create).0
    #expect(first.succeeded && first.results == [.put(previous: nil)])
    let second = sm.txn(create).0
    #expect(!second.succeeded && second.revision == 2)
    #expect(second.results == [.range([MetaKeyValue(key: "lock", value: b("me"), createRevision: 2, modRevision: 2, version: 1, lease: 0)])])
}

@Test("a compare-and-swap on mod revision fails after a concurrent put")
func casOnModRevision() {
    var sm = MetadataStateMachine()
    let seen = sm.put("k", "v1").revision
    _ = sm.put("k", "other")                                  // the concurrent writer
    let cas = MetaTxn(compares: [.modRevision("k", is: seen)], success: [.put(key: "k", value: b("v2"), lease: 0)])
    #expect(!sm.txn(cas).0.succeeded)
    #expect(sm.get("k")?.value == b("other"))
    let fresh = MetaTxn(compares: [.modRevision("k", is: sm.get("k")!.modRevision)], success: [.put(key: "k", value: b("v2"), lease: 0)])
    let r = sm.txn(fresh).0
    #expect(r.succeeded && r.results == [.put(previous: MetaKeyValue(key: "k", value: b("other"), createRevision: 2, modRevision: 3, version: 2, lease: 0))])
}

@Test("a compare on value: equal/less/greater are bytewise, and any value compare on a missing key is false")
func casOnValue() {
    var sm = MetadataStateMachine()
    _ = sm.put("k", "b")
    func check(_ key: String, _ result: MetaCompareResult, _ v: String) -> Bool {
        sm.txn(MetaTxn(compares: [MetaCompare(key: key, result: result, target: .value(b(v)))])).0.succeeded
    }
    #expect(check("k", .equal, "b") && !check("k", .equal, "c"))
    #expect(check("k", .less, "c") && check("k", .greater, "a") && check("k", .greater, "") && check("k", .notEqual, "bb"))
    #expect(!check("missing", .notEqual, "x") && !check("missing", .equal, ""))
    #expect(sm.txn(MetaTxn(compares: [MetaCompare(key: "missing", result: .equal, target: .version(0))])).0.succeeded)
}

@Test("version counts puts, and a delete resets version and createRevision")
func versionAcrossDelete() {
    var sm = MetadataStateMachine()
    _ = sm.put("k", "1"); _ = sm.put("k", "2"); _ = sm.put("k", "3")
    #expect(sm.get("k")?.version == 3 && sm.get("k")?.createRevision == 2 && sm.get("k")?.modRevision == 4)
    let del = sm.txn(MetaTxn(success: [.delete(key: "k", prefix: false)])).0
    #expect(del.revision == 5 && del.results == [.delete(deleted: [MetaKeyValue(key: "k", value: b("3"), createRevision: 2, modRevision: 4, version: 3, lease: 0)])])
    #expect(sm.get("k") == nil)
    _ = sm.put("k", "again")
    #expect(sm.get("k") == MetaKeyValue(key: "k", value: b("again"), createRevision: 6, modRevision: 6, version: 1, lease: 0))
}

@Test("a txn putting to a missing lease fails as a whole and changes nothing")
func txnAtomicityOnMissingLease() {
    var sm = MetadataStateMachine()
    _ = sm.put("a", "old")
    let digest = sm.digest()
    let txn = MetaTxn(success: [.put(key: "a", value: b("new"), lease: 0), .delete(key: "b", prefix: true),
                                .put(key: "c", value: b("x"), lease: 42)])
    let (response, notes) = sm.apply(.txn(txn), now: t0)
    #expect(response == .error(.leaseNotFound(42)) && notes.isEmpty)
    #expect(sm.digest() == digest && sm.revision == 2 && sm.get("a")?.value == b("old"))
    // Only the branch that runs is checked for leases.
    let other = MetaTxn(compares: [.absent("a")], success: [.put(key: "c", value: [], lease: 42)])
    #expect(sm.txn(other).0.succeeded == false)
}

@Test("the same key put twice, or put and deleted, in one branch is a duplicate-key error")
func duplicateKeys() {
    var sm = MetadataStateMachine()
    let twice = MetaTxn(success: [.put(key: "k", value: [], lease: 0), .put(key: "k", value: [1], lease: 0)])
    #expect(sm.apply(.txn(twice), now: t0).0 == .error(.duplicateKeyInTxn("k")))
    let overlap = MetaTxn(compares: [.absent("x")], failure: [.delete(key: "dir/", prefix: true), .put(key: "dir/k", value: [], lease: 0)])
    #expect(sm.apply(.txn(overlap), now: t0).0 == .error(.duplicateKeyInTxn("dir/k")))
    #expect(sm.apply(.txn(MetaTxn(success: [.put(key: "", value: [], lease: 0)])), now: t0).0 == .error(.emptyKey))
    let many = MetaTxn(success: (0..<129).map { .put(key: "k\($0)", value: [], lease: 0) })
    #expect(sm.apply(.txn(many), now: t0).0 == .error(.tooManyOps(129)))
    #expect(sm.revision == 1)
}

@Test("ranges inside a txn see earlier writes of the same txn, at the new revision")
func rangeSeesOwnWrites() {
    var sm = MetadataStateMachine()
    let old = sm.put("p/b", "0").revision
    let r = sm.txn(MetaTxn(success: [.put(key: "p/a", value: b("1"), lease: 0), .range(key: "p/", prefix: true),
                                     .delete(key: "p/b", prefix: false), .range(key: "p/", prefix: true)])).0
    let a = MetaKeyValue(key: "p/a", value: b("1"), createRevision: 3, modRevision: 3, version: 1, lease: 0)
    let pb = MetaKeyValue(key: "p/b", value: b("0"), createRevision: old, modRevision: old, version: 1, lease: 0)
    #expect(r.results == [.put(previous: nil), .range([a, pb]), .delete(deleted: [pb]), .range([a])])
    #expect(r.revision == 3 && sm.revision == 3 && sm.get("p/b") == nil)
}

@Test("a prefix range returns exactly the keys with that prefix, sorted by UTF-8 bytes")
func prefixRangeOrdering() {
    var sm = MetadataStateMachine()
    for key in ["v/b", "v/a", "v/é", "v/Z", "v/a/1", "w/a", "v", "u/zz", "v/\u{65}\u{301}"] { _ = sm.put(key, key) }
    let keys = sm.txn(MetaTxn(success: [.range(key: "v/", prefix: true)])).0.results
    let expected = ["v/Z", "v/a", "v/a/1", "v/b", "v/e\u{301}", "v/é"]   // "e" (0x65) < "é" (0xC3 0xA9)
    #expect(keys == [.range(expected.map { sm.range($0, prefix: false)[0] })])
    #expect(keys.first.map { if case .range(let kvs) = $0 { kvs.map { Array($0.key.utf8) } } else { [] } } == expected.map { Array($0.utf8) })
    #expect(sm.range("", prefix: true).count == 9)
    let deleted = sm.txn(MetaTxn(success: [.delete(key: "v/a", prefix: true)])).0.results
    #expect(deleted == [.delete(deleted: [MetaKeyValue(key: "v/a", value: b("v/a"), createRevision: 3, modRevision: 3, version: 1, lease: 0),
                                          MetaKeyValue(key: "v/a/1", value: b("v/a/1"), createRevision: 6, modRevision: 6, version: 1, lease: 0)])])
}

@Test("lease expiry deletes the attached keys in one revision and emits delete watch events")
func leaseExpiry() {
    var sm = MetadataStateMachine()
    let lease = sm.grant(10)
    _ = sm.put("n/1", "a", lease: lease); _ = sm.put("n/2", "b", lease: lease); _ = sm.put("other", "c")
    let (w, _) = sm.watchOrFail("n/", prefix: true, from: 0)
    #expect(sm.nextLeaseExpiry() == at(10))
    #expect(sm.expireLeases(now: at(9, plusMillis: 999)).isEmpty && sm.revision == 4)
    let notes = sm.expireLeases(now: at(10))
    sm.checkInvariants()
    #expect(sm.revision == 5 && sm.get("n/1") == nil && sm.get("n/2") == nil && sm.get("other") != nil)
    #expect(notes.count == 1 && notes[0].watch == w)
    #expect(notes[0].events.map(\.kind) == [.delete, .delete] && notes[0].events.map(\.kv.key) == ["n/1", "n/2"])
    #expect(notes[0].events[0].kv == MetaKeyValue(key: "n/1", value: [], createRevision: 0, modRevision: 5, version: 0, lease: 0))
    #expect(notes[0].events[0].previous?.lease == lease && notes[0].events[1].previous?.value == b("b"))
    #expect(sm.nextLeaseExpiry() == nil && sm.apply(.leaseKeepAlive(id: lease), now: at(10)).0 == .error(.leaseNotFound(lease)))
}

@Test("keepalive extends a lease by its TTL from now; after expiry it reports lease not found")
func keepAliveExtends() {
    var sm = MetadataStateMachine()
    let lease = sm.grant(5)
    _ = sm.put("k", "v", lease: lease)
    #expect(sm.apply(.leaseKeepAlive(id: lease), now: at(4)).0 == .lease(id: lease, ttlSeconds: 5))
    #expect(sm.nextLeaseExpiry() == at(9))
    #expect(sm.expireLeases(now: at(8)).isEmpty && sm.get("k") != nil)
    #expect(sm.apply(.leaseTimeToLive(id: lease), now: at(6, plusMillis: 500)).0 == .lease(id: lease, ttlSeconds: 2))
    #expect(sm.apply(.leaseKeepAlive(id: lease), now: at(9)).0 == .error(.leaseNotFound(lease)))
    #expect(sm.apply(.leaseKeepAlive(id: 777), now: at(1)).0 == .error(.leaseNotFound(777)))
    _ = sm.expireLeases(now: at(9))
    #expect(sm.get("k") == nil && sm.leaseIDs.isEmpty)
}

@Test("revoke deletes the lease's keys; putting with another lease moves the key off the first")
func revokeAndMove() {
    var sm = MetadataStateMachine()
    let l1 = sm.grant(60), l2 = sm.grant(60)
    #expect(l1 == 1 && l2 == 2)
    #expect(sm.apply(.leaseGrant(ttlSeconds: 60, id: 2), now: t0).0 == .error(.leaseExists(2)))
    #expect(sm.apply(.leaseGrant(ttlSeconds: 0, id: 0), now: t0).0 == .error(.invalidTTL(0)))
    _ = sm.put("a", "1", lease: l1); _ = sm.put("b", "1", lease: l1); _ = sm.put("b", "2", lease: l2)
    #expect(sm.lease(l1)?.keys == ["a"] && sm.lease(l2)?.keys == ["b"])
    let (response, _) = sm.apply(.leaseRevoke(id: l1), now: t0)
    sm.checkInvariants()
    #expect(response == .revoked(id: l1) && sm.revision == 5 && sm.get("a") == nil && sm.get("b")?.lease == l2)
    #expect(sm.apply(.leaseRevoke(id: l1), now: t0).0 == .error(.leaseNotFound(l1)))
    let empty = sm.grant(60)
    #expect(sm.apply(.leaseRevoke(id: empty), now: t0).0 == .revoked(id: empty) && sm.revision == 5)
}

@Test("a watch from a past revision replays history in order, then receives live changes")
func watchReplay() {
    var sm = MetadataStateMachine()
    _ = sm.put("a", "1"); _ = sm.put("b", "1"); _ = sm.put("a", "2")
    _ = sm.txn(MetaTxn(success: [.delete(key: "a", prefix: false)]))
    let (w, replay) = sm.watchOrFail("a", prefix: false, from: 3)
    #expect(replay.count == 1 && replay[0].watch == w)
    #expect(replay[0].events.map(\.revision) == [4, 5] && replay[0].events.map(\.kind) == [.put, .delete])
    #expect(replay[0].events[0].previous?.value == b("1") && replay[0].events[1].previous?.value == b("2"))
    let live = sm.put("a", "3")
    let (_, notes) = sm.txn(MetaTxn(success: [.put(key: "a", value: b("4"), lease: 0)]))
    #expect(live.revision == 6 && notes == [WatchNotification(watch: w, events: [MetaWatchEvent(kind: .put, kv: sm.get("a")!, previous: MetaKeyValue(key: "a", value: b("3"), createRevision: 6, modRevision: 6, version: 1, lease: 0))])])
    sm.cancelWatch(w)
    #expect(sm.txn(MetaTxn(success: [.put(key: "a", value: [], lease: 0)])).1.isEmpty)
    let (future, none) = sm.watchOrFail("", prefix: true, from: sm.revision + 2)
    #expect(none.isEmpty && sm.put("x", "1").revision == 9 && sm.txn(MetaTxn(success: [.put(key: "x", value: [], lease: 0)])).1.map(\.watch) == [future])
}

@Test("a watch from a revision older than the retained history fails with compacted")
func watchCompacted() {
    var sm = MetadataStateMachine(historyEventsMax: 3)
    for i in 0..<5 { _ = sm.put("k\(i)", "v") }                   // revisions 2...6
    #expect(sm.compactRevision == 4)
    guard case .failure(let error) = sm.watch(key: "k", prefix: true, fromRevision: 3) else {
        Issue.record("expected compacted"); return
    }
    #expect(error == .compacted(revision: 4))
    let (_, replay) = sm.watchOrFail("k", prefix: true, from: 4)
    #expect(replay.first?.events.map(\.revision) == [4, 5, 6])
    #expect(sm.watch(key: "", prefix: false, fromRevision: 0).map(\.0) == .failure(.emptyKey))
}

@Test("2,000 random operations keep every invariant, and the watch stream reproduces the store")
func randomized() {
    func run(seed: UInt64) -> UInt64 {
        var rng = SeededRandom(seed: seed)
        var sm = MetadataStateMachine(historyEventsMax: 500)
        var now = t0
        var mirror: [String: MetaKeyValue] = [:]                        // rebuilt from the "" watch
        guard case .success(let (all, _)) = sm.watch(key: "", prefix: true, fromRevision: 0) else { return 0 }
        var lastRevision = sm.revision
        func key() -> String { ["a", "a/b", "a/c", "b", "b/x", "c", "é"][Int(rng.below(7))] }
        func lease() -> Int64 { rng.chance(0.5) ? 0 : Int64(rng.below(6)) }
        func op() -> MetaOp {
            switch rng.below(3) {
            case 0: return .range(key: key(), prefix: rng.chance(0.5))
            case 1: return .put(key: key(), value: [UInt8(rng.below(4))], lease: lease())
            default: return .delete(key: key(), prefix: rng.chance(0.3))
            }
        }
        for _ in 0..<2_000 {
            now = now + .milliseconds(rng.below(2_000))
            var notes: [WatchNotification] = []
            switch rng.below(10) {
            case 0: notes = sm.apply(.leaseGrant(ttlSeconds: Int64(rng.below(8)), id: Int64(rng.below(3))), now: now).1
            case 1: notes = sm.apply(.leaseKeepAlive(id: lease()), now: now).1
            case 2: notes = sm.apply(.leaseRevoke(id: lease()), now: now).1
            case 3: notes = sm.expireLeases(now: now)
            case 4:
                if case .success(let (w, _)) = sm.watch(key: key(), prefix: rng.chance(0.5), fromRevision: Int64(rng.below(UInt64(sm.revision + 2)))) {
                    if rng.chance(0.5) { sm.cancelWatch(w) }
                }
            default:
                let targets: [MetaCompareTarget] = [.value([UInt8(rng.below(4))]), .version(Int64(rng.below(3))), .createRevision(0), .modRevision(sm.revision)]
                let compares = (0..<rng.below(3)).map { _ in MetaCompare(key: key(), result: [.equal, .notEqual, .less, .greater][Int(rng.below(4))], target: targets[Int(rng.below(4))]) }
                let txn = MetaTxn(compares: compares, success: (0..<rng.below(4)).map { _ in op() }, failure: (0..<rng.below(3)).map { _ in op() })
                let before = sm.revision
                let (response, n) = sm.apply(.txn(txn), now: now)
                notes = n
                if case .txn(let r) = response { #expect(r.revision == sm.revision && (sm.revision == before || sm.revision == before + 1)) }
                else { #expect(sm.revision == before) }
            }
            sm.checkInvariants()
            #expect(sm.revision >= lastRevision)
            // Every new revision reaches the catch-all watch, in order (expiry may add several).
            let events = notes.filter { $0.watch == all }.flatMap(\.events)
            let revisions = events.map(\.revision).enumerated().filter { $0.offset == 0 || events[$0.offset - 1].revision != $0.element }.map(\.element)
            #expect(revisions == Array(stride(from: lastRevision + 1, through: sm.revision, by: 1)))
            for event in events {
                #expect(mirror[event.kv.key] == event.previous)
                mirror[event.kv.key] = event.kind == .put ? event.kv : nil
            }
            lastRevision = sm.revision
        }
        #expect(mirror.values.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) } == sm.range("", prefix: true))
        #expect(sm.revision > 100)
        return sm.digest()
    }
    #expect(run(seed: 7) == run(seed: 7))
    #expect(run(seed: 7) != run(seed: 8))
}
