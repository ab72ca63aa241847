import TorusCore

/// One deterministic simulation run: storage nodes on `SimDisk`s, a volume client, a simulated
/// metadata store and a network, all driven by one event queue in virtual time.
///
/// Same options (seed included) ⇒ the same sequence of events ⇒ the same trace hash.
public final class Simulation {
    enum Event {
        case deliver(from: NodeID, to: NodeID, PeerMessage, senderIncarnation: UInt64, receiverIncarnation: UInt64)
        case disk(node: Int, incarnation: UInt64, DiskOpID, DiskRequest)
        case metaRequest(writer: NodeID, incarnation: UInt64, MetaRequestID, MetaRequest)
        case metaReply(writer: NodeID, incarnation: UInt64, MetaRequestID, MetaResponse)
        /// `at` is the writer's own time the tick was asked for (its clock may run apart).
        case clientTick(writer: NodeID, incarnation: UInt64, at: Instant)
        case leaseTick
        case workload(volume: Int, slot: Int, generation: UInt64)
        case fault
        case heal(Heal)
        case endOfLoad
        case finalCheck(FinalStep)
        case scheduled(Int)
        case clog(NodeID, fault: UInt64)
        case endOfSafety
        case resumePaused(Int)
        /// A successor takes the volume from a writer cut off from the metadata store (which
        /// keeps running).
        case successorTakesOver(Int, writer: NodeID, incarnation: UInt64)
        case collectorTick
        case scrub(node: Int, incarnation: UInt64)
        case collectorMeta(MetaRequestID, MetaRequest)
        case collectorMetaReply(MetaRequestID, MetaResponse)
        case ringUpdate(volume: Int)
        case snapshot(volume: Int)
        case clone(volume: Int)
        case rollback(volume: Int)
    }

    enum Heal {
        case restartNode(Int)
        case partition(UInt64)
        case metadata
        case restartWriter(Int)
        case metadataSpeed
        case network
        case diskSpeed(Int)
        case clock(Int)
    }

    enum FinalStep { case waitIdle, powerLoss, waitOpen, readBack, settle, collect, timeout }

    struct NodeSlot {
        var id: NodeID
        var disk: SimDisk
        var node: StorageNode?
        var incarnation: UInt64 = 0
        var random: SeededRandom
        var diskBusyUntil: Instant = .zero
        var config: BlockStoreConfig
        /// Disk service times are multiplied by this (slow-disk).
        var slowFactor: UInt64 = 1
        /// This node may suffer bit rot, latent errors and misdirected writes: at most
        /// `replication - 1` nodes do, so every block keeps a good copy (docs/design.md,
        /// "Promises to users").
        var mediaFaults = false
        /// Gone for good (lose-node): never restarted.
        var lost = false
        /// Drained and removed from the ring (also `lost`).
        var removed = false
    }

    let options: SimOptions
    /// The ring in force (joins and drains make new versions: Simulation+Ring.swift).
    var ring: Ring
    var ringChanges = 0
    /// The stores' batching knobs (drawn per seed), for nodes that join later too.
    var storeKnobs = (batchLimit: 4096, lazyThreshold: 1 << 20, reservePercent: 0)
    /// The writer's knobs, drawn from the seed ("buggify"): cache sizes, write-back timing.
    let clientConfig: VolumeClientConfig

    var queue = EventQueue<Event>()
    var now: Instant = .zero
    var trace = TraceHasher()
    var events: UInt64 = 0

    var faultRandom: SeededRandom
    var workRandom: SeededRandom
    var clientSeeds: SeededRandom
    /// Streams of the newer faults, apart from the classic ones so adding a fault kind does
    /// not move the runs that do not use it.
    var mediaRandom: SeededRandom
    var metaSlowRandom: SeededRandom
    /// Readable trace lines (`torus-sim run --trace FILE`); the hash does not depend on it.
    public var traceSink: ((String) -> Void)?

    var slots: [NodeSlot] = []
    /// One writer process, workload and sector model per volume; `cur` is the volume the
    /// event being handled belongs to, and the properties below forward to it.
    var vols: [VolumeSim] = []
    var cur = 0
    var store = SimMetadataStore()
    var network: SimNetwork
    var nextFaultID: UInt64 = 1

    // Workload and checker state.
    var nextOp: UInt64 = 1
    var nextWriteValue: UInt64 = 1
    var loadRunning = true
    var finalPhase: FinalStep?
    var settleDeadline: Instant = .zero
    /// The network's rates before a lossy-network or slow-network fault (restored on heal).
    var networkFault: (drop: Double, duplicate: Double, latencyMax: Nanoseconds)?
    /// Nodes wiped so far (wipe-node).
    var wipes = 0
    var storeKnobsDescription = ""
    /// Misdirected writes happen until the liveness or final phase heals everything.
    var mediaFaultsActive = true
    var violation: SectorModel.Violation?
    var opsCompleted = 0
    var readErrors = 0
    var faultsInjected = 0
    var writerRestarts = 0
    var commits = 0
    var repairs = 0
    /// The garbage collector (`gc` in a scenario), and its passes during the final check.
    var collector: Collector?
    var finalCollectPasses = 0
    /// Refs the last pass of the final collection found off their placement.
    var finalCollectMisplaced = 0
    /// Scrub rounds each node had finished when the final collection began.
    var scrubRoundsAtCollect: [Int] = []
    /// Blocks the collector's repair copied.
    var copiesMade = 0
    var movesMade = 0
    /// Write-back copies put on a fallback node (retired writers; see `SimResult.fallbackPuts`).
    var fallbackPuts = 0
    /// Copies the deleted volumes had on live nodes when they were deleted.
    var deletedVolumeBlocks = 0
    var bytesMoved: UInt64 = 0
    var copiesTrimmed = 0
    /// Writes and flushes that failed with `noSpace` (ENOSPC).
    var noSpaceErrors = 0

    // Newer faults.
    /// Extra metadata latency bound while `metadata-slow` lasts.
    var metadataSlow = Nanoseconds.zero
    // Liveness phase.
    var livenessFrom: Instant?
    var livenessOps = 0
    var livenessFlushes = 0
    var flushesDuringOutage = 0
    /// Log commits of the writers that crashed or were replaced (the running ones add theirs).
    var retiredLogCommits = 0

    public init(options: SimOptions) {
        precondition(options.nodes >= options.replication && options.replication >= 1, "need nodes >= replication >= 1")
        self.options = options
        let root = SeededRandom(seed: options.seed)
        faultRandom = root.derived(stream: 1)
        network = SimNetwork(random: root.derived(stream: 2), latencyMax: options.networkLatencyMax,
                             dropProbability: options.faults ? options.dropProbability : 0,
                             duplicateProbability: options.faults ? options.duplicateProbability : 0)
        workRandom = root.derived(stream: 3)
        clientSeeds = root.derived(stream: 4)
        mediaRandom = root.derived(stream: 6)
        metaSlowRandom = root.derived(stream: 7)
        for i in 0..<options.volumes {
            let info = VolumeInfo(name: "vol\(i)", id: UInt64(i + 1), sizeBytes: options.volumeBytes, blockSize: options.blockSize,
                                  replication: options.replication)
            vols.append(VolumeSim(volume: info, clientID: NodeID(Self.writerBase(volume: i))))
        }
        ring = Ring(members: (1...options.nodes).map {
            RingMember(node: NodeID(UInt32($0)), domain: options.zones > 0 ? "zone\(($0 - 1) % options.zones)" : "")
        })
        var knobs = root.derived(stream: 5)
        var cfg = VolumeClientConfig()
        cfg.canary = options.canary
        let cacheBlocks = [8, 16, 64, 256][Int(knobs.below(4))]
        cfg.cacheBytesMax = cacheBlocks * options.blockSize
        cfg.dirtyBytesHigh = max(1, cacheBlocks / Int(1 + knobs.below(4))) * options.blockSize
        cfg.writebackDelay = knobs.duration(.milliseconds(5), .milliseconds(800))
        cfg.writebacksInFlightMax = Int(1 + knobs.below(32))
        cfg.leaseTTLSeconds = 4
        cfg.leaseSafetyMargin = .seconds(1)
        cfg.tickInterval = .milliseconds(20)
        cfg.rpcTimeout = knobs.duration(.milliseconds(100), .milliseconds(400))
        cfg.metadataTimeout = .milliseconds(500)
        cfg.retryBackoff = .milliseconds(50)
        cfg.readRoundsMax = 40
        cfg.durableWriteback = knobs.below(2) == 0
        cfg.unsyncedBytesHigh = max(1, cacheBlocks / Int(1 + knobs.below(4))) * options.blockSize
        cfg.syncDelay = knobs.duration(.milliseconds(100), .seconds(2))
        cfg.syncTimeout = knobs.duration(.milliseconds(500), .seconds(3))
        // `torus up` waits 5 s before writing a dirty block back: one seed in four waits
        // seconds too, so the high-water mark and flushes do most write-back (own stream, so
        // the other knobs of every seed stay as they were).
        var delayKnob = root.derived(stream: 10)
        if delayKnob.below(4) == 0 { cfg.writebackDelay = delayKnob.duration(.seconds(1), .seconds(6)) }
        clientConfig = cfg
        // The stores' batching knobs, drawn per seed from their own stream.
        var storeKnobs = root.derived(stream: 9)
        let batchLimit = [4096, 256, 16][Int(storeKnobs.below(3))]
        // Mostly as in production (journal only when asked: writers sync what they need),
        // sometimes eager, which journals most puts before any sync.
        let lazyThreshold = [1 << 20, 1 << 20, 32, 4][Int(storeKnobs.below(4))]
        // Free slots kept back (as production keeps 2%), or none.
        let reservePercent = [0, 2, 5][Int(storeKnobs.below(3))]
        storeKnobsDescription = " store-batch=\(batchLimit) store-lazy-commit=\(lazyThreshold) store-reserve=\(reservePercent)%"
        self.storeKnobs = (batchLimit, lazyThreshold, reservePercent)
        for i in 0..<options.nodes {
            let config = Self.storeConfig(diskBytes: options.diskBytes(node: i), blockSize: options.blockSize,
                                          batchLimit: batchLimit, lazyThreshold: lazyThreshold, reservePercent: reservePercent)
            let disk = SimDisk(geometry: config.geometry)
            slots.append(NodeSlot(id: NodeID(UInt32(i + 1)), disk: disk, random: root.derived(stream: 100 + UInt64(i)), config: config))
        }
        // Media faults hit a seeded minority of nodes (none with one copy per block).
        var pick = root.derived(stream: 8)
        var order = Array(slots.indices)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(pick.below(UInt64(i + 1)))) }
        for n in order.prefix(options.replication - 1) { slots[n].mediaFaults = true }
    }

    /// The shared sizing rule with the seed's batching knobs; 64 sectors of journal appends
    /// instead of production's 256, for the simulator's smaller disks (64 MiB by default).
    static func storeConfig(diskBytes: UInt64, blockSize: Int, batchLimit: Int, lazyThreshold: Int, reservePercent: Int) -> BlockStoreConfig {
        BlockStoreConfig.sized(diskBytes: diskBytes, blockSize: blockSize, journalAppendSectors: 64,
                               journalBatchLimitRecords: batchLimit, lazyCommitThresholdRecords: lazyThreshold,
                               reservePercent: reservePercent)
    }

    /// Runs to completion and reports.
    public func run() -> SimResult {
        for i in slots.indices { bootNode(i) }
        for i in vols.indices {
            cur = i
            startWriter()
            for s in 0..<options.queueDepth { queue.push(now + thinkTime(), .workload(volume: i, slot: s, generation: slotGeneration)) }
        }
        queue.push(now + Nanoseconds.milliseconds(100), .leaseTick)
        if options.faults { queue.push(now + nextFaultDelay(), .fault) }
        if let every = options.snapshotInterval { for i in vols.indices { queue.push(now + every, .snapshot(volume: i)) } }
        if let at = options.cloneAfter { queue.push(now + at, .clone(volume: 0)) }
        if let every = options.rollbackInterval { queue.push(now + every, .rollback(volume: 0)) }
        for (i, f) in options.schedule.enumerated() { queue.push(Instant.zero + f.at, .scheduled(i)) }
        queue.push(Instant.zero + options.duration, options.livenessDuration.value > 0 ? .endOfSafety : .endOfLoad)
        startCollector()
        while violation == nil, !queue.isEmpty {
            let (t, e) = queue.pop()
            precondition(t >= now, "time went backwards")
            now = t
            events += 1
            dispatch(e)
            // Internal invariants, checked from outside every 32 events (the writer's walk
            // its cache; a node's walk its slot table, so nodes take turns every 1,000 events).
            // Debug builds, which `swift test` runs every scenario with, also check the writer
            // after each of its own steps.
            if events % 32 == 0 { for vs in vols { vs.client?.checkInvariantsInPlace() } }
            if events % 1000 == 0 {
                let n = Int(events / 1000) % slots.count
                slots[n].node?.checkInvariants()
            }
            if case .finalCheck(.timeout) = e { break }
            if finalPhase == .waitIdle && allIdle { finalStep(.powerLoss) }
            if finalPhase == nil && loadRunning == false && allIdle && queue.isEmpty { break }
        }
        if violation == nil && finalPhase != nil {
            violation = SectorModel.Violation(promise: .liveness, detail: "final read-back did not finish (stuck at \(finalPhase!))")
        }
        if violation == nil && options.checkConvergence { checkConvergence() }
        if let v = violation { traceNote("VIOLATION \(v)") }
        return SimResult(seed: options.seed, traceHash: trace.value, violation: violation?.description,
                         brokenPromise: violation?.promise.rawValue, simulatedSeconds: now.seconds, events: events,
                         opsCompleted: opsCompleted, readsChecked: vols.reduce(0) { $0 + $1.model.readsChecked }, readErrors: readErrors,
                         faultsInjected: faultsInjected, writerRestarts: writerRestarts, commits: commits,
                         knobs: "cache=\(clientConfig.cacheBytesMax / options.blockSize)blk"
                            + " dirty-high=\(clientConfig.dirtyBytesHigh / options.blockSize)blk"
                            + " writeback-delay=\(clientConfig.writebackDelay.value / 1_000_000)ms"
                            + " writebacks-max=\(clientConfig.writebacksInFlightMax) durable-writeback=\(clientConfig.durableWriteback)"
                            + " rpc-timeout=\(clientConfig.rpcTimeout.value / 1_000_000)ms" + storeKnobsDescription,
                         repairs: repairs + vols.reduce(0) { $0 + ($1.client?.stats.readRepairs ?? 0) },
                         copies: copiesMade, noSpaceErrors: noSpaceErrors,
                         moves: movesMade, bytesMoved: bytesMoved, trimmed: copiesTrimmed, ringVersion: ring.version,
                         liveBlocks: vols.reduce(0) { $0 + ($1.client?.committedRefs.count ?? 0) },
                         deletedVolumeBlocks: deletedVolumeBlocks,
                         fallbackPuts: fallbackPuts + vols.reduce(0) { $0 + ($1.client?.stats.putFallbacks ?? 0) },
                         flushesDuringOutage: flushesDuringOutage,
                         logCommits: retiredLogCommits + vols.reduce(0) { $0 + ($1.client?.stats.logCommits ?? 0) })
    }
}
