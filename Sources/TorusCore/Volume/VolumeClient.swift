/// The writer of one volume: byte-range read / write / flush / trim on top of immutable,
/// replicated blocks, with a bounded write-back cache and a copy-on-write block map that a
/// FLUSH commits by compare-and-swap of the volume head.
///
/// Deterministic and sans-I/O. Inputs: client ops, peer messages, metadata responses and
/// ticks, each with `now`. Outputs: `ClientOutput`s. The driver calls `tick(now:)` at the
/// instants the client asks for with `.timer(at:)`.
///
/// The commit point is the head transaction, which compares the volume's epoch key with our
/// epoch and the head's mod revision with the one we last saw: a writer whose epoch was
/// superseded never passes it, so its writes never become visible. The commit protocol, step
/// by step: docs/storage-core.md, "Volume writer and commit".
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
    /// Our blocks below this may be named by a snapshot: never deleted here (`deleteRefs`).
    public internal(set) var keepBelow: SnapshotMark?

    // Commit log (docs/design.md, "The commit log"; `VolumeClient+Log.swift`).
    /// The segment FLUSHes append to: nil until this writer's first checkpoint, and after an
    /// append failed (the segment is abandoned: the next commit is a checkpoint).
    var segment: LogSegment?
    /// Segments a checkpoint will retire (the opened head's, our abandoned ones): their records
    /// are deleted once a checkpoint covers them.
    var retiredSegments: [(segment: LogSegment, end: UInt64)] = []
    var nextPosition: UInt64 = 1
    var recordsSinceCheckpoint = 0
    var lastCheckpointAt: Instant = .zero
    /// When the last idle checkpoint started (one attempt per `checkpointInterval`, so a
    /// metadata outage does not turn into a checkpoint every tick).
    var idleCheckpointStartedAt: Instant?
    /// Pages that log commits changed since the last checkpoint: the next checkpoint writes them.
    var checkpointPages: Set<Int> = []
    /// Refs that log commits replaced: deleted once a checkpoint no longer names them.
    var checkpointGarbage: [BlockRef] = []
    /// The record or segment header being put on its segment's nodes.
    var append: LogAppend?
    /// Sealing and replaying the opened head's segment.
    var recovery: LogRecovery?
    /// Read-only clients: the log after the checkpoint they serve (`VolumeClient+Follow.swift`).
    var follow: LogFollow?
    /// The last record whose append acknowledged a FLUSH: (segment epoch, position).
    public internal(set) var lastAckedLog: (epoch: UInt64, position: UInt64)?
    /// Where this writer's recovery found the opened head's log to end: (segment epoch, first
    /// position it found absent).
    public internal(set) var recoveredLog: (epoch: UInt64, end: UInt64)?
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
        /// Commits by a log append (the rest of `commits` are checkpoints).
        public var logCommits = 0
        /// Appends that failed on a node, so the segment was abandoned for a checkpoint.
        public var abandonedSegments = 0
        /// Records replayed from the log when the volume was opened.
        public var replayedRecords = 0
        /// Last records a recovery dropped: a block they name had no durable copy (never acknowledged).
        public var droppedRecords = 0
        /// Records sent together with their blocks' puts (one round per FLUSH).
        public var earlyAppends = 0
        /// Read-only clients: log records applied after the checkpoint they loaded.
        public var followedRecords = 0
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
        if let root = config.snapshotRoot {
            // A snapshot: its root is fixed, no head to read or follow.
            precondition(config.readOnly, "a snapshot is served read-only")
            rootEntry = root
            open = .loadRoot
            startMapFetch(BlockRef.rootIndex, root)
            return finish()
        }
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
        case .putReply(let rpc, let result):
            if let p = rpcs[rpc], p.node == node, case .log(let what) = p.purpose {
                rpcs[rpc] = nil
                logReplied(what, from: node, .put(result))
            } else {
                putReplied(rpc, from: node, result)
            }
        case .getReply(let rpc, let result):
            if let p = rpcs[rpc], p.node == node, case .log(let what) = p.purpose {
                rpcs[rpc] = nil
                logReplied(what, from: node, .get(result))
            } else {
                getReplied(rpc, from: node, result)
            }
        case .syncReply(let rpc, let present):
            if let p = rpcs[rpc], p.node == node, case .log(let what) = p.purpose {
                rpcs[rpc] = nil
                logReplied(what, from: node, .sync(present))
            } else {
                syncReplied(rpc, from: node, present: present)
            }
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
        if let at = recovery?.retryAt, at <= now { recoveryRetry() }
        if config.readOnly && config.snapshotRoot == nil && phase == .ready && !refreshing && now >= nextRefreshAt { startRefresh() }
        if phase != .fenced && leaseID != 0 && now >= nextKeepAliveAt && !keepAliveInFlight { sendKeepAlive() }
        if phase == .ready { scheduleWriteback(ageOnly: true) }
        checkpointIfIdle()
        return finish()
    }

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

    /// The volume was resized to `newInfo` (larger; same id and block size). The new sectors
    /// read as zeros until written. It takes effect once the writer is open and no flush is in
    /// flight (a flush works on a snapshot of the map, which must keep its size); until then
    /// requests beyond the old size fail as out of range.
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

    mutating func deleteRefs(_ refs: [BlockRef]) {
        let refs = refs.filter { !isShared($0) }
        guard !refs.isEmpty else { return }
        if !unsynced.isEmpty { for r in refs where unsynced[r] != nil { setUnsynced(r, []) } }
        var perNode: [NodeID: [BlockRef]] = [:]
        for r in refs { for n in deleteCandidates(r) { perNode[n, default: []].append(r) } }
        for n in perNode.keys.sorted() { out.append(.send(to: n, .deleteBlocks(perNode[n]!))) }
    }

    /// A block another map may name: an origin's block in a clone's map, or one of ours that a
    /// snapshot may keep. The collector decides about those (docs/snapshots.md).
    func isShared(_ ref: BlockRef) -> Bool {
        if ref.volume != info.id { return true }
        guard !ref.isLogBlock, let mark = keepBelow, config.canary != .writerIgnoresSnapshots else { return false }
        return mark.precedes(ref)
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
        append = nil
        recovery = nil
        unsynced.removeAll()
        unsyncedPerNode.removeAll()
        syncing.removeAll()
    }

}
