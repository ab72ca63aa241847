/// The writer of one volume: byte-range read / write / flush / trim on top of immutable,
/// replicated blocks, with a bounded write-back cache and a copy-on-write block map that a
/// FLUSH commits by compare-and-swap of the volume head.
///
/// Deterministic and sans-I/O. Inputs: client ops, peer messages, metadata responses and
/// ticks, each with `now`. Outputs: `ClientOutput`s. The driver calls `tick(now:)` at the
/// instants the client asks for with `.timer(at:)`.
///
/// Commit protocol (the durability and fencing promises rest on it):
/// 1. every block dirty when the flush started is written back: put to all its replicas,
///    which reply once the bytes are written (not yet durable);
/// 2. the map snapshot is fixed and every copy it names is synced: each replica confirms it
///    durable, or the block is written again (see `VolumeClient+Sync.swift`);
/// 3. the changed map pages and a new root are put durably;
/// 4. the head (root, generation, epoch) is replaced by a transaction that compares the
///    volume's epoch key with our epoch and the head's mod revision with the one we last saw.
///    That transaction is the commit point. A writer whose epoch was superseded can never
///    pass it, so its writes never become visible.
public struct VolumeClient: Sendable {
    public enum Phase: Sendable, Equatable { case opening, ready, fenced }

    // Identity and configuration.
    public internal(set) var info: VolumeInfo
    /// A larger size waiting for a quiet moment (no flush in flight) to take effect.
    var pendingGrowth: VolumeInfo?
    public let config: VolumeClientConfig
    public let clientID: NodeID
    /// The placement ring; a newer version replaces it (`updateRing`).
    public internal(set) var ring: Ring
    var random: SeededRandom

    public internal(set) var phase: Phase = .opening
    var now: Instant = .zero
    /// The outputs of the step under way (see `StepOutputs`).
    var out = StepOutputs<ClientOutput>()

    // Lease and epoch.
    public internal(set) var epoch: UInt64 = 0
    public internal(set) var leaseID: Int64 = 0
    var leaseValidUntil: Instant = .zero
    var nextKeepAliveAt: Instant = .zero
    var keepAliveInFlight = false
    var open = OpenState.grantLease
    var openRetryAt: Instant?

    // Block map.
    var entries: [MapEntry?]
    var committed: [MapEntry?]
    var pageRefs: [MapEntry?]
    var rootEntry: MapEntry?
    var dirtyPages: Set<Int> = []
    var headModRevision: Int64 = 0
    public internal(set) var generation: UInt64 = 0
    var nextSequence: UInt64 = 1

    // Cache.
    var cache = BlockTable<CacheEntry>()
    var cacheBytes = 0
    var dirtyBytes = 0
    var useCounter: UInt64 = 0
    /// Every clean, loaded block without a write-back has an entry with its current `lastUse`
    /// here; entries that no longer match are stale and skipped (lazy deletion).
    var evictionOrder = MinHeap<UseKey>()
    /// Every dirty, loaded block without a write-back has an entry with its `dirtySince` here;
    /// stale entries are skipped the same way.
    var dirtyOrder = MinHeap<DirtyKey>()
    var versionCounter: UInt64 = 0
    var blocked: [BlockedWrite] = []
    var blockedPerBlock = BlockTable<Int>()

    // In-flight work.
    var ops: [OpID: PendingOp] = [:]
    var queuedBeforeOpen: [(OpID, VolumeOp)] = []
    var fetches = BlockTable<Fetch>()
    var writebacks = BlockTable<Writeback>()
    var rpcs: [RPCID: PendingRPC] = [:]
    var nextRPC: UInt64 = 1
    var metaPending: [MetaRequestID: PendingMeta] = [:]
    var nextMeta: UInt64 = 1
    var flush: FlushState?
    var flushQueue: [FlushWaiter] = []
    var deferredDeletes: [BlockRef] = []
    /// Refs a commit with an unknown outcome named (it may still land, e.g. a slow store):
    /// never deleted until a later commit succeeds, which then collects those it does not name.
    var uncertain: Set<BlockRef> = []
    /// Written-back data blocks not yet durable everywhere: ref -> nodes whose copy is not
    /// known to be durable (see `VolumeClient+Sync.swift`).
    var unsynced: [BlockRef: [NodeID]] = [:]
    /// How many refs of `unsynced` each node holds unsynced.
    var unsyncedPerNode: [NodeID: Int] = [:]
    /// Nodes with a sync in flight (one at a time per node).
    var syncing: Set<NodeID> = []
    var lastSyncAt: Instant = .zero
    /// Read-repair puts in flight, by RPC id (retried on timeout or error, a few times).
    var repairs: [RPCID: Repair] = [:]
    static let repairAttemptsMax = 8
    static let repairsInFlightMax = 256
    var timerSetFor: Instant?
    var commitRetryAt: Instant?
    /// Zero-block write-backs to complete at the end of the current step.
    var zeroWritebacks: [UInt64] = []
    var draining = false
    /// Where the last read piece ended (block, offset in block): a read that starts there is
    /// sequential and fetches whole blocks, so the cache serves the reads that follow.
    var lastReadEnd: (block: UInt64, offset: Int)?
    /// One block of zeros, shared by every read of never-written blocks (made on first use).
    var zeroBlock: [UInt8] = []
    /// Read-only clients: when to re-read the head, and whether a refresh is under way (a
    /// head read or a map load while serving).
    var nextRefreshAt: Instant = .zero
    var refreshing = false
    /// The page refs of the root being loaded; they become `pageRefs` once its pages are in.
    var loadingPageRefs: [MapEntry?]?
    /// Nodes that stopped answering: new copies go elsewhere until `suspectUntil`.
    var suspects: [NodeID: Instant] = [:]
    var nodeFailures: [NodeID: Int] = [:]

    /// Counters for tests and summaries.
    public internal(set) var stats = Stats()
    public struct Stats: Sendable, Equatable {
        public var commits = 0
        public var writebacks = 0
        public var blockFetches = 0
        /// Small reads served by fetching only their bytes (`getRange`).
        public var rangeFetches = 0
        public var readRetries = 0
        /// Bad copies put back from a good one after a read found them (read-repair).
        public var readRepairs = 0
        public var putRetries = 0
        /// Copies placed on a fallback node because a placement node did not take them (or was
        /// suspect when the write-back started).
        public var putFallbacks = 0
        /// Data write-backs put durably because the unsynced blocks were over their high-water
        /// mark (deferred syncing only).
        public var pressureDurableWritebacks = 0
        /// Times the committed map could not be read from any replica while opening.
        public var mapReadFailures = 0
        /// Read-only clients: times a newer head was found and its map loaded.
        public var refreshes = 0
        /// Times every candidate node of a block refused it for lack of space.
        public var outOfSpace = 0
        /// Sync requests sent (each asks one node to make its unsynced copies durable).
        public var syncs = 0
        /// Unsynced copies a node lost (or that could not be confirmed): the block was written again.
        public var lostCopies = 0
        /// Flushes started over because a copy their snapshot named was lost.
        public var flushRestarts = 0
    }

    public init(info: VolumeInfo, ring: Ring, clientID: NodeID, config: VolumeClientConfig, seed: UInt64) {
        precondition(info.blockSize % config.sectorSize == 0, "block size must be a multiple of the sector size")
        precondition(info.pageCount <= BlockMapCodec.entriesPerPage(blockSize: info.blockSize),
                     "volume \(info.name) too large for a single-root map at block size \(info.blockSize)")
        precondition(info.replication >= 1 && info.replication <= ring.activeCount,
                     "replication \(info.replication) needs at least that many nodes")
        self.info = info
        self.ring = ring
        self.clientID = clientID
        self.config = config
        self.random = SeededRandom(seed: seed)
        entries = Array(repeating: nil, count: Int(info.blockCount))
        committed = entries
        pageRefs = Array(repeating: nil, count: info.pageCount)
    }

    // MARK: - Entry points

    /// Starts opening the volume: for writing (lease, writer lock, new epoch, head, map), or
    /// with `config.readOnly` just the head and the map.
    public mutating func start(now: Instant) -> [ClientOutput] {
        begin(now)
        if config.readOnly { open = .readHead }
        openStep()
        return finish()
    }

    public mutating func submit(_ id: OpID, _ op: VolumeOp, now: Instant) -> [ClientOutput] {
        begin(now)
        precondition(ops[id] == nil, "op \(id) submitted twice")
        switch phase {
        case .fenced:
            out.append(.complete(id, .failure(fencedError)))
        case .opening:
            if let e = validate(op) { out.append(.complete(id, .failure(e))) } else { queuedBeforeOpen.append((id, op)) }
        case .ready:
            execute(id, op)
        }
        return finish()
    }

    public mutating func receive(from node: NodeID, _ message: PeerMessage, now: Instant) -> [ClientOutput] {
        begin(now)
        switch message {
        case .putReply(let rpc, let result): putReplied(rpc, from: node, result)
        case .getReply(let rpc, let result): getReplied(rpc, from: node, result)
        case .syncReply(let rpc, let present): syncReplied(rpc, from: node, present: present)
        case .putBlock, .getBlock, .getRange, .deleteBlocks, .syncBlocks, .listBlocks, .listReply: break
        }
        return finish()
    }

    public mutating func metadataReply(_ id: MetaRequestID, _ response: MetaResponse, now: Instant) -> [ClientOutput] {
        begin(now)
        if let pending = metaPending.removeValue(forKey: id) { metaReplied(pending, response) }
        return finish()
    }

    public mutating func tick(now: Instant) -> [ClientOutput] {
        begin(now)
        if timerSetFor.map({ $0 <= now }) ?? false { timerSetFor = nil }
        expireRPCs()
        expireMetadata()
        if phase == .opening || refreshing, let at = openRetryAt, at <= now {
            openRetryAt = nil
            openStep()
        }
        if config.readOnly && phase == .ready && !refreshing && now >= nextRefreshAt { startRefresh() }
        if phase != .fenced && leaseID != 0 && now >= nextKeepAliveAt && !keepAliveInFlight { sendKeepAlive() }
        if phase == .ready { scheduleWriteback(ageOnly: true) }
        return finish()
    }

    /// The volume was resized to `newInfo` (larger; same id and block size). The new sectors
    /// read as zeros until written. It takes effect once the writer is open and no flush is in
    /// flight (a flush works on a snapshot of the map, which must keep its size); until then
    /// requests beyond the old size fail as out of range.
    /// A newer ring (a node joined, is draining or was removed): new copies go to its
    /// placements, reads look where it says. Write-backs under way keep their targets; the
    /// collector moves whatever lands on an old placement.
    public mutating func updateRing(_ newRing: Ring, now: Instant) -> [ClientOutput] {
        begin(now)
        guard newRing.version > ring.version else { return finish() }
        guard newRing.activeCount >= info.replication else { return finish() }
        ring = newRing
        return finish()
    }

    public mutating func grow(to newInfo: VolumeInfo, now: Instant) -> [ClientOutput] {
        precondition(newInfo.id == info.id && newInfo.blockSize == info.blockSize && newInfo.name == info.name,
                     "grow(to:) must describe the same volume")
        precondition(newInfo.pageCount <= BlockMapCodec.entriesPerPage(blockSize: newInfo.blockSize),
                     "volume \(newInfo.name) too large for a single-root map")
        begin(now)
        if newInfo.sizeBytes > (pendingGrowth ?? info).sizeBytes { pendingGrowth = newInfo }
        return finish()
    }

    mutating func applyGrowthIfQuiet() {
        guard let g = pendingGrowth, phase == .ready, flush == nil, !refreshing else { return }
        pendingGrowth = nil
        guard g.sizeBytes > info.sizeBytes else { return }
        let blocks = Int(g.blockCount)
        entries.append(contentsOf: repeatElement(nil, count: blocks - entries.count))
        committed.append(contentsOf: repeatElement(nil, count: blocks - committed.count))
        pageRefs.append(contentsOf: repeatElement(nil, count: g.pageCount - pageRefs.count))
        info = g
    }

    /// Ops not yet completed (for drivers and checkers).
    public var opsInFlight: Int { ops.count + queuedBeforeOpen.count }
    /// Read-repair puts not yet acknowledged.
    public var repairsInFlight: Int { repairs.count }

    // MARK: - Plumbing

    var fencedError: VolumeError { .fenced(volume: info.name, reason: fenceReason) }
    public internal(set) var fenceReason = ""

    mutating func finish() -> [ClientOutput] {
        if phase != .fenced {
            completeZeroWritebacks()
            scheduleSync()
        }
        if pendingGrowth != nil { applyGrowthIfQuiet() }
        #if DEBUG
        checkInvariants()
        #endif
        // Ticks drive timeouts, retries, keep-alives and age-based write-back: needed until fenced.
        if phase != .fenced {
            let next = now + config.tickInterval
            if timerSetFor == nil || timerSetFor! <= now {
                timerSetFor = next
                out.append(.timer(at: next))
            }
        }
        return out.handOut()
    }

    /// Starts a step at `now`: drops the outputs the last step handed out.
    @inline(__always) mutating func begin(_ now: Instant) {
        self.now = now
        out.begin()
    }

    mutating func allocateRPC(_ purpose: PendingRPC.Purpose, node: NodeID, timeout: Nanoseconds? = nil) -> RPCID {
        let id = RPCID(nextRPC)
        nextRPC += 1
        rpcs[id] = PendingRPC(purpose: purpose, node: node, deadline: now + (timeout ?? config.rpcTimeout))
        return id
    }

    mutating func sendMeta(_ purpose: PendingMeta.Purpose, _ request: MetaRequest) {
        let id = MetaRequestID(nextMeta)
        nextMeta += 1
        metaPending[id] = PendingMeta(purpose: purpose, request: request, sentAt: now,
                                      deadline: now + config.metadataTimeout)
        out.append(.metadata(id, request))
    }

    /// The placement nodes of `ref`, then the fallbacks a writer may use instead of a placement
    /// node that does not answer.
    func candidates(_ ref: BlockRef) -> [NodeID] {
        ring.candidates(for: ref.placementKey, replication: info.replication,
                        fallbacks: ring.fallbacks(replication: info.replication, max: config.fallbackNodesMax))
    }

    /// Where deletes go: `candidates`, then nodes being drained (copies anywhere else are
    /// left to the collector).
    func deleteCandidates(_ ref: BlockRef) -> [NodeID] {
        ring.readCandidates(for: ref.placementKey, replication: info.replication,
                            fallbacks: ring.fallbacks(replication: info.replication, max: config.fallbackNodesMax))
    }

    /// Where readers look: `candidates`, then every other active node (a copy lands beyond
    /// the fallbacks when they were all full), then nodes being drained.
    func readCandidates(_ ref: BlockRef) -> [NodeID] {
        ring.everyCandidate(for: ref.placementKey, replication: info.replication)
    }

    func isSuspect(_ node: NodeID) -> Bool {
        guard let until = suspects[node] else { return false }
        return until > now
    }

    /// `nodes` with the nodes that recently stopped answering moved to the end (stable).
    func healthyFirst(_ nodes: [NodeID]) -> [NodeID] {
        guard !suspects.isEmpty else { return nodes }
        return nodes.filter { !isSuspect($0) } + nodes.filter { isSuspect($0) }
    }

    /// Records an answer (or its absence) from `node`; after `putAttemptsBeforeFallback`
    /// failures in a row the node is avoided for `suspectDuration`.
    mutating func noteNode(_ node: NodeID, ok: Bool) {
        if ok {
            nodeFailures[node] = nil
            suspects[node] = nil
            return
        }
        let f = nodeFailures[node, default: 0] + 1
        nodeFailures[node] = f
        if f >= config.putAttemptsBeforeFallback { suspects[node] = now + config.suspectDuration }
    }

    mutating func deleteRefs(_ refs: [BlockRef]) {
        guard !refs.isEmpty else { return }
        if !unsynced.isEmpty { for r in refs where unsynced[r] != nil { setUnsynced(r, []) } }
        var perNode: [NodeID: [BlockRef]] = [:]
        for r in refs { for n in deleteCandidates(r) { perNode[n, default: []].append(r) } }
        for n in perNode.keys.sorted() { out.append(.send(to: n, .deleteBlocks(perNode[n]!))) }
    }

    mutating func becomeFenced(_ reason: String) {
        guard phase != .fenced else { return }
        phase = .fenced
        fenceReason = reason
        out.append(.phaseChanged(.fenced))
        let err = fencedError
        for id in ops.keys.sorted() { out.append(.complete(id, .failure(err))) }
        ops.removeAll()
        for (id, _) in queuedBeforeOpen { out.append(.complete(id, .failure(err))) }
        queuedBeforeOpen.removeAll()
        if let f = flush { for w in f.waiters { out.append(.complete(w.op, .failure(err))) } }
        for w in flushQueue { out.append(.complete(w.op, .failure(err))) }
        flush = nil
        flushQueue.removeAll()
        blocked.removeAll()
        blockedPerBlock.removeAll()
        fetches.removeAll()
        writebacks.removeAll()
        zeroWritebacks.removeAll()
        // Nothing cached may be served or written back any more.
        cache.removeAll()
        evictionOrder = MinHeap()
        dirtyOrder = MinHeap()
        cacheBytes = 0
        dirtyBytes = 0
        rpcs.removeAll()
        unsynced.removeAll()
        unsyncedPerNode.removeAll()
        syncing.removeAll()
    }

    /// `checkInvariants()` on the client where it is stored. A caller that keeps the client in a
    /// class property calls this one: reading the property to call the non-mutating form copies
    /// the whole client first (every table in it retained and released), which was about 1% of
    /// the simulator's time. Nothing is changed.
    public mutating func checkInvariantsInPlace() { checkInvariants() }

    /// Internal consistency; run after every step in debug builds and by the simulator.
    public func checkInvariants() {
        precondition(entries.count == Int(info.blockCount) && committed.count == entries.count
                     && pageRefs.count == info.pageCount, "map arrays do not match the volume size")
        precondition(flush == nil || flush!.snapshot.isEmpty || flush!.snapshot.count == entries.count,
                     "the map grew under a flush")
        var bytes = 0, dirty = 0
        for (idx, e) in cache {
            bytes += info.blockSize
            if e.isDirty { dirty += info.blockSize }
            precondition(e.data.isEmpty || e.data.count == info.blockSize, "cache entry \(idx) has wrong size")
            precondition(e.writtenVersion <= e.version, "cache entry \(idx) written ahead of its version")
            if e.loading { precondition(fetches[idx] != nil, "loading entry \(idx) without a fetch") }
        }
        precondition(bytes == cacheBytes, "cache byte count drifted: \(bytes) vs \(cacheBytes)")
        precondition(dirty == dirtyBytes, "dirty byte count drifted: \(dirty) vs \(dirtyBytes)")
        precondition(cacheBytes <= config.cacheBytesMax, "cache over its limit")
        for idx in writebacks.keys where idx < BlockRef.mapIndexBase {
            precondition(cache[idx] != nil, "write-back of \(idx) without its cache entry")
        }
        if phase == .fenced { precondition(ops.isEmpty && flush == nil, "fenced client still has ops") }
        var perNode: [NodeID: Int] = [:]
        for nodes in unsynced.values { for n in nodes { perNode[n, default: 0] += 1 } }
        precondition(perNode == unsyncedPerNode, "unsynced counts per node drifted")
        for ref in unsynced.keys where isCurrent(ref) {
            // The cache is the only sure copy of a block version not yet durable everywhere.
            precondition(cache[ref.index] != nil, "unsynced block \(ref.index) left the cache")
        }
        // The lazy eviction and write-back orders cover every block they must (checked on a
        // deterministic 32nd of the calls: building the sets is the costliest check here, and
        // a block left out of an order stays left out, so a sample still finds it).
        guard useCounter % 32 == 0 else { return }
        let useKeys = Set(evictionOrder.elements)
        let dirtyKeys = Set(dirtyOrder.elements)
        for (idx, e) in cache where !e.loading && writebacks[idx] == nil {
            if e.isDirty {
                precondition(dirtyKeys.contains(DirtyKey(since: e.dirtySince, block: idx)), "dirty block \(idx) missing from the write-back order")
            } else if !isPinned(idx) {
                precondition(useKeys.contains(UseKey(lastUse: e.lastUse, block: idx)), "clean block \(idx) missing from the eviction order")
            }
        }
    }
}

extension VolumeClient {
    /// Every block the committed head reaches: data blocks, map pages and the root (for
    /// the simulator's convergence checker and, later, garbage collection).
    public var committedRefs: [BlockRef] {
        var refs: [BlockRef] = []
        for (i, e) in committed.enumerated() { if let e { refs.append(e.ref(volume: info.id, index: UInt64(i))) } }
        for (p, e) in pageRefs.enumerated() { if let e { refs.append(e.ref(volume: info.id, index: BlockRef.mapIndexBase + UInt64(p))) } }
        if let r = rootEntry { refs.append(r.ref(volume: info.id, index: BlockRef.rootIndex)) }
        return refs
    }

    /// Whether this writer may still read `ref` or name it in a future commit (the simulator's
    /// oracle for the garbage collector: deleting such a ref would be a bug). Not counted: the
    /// committed map and root where newer versions replaced them (a commit whose reply has not
    /// arrived may already have made them garbage), refs an unknown-outcome commit named (only
    /// kept from our own deletes), and map pages that the next commit rewrites anyway.
    public func mayNeed(_ ref: BlockRef) -> Bool {
        guard ref.volume == info.id, phase != .fenced else { return false }
        if writebacks.values.contains(where: { $0.ref == ref }) { return true }
        if fetches.values.contains(where: { $0.ref == ref }) { return true }
        func same(_ e: MapEntry?) -> Bool { e.map { $0.epoch == ref.epoch && $0.sequence == ref.sequence } ?? false }
        if ref.index == BlockRef.rootIndex { return same(flush?.newRoot) }
        if ref.index >= BlockRef.mapIndexBase {
            let p = Int(ref.index - BlockRef.mapIndexBase)
            guard p < pageRefs.count else { return false }
            if let f = flush, p < f.newPageRefs.count, same(f.newPageRefs[p]) { return true }
            let rewritten = dirtyPages.contains(p) || (flush?.snapshotPages.contains(p) ?? false)
            return same(pageRefs[p]) && !rewritten
        }
        let i = Int(ref.index)
        guard i < entries.count else { return false }
        return same(entries[i]) || (flush.map { i < $0.snapshot.count && same($0.snapshot[i]) } ?? false)
    }

    /// A one-line account of what the client is waiting for (for liveness failure reports).
    public var stateSummary: String {
        var parts = ["phase=\(phase)", "epoch=\(epoch)", "gen=\(generation)", "ops=\(ops.count)",
                     "queuedBeforeOpen=\(queuedBeforeOpen.count)", "blocked=\(blocked.count)",
                     "cache=\(cacheBytes / info.blockSize)blk dirty=\(dirtyBytes / info.blockSize)blk"]
        if phase == .opening { parts.append("open=\(open)") }
        if let f = flush { parts.append("flush=\(f.stage) waiters=\(f.waiters.count)") }
        parts.append("flushQueue=\(flushQueue.count)")
        if !unsynced.isEmpty || !syncing.isEmpty { parts.append("unsynced=\(unsynced.count) syncing=\(syncing.sorted())") }
        let wb = writebacks.keys.sorted().prefix(3).map { "\($0):\(writebacks[$0]!.remaining)" }
        parts.append("writebacks=\(writebacks.count) \(wb)")
        let fe = fetches.keys.sorted().prefix(3).map { "\($0):round\(fetches[$0]!.round)" }
        parts.append("fetches=\(fetches.count) \(fe)")
        parts.append("rpcs=\(rpcs.count) meta=\(metaPending.count) leaseValidUntil=\(leaseValidUntil) now=\(now)")
        return parts.joined(separator: " ")
    }
}
