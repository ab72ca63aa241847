import Glibc
import Testing
import TorusCore
@testable import TorusRuntime

private func b(_ s: String) -> [UInt8] { Array(s.utf8) }
private func sec(_ s: UInt64) -> Instant { Instant(nanoseconds: s * 1_000_000_000) }

/// The replicated state without lease expiries (which recovery renews).
private struct Observed: Equatable, CustomStringConvertible {
    var revision: Int64
    var kvs: [MetaKeyValue]
    var leases: [Int64: Int64]  // id -> TTL
    var leaseKeys: [Int64: [String]]

    init(_ m: MetadataStateMachine) {
        revision = m.revision
        kvs = m.range("", prefix: true)
        leases = Dictionary(uniqueKeysWithValues: m.leaseIDs.map { ($0, m.lease($0)!.ttlSeconds) })
        leaseKeys = Dictionary(uniqueKeysWithValues: m.leaseIDs.map { ($0, m.lease($0)!.keys) })
    }

    var description: String { "rev \(revision), \(kvs.count) keys, leases \(leases)" }
}

private extension EmbeddedMetadataStore {
    @discardableResult
    func put(_ key: String, _ value: String, lease: Int64 = 0, at now: Instant) throws -> Int64 {
        try txn(MetaTxn(success: [.put(key: key, value: b(value), lease: lease)]), at: now).revision
    }

    func txn(_ txn: MetaTxn, at now: Instant) throws -> MetaTxnResult {
        let response = try apply(.txn(txn), now: now)
        guard case .txn(let result) = response else {
            Issue.record("expected a txn result, got \(response)")
            return MetaTxnResult(succeeded: false, revision: -1, results: [])
        }
        return result
    }

    func grant(_ ttl: Int64, id: Int64 = 0, at now: Instant) throws -> Int64 {
        let response = try apply(.leaseGrant(ttlSeconds: ttl, id: id), now: now)
        guard case .lease(let granted, _) = response else {
            Issue.record("grant failed: \(response)")
            return -1
        }
        return granted
    }

    var journalPath: String { directory + "/" + Self.journalName }
}

private func appendBytes(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_APPEND)
    precondition(fd >= 0)
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

@Suite("EmbeddedMetadataStore")
struct EmbeddedMetadataStoreTests {
    @Test("puts, transactions and leases survive reopening with the same revision, keys and values")
    func survivesReopen() throws {
        let dir = ScratchDirectory("meta-reopen")
        defer { dir.remove() }
        let path = dir.path + "/metadata"
        let before: Observed
        let nextLease: MetaResponse
        do {
            let store = try EmbeddedMetadataStore(directory: path, now: sec(100))
            try store.put("a", "1", at: sec(100))
            try store.put("b", "2", at: sec(101))
            let swapped = try store.txn(MetaTxn(compares: [.value("a", is: b("1"))],
                                                success: [.put(key: "a", value: b("3"), lease: 0), .delete(key: "b", prefix: false)]), at: sec(102))
            #expect(swapped.succeeded)
            let lease = try store.grant(30, at: sec(103))
            try store.put("c", "leased", lease: lease, at: sec(103))
            _ = try store.grant(60, id: 77, at: sec(104))
            #expect(try store.apply(.leaseRevoke(id: 77), now: sec(105)) == .revoked(id: 77))
            #expect(try store.apply(.leaseKeepAlive(id: lease), now: sec(106)) == .lease(id: lease, ttlSeconds: 30))
            let failed = try store.txn(MetaTxn(compares: [.absent("a")], success: [], failure: [.put(key: "e", value: b("else"), lease: 0)]), at: sec(107))
            #expect(!failed.succeeded)
            before = Observed(store.snapshot())
            var copy = store.snapshot()
            nextLease = copy.apply(.leaseGrant(ttlSeconds: 5, id: 0), now: sec(108)).0
            store.close()
        }
        #expect(before.revision == 6)
        let store = try EmbeddedMetadataStore(directory: path, now: sec(3))
        defer { store.close() }
        #expect(store.recovery.recordsReplayed == 9)
        #expect(store.recovery.truncatedBytes == 0)
        #expect(Observed(store.snapshot()) == before)
        #expect(store.snapshot().get("a")?.value == b("3"))
        #expect(store.snapshot().get("e")?.value == b("else"))
        #expect(try store.apply(.leaseGrant(ttlSeconds: 5, id: 0), now: sec(4)) == nextLease)
        store.snapshot().checkInvariants()
    }

    @Test("a store without leases reopens with an identical digest")
    func identicalDigest() throws {
        let dir = ScratchDirectory("meta-digest")
        defer { dir.remove() }
        let digest: UInt64
        do {
            let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(1))
            for i in 0..<50 { try store.put("k\(i % 7)", "v\(i)", at: sec(1)) }
            _ = try store.txn(MetaTxn(success: [.delete(key: "k3", prefix: false)]), at: sec(2))
            digest = store.snapshot().digest()
            store.close()
        }
        let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(0))
        defer { store.close() }
        #expect(store.snapshot().digest() == digest)
        #expect(store.recovery.renewedLeases == 0)
    }

    @Test("garbage appended after the last record is truncated and new appends follow the valid prefix")
    func garbageTailTruncated() throws {
        let dir = ScratchDirectory("meta-garbage")
        defer { dir.remove() }
        let before: Observed, size: UInt64
        do {
            let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(1))
            for i in 0..<5 { try store.put("k\(i)", "v\(i)", at: sec(1)) }
            before = Observed(store.snapshot())
            size = store.status().journalBytes
            store.close()
        }
        appendBytes(dir.path + "/metadata.journal", (0..<100).map { UInt8(truncatingIfNeeded: $0 * 37 + 11) })
        do {
            let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(1))
            #expect(Observed(store.snapshot()) == before)
            #expect(store.recovery.truncatedBytes == 100)
            #expect(scratchFileSize(store.journalPath) == Int64(size))
            try store.put("after", "tail", at: sec(2))
            store.close()
        }
        let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(1))
        defer { store.close() }
        #expect(store.recovery.truncatedBytes == 0)
        #expect(store.snapshot().get("after")?.value == b("tail"))
        #expect(store.snapshot().revision == before.revision + 1)
    }

    @Test("a record cut mid-way or with a flipped byte is dropped and the store reopens with the prefix")
    func tornRecordDropped() throws {
        let dir = ScratchDirectory("meta-torn")
        defer { dir.remove() }
        let journal = dir.path + "/metadata.journal"
        let before: Observed, sizeBefore: UInt64, sizeAfter: UInt64
        do {
            let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(1))
            for i in 0..<3 { try store.put("k\(i)", "v\(i)", at: sec(1)) }
            before = Observed(store.snapshot())
            sizeBefore = store.status().journalBytes
            try store.put("last", String(repeating: "x", count: 100), at: sec(2))
            sizeAfter = store.status().journalBytes
            store.close()
        }
        // Flip one byte inside the last record's value.
        let fd = open(journal, O_RDWR)
        var byte: UInt8 = 0
        _ = pread(fd, &byte, 1, off_t(sizeAfter) - 10)
        byte ^= 0x40
        _ = pwrite(fd, &byte, 1, off_t(sizeAfter) - 10)
        close(fd)
        do {
            let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(1))
            #expect(Observed(store.snapshot()) == before)
            #expect(store.recovery.truncatedBytes == sizeAfter - sizeBefore)
            try store.put("last", "again", at: sec(2))
            store.close()
        }
        // Cut the newest record in the middle.
        #expect(truncate(journal, off_t(sizeBefore) + 5) == 0)
        let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(1))
        defer { store.close() }
        #expect(Observed(store.snapshot()) == before)
        #expect(store.recovery.truncatedBytes == 5)
        #expect(scratchFileSize(journal) == Int64(sizeBefore))
    }

    @Test("read-only and failing requests do not grow the journal")
    func readOnlyNotJournaled() throws {
        let dir = ScratchDirectory("meta-readonly")
        defer { dir.remove() }
        let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(1))
        defer { store.close() }
        try store.put("a", "1", at: sec(1))
        let lease = try store.grant(10, at: sec(1))
        let size = store.status().journalBytes
        _ = try store.txn(MetaTxn(success: [.range(key: "", prefix: true)]), at: sec(2))
        _ = try store.txn(MetaTxn(compares: [.absent("a")], success: [.put(key: "b", value: [], lease: 0)]), at: sec(2))
        _ = try store.txn(MetaTxn(success: [.delete(key: "missing", prefix: false)]), at: sec(2))
        #expect(try store.apply(.txn(MetaTxn(success: [.put(key: "", value: [], lease: 0)])), now: sec(2)) == .error(.emptyKey))
        #expect(try store.apply(.leaseTimeToLive(id: lease), now: sec(3)) == .lease(id: lease, ttlSeconds: 8))
        #expect(try store.apply(.leaseKeepAlive(id: 999), now: sec(3)) == .error(.leaseNotFound(999)))
        #expect(try store.apply(.leaseGrant(ttlSeconds: 0, id: 0), now: sec(3)) == .error(.invalidTTL(0)))
        try store.expireLeases(now: sec(5))
        #expect(store.status().journalBytes == size)
        try store.expireLeases(now: sec(11))
        #expect(store.status().journalBytes > size)
        #expect(store.snapshot().leaseIDs.isEmpty)
    }

    @Test("compaction keeps the state, shrinks the journal and survives reopening")
    func compactionKeepsState() throws {
        let dir = ScratchDirectory("meta-compact")
        defer { dir.remove() }
        let before: Observed, digest: UInt64, nextLease: MetaResponse
        do {
            let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(1))
            let lease = try store.grant(100, at: sec(1))
            for _ in 0..<5 { _ = try store.grant(100, at: sec(1)) }
            #expect(try store.apply(.leaseRevoke(id: 6), now: sec(1)) == .revoked(id: 6))
            for i in 0..<400 {
                try store.put("vol/\(i % 10)", String(repeating: "v", count: 50) + "\(i)", lease: i % 3 == 0 ? lease : 0, at: sec(2))
                if i % 50 == 49 { _ = try store.txn(MetaTxn(success: [.delete(key: "vol/\(i % 7)", prefix: false)]), at: sec(2)) }
            }
            _ = try store.txn(MetaTxn(success: [.put(key: "gone", value: [], lease: 0)]), at: sec(3))
            _ = try store.txn(MetaTxn(success: [.delete(key: "gone", prefix: false)]), at: sec(3))
            let large = store.status().journalBytes
            digest = store.snapshot().digest()
            try store.compact()
            #expect(store.status().journalBytes < large / 5)
            #expect(store.status().compactions == 1)
            #expect(store.snapshot().digest() == digest)
            before = Observed(store.snapshot())
            var copy = store.snapshot()
            nextLease = copy.apply(.leaseGrant(ttlSeconds: 5, id: 0), now: sec(4)).0
            store.close()
        }
        let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(4))
        defer { store.close() }
        #expect(store.recovery.snapshotRevision == before.revision)
        #expect(store.recovery.recordsReplayed == 1)  // the snapshot record
        #expect(store.recovery.renewedLeases == 5)
        #expect(Observed(store.snapshot()) == before)
        #expect(store.oldestWatchableRevision == before.revision + 1)
        #expect(try store.apply(.leaseGrant(ttlSeconds: 5, id: 0), now: sec(5)) == nextLease)
        store.snapshot().checkInvariants()
    }

    @Test("a journal over the threshold compacts itself and stays bounded")
    func automaticCompaction() throws {
        let dir = ScratchDirectory("meta-auto")
        defer { dir.remove() }
        let before: Observed
        do {
            let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(1), compactionThresholdBytes: 8192)
            for i in 0..<1000 { try store.put("key/\(i % 20)", "value-\(i)", at: sec(1)) }
            #expect(store.status().compactions > 0)
            #expect(store.status().lastCompactionFailure == nil)
            #expect(store.status().journalBytes < 16384)
            before = Observed(store.snapshot())
            store.close()
        }
        let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(1))
        defer { store.close() }
        #expect(Observed(store.snapshot()) == before)
    }

    @Test("leases alive at shutdown are renewed to their full TTL on the new clock when reopened")
    func leasesRebased() throws {
        let dir = ScratchDirectory("meta-lease")
        defer { dir.remove() }
        let lease: Int64
        do {
            let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(1000))
            lease = try store.grant(10, at: sec(1000))
            try store.put("node/1", "alive", lease: lease, at: sec(1000))
            #expect(try store.apply(.leaseKeepAlive(id: lease), now: sec(1005)) == .lease(id: lease, ttlSeconds: 10))
            #expect(store.nextLeaseExpiry() == sec(1015))
            store.close()
        }
        // The new process's clock starts near zero, far "before" the recorded times.
        let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(5))
        defer { store.close() }
        #expect(store.recovery.renewedLeases == 1)
        #expect(store.nextLeaseExpiry() == sec(15))
        #expect(try store.apply(.leaseTimeToLive(id: lease), now: sec(5)) == .lease(id: lease, ttlSeconds: 10))
        try store.expireLeases(now: sec(14))
        #expect(store.snapshot().get("node/1") != nil)
        try store.expireLeases(now: sec(15))
        #expect(store.snapshot().get("node/1") == nil)
        #expect(store.snapshot().leaseIDs.isEmpty)
    }

    @Test("the renewal is journaled, so a second reopen replays the same lease history")
    func renewalJournaled() throws {
        let dir = ScratchDirectory("meta-renew")
        defer { dir.remove() }
        let lease: Int64
        do {
            let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(500))
            lease = try store.grant(10, at: sec(500))
            store.close()
        }
        do {
            // Renewed at journal time 500 to expire at 510; keepalive 8 s later (journal 508 → 518).
            let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(2))
            #expect(try store.apply(.leaseKeepAlive(id: lease), now: sec(10)) == .lease(id: lease, ttlSeconds: 10))
            store.close()
        }
        let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(0))
        defer { store.close() }
        #expect(store.recovery.recordsReplayed == 3)
        #expect(store.snapshot().leaseIDs == [lease])
        #expect(store.nextLeaseExpiry() == sec(10))
    }

    @Test("a lease already expired at shutdown is not renewed and is revoked by the next expiry pass")
    func expiredLeaseNotRenewed() throws {
        let dir = ScratchDirectory("meta-expired")
        defer { dir.remove() }
        do {
            let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(100))
            let short = try store.grant(5, at: sec(100))
            try store.put("short", "x", lease: short, at: sec(100))
            let long = try store.grant(60, at: sec(100))
            try store.put("long", "y", lease: long, at: sec(100))
            try store.put("later", "z", at: sec(120))  // journaled at 120, after `short` expired
            store.close()
        }
        let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(1))
        defer { store.close() }
        #expect(store.recovery.renewedLeases == 1)
        try store.expireLeases(now: sec(1))
        #expect(store.snapshot().get("short") == nil)
        #expect(store.snapshot().get("long") != nil)
        #expect(store.nextLeaseExpiry() == sec(61))
    }

    @Test("a second store on the same directory is refused")
    func directoryLocked() throws {
        let dir = ScratchDirectory("meta-lock")
        defer { dir.remove() }
        let store = try EmbeddedMetadataStore(directory: dir.path, now: sec(1))
        #expect(throws: EmbeddedMetadataStoreError.locked(directory: dir.path)) {
            _ = try EmbeddedMetadataStore(directory: dir.path, now: sec(1))
        }
        store.close()
        #expect(throws: EmbeddedMetadataStoreError.closed) { try store.put("a", "b", at: sec(2)) }
        try EmbeddedMetadataStore(directory: dir.path, now: sec(1)).close()
    }

    @Test("a file that is not a metadata journal is refused and left untouched")
    func badHeaderRefused() throws {
        let dir = ScratchDirectory("meta-header")
        defer { dir.remove() }
        let journal = dir.path + "/metadata.journal"
        let fd = open(journal, O_CREAT | O_WRONLY, 0o644)
        _ = Array("hello, this is not a journal".utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        #expect(throws: EmbeddedMetadataStoreError.self) { _ = try EmbeddedMetadataStore(directory: dir.path, now: sec(1)) }
        #expect(scratchFileSize(journal) == 28)
    }

    @Test("nested directories are created")
    func createsDirectories() throws {
        let dir = ScratchDirectory("meta-mkdir")
        defer { dir.remove() }
        let store = try EmbeddedMetadataStore(directory: dir.path + "/a/b/metadata", now: sec(1))
        defer { store.close() }
        try store.put("k", "v", at: sec(1))
        #expect(scratchFileSize(dir.path + "/a/b/metadata/metadata.journal") > 8)
    }
}

@Suite("Metadata snapshot restore")
struct MetadataSnapshotRestoreTests {
    private func roundTrip(_ m: MetadataStateMachine, nextAuto: Int64 = 1) throws -> MetadataStateMachine {
        let snapshot = MetadataSnapshotRestore.capture(m, nextAutoLeaseID: nextAuto)
        let restored = try MetadataSnapshotRestore.restore(snapshot, now: sec(1))
        #expect(restored.digest() == m.digest())
        #expect(restored.revision == m.revision)
        restored.checkInvariants()
        return restored
    }

    private func txn(_ m: inout MetadataStateMachine, _ ops: [MetaOp]) {
        guard case .txn = m.apply(.txn(MetaTxn(success: ops)), now: sec(1)).0 else { Issue.record("txn failed"); return }
    }

    @Test("states whose revisions left no surviving key are rebuilt exactly")
    func emptyRevisions() throws {
        var allDeleted = MetadataStateMachine()
        txn(&allDeleted, [.put(key: "a", value: [1], lease: 0)])
        txn(&allDeleted, [.delete(key: "a", prefix: false)])
        _ = try roundTrip(allDeleted)

        var oneEmptyInMiddle = MetadataStateMachine()
        txn(&oneEmptyInMiddle, [.put(key: "a", value: [1], lease: 0)])
        txn(&oneEmptyInMiddle, [.put(key: "b", value: [2], lease: 0)])
        txn(&oneEmptyInMiddle, [.delete(key: "b", prefix: false), .put(key: "c", value: [3], lease: 0)])
        _ = try roundTrip(oneEmptyInMiddle)

        var oneEmptyFirst = MetadataStateMachine()
        txn(&oneEmptyFirst, [.put(key: "a", value: [1], lease: 0)])
        txn(&oneEmptyFirst, [.delete(key: "a", prefix: false), .put(key: "b", value: [2], lease: 0)])
        _ = try roundTrip(oneEmptyFirst)

        var emptyLast = MetadataStateMachine()
        txn(&emptyLast, [.put(key: "a", value: [1], lease: 0)])
        txn(&emptyLast, [.put(key: "b", value: [2], lease: 0)])
        txn(&emptyLast, [.delete(key: "b", prefix: false)])
        _ = try roundTrip(emptyLast)
    }

    @Test("many keys with many versions sharing revisions fit the per-transaction op limit")
    func crowdedRevisions() throws {
        var m = MetadataStateMachine()
        for round in 0..<6 {
            txn(&m, (0..<128).map { .put(key: "k\($0)", value: [UInt8(round)], lease: 0) })
        }
        txn(&m, [.put(key: "k0", value: [9], lease: 0)])
        _ = try roundTrip(m)
    }

    @Test("random histories of puts, deletes and leases restore to the same digest")
    func randomHistories() throws {
        for seed in 1...40 as ClosedRange<UInt64> {
            var random = SeededRandom(seed: seed)
            var m = MetadataStateMachine()
            var nextAuto: Int64 = 1
            var now = sec(10)
            for _ in 0..<Int(random.below(300)) {
                now = now + .milliseconds(random.below(2000))
                let key = "k\(random.below(12))"
                switch random.below(10) {
                case 0...3:
                    let leases = m.leaseIDs
                    let lease = leases.isEmpty || random.chance(0.5) ? 0 : leases[Int(random.below(UInt64(leases.count)))]
                    _ = m.apply(.txn(MetaTxn(success: [.put(key: key, value: [UInt8(random.below(256))], lease: lease)])), now: now)
                case 4: _ = m.apply(.txn(MetaTxn(success: [.delete(key: key, prefix: random.chance(0.3))])), now: now)
                case 5:
                    if case .lease(let id, _) = m.apply(.leaseGrant(ttlSeconds: Int64(1 + random.below(5)), id: 0), now: now).0 { nextAuto = id + 1 }
                case 6: _ = m.apply(.leaseGrant(ttlSeconds: 3, id: Int64(100 + random.below(5))), now: now)
                case 7: if let id = m.leaseIDs.first { _ = m.apply(.leaseRevoke(id: id), now: now) }
                case 8: if let id = m.leaseIDs.last { _ = m.apply(.leaseKeepAlive(id: id), now: now) }
                default: _ = m.expireLeases(now: now)
                }
            }
            var restored = try roundTrip(m, nextAuto: nextAuto)
            var original = m
            let grant = MetaRequest.leaseGrant(ttlSeconds: 1, id: 0)
            #expect(restored.apply(grant, now: now).0 == original.apply(grant, now: now).0, "seed \(seed)")
        }
    }
}
