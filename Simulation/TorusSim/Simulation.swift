import TorusCore

/// One deterministic simulation run: storage nodes on `SimDisk`s, a volume client, a simulated
/// metadata store and a network, all driven by one event queue in virtual time.
///
/// Same options (seed included) ⇒ the same sequence of events ⇒ the same trace hash.
public final class Simulation {
    enum Event {
        case deliver(from: NodeID, to: NodeID, PeerMessage, senderIncarnation: UInt64, receiverIncarnation: UInt64)
        case disk(node: Int, incarnation: UInt64, DiskOpID, DiskRequest)
        case metaRequest(incarnation: UInt64, MetaRequestID, MetaRequest)
        case metaReply(incarnation: UInt64, MetaRequestID, MetaResponse)
        case clientTick(incarnation: UInt64)
        case leaseTick
        case workload(slot: Int, generation: UInt64)
        case fault
        case heal(Heal)
        case endOfLoad
        case finalCheck(FinalStep)
    }

    enum Heal {
        case restartNode(Int)
        case partition(UInt64)
        case metadata
        case restartWriter
    }

    enum FinalStep { case waitIdle, powerLoss, waitOpen, readBack, timeout }

    struct NodeSlot {
        var id: NodeID
        var disk: SimDisk
        var node: StorageNode?
        var incarnation: UInt64 = 0
        var random: SeededRandom
        var diskBusyUntil: Instant = .zero
    }

    let options: SimOptions
    let storeConfig: BlockStoreConfig
    let volume: VolumeInfo
    let ring: Ring
    let clientID = NodeID(1000)
    /// The writer's knobs, drawn from the seed ("buggify"): cache sizes, write-back timing.
    let clientConfig: VolumeClientConfig

    var queue = EventQueue<Event>()
    var now: Instant = .zero
    var trace = StableHasher()
    var events: UInt64 = 0

    var faultRandom: SeededRandom
    var workRandom: SeededRandom
    var clientSeeds: SeededRandom

    var slots: [NodeSlot] = []
    var client: VolumeClient?
    var clientIncarnation: UInt64 = 0
    var clientTimerAt: Instant?
    var store = SimMetadataStore()
    var network: SimNetwork
    var nextFaultID: UInt64 = 1

    // Workload and checker state.
    var model: SectorModel
    var inflight: [OpID: InflightOp] = [:]
    var sectorBusy: [UInt8]
    var nextOp: UInt64 = 1
    var nextWriteValue: UInt64 = 1
    var slotGeneration: UInt64 = 0
    var loadRunning = true
    var finalPhase: FinalStep?
    var finalNextRead: UInt64 = 0
    var violation: SectorModel.Violation?
    var opsCompleted = 0
    var readErrors = 0
    var faultsInjected = 0
    var writerRestarts = 0
    var commits = 0
    var writerDown = false

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
        // Room for a full index snapshot (48-byte records, one per slot) plus appends.
        let slotsMax = Int(options.diskBytes) / options.blockSize
        let journalSectors = 2 * (slotsMax * 48 / 4096 + 2) + 64
        storeConfig = BlockStoreConfig(geometry: DiskGeometry(sectorSize: 4096, capacityBytes: options.diskBytes),
                                       blockSize: options.blockSize, journalRegionSectors: journalSectors)
        volume = VolumeInfo(name: "vol0", id: 1, sizeBytes: options.volumeBytes, blockSize: options.blockSize,
                            replication: options.replication)
        ring = Ring(members: (1...options.nodes).map { RingMember(node: NodeID(UInt32($0))) })
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
        clientConfig = cfg
        model = SectorModel(sectorCount: Int(options.volumeBytes) / SectorModel.sectorSize)
        sectorBusy = Array(repeating: 0, count: Int(options.volumeBytes) / SectorModel.sectorSize)
        for i in 0..<options.nodes {
            let disk = SimDisk(geometry: storeConfig.geometry)
            slots.append(NodeSlot(id: NodeID(UInt32(i + 1)), disk: disk, random: root.derived(stream: 100 + UInt64(i))))
        }
    }

    /// Runs to completion and reports.
    public func run() -> SimResult {
        for i in slots.indices { bootNode(i) }
        startWriter()
        for s in 0..<options.queueDepth { queue.push(now + thinkTime(), .workload(slot: s, generation: slotGeneration)) }
        queue.push(now + Nanoseconds.milliseconds(100), .leaseTick)
        if options.faults { queue.push(now + nextFaultDelay(), .fault) }
        queue.push(Instant.zero + options.duration, .endOfLoad)
        while violation == nil, let (t, e) = queue.pop() {
            precondition(t >= now, "time went backwards")
            now = t
            events += 1
            dispatch(e)
            // Internal invariants, checked from outside after every step (the writer's are
            // cheap; a node's walks its slot table, so nodes take turns every 1,000 events).
            if events % 16 == 0 { client?.checkInvariants() }
            if events % 1000 == 0 {
                let n = Int(events / 1000) % slots.count
                slots[n].node?.checkInvariants()
            }
            if case .finalCheck(.timeout) = e { break }
            if finalPhase == .waitIdle && inflight.isEmpty { finalStep(.powerLoss) }
            if finalPhase == nil && loadRunning == false && inflight.isEmpty && queue.isEmpty { break }
        }
        if violation == nil && finalPhase != nil {
            violation = SectorModel.Violation(promise: .liveness, detail: "final read-back did not finish (stuck at \(finalPhase!))")
        }
        return SimResult(seed: options.seed, traceHash: trace.value, violation: violation?.description,
                         brokenPromise: violation?.promise.rawValue, simulatedSeconds: now.seconds, events: events,
                         opsCompleted: opsCompleted, readsChecked: model.readsChecked, readErrors: readErrors,
                         faultsInjected: faultsInjected, writerRestarts: writerRestarts, commits: commits,
                         knobs: "cache=\(clientConfig.cacheBytesMax / options.blockSize)blk"
                            + " dirty-high=\(clientConfig.dirtyBytesHigh / options.blockSize)blk"
                            + " writeback-delay=\(clientConfig.writebackDelay.value / 1_000_000)ms"
                            + " writebacks-max=\(clientConfig.writebacksInFlightMax)"
                            + " rpc-timeout=\(clientConfig.rpcTimeout.value / 1_000_000)ms")
    }

    // MARK: Dispatch

    func traceEvent(_ code: UInt64, _ a: UInt64 = 0, _ b: UInt64 = 0) {
        trace.combine(now.nanoseconds)
        trace.combine(code << 56 ^ a)
        trace.combine(b)
    }

    func dispatch(_ e: Event) {
        switch e {
        case .deliver(let from, let to, let msg, let si, let ri):
            traceEvent(1, UInt64(from.raw) << 20 | UInt64(to.raw), msg.kindCode)
            deliver(from: from, to: to, msg, senderIncarnation: si, receiverIncarnation: ri)
        case .disk(let n, let inc, let id, let req):
            traceEvent(2, UInt64(n), id.raw)
            guard slots[n].incarnation == inc, slots[n].node != nil else { return }
            let completion: DiskCompletion
            switch req {
            case .read(let offset, let length):
                completion = .read(slots[n].disk.validRange(offset, length)
                    ? .success(slots[n].disk.read(offset: offset, length: length))
                    : .failure(.outOfRange(offset: offset, length: length)))
            case .write:
                slots[n].disk.completeWrite(id)
                completion = .written(.success(()))
            case .sync:
                slots[n].disk.sync()
                completion = .synced(.success(()))
            }
            let outputs = slots[n].node!.diskCompleted(id, completion)
            perform(node: n, outputs)
        case .metaRequest(let inc, let id, let req):
            traceEvent(3, id.raw)
            guard !network.isBlocked(clientID, NodeID(0)), let response = store.handle(req, now: now) else { return }
            if case .txn(let r) = response, r.succeeded, case .txn(let t) = req,
               t.success.contains(where: { if case .put(let k, _, _) = $0 { return k == VolumeInfo.headKey(volume.name) } else { return false } }) {
                commits += 1
            }
            queue.push(now + network.latency(), .metaReply(incarnation: inc, id, response))
        case .metaReply(let inc, let id, let response):
            traceEvent(4, id.raw)
            guard inc == clientIncarnation, client != nil, !network.isBlocked(NodeID(0), clientID) else { return }
            handleClient(client!.metadataReply(id, response, now: now))
        case .clientTick(let inc):
            traceEvent(5)
            guard inc == clientIncarnation, client != nil else { return }
            clientTimerAt = nil
            handleClient(client!.tick(now: now))
        case .leaseTick:
            traceEvent(6)
            store.tick(now: now)
            if finalPhase == nil || !queue.isEmpty { queue.push(now + Nanoseconds.milliseconds(100), .leaseTick) }
        case .workload(let slot, let gen):
            traceEvent(7, UInt64(slot))
            if gen == slotGeneration { issueOp(slot: slot) }
        case .fault:
            traceEvent(8)
            if loadRunning { injectFault() }
        case .heal(let h):
            traceEvent(9)
            heal(h)
        case .endOfLoad:
            traceEvent(10)
            beginFinal()
        case .finalCheck(let step):
            traceEvent(11)
            finalStep(step)
        }
    }

    // MARK: Network

    func incarnation(of node: NodeID) -> UInt64 {
        node == clientID ? clientIncarnation : slots[Int(node.raw) - 1].incarnation
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
        if to == clientID {
            guard client != nil else { return }
            handleClient(client!.receive(from: from, msg, now: now))
        } else {
            let n = Int(to.raw) - 1
            guard slots[n].node != nil else { return }
            let outputs = slots[n].node!.receive(from: from, msg)
            perform(node: n, outputs)
        }
    }

    // MARK: Storage nodes

    func bootNode(_ n: Int) {
        let regions = BlockStore.journalRegions(config: storeConfig)
        let a = slots[n].disk.readDurable(offset: regions.a.offset, length: regions.a.length)
        let b = slots[n].disk.readDurable(offset: regions.b.offset, length: regions.b.length)
        let store = BlockStore.recover(config: storeConfig, regionA: a, regionB: b)
        slots[n].node = StorageNode(id: slots[n].id, store: store)
        slots[n].diskBusyUntil = now
        let outputs = slots[n].node!.start()
        perform(node: n, outputs)
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
                    slots[n].disk.issueWrite(id, offset: offset, bytes: bytes)
                    service = slots[n].random.duration(.microseconds(20), .microseconds(150)) + Nanoseconds(UInt64(bytes.count) / 4)
                case .sync: service = slots[n].random.duration(.microseconds(100), .microseconds(1500))
                }
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
        slots[n].disk.crash(random: &slots[n].random, survivalProbability: 0.5, tearProbability: 0.5)
    }
}
