/// The garbage collector: a periodic mark-and-sweep over every storage node, which also
/// repairs missing copies and rebalances blocks onto the ring's placements. Deterministic and
/// sans-I/O, like `VolumeClient`: messages, metadata responses and ticks in, `CollectorOutput`s
/// out (the state's nested types and the outputs are in `Collector+Types`).
///
/// A pass, one phase per file: `+Inventory` (every node's refs), `+Metadata` (every volume's
/// info, epoch and head at one revision), `+Marking` (each committed map), `+Sweep` (deletes
/// what has been garbage for `grace`; see `isCollectible`), `+Repair` (copies refs short of
/// copies or off their placement), `+Trimming` (deletes the extra copies). A node or volume
/// that cannot be read is left out of the pass, and nothing of it is deleted.
///
/// Design, and why inventory comes before metadata: docs/storage-core.md, "Garbage collection".
public struct Collector: Sendable {
    public let id: NodeID
    public let config: CollectorConfig
    /// The ring this pass works with; a newer one (`updateRing`) takes over at the next pass.
    public internal(set) var ring: Ring
    var pendingRing: Ring?
    /// When the current ring took over (clients learn a new ring within `ringSettle`).
    var ringSince: Instant = .zero
    /// The ring version in the metadata store at this pass (nil: none recorded). Blocks are
    /// moved and extra copies deleted only when it is ours: two collectors with different
    /// rings could otherwise each delete the copy the other keeps.
    var storedRingVersion: UInt64?
    var now: Instant = .zero
    var out: [CollectorOutput] = []
    var timerSetFor: Instant?

    var stage = Stage.idle
    var nextPassAt: Instant = .zero
    var passStartedAt: Instant = .zero

    // Inventory.
    var inventory: [NodeID: [BlockRef]] = [:]
    var listing: [NodeID: ListState] = [:]
    var listRPCs: [RPCID: (node: NodeID, deadline: Instant)] = [:]

    // Metadata and marking.
    var metaRequest: (id: MetaRequestID, deadline: Instant, attempts: Int)?
    var nextMeta: UInt64 = 1
    var volumes: [UInt64: VolumeState] = [:]
    /// Refs that clones' maps reach under a volume id no info names (kept, never collected).
    var orphansReached: [BlockRef: UInt32] = [:]
    /// Some key under the volumes prefix did not decode: deleted-volume garbage is not
    /// collected this pass (a corrupt info must not look like a deleted volume).
    var metadataDoubtful = false
    /// Times this pass re-read the heads because a map block was gone.
    var remarks = 0

    // Block fetches (roots and pages).
    var rpcs: [RPCID: Fetch] = [:]
    var nextRPC: UInt64 = 1

    // Repair.
    /// Copies waiting, per target node (each popped from the end: repairs before moves,
    /// oldest refs first), started round-robin over the targets.
    var copyQueues: [NodeID: [Copy]] = [:]
    var copyTargets: [NodeID] = []
    var copyCursor = 0
    var copiesQueued = 0
    /// Refs short of copies at the last pass. A ref is repaired only when two passes in a row
    /// find it short: a commit that lands between the inventory and the head read names refs
    /// whose copies went to nodes after they were listed, which look short but are not.
    var shortLastPass: Set<BlockRef> = []
    var copyRPCs: [RPCID: CopyRPC] = [:]
    /// When each target node may receive its next copy (`repairBytesPerSecond` per node).
    var nextCopyAt: [NodeID: Instant] = [:]
    /// Since when each node has not answered a listing (cleared when it answers).
    var downSince: [NodeID: Instant] = [:]
    var passShort = 0, passCopied = 0, passCopyFailures = 0, passUnrepairable = 0, passDeleted = 0
    var passBytesCopied: UInt64 = 0
    var passMisplaced = 0, passMoved = 0, passTrimmed = 0
    var passBytesMoved: UInt64 = 0
    /// Nodes that refused a copy for lack of space, until when no block is moved to them.
    var fullUntil: [NodeID: Instant] = [:]
    /// Refs found off their placement at the last pass (moved at the second, like repairs).
    var misplacedLastPass: Set<BlockRef> = []
    /// Reachable refs with a copy on each draining node this pass (listed nodes only).
    var passDraining: [NodeID: Int] = [:]

    // Trimming: extra copies (off the placement) of refs whose every placement node holds
    // one. The placement copies are synced first; an extra is deleted only once all of them
    // answered that they hold it durably.
    var trims: [Trim] = []
    var trimSyncs: [RPCID: (node: NodeID, refs: [BlockRef], deadline: Instant, attempts: Int)] = [:]
    var trimConfirmed: [BlockRef: Set<NodeID>] = [:]
    var repairStartedAt: Instant = .zero
    var passRepairTime = Nanoseconds.zero
    var repairTotal = 0

    /// When each piece of garbage was first seen (per node); deleted once older than `grace`.
    var garbageSince: [NodeID: [BlockRef: Instant]] = [:]

    public internal(set) var stats = Stats()

    public init(id: NodeID, ring: Ring, config: CollectorConfig) {
        self.id = id
        self.ring = ring
        self.config = config
    }

    /// A newer ring (a join, drain or removal). It takes over at the next pass, so a pass
    /// judges every ref against one ring.
    public mutating func updateRing(_ newRing: Ring, now: Instant) -> [CollectorOutput] {
        self.now = now
        if newRing.version > (pendingRing ?? ring).version { pendingRing = newRing }
        if stage == .idle { adoptPendingRing() }
        return finish()
    }

    mutating func adoptPendingRing() {
        guard let r = pendingRing else { return }
        pendingRing = nil
        ring = r
        ringSince = now
        // What was short or misplaced under the old ring is judged afresh.
        shortLastPass = []
        misplacedLastPass = []
    }

    // MARK: - Entry points

    public mutating func start(now: Instant) -> [CollectorOutput] {
        self.now = now
        nextPassAt = now + config.firstPassDelay
        return finish()
    }

    public mutating func tick(now: Instant) -> [CollectorOutput] {
        self.now = now
        if timerSetFor.map({ $0 <= now }) ?? false { timerSetFor = nil }
        switch stage {
        case .idle:
            if now >= nextPassAt { beginPass() }
        case .listing, .marking:
            expireRPCs()
        case .repairing:
            expireCopies()
            pumpCopies()
        case .trimming:
            expireTrimSyncs()
        case .metadata:
            if let m = metaRequest, now >= m.deadline { retryMetadata() }
        }
        return finish()
    }

    public mutating func receive(from node: NodeID, _ message: PeerMessage, now: Instant) -> [CollectorOutput] {
        self.now = now
        switch message {
        case .listReply(let rpc, let refs, let complete): listed(rpc, from: node, refs, complete: complete)
        case .getReply(let rpc, let result):
            if copyRPCs[rpc] != nil { copyFetched(rpc, from: node, result) } else { fetched(rpc, from: node, result) }
        case .putReply(let rpc, let result): copyPut(rpc, from: node, result)
        case .syncReply(let rpc, let present): trimSynced(rpc, from: node, present)
        default: break
        }
        return finish()
    }

    public mutating func metadataReply(_ id: MetaRequestID, _ response: MetaResponse, now: Instant) -> [CollectorOutput] {
        self.now = now
        if stage == .metadata, let m = metaRequest, m.id == id { metadataReplied(response) }
        return finish()
    }

    /// Starts a pass now if none is running (an operator's request, or a test's).
    public mutating func requestPass(now: Instant) -> [CollectorOutput] {
        self.now = now
        if stage == .idle { beginPass() }
        return finish()
    }

    /// Copies of the repair under way (nil when the pass is not repairing).
    public var repairProgress: RepairProgress? {
        guard stage == .repairing else { return nil }
        return RepairProgress(total: repairTotal, copied: passCopied + passMoved, failed: passCopyFailures,
                              bytesCopied: passBytesCopied + passBytesMoved,
                              startedAt: repairStartedAt)
    }

    /// Whether a pass is under way (for status and tests).
    public var passInProgress: Bool { stage != .idle }

    // MARK: - Pass end

    mutating func endPass(sweep: Bool, deleted: Int = 0) {
        stats.passes += 1
        let listed = inventory.values.reduce(0) { $0 + $1.count }
        // Garbage waiting out the grace period on the nodes listed this pass.
        let pending = inventory.keys.reduce(0) { $0 + (garbageSince[$1]?.count ?? 0) }
        out.append(.passCompleted(CollectorPass(completed: sweep, refsListed: listed, refsDeleted: deleted,
                                                garbagePending: pending,
                                                nodesSkipped: ring.members.count - inventory.count,
                                                volumesSkipped: volumes.values.filter(\.failed).count,
                                                underReplicated: passShort, copiesMade: passCopied,
                                                copiesFailed: passCopyFailures, bytesCopied: passBytesCopied,
                                                unrepairable: passUnrepairable,
                                                repairTime: passRepairTime,
                                                nodesResting: ring.members.filter { m in
                                                    inventory[m.node] == nil && (downSince[m.node].map { now - $0 < config.repairGrace } ?? true)
                                                }.count,
                                                ringVersion: ring.version,
                                                misplaced: passMisplaced, movesMade: passMoved, bytesMoved: passBytesMoved,
                                                copiesTrimmed: passTrimmed,
                                                drained: sweep ? drainedNodes() : [])))
        passShort = 0
        passCopied = 0
        passCopyFailures = 0
        passBytesCopied = 0
        passUnrepairable = 0
        passDeleted = 0
        passMisplaced = 0
        passMoved = 0
        passBytesMoved = 0
        passTrimmed = 0
        passRepairTime = .zero
        passDraining = [:]
        trims = []
        trimSyncs = [:]
        trimConfirmed = [:]
        copyQueues = [:]
        copyTargets = []
        copiesQueued = 0
        copyRPCs = [:]
        stage = .idle
        metaRequest = nil
        rpcs = [:]
        listRPCs = [:]
        inventory = [:]
        listing = [:]
        volumes = [:]
        orphansReached = [:]
        nextPassAt = now + config.passInterval
    }

    /// Draining nodes that hold no reachable block: listed this pass, with the ring in force
    /// (and settled: no client still writes to them) and every volume marked.
    func drainedNodes() -> [NodeID] {
        guard storedRingVersion == ring.version, now - ringSince >= config.ringSettle,
              !metadataDoubtful, !volumes.isEmpty || inventory.values.allSatisfy(\.isEmpty),
              volumes.values.allSatisfy({ !$0.failed }) else { return [] }
        return ring.members.filter { $0.draining && inventory[$0.node] != nil && passDraining[$0.node, default: 0] == 0 }.map(\.node)
    }

    mutating func finish() -> [CollectorOutput] {
        let next = stage == .idle ? nextPassAt : now + config.tickInterval
        if timerSetFor == nil || timerSetFor! <= now || next < timerSetFor! {
            timerSetFor = next
            out.append(.timer(at: next))
        }
        let result = out
        out.removeAll(keepingCapacity: true)
        return result
    }
}
