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
        case collectorTick
        case scrub(node: Int, incarnation: UInt64)
        case collectorMeta(MetaRequestID, MetaRequest)
        case collectorMetaReply(MetaRequestID, MetaResponse)
        case ringUpdate(volume: Int)
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
        /// `replication - 1` nodes do, so every block keeps a good copy (DESIGN §1).
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

    /// One volume: its writer process (and a paused predecessor), workload, model and checks.
    final class VolumeSim {
        let volume: VolumeInfo
        var client: VolumeClient?
        /// The current writer's id on the network (a writer that takes over gets a new one).
        var clientID: NodeID
        var clientIncarnation: UInt64 = 0
        var clientTimerAt: Instant?
        var writerDown = false
        /// Deleted (`delete-volume`): no writer, no load, no read-back; the collector must
        /// reclaim every block it had.
        var deleted = false
        var model: SectorModel
        var inflight: [OpID: InflightOp] = [:]
        var sectorBusy: [UInt8]
        var slotGeneration: UInt64 = 0
        var finalNextRead: UInt64 = 0
        var readBackStarted = false
        /// Where the next sequential op starts.
        var cursor: UInt64 = 0
        var readBackDone = false
        /// The writer's clock offset (clock-jump) and the last time it saw (it never runs back).
        var writerSkew: Int64 = 0
        var lastWriterNow: Instant = .zero
        /// writer-crash-mid-flush / writer-pause wait for the writer's next commit.
        var armed: FaultKind?
        var armedDuration: Nanoseconds?
        /// A paused writer that a successor replaced: it resumes later with its old state.
        var paused: VolumeClient?
        var pausedUntil: Instant?
        var pausedResumeWhenSuccessorReady = false
        var pausedHeld: [(Instant, Event)] = []
        /// Fencing checker: the highest epoch granted, and the last committed head.
        var grantedEpoch: UInt64 = 0
        var lastCommit: (epoch: UInt64, generation: UInt64)?

        init(volume: VolumeInfo, clientID: NodeID) {
            self.volume = volume
            self.clientID = clientID
            model = SectorModel(sectorCount: Int(volume.sizeBytes) / SectorModel.sectorSize)
            sectorBusy = Array(repeating: 0, count: Int(volume.sizeBytes) / SectorModel.sectorSize)
        }
    }

    /// Writer ids: volume v's first writer is 1000 + 1000 v; each takeover takes the next.
    static func writerBase(volume v: Int) -> UInt32 { 1000 + 1000 * UInt32(v) }
    func volumeIndex(ofWriter id: NodeID) -> Int { Int((id.raw - 1000) / 1000) }

    // The current volume's state (see `cur`). The values with arrays inside are read in
    // place (`_read`), not copied: `client != nil` copied the whole writer, 100,000 times a
    // soak run.
    var v: VolumeSim { vols[cur] }
    var volume: VolumeInfo { vols[cur].volume }
    var client: VolumeClient? { _read { yield vols[cur].client } _modify { let s = vols[cur]; yield &s.client } }
    var clientID: NodeID { get { vols[cur].clientID } set { vols[cur].clientID = newValue } }
    var clientIncarnation: UInt64 { get { vols[cur].clientIncarnation } set { vols[cur].clientIncarnation = newValue } }
    var clientTimerAt: Instant? { get { vols[cur].clientTimerAt } set { vols[cur].clientTimerAt = newValue } }
    var writerDown: Bool { get { vols[cur].writerDown } set { vols[cur].writerDown = newValue } }
    var model: SectorModel { _read { yield vols[cur].model } _modify { let s = vols[cur]; yield &s.model } }
    var inflight: [OpID: InflightOp] { _read { yield vols[cur].inflight } _modify { let s = vols[cur]; yield &s.inflight } }
    var sectorBusy: [UInt8] { _read { yield vols[cur].sectorBusy } _modify { let s = vols[cur]; yield &s.sectorBusy } }
    var slotGeneration: UInt64 { get { vols[cur].slotGeneration } set { vols[cur].slotGeneration = newValue } }
    var finalNextRead: UInt64 { get { vols[cur].finalNextRead } set { vols[cur].finalNextRead = newValue } }
    var writerSkew: Int64 { get { vols[cur].writerSkew } set { vols[cur].writerSkew = newValue } }
    var lastWriterNow: Instant { get { vols[cur].lastWriterNow } set { vols[cur].lastWriterNow = newValue } }
    var armed: FaultKind? { get { vols[cur].armed } set { vols[cur].armed = newValue } }
    var armedDuration: Nanoseconds? { get { vols[cur].armedDuration } set { vols[cur].armedDuration = newValue } }
    var paused: VolumeClient? { _read { yield vols[cur].paused } _modify { let s = vols[cur]; yield &s.paused } }
    var pausedUntil: Instant? { get { vols[cur].pausedUntil } set { vols[cur].pausedUntil = newValue } }
    var pausedResumeWhenSuccessorReady: Bool {
        get { vols[cur].pausedResumeWhenSuccessorReady } set { vols[cur].pausedResumeWhenSuccessorReady = newValue }
    }
    var pausedHeld: [(Instant, Event)] { _read { yield vols[cur].pausedHeld } _modify { let s = vols[cur]; yield &s.pausedHeld } }
    var grantedEpoch: UInt64 { get { vols[cur].grantedEpoch } set { vols[cur].grantedEpoch = newValue } }
    var lastCommit: (epoch: UInt64, generation: UInt64)? { get { vols[cur].lastCommit } set { vols[cur].lastCommit = newValue } }
    /// Every volume has no op in flight.
    var allIdle: Bool { vols.allSatisfy { $0.inflight.isEmpty } }

    struct InflightOp {
        enum Kind { case read, write(fua: Bool), trim, flush(mark: UInt64) }
        var kind: Kind
        var slot: Int
        var firstSector: UInt64
        var sectorCount: Int
        var value: UInt64
    }

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
                         fallbackPuts: fallbackPuts + vols.reduce(0) { $0 + ($1.client?.stats.putFallbacks ?? 0) })
    }

    // MARK: Dispatch

    func dispatch(_ e: Event) {
        switch e {
        case .deliver(let from, let to, let msg, let si, let ri):
            traceEvent(.messageDelivered, UInt64(from.raw) << 20 | UInt64(to.raw), msg.kindCode)
            if traceSink != nil { traceNote("    \(Self.detail(msg))") }
            deliver(from: from, to: to, msg, senderIncarnation: si, receiverIncarnation: ri)
        case .disk(let n, let inc, let id, let req):
            traceEvent(.diskOpDone, UInt64(n), id.raw)
            guard slots[n].incarnation == inc, slots[n].node != nil else { return }
            let completion: DiskCompletion
            switch req {
            case .read(let offset, let length):
                if !slots[n].disk.validRange(offset, length) {
                    completion = .read(.failure(.outOfRange(offset: offset, length: length)))
                } else if let bytes = slots[n].disk.readChecked(offset: offset, length: length) {
                    completion = .read(.success(bytes))
                } else {
                    traceNote("node\(n + 1)  latent sector error reading \(length) bytes at \(offset)")
                    completion = .read(.failure(.ioError(offset: offset)))
                }
            case .write:
                slots[n].disk.completeWrite(id)
                completion = .written(.success(()))
            case .sync:
                slots[n].disk.sync()
                completion = .synced(.success(()))
            }
            let outputs = slots[n].node!.diskCompleted(id, completion)
            perform(node: n, outputs)
        case .metaRequest(let writer, let inc, let id, let req):
            traceEvent(.metadataRequest, id.raw)
            cur = volumeIndex(ofWriter: writer)
            if writer != clientID, holdForPaused(writer, e) { return }
            guard !network.isBlocked(writer, NodeID(0)), let response = store.handle(req, now: now) else { return }
            if case .txn(let r) = response, r.succeeded, case .txn(let t) = req { checkFencing(t) }
            var delay = network.latency()
            if metadataSlow.value > 0 { delay = delay + metaSlowRandom.duration(.zero, metadataSlow) }
            queue.push(now + delay, .metaReply(writer: writer, incarnation: inc, id, response))
        case .metaReply(let writer, let inc, let id, let response):
            traceEvent(.metadataReply, id.raw, UInt64(writer.raw))
            cur = volumeIndex(ofWriter: writer)
            if writer != clientID {
                if holdForPaused(writer, e) { return }
                guard let p = paused, p.clientID == writer, !network.isBlocked(NodeID(0), writer) else { return }
                handlePaused(paused!.metadataReply(id, response, now: writerNow()))
                return
            }
            guard inc == clientIncarnation, client != nil, !network.isBlocked(NodeID(0), clientID) else { return }
            handleClient(client!.metadataReply(id, response, now: writerNow()))
        case .clientTick(let writer, let inc, let at):
            traceEvent(.writerTick, UInt64(writer.raw))
            cur = volumeIndex(ofWriter: writer)
            if writerNow() < at {
                // The writer's clock was set back after this tick was planned: not due yet for it.
                queue.push(max(now + Nanoseconds(1000), virtualTime(ofWriterTime: at)), e)
                return
            }
            if writer != clientID {
                if holdForPaused(writer, e) { return }
                guard let p = paused, p.clientID == writer else { return }
                handlePaused(paused!.tick(now: writerNow()))
                return
            }
            guard inc == clientIncarnation, client != nil else { return }
            clientTimerAt = nil
            handleClient(client!.tick(now: writerNow()))
        case .leaseTick:
            traceEvent(.leaseTick)
            store.tick(now: now)
            if finalPhase == nil || !queue.isEmpty { queue.push(now + Nanoseconds.milliseconds(100), .leaseTick) }
        case .workload(let vol, let slot, let gen):
            traceEvent(.workloadOp, UInt64(slot), UInt64(vol))
            cur = vol
            if gen == slotGeneration { issueOp(slot: slot) }
        case .fault:
            traceEvent(.faultTimer)
            if loadRunning && livenessFrom == nil { injectFault() }
        case .heal(let h):
            traceEvent(.heal)
            heal(h)
        case .endOfLoad:
            traceEvent(.endOfLoad)
            beginFinal()
        case .finalCheck(let step):
            traceEvent(.finalStep)
            finalStep(step)
        case .scheduled(let i):
            let f = options.schedule[i]
            traceEvent(.scheduledFault, UInt64(i))
            if loadRunning && livenessFrom == nil {
                applyFault(f.kind, node: f.node.map { $0 - 1 }, duration: f.duration, volume: f.volume.map { $0 - 1 })
            }
        case .clog(let node, let fault):
            traceEvent(.clog, UInt64(node.raw))
            if livenessFrom == nil && finalPhase == nil {
                for vs in vols {
                    network.block(vs.clientID, node, fault: fault)
                    network.block(node, vs.clientID, fault: fault)
                }
            }
        case .endOfSafety:
            traceEvent(.endOfSafety)
            beginLiveness()
        case .resumePaused(let vol):
            traceEvent(.pausedWriterResumes, UInt64(vol))
            cur = vol
            resumePaused()
        case .scrub(let n, let inc):
            traceEvent(.scrub, UInt64(n))
            guard slots[n].incarnation == inc, slots[n].node != nil, let every = options.scrubInterval else { return }
            perform(node: n, slots[n].node!.scrubNext())
            if finalPhase == nil || finalPhase == .collect || !queue.isEmpty { queue.push(now + every, .scrub(node: n, incarnation: inc)) }
        case .collectorTick:
            traceEvent(.collectorTick)
            guard collector != nil else { return }
            handleCollector(collector!.tick(now: now))
        case .collectorMeta(let id, let req):
            traceEvent(.metadataRequest, id.raw)
            guard let response = store.handle(req, now: now) else { return }
            var delay = network.latency()
            if metadataSlow.value > 0 { delay = delay + metaSlowRandom.duration(.zero, metadataSlow) }
            queue.push(now + delay, .collectorMetaReply(id, response))
        case .collectorMetaReply(let id, let response):
            traceEvent(.metadataReply, id.raw, UInt64(Self.collectorID.raw))
            guard collector != nil else { return }
            handleCollector(collector!.metadataReply(id, response, now: now))
        case .ringUpdate(let vol):
            traceEvent(.ringUpdate, UInt64(vol))
            deliverRing(volume: vol)
        }
    }

    // MARK: Network

    func incarnation(of node: NodeID) -> UInt64 {
        if node == Self.collectorID { return 0 }
        if node.raw >= 1000 {
            let vs = vols[volumeIndex(ofWriter: node)]
            return node == vs.clientID ? vs.clientIncarnation : 0  // a paused writer is never restarted under its id
        }
        return slots[Int(node.raw) - 1].incarnation
    }

    func send(from: NodeID, to: NodeID, _ msg: PeerMessage) {
        let si = incarnation(of: from), ri = incarnation(of: to)
        let (first, duplicate) = network.deliveries()
        if let first { queue.push(now + first, .deliver(from: from, to: to, msg, senderIncarnation: si, receiverIncarnation: ri)) }
        if let duplicate { queue.push(now + duplicate, .deliver(from: from, to: to, msg, senderIncarnation: si, receiverIncarnation: ri)) }
    }

    func deliver(from: NodeID, to: NodeID, _ msg: PeerMessage, senderIncarnation: UInt64, receiverIncarnation: UInt64) {
        // A crash resets connections: messages across a crash are lost.
        guard incarnation(of: from) == senderIncarnation, incarnation(of: to) == receiverIncarnation,
              !network.isBlocked(from, to) else { return }
        if to == Self.collectorID {
            if collector != nil { handleCollector(collector!.receive(from: from, msg, now: now)) }
            return
        }
        if to.raw >= 1000 { cur = volumeIndex(ofWriter: to) }
        if to == clientID {
            guard client != nil else { return }
            handleClient(client!.receive(from: from, msg, now: writerNow()))
        } else if to.raw >= 1000 {
            // A paused writer's connections hold what arrives until it runs again.
            if holdForPaused(to, .deliver(from: from, to: to, msg, senderIncarnation: senderIncarnation, receiverIncarnation: receiverIncarnation)) { return }
            guard let p = paused, p.clientID == to else { return }
            handlePaused(paused!.receive(from: from, msg, now: writerNow()))
        } else {
            let n = Int(to.raw) - 1
            guard slots[n].node != nil else { return }
            let outputs = slots[n].node!.receive(from: from, msg)
            perform(node: n, outputs)
        }
    }

    // MARK: Storage nodes

    func bootNode(_ n: Int) {
        let config = slots[n].config
        let regions = BlockStore.journalRegions(config: config)
        let a = slots[n].disk.readDurable(offset: regions.a.offset, length: regions.a.length)
        let b = slots[n].disk.readDurable(offset: regions.b.offset, length: regions.b.length)
        let store = BlockStore.recover(config: config, regionA: a, regionB: b)
        slots[n].node = StorageNode(id: slots[n].id, store: store)
        slots[n].diskBusyUntil = now
        let outputs = slots[n].node!.start()
        perform(node: n, outputs)
        if let every = options.scrubInterval {
            queue.push(now + every, .scrub(node: n, incarnation: slots[n].incarnation))
        }
    }

    func perform(node n: Int, _ outputs: [StorageNode.Output]) {
        for o in outputs {
            switch o {
            case .send(let to, let msg):
                send(from: slots[n].id, to: to, msg)
            case .disk(let id, let req):
                var service: Nanoseconds
                switch req {
                case .read(_, let l): service = slots[n].random.duration(.microseconds(20), .microseconds(120)) + Nanoseconds(UInt64(l) / 4)
                case .write(let offset, let bytes):
                    precondition(slots[n].disk.validRange(offset, bytes.count), "write outside the disk on \(slots[n].id)")
                    slots[n].disk.issueWrite(id, offset: misdirect(node: n, offset: offset, length: bytes.count), bytes: bytes)
                    service = slots[n].random.duration(.microseconds(20), .microseconds(150)) + Nanoseconds(UInt64(bytes.count) / 4)
                case .sync: service = slots[n].random.duration(.microseconds(100), .microseconds(1500))
                }
                if slots[n].slowFactor > 1 { service = service * slots[n].slowFactor }
                let start = max(now, slots[n].diskBusyUntil)
                slots[n].diskBusyUntil = start + service
                queue.push(start + service, .disk(node: n, incarnation: slots[n].incarnation, id, req))
            }
        }
    }

    func crashNode(_ n: Int) {
        guard slots[n].node != nil else { return }
        slots[n].incarnation += 1
        slots[n].node = nil
        slots[n].disk.crash(random: &slots[n].random, survivalProbability: options.unsyncedSurvivalProbability,
                            tearProbability: options.tornWriteProbability)
    }
}
