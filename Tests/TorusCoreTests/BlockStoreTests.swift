import Testing

@testable import TorusCore

// MARK: - An in-memory disk that honours the contract in Disk.swift

/// Writes land in a volatile layer when they complete; a sync makes durable the writes that
/// completed before it was issued. `crash` lands a random subset of the sectors of every
/// unsynced write (completed or in flight) and may tear one sector (half new, half old).
/// Completions are delivered FIFO or in a random order. With `faultProbability` > 0 any
/// operation may fail: a failed write lands a random subset of its sectors, a failed sync
/// flushes nothing, a failed read returns nothing.
private struct StoreTestDisk {
    struct Write {
        var stamp: UInt64
        var offset: Int
        var bytes: [UInt8]
    }

    enum Op {
        case read(offset: Int, length: Int)
        case write(offset: Int, bytes: [UInt8])
        case sync(watermark: UInt64)
    }

    let sectorSize: Int
    var durable: [UInt8]
    var volatile: [Write] = []
    var pending: [(DiskOpID, Op)] = []
    var lastStamp: UInt64 = 0
    var faultProbability = 0.0
    /// The next this-many writes (syncs) delivered fail.
    var failNextWrites = 0
    var failNextSyncs = 0
    /// Reads overlapping these byte offsets fail (latent sector errors).
    var unreadable: [Int] = []
    var opsSubmitted = 0

    init(config: BlockStoreConfig) {
        sectorSize = config.sectorSize
        durable = [UInt8](repeating: 0, count: Int(config.geometry.capacityBytes))
    }

    mutating func submit(_ id: DiskOpID, _ request: DiskRequest) {
        opsSubmitted += 1
        switch request {
        case let .read(offset, length):
            precondition(Int(offset) + length <= durable.count, "read past the end")
            pending.append((id, .read(offset: Int(offset), length: length)))
        case let .write(offset, bytes):
            precondition(Int(offset) + bytes.count <= durable.count, "write past the end")
            precondition(Int(offset) % sectorSize == 0 && bytes.count % sectorSize == 0, "unaligned write")
            pending.append((id, .write(offset: Int(offset), bytes: bytes)))
        case .sync:
            pending.append((id, .sync(watermark: lastStamp)))
        }
    }

    /// The bytes a read sees now: durable bytes overlaid with completed volatile writes.
    func view(_ offset: Int, _ length: Int) -> [UInt8] {
        var out = Array(durable[offset..<(offset + length)])
        for w in volatile { Self.overlay(w, onto: &out, at: offset) }
        return out
    }

    private static func overlay(_ w: Write, onto out: inout [UInt8], at offset: Int) {
        let lo = max(offset, w.offset)
        let hi = min(offset + out.count, w.offset + w.bytes.count)
        guard lo < hi else { return }
        for i in lo..<hi { out[i - offset] = w.bytes[i - w.offset] }
    }

    mutating func completeNext(_ rng: inout SeededRandom, shuffled: Bool) -> (DiskOpID, DiskCompletion)? {
        guard !pending.isEmpty else { return nil }
        let i = shuffled ? Int(rng.below(UInt64(pending.count))) : 0
        let (id, op) = pending.remove(at: i)
        var fail = rng.chance(faultProbability)
        if case .write = op, failNextWrites > 0 { failNextWrites -= 1; fail = true }
        if case .sync = op, failNextSyncs > 0 { failNextSyncs -= 1; fail = true }
        switch op {
        case let .read(offset, length):
            let bad = unreadable.contains { $0 >= offset && $0 < offset + length }
            if fail || bad { return (id, .read(.failure(.ioError(offset: UInt64(offset))))) }
            return (id, .read(.success(view(offset, length))))
        case let .write(offset, bytes):
            if fail {
                for s in stride(from: 0, to: bytes.count, by: sectorSize) where rng.chance(0.5) {
                    land(offset + s, Array(bytes[s..<(s + sectorSize)]))
                }
                return (id, .written(.failure(.ioError(offset: UInt64(offset)))))
            }
            land(offset, bytes)
            return (id, .written(.success(())))
        case let .sync(watermark):
            if fail { return (id, .synced(.failure(.ioError(offset: 0)))) }
            for w in volatile where w.stamp <= watermark { apply(w, to: &durable) }
            volatile.removeAll { $0.stamp <= watermark }
            return (id, .synced(.success(())))
        }
    }

    private mutating func land(_ offset: Int, _ bytes: [UInt8]) {
        lastStamp += 1
        volatile.append(Write(stamp: lastStamp, offset: offset, bytes: bytes))
    }

    private func apply(_ w: Write, to image: inout [UInt8]) {
        image.replaceSubrange(w.offset..<(w.offset + w.bytes.count), with: w.bytes)
    }

    /// Power loss: what was not synced may or may not be on disk; one sector may be torn.
    mutating func crash(_ rng: inout SeededRandom, tearProbability: Double = 0.3) {
        let old = durable
        var candidates: [Write] = []
        // Completed writes first (in completion order), then those still in flight; each
        // sector of each reaches the platter or not on its own (whole writes are a special case).
        candidates = volatile
        for case let (_, .write(offset, bytes)) in pending {
            candidates.append(Write(stamp: 0, offset: offset, bytes: bytes))
        }
        for w in candidates {
            for s in stride(from: 0, to: w.bytes.count, by: sectorSize) where rng.chance(0.5) {
                apply(Write(stamp: 0, offset: w.offset + s, bytes: Array(w.bytes[s..<(s + sectorSize)])), to: &durable)
            }
        }
        if !candidates.isEmpty && rng.chance(tearProbability) {
            let w = candidates[Int(rng.below(UInt64(candidates.count)))]
            let s = Int(rng.below(UInt64(w.bytes.count / sectorSize))) * sectorSize
            tear(sectorAt: w.offset + s, new: Array(w.bytes[s..<(s + sectorSize)]), old: old, newFirst: rng.chance(0.5))
        }
        volatile = []
        pending = []
    }

    /// Writes one half of the sector `new` and the other half of the `old` image at `offset`.
    mutating func tear(sectorAt offset: Int, new: [UInt8], old: [UInt8], newFirst: Bool = true) {
        let half = sectorSize / 2
        for i in 0..<sectorSize { durable[offset + i] = (i < half) == newFirst ? new[i] : old[offset + i] }
    }

    /// Makes the completed-but-unsynced bytes in `offset..<offset+length` durable, as if the
    /// disk had flushed just those sectors before losing power.
    mutating func persist(_ offset: Int, _ length: Int) {
        durable.replaceSubrange(offset..<(offset + length), with: view(offset, length))
    }

    /// Power loss that keeps nothing unsynced.
    mutating func dropUnsynced() {
        volatile = []
        pending = []
    }

    /// Bit rot: flips one byte wherever it currently lives (durable and volatile layers).
    mutating func flipByte(at offset: Int) {
        durable[offset] ^= 0x5A
        for i in volatile.indices where offset >= volatile[i].offset && offset < volatile[i].offset + volatile[i].bytes.count {
            volatile[i].bytes[offset - volatile[i].offset] ^= 0x5A
        }
    }
}

// MARK: - Driver

/// Runs a store against a `StoreTestDisk`, checking invariants after every step.
private struct StoreHarness {
    let config: BlockStoreConfig
    var store: BlockStore
    var disk: StoreTestDisk
    var rng: SeededRandom
    var shuffled: Bool
    var replies: [StoreReply] = []
    /// Every disk request and reply, for determinism checks.
    var trace = StableHasher()
    var nextRequest: UInt64 = 1

    init(config: BlockStoreConfig, seed: UInt64, shuffled: Bool = false) {
        self.config = config
        self.disk = StoreTestDisk(config: config)
        self.rng = SeededRandom(seed: seed)
        self.shuffled = shuffled
        self.store = BlockStore.recover(
            config: config, regionA: [UInt8](repeating: 0, count: config.regionBytes),
            regionB: [UInt8](repeating: 0, count: config.regionBytes), readSlot: { _ in nil })
        store.checkInvariants()
        perform(store.start())
    }

    mutating func newID() -> StoreRequestID {
        defer { nextRequest += 1 }
        return StoreRequestID(nextRequest)
    }

    mutating func perform(_ outputs: [StoreOutput]) {
        for o in outputs {
            switch o {
            case let .disk(id, request):
                trace.combine(id.raw)
                disk.submit(id, request)
            case let .reply(r):
                trace.combine(UInt64(truncatingIfNeeded: r.id.raw))
                replies.append(r)
            }
        }
    }

    mutating func send(_ request: StoreRequest) {
        perform(store.handle(request))
        store.checkInvariants()
    }

    /// Delivers one disk completion; false when nothing is pending.
    @discardableResult
    mutating func step() -> Bool {
        guard let (id, completion) = disk.completeNext(&rng, shuffled: shuffled) else { return false }
        perform(store.diskCompleted(id, completion))
        store.checkInvariants()
        return true
    }

    /// Delivers the oldest pending disk request matching `matches`; false if none does.
    @discardableResult
    mutating func complete(where matches: (DiskRequest) -> Bool) -> Bool {
        guard
            let i = disk.pending.firstIndex(where: { _, op in
                switch op {
                case let .read(offset, length): matches(.read(offset: UInt64(offset), length: length))
                case let .write(offset, bytes): matches(.write(offset: UInt64(offset), bytes: bytes))
                case .sync: matches(.sync)
                }
            })
        else { return false }
        disk.pending.insert(disk.pending.remove(at: i), at: 0)
        let wasShuffled = shuffled
        shuffled = false
        defer { shuffled = wasShuffled }
        return step()
    }

    mutating func drain() {
        var steps = 0
        while step() {
            steps += 1
            precondition(steps < 100_000, "disk never went idle")
        }
    }

    /// Removes and returns the reply to `id`, if it came.
    mutating func take(_ id: StoreRequestID) -> StoreReply? {
        guard let i = replies.firstIndex(where: { $0.id == id }) else { return nil }
        return replies.remove(at: i)
    }

    mutating func put(_ ref: BlockRef, _ data: [UInt8], durable: Bool = false) -> StoreRequestID {
        let id = newID()
        send(.put(id, ref, data, durable: durable))
        return id
    }

    /// Puts and drains; returns the put's result (nil: no reply).
    mutating func putNow(_ ref: BlockRef, _ data: [UInt8], durable: Bool = false) -> Result<Done, StoreError>? {
        let id = put(ref, data, durable: durable)
        drain()
        guard case let .put(_, result)? = take(id) else { return nil }
        return result.map { Done() }
    }

    mutating func getNow(_ ref: BlockRef) -> Result<[UInt8], StoreError>? {
        let id = newID()
        send(.get(id, ref))
        drain()
        guard case let .get(_, result)? = take(id) else { return nil }
        return result
    }

    mutating func syncNow(_ refs: [BlockRef]) -> [BlockRef]? {
        let id = newID()
        send(.sync(id, refs))
        drain()
        guard case let .sync(_, present)? = take(id) else { return nil }
        return present
    }

    /// Power loss and reboot: the new store recovers from what the disk holds and compacts.
    mutating func crashAndRecover(tearProbability: Double = 0.3) {
        disk.crash(&rng, tearProbability: tearProbability)
        reboot()
    }

    mutating func reboot(start: Bool = true) {
        let (a, b) = BlockStore.journalRegions(config: config)
        store = BlockStore.recover(
            config: config, regionA: disk.view(Int(a.offset), a.length), regionB: disk.view(Int(b.offset), b.length),
            readSlot: { [disk, config] in disk.view(Int(config.slotOffset($0)), config.blockSize) })
        store.checkInvariants()
        replies = []
        if start { perform(store.start()) }
    }
}

// MARK: - Fixtures

private let testSectorBytes = 512
private let testBlockBytes = 1024

/// A small disk: `slots` slots of 1 KiB after two regions of `regionSectors` sectors
/// (512-byte sectors hold 10 journal records, 128-byte sectors 2).
private func smallConfig(
    slots: Int = 16, regionSectors: Int = 16, sectorBytes: Int = testSectorBytes, batchLimitRecords: Int = 4096,
    lazyThresholdRecords: Int = 256, outstandingLimit: Int = 16384, reserveSlots: Int = 0
) -> BlockStoreConfig {
    let capacity = UInt64(2 * regionSectors * sectorBytes + slots * testBlockBytes)
    return BlockStoreConfig(
        geometry: DiskGeometry(sectorSize: sectorBytes, capacityBytes: capacity), blockSize: testBlockBytes,
        journalRegionSectors: regionSectors, journalBatchLimitRecords: batchLimitRecords,
        lazyCommitThresholdRecords: lazyThresholdRecords, outstandingRepliesLimitRequests: outstandingLimit,
        reserveSlots: reserveSlots)
}

private func ref(_ n: UInt64) -> BlockRef { BlockRef(volume: 1, epoch: 1, sequence: n, index: n) }

/// The one content of `ref(n)`.
private func block(_ n: UInt64) -> [UInt8] {
    var rng = SeededRandom(seed: n &* 0x9E37_79B9)
    return (0..<testBlockBytes).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
}

/// A get result short enough for a failure message.
private func brief(_ r: Result<[UInt8], StoreError>?) -> String {
    switch r {
    case nil: "no reply"
    case let .success(bytes)?: "\(bytes.count) bytes, crc \(CRC32C.checksum(bytes))"
    case let .failure(e)?: "\(e)"
    }
}

/// Whether a get returned exactly block(n).
private func holds(_ r: Result<[UInt8], StoreError>?, _ n: UInt64) -> Bool { r == .success(block(n)) }

/// Whether a get returned exactly block(n) or not found.
private func holdsOrAbsent(_ r: Result<[UInt8], StoreError>?, _ n: UInt64) -> Bool {
    r == .success(block(n)) || r == .failure(.notFound(ref(n)))
}

/// `Void` in an equatable `Result`.
private struct Done: Equatable {}

private func isSuccess(_ r: Result<Done, StoreError>?) -> Bool {
    if case .success? = r { return true }
    return false
}

// MARK: - Randomized workload

/// What the workload has been promised, checked against every reply and after every crash.
private struct StoreModel {
    /// Every ref ever put, in creation order (ref(n) always holds block(n)).
    var known: [BlockRef] = []
    var nextRef: UInt64 = 1
    /// Bumped by every delete of the ref (and by a get that made the store drop it).
    var deleteEpoch: [BlockRef: Int] = [:]
    /// Acknowledged durable and not deleted since: must survive any crash.
    var mustSurvive: Set<BlockRef> = []
    /// Acknowledged since the last crash and not deleted since: gets must find them.
    var live: Set<BlockRef> = []
    /// Deleted while present and not put again since.
    var deleted: Set<BlockRef> = []
    /// Deleted before a sync that completed, and not put again since: must never come back.
    var mustBeGone: Set<BlockRef> = []
    var puts: [StoreRequestID: (ref: BlockRef, durable: Bool, epoch: Int)] = [:]
    var gets: [StoreRequestID: (ref: BlockRef, mustFind: Bool, epoch: Int)] = [:]
    var syncs: [StoreRequestID: (required: [BlockRef], epochs: [Int], deleted: [BlockRef])] = [:]
    var faulty = false
    var counts = (putsAcked: 0, getsVerified: 0, crashes: 0, durableChecked: 0, goneChecked: 0)

    func epoch(_ r: BlockRef) -> Int { deleteEpoch[r, default: 0] }

    mutating func forget(_ r: BlockRef) {
        deleteEpoch[r, default: 0] += 1
        mustSurvive.remove(r)
        live.remove(r)
    }

    mutating func check(_ reply: StoreReply, seed: UInt64) {
        switch reply {
        case let .put(id, result):
            let p = puts.removeValue(forKey: id)!
            switch result {
            case .success:
                counts.putsAcked += 1
                guard epoch(p.ref) == p.epoch else { break }
                live.insert(p.ref)
                if p.durable { mustSurvive.insert(p.ref) }
            case .failure(.noSpace): break
            case .failure(.ioError) where faulty: break
            case let .failure(e): Issue.record("seed \(seed): put \(p.ref) failed with \(e)")
            }
        case let .get(id, result):
            let g = gets.removeValue(forKey: id)!
            switch result {
            case let .success(bytes):
                #expect(holds(.success(bytes), g.ref.sequence), "seed \(seed): wrong bytes for \(g.ref)")
                counts.getsVerified += 1
            case .failure(.notFound):
                #expect(!(g.mustFind && epoch(g.ref) == g.epoch), "seed \(seed): acknowledged \(g.ref) not found")
            case .failure(.ioError) where faulty:
                forget(g.ref)  // the store dropped it for repair
            case let .failure(e):
                Issue.record("seed \(seed): get \(g.ref) failed with \(e)")
            }
        case let .sync(id, present):
            let s = syncs.removeValue(forKey: id)!
            #expect(present == present.sorted(), "seed \(seed): sync reply not sorted")
            for r in present {
                mustSurvive.insert(r)
                live.insert(r)
            }
            if !faulty {
                for (r, e) in zip(s.required, s.epochs) where epoch(r) == e {
                    #expect(present.contains(r), "seed \(seed): sync left out acknowledged \(r)")
                }
                for r in s.deleted where deleted.contains(r) { mustBeGone.insert(r) }
            }
        }
    }
}

private struct RandomRun {
    var h: StoreHarness
    var m = StoreModel()
    var w: SeededRandom
    let seed: UInt64

    init(seed: UInt64) {
        self.seed = seed
        var knobs = SeededRandom(seed: seed).derived(stream: 7)
        // Swarm the knobs: 128-byte sectors make multi-sector journal writes common, tiny
        // regions make compactions common, tiny batches split syncs over several cycles.
        let sectorBytes = knobs.chance(0.5) ? 128 : 512
        let recordsPerSector = (sectorBytes - 32) / 48
        let snapshotSectors = (24 + recordsPerSector - 1) / recordsPerSector
        let regionSectors = 2 + snapshotSectors + [0, 1, 3, 12][Int(knobs.below(4))]
        let batch = [1, 3, 4096][Int(knobs.below(3))]
        let lazy = [1, 4, 256][Int(knobs.below(3))]
        let config = smallConfig(
            slots: 24, regionSectors: regionSectors, sectorBytes: sectorBytes, batchLimitRecords: batch,
            lazyThresholdRecords: lazy)
        h = StoreHarness(config: config, seed: seed, shuffled: knobs.chance(0.7))
        w = SeededRandom(seed: seed).derived(stream: 11)
        m.faulty = seed % 3 == 0
        h.disk.faultProbability = m.faulty ? 0.03 : 0
    }

    mutating func settle() {
        while !h.replies.isEmpty { m.check(h.replies.removeFirst(), seed: seed) }
    }

    mutating func randomKnown() -> BlockRef? {
        m.known.isEmpty ? nil : m.known[Int(w.below(UInt64(m.known.count)))]
    }

    mutating func newPut() {
        let r = ref(m.nextRef)
        m.nextRef += 1
        m.known.append(r)
        put(r)
    }

    mutating func put(_ r: BlockRef) {
        m.deleted.remove(r)
        m.mustBeGone.remove(r)
        let durable = w.chance(0.5)
        let id = h.newID()
        m.puts[id] = (r, durable, m.epoch(r))
        h.send(.put(id, r, block(r.sequence), durable: durable))
    }

    mutating func step() {
        let roll = w.below(100)
        switch roll {
        case 0..<20:
            newPut()
        case 20..<22:
            // A burst, so one cycle journals many records.
            for _ in 0..<(3 + w.below(10)) { newPut() }
        case 22..<27:
            if let r = randomKnown() { put(r) }
        case 27..<42:
            guard let r = randomKnown() else { return }
            let id = h.newID()
            m.gets[id] = (r, m.live.contains(r), m.epoch(r))
            h.send(.get(id, r))
        case 42..<50:
            var refs: [BlockRef] = []
            for _ in 0..<(1 + w.below(3)) { if let r = randomKnown() { refs.append(r) } }
            for r in refs {
                if m.live.contains(r) { m.deleted.insert(r) }
                m.forget(r)
            }
            h.send(.delete(refs))
        case 50..<57:
            var refs: [BlockRef] = [ref(1_000_000)]  // never put
            for _ in 0..<(1 + w.below(4)) { if let r = randomKnown() { refs.append(r) } }
            let required = refs.filter { m.live.contains($0) }
            let id = h.newID()
            m.syncs[id] = (required, required.map { m.epoch($0) }, m.deleted.sorted())
            h.send(.sync(id, refs))
        case 57..<98:
            for _ in 0..<(1 + w.below(6)) { h.step() }
        default:
            crash()
        }
        settle()
    }

    /// Crash, reboot, and check that every promise held and every present ref is intact.
    mutating func crash() {
        settle()
        h.crashAndRecover()
        m.counts.crashes += 1
        m.puts = [:]
        m.gets = [:]
        m.syncs = [:]
        let faults = h.disk.faultProbability
        h.disk.faultProbability = 0
        h.drain()
        let present = h.store.refs
        for r in m.mustSurvive.sorted() where !present.contains(r) {
            Issue.record("seed \(seed): durable \(r) lost in crash \(m.counts.crashes)")
        }
        m.counts.goneChecked += m.mustBeGone.count
        for r in m.mustBeGone.sorted() where present.contains(r) {
            Issue.record("seed \(seed): durably deleted \(r) came back in crash \(m.counts.crashes)")
        }
        for r in present {
            #expect(r.sequence < m.nextRef, "seed \(seed): recovered unknown \(r)")
            let read = h.getNow(r)
            #expect(holds(read, r.sequence), "seed \(seed): recovered \(r) unreadable: \(brief(read))")
            m.counts.durableChecked += 1
        }
        m.mustSurvive = Set(present)
        m.live = Set(present)
        m.deleted.subtract(present)  // deletes the crash undid
        h.disk.faultProbability = faults
    }

    mutating func run(steps: Int) {
        for _ in 0..<steps { step() }
        // Finish: let everything complete, make it durable, and crash once more.
        h.disk.faultProbability = 0
        h.drain()
        settle()
        let id = h.newID()
        m.syncs[id] = ([], [], m.deleted.sorted())
        h.send(.sync(id, []))
        h.drain()
        settle()
        #expect(m.puts.isEmpty && m.gets.isEmpty && m.syncs.isEmpty, "seed \(seed): requests left unanswered")
        crash()
    }
}

// MARK: - Tests

@Suite("block store")
struct BlockStoreTests {
    @Test("journal sectors have the documented byte layout, and decode back to their records")
    func journalSectorLayout() {
        let config = smallConfig()
        let records = (0..<12).map { n in
            BlockStoreFormat.Record(op: n % 3 == 2 ? .delete : .put,
                                    ref: BlockRef(volume: 0x0102 + n, epoch: 0x0304, sequence: 0x0506_0708_090A + n, index: n * 7),
                                    slot: Int(n) + 1, crc: 0xA1B2_C3D4 ^ UInt32(n))
        }
        let bytes = BlockStoreFormat.encodeSectors(records, generation: 9, firstSequence: 3, config: config)
        #expect(bytes.count == 2 * testSectorBytes)  // 10 records per 512-byte sector
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) } }
        func u32(_ at: Int) -> UInt32 { UInt32(truncatingIfNeeded: u64(at) & 0xFFFF_FFFF) }
        for (i, r) in records.enumerated() {
            let sector = i / 10, o = sector * testSectorBytes + 32 + (i % 10) * 48
            #expect(bytes[o] == r.op.rawValue && bytes[o + 1] == 0 && bytes[o + 2] == 0 && bytes[o + 3] == 0)
            #expect(u32(o + 4) == r.crc && u64(o + 8) == UInt64(r.slot))
            #expect(u64(o + 16) == r.ref.volume && u64(o + 24) == r.ref.epoch)
            #expect(u64(o + 32) == r.ref.sequence && u64(o + 40) == r.ref.index)
        }
        #expect(u32(0) == BlockStoreFormat.journalSectorMagic && u64(8) == 9 && u64(16) == 3 && u32(24) == 10)
        #expect(u64(testSectorBytes + 16) == 4 && u32(testSectorBytes + 24) == 2)
        // Past the last record of a sector: zeros.
        #expect(bytes[(testSectorBytes + 32 + 2 * 48)..<(2 * testSectorBytes)].allSatisfy { $0 == 0 })
        let first = BlockStoreFormat.decodeSector(bytes[0..<testSectorBytes], generation: 9, sequence: 3, config: config)
        let second = BlockStoreFormat.decodeSector(bytes[testSectorBytes...], generation: 9, sequence: 4, config: config)
        #expect(first == Array(records[0..<10]) && second == Array(records[10...]))
    }

    @Test("a fresh disk recovers empty and formats region A with generation 1")
    func freshDiskFormatsRegionA() {
        var h = StoreHarness(config: smallConfig(), seed: 1)
        #expect(h.store.recoveryReport.region == nil)
        h.drain()
        #expect(h.store.journal == BlockStore.JournalCursor(region: .a, generation: 1, nextSector: 1))
        #expect(h.store.refs.isEmpty)
        #expect(h.store.freeSlots == h.store.totalSlots)
    }

    @Test("a put then a get returns the same bytes, before and after the put is synced")
    func putGetRoundTrip() {
        var h = StoreHarness(config: smallConfig(), seed: 2)
        #expect(isSuccess(h.putNow(ref(1), block(1))))
        #expect(h.store.refs == [ref(1)])
        #expect(h.store.durableRefs.isEmpty)
        #expect(holds(h.getNow(ref(1)), 1))
        #expect(h.syncNow([ref(1)]) == [ref(1)])
        #expect(h.store.durableRefs == [ref(1)])
        #expect(holds(h.getNow(ref(1)), 1))
        #expect(h.getNow(ref(2)) == .failure(.notFound(ref(2))))
        #expect(h.putNow(ref(3), [1, 2, 3]) == .failure(.wrongSize(expected: testBlockBytes, got: 3)))
    }

    @Test("flipped bits in a slot are reported as corrupt, never returned, and the ref can be put again")
    func corruptionDetectedOnGet() {
        var h = StoreHarness(config: smallConfig(), seed: 3)
        #expect(isSuccess(h.putNow(ref(1), block(1), durable: true)))
        h.disk.flipByte(at: Int(h.config.slotOffset(0)) + 100)
        #expect(h.getNow(ref(1)) == .failure(.corrupt(ref(1))))
        #expect(!h.store.refs.contains(ref(1)))
        #expect(isSuccess(h.putNow(ref(1), block(1), durable: true)))
        #expect(holds(h.getNow(ref(1)), 1))
    }

    @Test("an unreadable slot fails the get with ioError")
    func readErrorIsIOError() {
        var h = StoreHarness(config: smallConfig(), seed: 4)
        #expect(isSuccess(h.putNow(ref(1), block(1), durable: true)))
        h.disk.unreadable = [Int(h.config.slotOffset(0)) + 7]
        #expect(h.getNow(ref(1)) == .failure(.ioError))
    }

    @Test("a full disk refuses puts with noSpace until a delete of a ref is durable")
    func noSpaceUntilDeleteDurable() {
        var h = StoreHarness(config: smallConfig(slots: 4), seed: 5)
        for n in UInt64(1)...4 { #expect(isSuccess(h.putNow(ref(n), block(n), durable: true))) }
        #expect(h.putNow(ref(5), block(5)) == .failure(.noSpace))
        h.send(.delete([ref(2)]))
        // The slot is not reusable before the delete record is durable.
        #expect(h.store.pendingSlots == 1)
        let early = h.put(ref(5), block(5))
        #expect(h.take(early) == .put(early, .failure(.noSpace)))
        h.drain()
        #expect(h.store.freeSlots == 1)
        #expect(isSuccess(h.putNow(ref(5), block(5), durable: true)))
        #expect(holds(h.getNow(ref(5)), 5))
        #expect(h.store.refs == [ref(1), ref(3), ref(4), ref(5)])
    }

    @Test("a node that near full refuses new blocks (its reserve), but takes a ref it already holds")
    func reserveRefusesNewBlocks() {
        var h = StoreHarness(config: smallConfig(slots: 4, reserveSlots: 1), seed: 6)
        for n in UInt64(1)...3 { #expect(isSuccess(h.putNow(ref(n), block(n), durable: true))) }
        #expect(h.store.freeSlots == 1)
        #expect(h.putNow(ref(4), block(4)) == .failure(.noSpace))
        // A retry of a stored ref needs no slot.
        #expect(isSuccess(h.putNow(ref(3), block(3), durable: true)))
        h.send(.delete([ref(1)]))
        h.drain()
        #expect(isSuccess(h.putNow(ref(4), block(4), durable: true)))
        #expect(holds(h.getNow(ref(4)), 4))
    }

    @Test("a put deleted before any cycle journaled it frees its slot at once and never reaches the journal")
    func deleteCancelsUnjournaledPut() {
        var h = StoreHarness(config: smallConfig(slots: 4, lazyThresholdRecords: 1 << 20), seed: 10)
        h.drain()
        #expect(isSuccess(h.putNow(ref(1), block(1), durable: true)))
        for n in UInt64(2)...4 { #expect(isSuccess(h.putNow(ref(n), block(n)))) }
        #expect(h.putNow(ref(5), block(5)) == .failure(.noSpace))
        h.send(.delete([ref(2)]))
        // No cycle ran: the slot is free at once.
        #expect(h.store.freeSlots == 1 && h.store.pendingSlots == 0)
        #expect(isSuccess(h.putNow(ref(5), block(5))))
        // A journaled ref still needs its delete record before the slot comes back.
        h.send(.delete([ref(1)]))
        #expect(h.store.freeSlots == 0 && h.store.pendingSlots == 1)
        h.drain()
        #expect(h.store.freeSlots == 1)
        #expect(h.syncNow([ref(1), ref(2), ref(3), ref(4), ref(5)]) == [ref(3), ref(4), ref(5)])
        h.crashAndRecover(tearProbability: 0)
        h.drain()
        #expect(h.store.refs == [ref(3), ref(4), ref(5)])
        #expect(holds(h.getNow(ref(5)), 5))
    }

    @Test("deletes while data is written and plenty of slots are free wait for a cycle that runs anyway")
    func deletesWaitWhileSlotsAreFree() {
        var h = StoreHarness(config: smallConfig(slots: 16, lazyThresholdRecords: 1 << 20), seed: 11)
        h.drain()
        #expect(isSuccess(h.putNow(ref(1), block(1), durable: true)))
        let writing = h.put(ref(2), block(2))  // in flight: the store is busy
        h.send(.delete([ref(1)]))
        #expect(h.store.pendingSlots == 2, "one delete of 16 slots while writing starts no cycle")
        h.drain()
        #expect(h.take(writing) == .put(writing, .success(())))
        // Once no put is writing, the waiting delete starts a cycle of its own.
        #expect(h.store.pendingSlots == 0 && h.store.freeSlots == 15)
        #expect(h.store.refs == [ref(2)])
    }

    @Test("a duplicated put of the same ref and bytes succeeds without taking a second slot")
    func duplicatePutIsIdempotent() {
        var h = StoreHarness(config: smallConfig(), seed: 6)
        let a = h.put(ref(1), block(1))
        let b = h.put(ref(1), block(1), durable: true)
        h.drain()
        #expect(h.take(a) == .put(a, .success(())))
        #expect(h.take(b) == .put(b, .success(())))
        #expect(isSuccess(h.putNow(ref(1), block(1))))
        #expect(isSuccess(h.putNow(ref(1), block(1), durable: true)))
        #expect(h.store.usedSlots == 1)
        #expect(h.putNow(ref(1), block(2)) == .failure(.corrupt(ref(1))))
        #expect(holds(h.getNow(ref(1)), 1))
    }

    @Test("a durable put survives a crash at any point after its reply")
    func durablePutSurvivesCrash() {
        for seed in UInt64(1)...20 {
            var h = StoreHarness(config: smallConfig(), seed: seed, shuffled: true)
            h.drain()
            let id = h.put(ref(1), block(1), durable: true)
            _ = h.put(ref(2), block(2))
            while h.take(id) == nil {
                let progressed = h.step()
                #expect(progressed)
                if !progressed { break }
            }
            for _ in 0..<Int(h.rng.below(4)) { h.step() }
            h.crashAndRecover()
            h.drain()
            #expect(holds(h.getNow(ref(1)), 1), "seed \(seed)")
            let other = h.getNow(ref(2))
            #expect(holdsOrAbsent(other, 2), "seed \(seed): \(brief(other))")
        }
    }

    @Test("a non-durable put may vanish in a crash but a get never returns wrong bytes")
    func nonDurablePutMayVanish() {
        var vanished = 0
        for seed in UInt64(1)...30 {
            var h = StoreHarness(config: smallConfig(), seed: seed, shuffled: true)
            h.drain()
            for n in UInt64(1)...5 { _ = h.put(ref(n), block(n)) }
            for _ in 0..<Int(h.rng.below(12)) { h.step() }
            h.crashAndRecover()
            h.drain()
            for n in UInt64(1)...5 {
                let r = h.getNow(ref(n))
                #expect(holdsOrAbsent(r, n), "seed \(seed) ref \(n): \(brief(r))")
                if r == .failure(.notFound(ref(n))) { vanished += 1 }
            }
        }
        #expect(vanished > 0)
    }

    @Test("a sync reply lists exactly the requested refs that are present and durable, sorted")
    func syncReplyListsDurableRefs() {
        var h = StoreHarness(config: smallConfig(), seed: 7)
        h.drain()
        #expect(isSuccess(h.putNow(ref(1), block(1))))
        #expect(isSuccess(h.putNow(ref(2), block(2))))
        _ = h.put(ref(3), block(3))  // still writing: the cycle waits for it
        let id = h.newID()
        h.send(.sync(id, [ref(4), ref(3), ref(1), ref(2), ref(1)]))
        h.send(.delete([ref(2)]))  // after the request, before the reply
        h.drain()
        #expect(h.take(id) == .sync(id, present: [ref(1), ref(3)]))
        h.crashAndRecover(tearProbability: 0)
        h.drain()
        #expect(h.store.refs == [ref(1), ref(3)])
    }

    @Test("a sync waits for every earlier change even when the journal batch limit splits them")
    func syncCoversChangesBeyondBatchLimit() {
        var h = StoreHarness(config: smallConfig(batchLimitRecords: 1), seed: 8)
        h.drain()
        for n in UInt64(1)...3 { #expect(isSuccess(h.putNow(ref(n), block(n)))) }
        #expect(h.syncNow([ref(1), ref(2), ref(3)]) == [ref(1), ref(2), ref(3)])
    }

    @Test("enough unjournaled puts start a sync cycle without anyone asking")
    func lazyThresholdStartsCycle() {
        var h = StoreHarness(config: smallConfig(lazyThresholdRecords: 2), seed: 9)
        h.drain()
        #expect(isSuccess(h.putNow(ref(1), block(1))))
        #expect(h.store.durableRefs.isEmpty)
        #expect(isSuccess(h.putNow(ref(2), block(2))))
        #expect(h.store.durableRefs == [ref(1), ref(2)])
    }

    @Test("a deleted ref after a crash is either gone or intact, and no slot ever holds two refs")
    func deleteThenCrash() {
        var gone = 0
        for seed in UInt64(1)...40 {
            var h = StoreHarness(config: smallConfig(slots: 2), seed: seed, shuffled: true)
            h.drain()
            #expect(isSuccess(h.putNow(ref(1), block(1), durable: true)))
            var n: UInt64 = 1
            // Delete and replace over and over on two slots, so slots are reused.
            for _ in 0..<6 {
                h.send(.delete([ref(n)]))
                n += 1
                _ = h.put(ref(n), block(n), durable: h.rng.chance(0.5))
                for _ in 0..<Int(h.rng.below(6)) { h.step() }
            }
            h.crashAndRecover()
            h.drain()
            #expect(h.store.refs.count <= 2)
            for k in UInt64(1)...n {
                let r = h.getNow(ref(k))
                #expect(holdsOrAbsent(r, k), "seed \(seed) ref \(k): \(brief(r))")
                if k == 1, r == .failure(.notFound(ref(1))) { gone += 1 }
            }
        }
        #expect(gone > 0)
    }

    @Test("a full journal region compacts into the other region, and recovery reads the new one")
    func fullRegionCompacts() {
        // 16 slots need a 2-sector snapshot; 5-sector regions leave 1 or 2 sectors to append.
        var h = StoreHarness(config: smallConfig(slots: 16, regionSectors: 5), seed: 10)
        h.drain()
        var regionsUsed: [BlockStore.JournalRegion] = []
        for n in UInt64(1)...40 {
            if n > 10 { h.send(.delete([ref(n - 10)])) }
            #expect(isSuccess(h.putNow(ref(n), block(n), durable: true)))
            if let r = h.store.journal?.region, regionsUsed.last != r { regionsUsed.append(r) }
        }
        #expect(h.store.compactionsCompleted >= 6)
        #expect(regionsUsed.count >= 6)
        let live = h.store.journal!
        h.crashAndRecover(tearProbability: 0)
        #expect(h.store.recoveryReport.region == live.region)
        #expect(h.store.recoveryReport.generation == live.generation)
        h.drain()
        #expect(h.store.refs == (UInt64(31)...40).map(ref))
        for n in UInt64(31)...40 { #expect(holds(h.getNow(ref(n)), n)) }
    }

    @Test("every recovery starts a new generation in the other region")
    func recoveryStartsNewGeneration() {
        var h = StoreHarness(config: smallConfig(), seed: 11)
        h.drain()
        #expect(isSuccess(h.putNow(ref(1), block(1), durable: true)))
        for _ in 0..<3 {
            let before = h.store.journal!
            h.crashAndRecover(tearProbability: 0)
            h.drain()
            let after = h.store.journal!
            #expect(after.region == before.region.other)
            #expect(after.generation > before.generation)
            #expect(holds(h.getNow(ref(1)), 1))
        }
    }

    @Test("a torn journal sector ends replay: it and every later sector are discarded")
    func tornJournalSectorIsDiscarded() {
        var h = StoreHarness(config: smallConfig(), seed: 12)
        h.drain()
        for n in UInt64(1)...3 { #expect(isSuccess(h.putNow(ref(n), block(n), durable: true))) }
        #expect(h.store.journal == BlockStore.JournalCursor(region: .a, generation: 1, nextSector: 4))
        // Sector 2 (ref 2's record) torn: half its bytes, half garbage from an earlier life.
        let offset = Int(h.config.regionOffset(.a)) + 2 * testSectorBytes
        let garbage = [UInt8](repeating: 0xEE, count: h.disk.durable.count)
        h.disk.tear(sectorAt: offset, new: h.disk.view(offset, testSectorBytes), old: garbage)
        h.reboot()
        let report = h.store.recoveryReport
        #expect(report.region == .a && report.generation == 1)
        #expect(report.firstUntrustedSector == 2)
        #expect(report.journalSectors == 1)
        #expect(h.store.refs == [ref(1)])
        h.drain()
        #expect(h.store.journal?.region == .b)
        #expect(holds(h.getNow(ref(1)), 1))
    }

    @Test("one sync per cycle: a put of the last journal write whose bytes never landed is dropped at recovery")
    func lastJournalWriteIsChecked() {
        for dataLanded in [false, true] {
            var h = StoreHarness(config: smallConfig(), seed: 13)
            h.drain()
            #expect(isSuccess(h.putNow(ref(1), block(1), durable: true)))
            // Ref 2's data and journal writes complete; power fails before the cycle's one sync.
            let id = h.put(ref(2), block(2), durable: true)
            while !h.disk.pending.contains(where: { if case .sync = $0.1 { true } else { false } }) {
                guard h.step() else { Issue.record("the cycle never asked for a sync"); return }
            }
            #expect(h.take(id) == nil)
            h.disk.persist(Int(h.config.regionOffset(.a)) + 2 * testSectorBytes, testSectorBytes)  // its record
            if dataLanded { h.disk.persist(Int(h.store.location(of: ref(2))!.offset), h.config.blockSize) }
            h.disk.dropUnsynced()
            h.reboot()
            #expect(h.store.recoveryReport.journalSectors == 2)
            #expect(h.store.recoveryReport.droppedUnsyncedPuts == (dataLanded ? 0 : 1))
            #expect(h.store.refs == (dataLanded ? [ref(1), ref(2)] : [ref(1)]))
            h.drain()
            #expect(holds(h.getNow(ref(1)), 1))
            if dataLanded { #expect(holds(h.getNow(ref(2)), 2)) }
        }
    }

    @Test("a journal sector that landed after a lost one is never replayed in a later life")
    func landedSectorAfterLostOneStaysDead() {
        // 128-byte sectors: 2 records each, so one cycle below writes two sectors.
        var h = StoreHarness(config: smallConfig(slots: 8, regionSectors: 16, sectorBytes: 128), seed: 19)
        h.drain()
        #expect(isSuccess(h.putNow(ref(1), block(1), durable: true)))  // region A sector 1
        for n in UInt64(2)...4 { #expect(isSuccess(h.putNow(ref(n), block(n)))) }
        h.send(.delete([ref(1)]))  // starts a cycle: put 2, put 3 | put 4, delete 1
        #expect(h.complete { if case .write = $0 { true } else { false } })
        // Power fails before the journal sync: sector 3 reached the platter, sector 2 did not.
        h.disk.persist(Int(h.config.regionOffset(.a)) + 3 * 128, 128)
        h.disk.dropUnsynced()
        h.reboot()
        #expect(h.store.recoveryReport.firstUntrustedSector == 2)
        #expect(h.store.refs == [ref(1)])
        h.drain()
        // A later life appends one sector; sector 3 of the old life must not follow it.
        #expect(isSuccess(h.putNow(ref(5), block(5), durable: true)))
        h.disk.dropUnsynced()
        h.reboot()
        #expect(h.store.refs == [ref(1), ref(5)])
        h.drain()
        #expect(holds(h.getNow(ref(1)), 1))
    }

    @Test("snapshot sectors of a compaction whose header never landed never pass as journal sectors")
    func abandonedSnapshotStaysDead() {
        var h = StoreHarness(config: smallConfig(slots: 16, regionSectors: 14, sectorBytes: 128), seed: 20)
        h.drain()
        for n in UInt64(1)...6 { #expect(isSuccess(h.putNow(ref(n), block(n), durable: true))) }
        // Life 2 folds six new puts into its compaction: a 6-sector snapshot in region B.
        h.reboot(start: false)
        for n in UInt64(7)...12 { _ = h.put(ref(n), block(n)) }
        let first = h.config.slotOffset(6)  // ref 7's write, awaited by the cycle; complete it last
        for _ in 0..<5 { h.complete { if case let .write(o, _) = $0 { o != first } else { false } } }
        h.complete { if case .write = $0 { true } else { false } }  // ref 7: the batch is captured
        h.complete { if case .write = $0 { true } else { false } }  // snapshot sectors 1...6
        h.complete { if case .sync = $0 { true } else { false } }  // snapshot sync
        let compacting = h.store.cycleInFlight
        #expect(compacting)
        h.disk.dropUnsynced()  // the header write is lost
        // Life 3 recovers region A (6 refs) and compacts into B again with a 3-sector snapshot.
        h.reboot()
        #expect(h.store.refs == (UInt64(1)...6).map(ref))
        h.drain()
        #expect(isSuccess(h.putNow(ref(13), block(13), durable: true)))  // B sector 4
        h.disk.dropUnsynced()
        h.reboot()
        // Sectors 5 and 6 of life 2's snapshot hold refs 9...12: they must stay dead.
        #expect(h.store.refs == (UInt64(1)...6).map(ref) + [ref(13)])
    }

    @Test("a newer region whose snapshot does not verify is skipped for the older region")
    func damagedSnapshotFallsBack() {
        var h = StoreHarness(config: smallConfig(slots: 16, regionSectors: 5), seed: 13)
        h.drain()
        var n: UInt64 = 0
        while h.store.journal?.region != .b {
            n += 1
            #expect(isSuccess(h.putNow(ref(n), block(n), durable: true)))
        }
        let b = h.store.journal!
        #expect(b.nextSector > 1)  // the snapshot is not empty
        h.disk.flipByte(at: Int(h.config.regionOffset(.b)) + testSectorBytes + 40)
        h.reboot()
        #expect(h.store.recoveryReport.skippedDamagedRegion)
        #expect(h.store.recoveryReport.region == .a)
        #expect(h.store.recoveryReport.nextGeneration > b.generation)
        h.drain()
        #expect(h.store.journal?.region == .b)
    }

    @Test("a failed data write fails the put with ioError and frees its slot")
    func failedDataWrite() {
        var h = StoreHarness(config: smallConfig(slots: 1), seed: 14)
        h.drain()
        h.disk.failNextWrites = 1
        #expect(h.putNow(ref(1), block(1), durable: true) == .failure(.ioError))
        #expect(h.store.freeSlots == 1)
        #expect(isSuccess(h.putNow(ref(1), block(1), durable: true)))
    }

    @Test("a failed journal write fails the durable put and moves the journal to a new generation")
    func failedJournalWrite() {
        var h = StoreHarness(config: smallConfig(), seed: 15)
        h.drain()
        let id = h.put(ref(1), block(1), durable: true)
        h.step()  // data write; the journal write is next (its sync covers both)
        h.disk.failNextWrites = 1
        h.step()
        #expect(h.take(id) == .put(id, .failure(.ioError)))
        #expect(h.store.cyclesFailed == 1)
        #expect(h.store.journal?.region == .a)
        #expect(isSuccess(h.putNow(ref(1), block(1), durable: true)))
        #expect(h.store.journal?.region == .b)
        #expect(h.store.journal?.generation == 2)
        h.crashAndRecover()
        h.drain()
        #expect(holds(h.getNow(ref(1)), 1))
    }

    @Test("a failed sync fails the durable put; a retry succeeds")
    func failedSync() {
        var h = StoreHarness(config: smallConfig(), seed: 16)
        h.drain()
        h.disk.failNextSyncs = 1
        #expect(h.putNow(ref(1), block(1), durable: true) == .failure(.ioError))
        #expect(h.store.refs == [ref(1)])
        #expect(isSuccess(h.putNow(ref(1), block(1), durable: true)))
        #expect(h.store.durableRefs == [ref(1)])
    }

    @Test("over the outstanding-request limit puts and gets fail with ioError and syncs answer at once")
    func outstandingLimit() {
        var h = StoreHarness(config: smallConfig(outstandingLimit: 2), seed: 17)
        h.drain()
        _ = h.put(ref(1), block(1))
        _ = h.put(ref(2), block(2))
        let third = h.put(ref(3), block(3))
        #expect(h.take(third) == .put(third, .failure(.ioError)))
        let get = h.newID()
        h.send(.get(get, ref(1)))
        #expect(h.take(get) == .get(get, .failure(.notFound(ref(1)))))
        let sync = h.newID()
        h.send(.sync(sync, [ref(1)]))
        #expect(h.take(sync) == .sync(sync, present: []))
        h.drain()
        #expect(h.store.refs == [ref(1), ref(2)])
    }

    @Test("randomized put/get/delete/sync/crash: acknowledged durable refs survive, no get returns wrong bytes")
    func randomizedCrashSafety() {
        var totals = (acked: 0, verified: 0, crashes: 0, durable: 0, gone: 0)
        for seed in UInt64(1)...50 {
            var run = RandomRun(seed: seed)
            run.run(steps: 250)
            totals.acked += run.m.counts.putsAcked
            totals.verified += run.m.counts.getsVerified
            totals.crashes += run.m.counts.crashes
            totals.durable += run.m.counts.durableChecked
            totals.gone += run.m.counts.goneChecked
        }
        // The workload must actually exercise the store.
        #expect(totals.acked > 1000)
        #expect(totals.verified > 500)
        #expect(totals.crashes > 100)
        #expect(totals.durable > 500)
        #expect(totals.gone > 100)
    }

    @Test("the same seed gives the same disk requests and replies")
    func deterministicReplay() {
        var a = RandomRun(seed: 42)
        a.run(steps: 200)
        var b = RandomRun(seed: 42)
        b.run(steps: 200)
        #expect(a.h.trace.value == b.h.trace.value)
        #expect(a.h.disk.opsSubmitted == b.h.disk.opsSubmitted)
        #expect(a.h.store.refs == b.h.store.refs)
    }
}
