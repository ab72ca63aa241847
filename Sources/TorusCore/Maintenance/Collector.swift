/// The garbage collector: a periodic mark-and-sweep over every storage node.
///
/// A pass:
/// 1. **Inventory.** Lists every ref each node holds (`listBlocks`, paged). A node that does
///    not answer is left out of this pass (nothing of it is deleted).
/// 2. **Metadata.** Reads every volume's info, epoch and head in one range (one revision).
/// 3. **Mark.** Loads each volume's committed map (root, then pages) from its replicas,
///    verifying each against the checksum the head or root names. A volume whose map cannot
///    be read is left out of this pass.
/// 4. **Sweep.** A listed ref is garbage when no head reaches it and no writer may still
///    commit it (see `isCollectible`), or when its volume no longer exists. Garbage is deleted
///    only once it has been garbage for `grace` (read-only clients serve a head for a short
///    while after a newer one lands), with `deleteBlocks` in batches.
///
/// Inventory comes before metadata on purpose: a ref listed before the heads were read is
/// judged against heads at least as new as the ref, and a volume whose info was read after
/// its blocks were listed existed when they were written.
///
/// Deterministic and sans-I/O, like `VolumeClient`: messages, metadata responses and ticks in,
/// `CollectorOutput`s out.
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

    enum Stage: Sendable, Equatable { case idle, listing, metadata, marking, repairing, trimming }
    var stage = Stage.idle
    var nextPassAt: Instant = .zero
    var passStartedAt: Instant = .zero

    // Inventory.
    var inventory: [NodeID: [BlockRef]] = [:]
    var listing: [NodeID: ListState] = [:]
    var listRPCs: [RPCID: (node: NodeID, deadline: Instant)] = [:]
    struct ListState: Sendable {
        var after: BlockRef?
        var attempts = 0
        var done = false
    }

    // Metadata and marking.
    var metaRequest: (id: MetaRequestID, deadline: Instant, attempts: Int)?
    var nextMeta: UInt64 = 1
    var volumes: [UInt64: VolumeState] = [:]
    /// Some key under the volumes prefix did not decode: deleted-volume garbage is not
    /// collected this pass (a corrupt info must not look like a deleted volume).
    var metadataDoubtful = false
    /// Times this pass re-read the heads because a map block was gone.
    var remarks = 0
    struct VolumeState: Sendable {
        var info: VolumeInfo
        var epochKey: UInt64 = 0
        var head: VolumeHead?
        /// Every ref the committed head reaches, with the CRC-32C its map names.
        var reachable: [BlockRef: UInt32] = [:]
        var fetchesLeft = 0
        var failed = false
    }

    // Block fetches (roots and pages).
    var rpcs: [RPCID: Fetch] = [:]
    var nextRPC: UInt64 = 1
    struct Fetch: Sendable {
        enum Kind: Sendable, Equatable { case root, page(Int) }
        var volume: UInt64
        var kind: Kind
        var ref: BlockRef
        var crc: UInt32
        var nodes: [NodeID]
        var next: Int
        var node: NodeID
        var deadline: Instant
    }

    // Repair.
    struct Copy: Sendable {
        var ref: BlockRef
        var crc: UInt32
        var sources: [NodeID]
        var nextSource: Int
        var target: NodeID
        /// Further targets if this one refuses (full, failing).
        var spares: [NodeID]
        /// The verified bytes, once fetched.
        var data: [UInt8]?
        /// Rebalancing (to a placement node of the current ring), not repair.
        var move = false
    }
    struct CopyRPC: Sendable {
        var copy: Copy
        var node: NodeID
        var deadline: Instant
    }
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
    struct Trim: Sendable {
        var ref: BlockRef
        var home: [NodeID]
        var extras: [NodeID]
    }
    var trims: [Trim] = []
    var trimSyncs: [RPCID: (node: NodeID, refs: [BlockRef], deadline: Instant, attempts: Int)] = [:]
    var trimConfirmed: [BlockRef: Set<NodeID>] = [:]
    var repairStartedAt: Instant = .zero
    var passRepairTime = Nanoseconds.zero
    var repairTotal = 0

    /// When each piece of garbage was first seen (per node); deleted once older than `grace`.
    var garbageSince: [NodeID: [BlockRef: Instant]] = [:]

    public internal(set) var stats = Stats()
    public struct Stats: Sendable, Equatable {
        public var passes = 0
        public var refsListed = 0
        public var refsDeleted = 0
        public var nodesSkipped = 0
        public var volumesSkipped = 0
        public var copiesMade = 0
        public var bytesCopied: UInt64 = 0
        /// Rebalancing: copies made to placement nodes, bytes, and extra copies deleted.
        public var movesMade = 0
        public var bytesMoved: UInt64 = 0
        public var copiesTrimmed = 0
    }

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

    // MARK: - Inventory

    /// Per-pass state starts empty: `endPass` clears it.
    mutating func beginPass() {
        adoptPendingRing()
        stage = .listing
        passStartedAt = now
        for m in ring.members.map(\.node).sorted() {
            listing[m] = ListState()
            inventory[m] = []
            sendList(m)
        }
    }

    mutating func sendList(_ node: NodeID) {
        let rpc = RPCID(nextRPC)
        nextRPC += 1
        listRPCs[rpc] = (node, now + config.rpcTimeout)
        out.append(.send(to: node, .listBlocks(rpc, after: listing[node]!.after, limit: config.listBatchRefs)))
    }

    mutating func listed(_ rpc: RPCID, from node: NodeID, _ refs: [BlockRef], complete: Bool) {
        guard stage == .listing, let pending = listRPCs[rpc], pending.node == node else { return }
        listRPCs[rpc] = nil
        var l = listing[node]!
        // Refs come in order after `after`; anything else is a confused node: skip it.
        if let first = refs.first, let after = l.after, first <= after { return skipNode(node) }
        inventory[node]!.append(contentsOf: refs)
        stats.refsListed += refs.count
        downSince[node] = nil
        l.attempts = 0
        if complete || refs.isEmpty {
            l.done = true
            listing[node] = l
        } else {
            l.after = refs.last
            listing[node] = l
            sendList(node)
        }
        if listing.values.allSatisfy(\.done) { beginMetadata() }
    }

    mutating func skipNode(_ node: NodeID) {
        stats.nodesSkipped += 1
        if downSince[node] == nil { downSince[node] = passStartedAt }
        inventory[node] = nil
        listing[node]!.done = true
        for (rpc, l) in listRPCs where l.node == node { listRPCs[rpc] = nil }
        if listing.values.allSatisfy(\.done) { beginMetadata() }
    }

    // MARK: - Metadata

    mutating func beginMetadata() {
        guard stage == .listing else { return }
        remarks = 0
        stage = .metadata
        sendMetadata(attempts: 0)
    }

    mutating func sendMetadata(attempts: Int) {
        let id = MetaRequestID(nextMeta)
        nextMeta += 1
        metaRequest = (id, now + config.metadataTimeout, attempts)
        let txn = MetaTxn(compares: [], success: [.range(key: VolumeInfo.volumesPrefix, prefix: true),
                                                  .range(key: Ring.versionKey, prefix: false)], failure: [])
        out.append(.metadata(id, .txn(txn)))
    }

    mutating func retryMetadata() {
        guard let m = metaRequest else { return }
        if m.attempts + 1 >= config.attemptsMax { return endPass(sweep: false) }
        sendMetadata(attempts: m.attempts + 1)
    }

    mutating func metadataReplied(_ response: MetaResponse) {
        guard case .txn(let r) = response, r.succeeded, r.results.count == 2, case .range(let kvs) = r.results[0],
              case .range(let ringKV) = r.results[1] else {
            return retryMetadata()
        }
        metaRequest = nil
        storedRingVersion = ringKV.first.flatMap { MetaValue.u64($0.value) }
        metadataDoubtful = false
        var infos: [String: VolumeInfo] = [:]
        var epochs: [String: UInt64] = [:]
        var heads: [String: VolumeHead] = [:]
        for kv in kvs {
            let rest = kv.key.dropFirst(VolumeInfo.volumesPrefix.count)
            guard let slash = rest.lastIndex(of: "/") else { continue }
            let name = String(rest[..<slash])
            switch rest[rest.index(after: slash)...] {
            case "info":
                if let i = VolumeInfo.decode(kv.value), i.name == name { infos[name] = i } else { metadataDoubtful = true }
            case "epoch":
                if let e = MetaValue.u64(kv.value) { epochs[name] = e } else { metadataDoubtful = true }
            case "head":
                if let h = VolumeHead.decode(kv.value) { heads[name] = h } else { metadataDoubtful = true }
            default:
                continue
            }
        }
        for (name, info) in infos {
            var v = VolumeState(info: info)
            v.epochKey = epochs[name] ?? 0
            v.head = heads[name]
            volumes[info.id] = v
        }
        // Two names with one id would make the map ambiguous: collect nothing of either.
        if Set(infos.values.map(\.id)).count != infos.count { metadataDoubtful = true }
        stage = .marking
        for id in volumes.keys.sorted() {
            guard let root = volumes[id]!.head?.root else { continue }
            let ref = root.ref(volume: id, index: BlockRef.rootIndex)
            volumes[id]!.reachable[ref] = root.crc
            startFetch(volume: id, kind: .root, ref: ref, crc: root.crc)
        }
        if rpcs.isEmpty { sweep() }
    }

    // MARK: - Marking

    mutating func startFetch(volume: UInt64, kind: Fetch.Kind, ref: BlockRef, crc: UInt32) {
        let info = volumes[volume]!.info
        let nodes = ring.everyCandidate(for: ref.placementKey, replication: info.replication)
        volumes[volume]!.fetchesLeft += 1
        sendFetch(Fetch(volume: volume, kind: kind, ref: ref, crc: crc, nodes: nodes, next: 0, node: nodes[0],
                        deadline: now))
    }

    /// Asks the next candidate (after a full round, the volume is given up for this pass).
    mutating func sendFetch(_ f: Fetch) {
        var f = f
        guard f.next < f.nodes.count * config.attemptsMax else {
            volumes[f.volume]!.failed = true
            return fetchDone(f.volume)
        }
        f.node = f.nodes[f.next % f.nodes.count]
        f.next += 1
        f.deadline = now + config.rpcTimeout
        let rpc = RPCID(nextRPC)
        nextRPC += 1
        rpcs[rpc] = f
        out.append(.send(to: f.node, .getBlock(rpc, f.ref)))
    }

    mutating func fetched(_ rpc: RPCID, from node: NodeID, _ result: Result<[UInt8], StoreError>) {
        guard stage == .marking, let f = rpcs[rpc], f.node == node else { return }
        rpcs[rpc] = nil
        guard volumes[f.volume]?.failed == false else { return fetchDone(f.volume) }
        guard case .success(let bytes) = result, CRC32C.checksum(bytes) == f.crc else { return sendFetch(f) }
        let id = f.volume
        switch f.kind {
        case .root:
            guard let (_, pages) = BlockMapCodec.decodeRoot(bytes, volume: id) else { return sendFetch(f) }
            for (p, e) in pages.enumerated() {
                guard let e else { continue }
                let ref = e.ref(volume: id, index: BlockRef.mapIndexBase + UInt64(p))
                volumes[id]!.reachable[ref] = e.crc
                startFetch(volume: id, kind: .page(p), ref: ref, crc: e.crc)
            }
        case .page(let p):
            guard let entries = BlockMapCodec.decodePage(bytes, volume: id, page: UInt64(p)) else { return sendFetch(f) }
            let base = p * BlockMapCodec.entriesPerPage(blockSize: volumes[id]!.info.blockSize)
            for (i, e) in entries.enumerated() {
                if let e { volumes[id]!.reachable[e.ref(volume: id, index: UInt64(base + i))] = e.crc }
            }
        }
        fetchDone(id)
    }

    mutating func fetchDone(_ volume: UInt64) {
        volumes[volume]!.fetchesLeft -= 1
        guard stage == .marking && volumes.values.allSatisfy({ $0.fetchesLeft == 0 }) else { return }
        // A map that could not be read is usually one the writer replaced (and deleted) after
        // we read its head: read the heads again, a few times (the inventory stays older).
        if volumes.values.contains(where: \.failed) && remarks < config.attemptsMax {
            remarks += 1
            volumes = [:]
            stage = .metadata
            sendMetadata(attempts: 0)
            return
        }
        sweep()
    }

    /// Retries what timed out: a listing page (a node that keeps failing is skipped) or a fetch
    /// (at the next candidate).
    mutating func expireRPCs() {
        for rpc in listRPCs.keys.sorted() {
            guard stage == .listing, let l = listRPCs[rpc], l.deadline <= now else { continue }
            listRPCs[rpc] = nil
            listing[l.node]!.attempts += 1
            if listing[l.node]!.attempts >= config.attemptsMax { skipNode(l.node) } else { sendList(l.node) }
        }
        for rpc in rpcs.keys.sorted() {
            guard stage == .marking, let f = rpcs[rpc], f.deadline <= now else { continue }
            rpcs[rpc] = nil
            sendFetch(f)
        }
    }


    // MARK: - Repair

    /// Queues a copy for every reachable ref with fewer than `replication` copies, counting
    /// the nodes that answered this pass and, optimistically, placement candidates down for
    /// less than `repairGrace`. Targets: candidates in ring order (where readers look) that
    /// answered and hold none, new failure domains first.
    ///
    /// Rebalancing, when the ring is the one in the metadata store: a ref with enough copies
    /// but some off its placement (a node joined or is draining, or a writer used a fallback
    /// while a placement node was away) is copied to the placement nodes that answered and
    /// lack it, one per copy off the placement. A ref whose every placement node holds it
    /// loses its other copies (`trims`), once the ring has been in force for `ringSettle`.
    mutating func planRepairs() {
        var holders: [BlockRef: [NodeID]] = [:]
        for node in inventory.keys.sorted() {
            for ref in inventory[node]! where volumes[ref.volume]?.reachable[ref] != nil {
                holders[ref, default: []].append(node)
            }
        }
        let alive = Set(inventory.keys)
        let domainOf = Dictionary(uniqueKeysWithValues: ring.members.map { ($0.node, $0.domain) })
        let drainingNodes = Set(ring.members.filter(\.draining).map(\.node))
        let rebalance = storedRingVersion == ring.version
        let trimming = rebalance && now - ringSince >= config.ringSettle
        var shortNow: Set<BlockRef> = []
        var misplacedNow: Set<BlockRef> = []
        defer {
            shortLastPass = shortNow
            misplacedLastPass = misplacedNow
        }
        var repairs: [Copy] = [], moves: [Copy] = []
        for id in volumes.keys.sorted() {
            let v = volumes[id]!
            guard !v.failed else { continue }
            let r = v.info.replication
            for ref in v.reachable.keys.sorted() {
                let have = holders[ref] ?? []
                for n in have where drainingNodes.contains(n) { passDraining[n, default: 0] += 1 }
                let cands = ring.candidates(for: ref.placementKey, replication: r,
                                            fallbacks: ring.fallbacks(replication: r, max: config.fallbackNodesMax))
                let resting = cands.filter { !alive.contains($0) && (downSince[$0].map { now - $0 < config.repairGrace } ?? true) }
                let count = have.count + resting.count
                guard count < r else {
                    guard rebalance else { continue }
                    let home = Array(cands.prefix(r))
                    let extras = have.filter { !home.contains($0) }
                    guard !extras.isEmpty else { continue }
                    let missing = home.filter { alive.contains($0) && !have.contains($0) && (fullUntil[$0].map { $0 <= now } ?? true) }
                    if missing.isEmpty {
                        if home.allSatisfy(have.contains) {
                            if trimming {
                                trims.append(Trim(ref: ref, home: home, extras: extras))
                            } else {
                                passMisplaced += 1  // the extra copy waits for the ring to settle
                            }
                        }
                        continue
                    }
                    passMisplaced += 1
                    misplacedNow.insert(ref)
                    guard misplacedLastPass.contains(ref) else { continue }
                    for target in missing.prefix(extras.count) {
                        moves.append(Copy(ref: ref, crc: v.reachable[ref]!, sources: have, nextSource: 0,
                                          target: target, spares: [], data: nil, move: true))
                    }
                    continue
                }
                shortNow.insert(ref)
                guard shortLastPass.contains(ref) else { continue }
                passShort += 1
                guard !have.isEmpty else {
                    passUnrepairable += 1
                    continue
                }
                var domains = Set(have.map { domainOf[$0] ?? "" })
                var eligible = cands.filter { alive.contains($0) && !have.contains($0) }
                for _ in 0..<(r - count) {
                    guard !eligible.isEmpty else { break }
                    let pick = eligible.firstIndex { !domains.contains(domainOf[$0] ?? "") || domainOf[$0] == "" } ?? 0
                    let target = eligible.remove(at: pick)
                    domains.insert(domainOf[target] ?? "")
                    repairs.append(Copy(ref: ref, crc: v.reachable[ref]!, sources: have, nextSource: 0,
                                        target: target, spares: eligible, data: nil))
                }
            }
        }
        // Popped from the end: repairs first (redundancy before balance), oldest refs first.
        for c in (repairs + moves).reversed() { copyQueues[c.target, default: []].append(c) }
        copyTargets = copyQueues.keys.sorted()
        copyCursor = 0
        copiesQueued = repairs.count + moves.count
    }

    /// Starts copies while under the concurrency limit, round-robin over the target nodes,
    /// each receiving at most `repairBytesPerSecond`.
    mutating func pumpCopies() {
        guard stage == .repairing else { return }
        // The rate is kept on average: a copy may start up to one tick early, so starts between
        // ticks are not lost when every copy in flight has finished.
        starting: while copyRPCs.count < config.repairConcurrencyMax, copiesQueued > 0 {
            for k in 0..<copyTargets.count {
                let target = copyTargets[(copyCursor + k) % copyTargets.count]
                guard copyQueues[target]?.isEmpty == false, now + config.tickInterval >= nextCopyAt[target, default: .zero] else { continue }
                let c = copyQueues[target]!.removeLast()
                copiesQueued -= 1
                copyCursor = (copyCursor + k + 1) % copyTargets.count
                if config.repairBytesPerSecond > 0, let size = volumes[c.ref.volume]?.info.blockSize {
                    let gap = Nanoseconds(UInt64(size) * 1_000_000_000 / config.repairBytesPerSecond)
                    nextCopyAt[target] = max(nextCopyAt[target, default: .zero], now) + gap
                }
                sendCopyGet(c)
                continue starting
            }
            break  // every target with copies waiting is at its rate
        }
        if copyRPCs.isEmpty && copiesQueued == 0 {
            passRepairTime = now - repairStartedAt
            beginTrimming()
        }
    }

    mutating func sendCopyGet(_ c: Copy) {
        var c = c
        guard c.nextSource < c.sources.count * config.attemptsMax else { return copyFailed() }
        let node = c.sources[c.nextSource % c.sources.count]
        c.nextSource += 1
        let rpc = RPCID(nextRPC)
        nextRPC += 1
        copyRPCs[rpc] = CopyRPC(copy: c, node: node, deadline: now + config.rpcTimeout)
        out.append(.send(to: node, .getBlock(rpc, c.ref)))
    }

    mutating func sendCopyPut(_ c: Copy) {
        let rpc = RPCID(nextRPC)
        nextRPC += 1
        copyRPCs[rpc] = CopyRPC(copy: c, node: c.target, deadline: now + config.rpcTimeout)
        // A repair restores redundancy (it may use a near-full node's reserve); a move is a new
        // placement (it may not).
        out.append(.send(to: c.target, .putBlock(rpc, c.ref, c.data!, durable: true, restore: !c.move)))
    }

    mutating func copyFetched(_ rpc: RPCID, from node: NodeID, _ result: Result<[UInt8], StoreError>) {
        guard let pending = copyRPCs[rpc], pending.node == node, pending.copy.data == nil else { return }
        copyRPCs[rpc] = nil
        var c = pending.copy
        if case .success(let bytes) = result, CRC32C.checksum(bytes) == c.crc {
            c.data = bytes
            sendCopyPut(c)
        } else {
            sendCopyGet(c)
        }
        pumpCopies()
    }

    mutating func copyPut(_ rpc: RPCID, from node: NodeID, _ result: Result<Void, StoreError>) {
        guard let pending = copyRPCs[rpc], pending.node == node, pending.copy.data != nil else { return }
        copyRPCs[rpc] = nil
        switch result {
        case .success where pending.copy.move:
            passMoved += 1
            passBytesMoved += UInt64(pending.copy.data!.count)
            stats.movesMade += 1
            stats.bytesMoved += UInt64(pending.copy.data!.count)
        case .success:
            passCopied += 1
            passBytesCopied += UInt64(pending.copy.data!.count)
            stats.copiesMade += 1
            stats.bytesCopied += UInt64(pending.copy.data!.count)
        case .failure(let e):
            // A full node gets no moves for a few passes (its blocks stay where they are).
            if e == .noSpace { fullUntil[node] = now + config.passInterval * 3 }
            retryCopyElsewhere(pending.copy)
        }
        pumpCopies()
    }

    /// The target refused or did not answer: the next spare target, or give up this pass.
    mutating func retryCopyElsewhere(_ c: Copy) {
        var c = c
        guard !c.spares.isEmpty else { return copyFailed() }
        c.target = c.spares.removeFirst()
        sendCopyPut(c)
    }

    mutating func copyFailed() {
        passCopyFailures += 1
    }

    // MARK: - Trimming

    /// Syncs the placement copies of every ref to trim (batched per node), then deletes the
    /// extra copies of those whose every placement node confirmed. Ends the pass.
    mutating func beginTrimming() {
        guard !trims.isEmpty else { return endPass(sweep: true, deleted: passDeleted) }
        stage = .trimming
        var perNode: [NodeID: [BlockRef]] = [:]
        for t in trims { for n in t.home { perNode[n, default: []].append(t.ref) } }
        for node in perNode.keys.sorted() {
            let refs = perNode[node]!
            for i in stride(from: 0, to: refs.count, by: config.deleteBatchRefs) {
                sendTrimSync(node, Array(refs[i..<min(refs.count, i + config.deleteBatchRefs)]), attempts: 0)
            }
        }
    }

    mutating func sendTrimSync(_ node: NodeID, _ refs: [BlockRef], attempts: Int) {
        let rpc = RPCID(nextRPC)
        nextRPC += 1
        trimSyncs[rpc] = (node, refs, now + config.rpcTimeout, attempts)
        out.append(.send(to: node, .syncBlocks(rpc, refs)))
    }

    mutating func trimSynced(_ rpc: RPCID, from node: NodeID, _ present: [BlockRef]) {
        guard stage == .trimming, let pending = trimSyncs[rpc], pending.node == node else { return }
        trimSyncs[rpc] = nil
        let asked = Set(pending.refs)
        for ref in present where asked.contains(ref) { trimConfirmed[ref, default: []].insert(node) }
        if trimSyncs.isEmpty { finishTrimming() }
    }

    mutating func expireTrimSyncs() {
        for rpc in trimSyncs.keys.sorted() {
            guard let p = trimSyncs[rpc], p.deadline <= now else { continue }
            trimSyncs[rpc] = nil
            // A node that does not answer keeps every extra copy of its refs this pass.
            if p.attempts + 1 < config.attemptsMax { sendTrimSync(p.node, p.refs, attempts: p.attempts + 1) }
        }
        if stage == .trimming && trimSyncs.isEmpty { finishTrimming() }
    }

    mutating func finishTrimming() {
        var perNode: [NodeID: [BlockRef]] = [:]
        for t in trims {
            let confirmed = trimConfirmed[t.ref] ?? []
            guard t.home.allSatisfy(confirmed.contains) else { continue }
            precondition(!t.extras.contains(where: t.home.contains), "trimming a placement copy of \(t.ref)")
            for n in t.extras { perNode[n, default: []].append(t.ref) }
        }
        for node in perNode.keys.sorted() {
            let refs = perNode[node]!
            passTrimmed += refs.count
            stats.copiesTrimmed += refs.count
            for i in stride(from: 0, to: refs.count, by: config.deleteBatchRefs) {
                out.append(.trim(to: node, Array(refs[i..<min(refs.count, i + config.deleteBatchRefs)])))
            }
        }
        endPass(sweep: true, deleted: passDeleted)
    }

    mutating func expireCopies() {
        for rpc in copyRPCs.keys.sorted() {
            guard let p = copyRPCs[rpc], p.deadline <= now else { continue }
            copyRPCs[rpc] = nil
            if p.copy.data == nil { sendCopyGet(p.copy) } else { retryCopyElsewhere(p.copy) }
        }
    }

    // MARK: - Sweep

    /// Whether `ref`, which no head reaches, can never be committed by any writer.
    static func isCollectible(_ ref: BlockRef, epochKey: UInt64, head: VolumeHead?) -> Bool {
        // Older epochs are fenced: their writers can never commit again.
        if ref.epoch < epochKey { return true }
        // The current epoch's writer commits only refs from its head's floor on.
        if ref.epoch == epochKey, let head, head.epoch == ref.epoch, ref.sequence < head.floor { return true }
        return false
    }

    mutating func sweep() {
        var deletes: [NodeID: [BlockRef]] = [:]
        var seen: [NodeID: [BlockRef: Instant]] = [:]
        stats.volumesSkipped += volumes.values.filter(\.failed).count
        for node in inventory.keys.sorted() {
            var since: [BlockRef: Instant] = [:]
            for ref in inventory[node]! {
                let garbage: Bool
                if let v = volumes[ref.volume] {
                    garbage = !v.failed && v.reachable[ref] == nil
                        && (config.canaryIgnoresHorizon || Self.isCollectible(ref, epochKey: v.epochKey, head: v.head))
                } else {
                    garbage = !metadataDoubtful
                }
                guard garbage else {
                    // A volume left out of this pass keeps what earlier passes found (garbage stays garbage).
                    if volumes[ref.volume]?.failed == true, let first = garbageSince[node]?[ref] { since[ref] = first }
                    continue
                }
                let first = garbageSince[node]?[ref] ?? now
                since[ref] = first
                if now - first >= config.grace && !config.canaryLeaks { deletes[node, default: []].append(ref) }
            }
            seen[node] = since
        }
        // Nodes left out of this pass keep their record, until they count as lost (a node
        // that comes back after that is simply listed afresh).
        for (node, since) in garbageSince where seen[node] == nil && ring.members.contains(where: { $0.node == node })
            && (downSince[node].map { now - $0 < config.repairGrace } ?? true) {
            seen[node] = since
        }
        garbageSince = seen
        var deleted = 0
        for node in deletes.keys.sorted() {
            let refs = deletes[node]!
            deleted += refs.count
            for i in stride(from: 0, to: refs.count, by: config.deleteBatchRefs) {
                out.append(.send(to: node, .deleteBlocks(Array(refs[i..<min(refs.count, i + config.deleteBatchRefs)]))))
            }
            for r in refs { garbageSince[node]![r] = nil }
        }
        stats.refsDeleted += deleted
        passDeleted = deleted
        planRepairs()
        if copiesQueued == 0 {
            beginTrimming()
        } else {
            stage = .repairing
            repairStartedAt = now
            repairTotal = copiesQueued
            pumpCopies()
        }
    }

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

public struct CollectorConfig: Sendable {
    /// Time between the end of one pass and the start of the next.
    public var passInterval = Nanoseconds.seconds(60)
    public var firstPassDelay = Nanoseconds.seconds(10)
    /// Garbage is deleted only once it has been garbage this long (read-only clients may
    /// serve the previous head for about a second).
    public var grace = Nanoseconds.seconds(30)
    public var listBatchRefs = 4096
    public var deleteBatchRefs = 1024
    public var rpcTimeout = Nanoseconds.seconds(2)
    public var metadataTimeout = Nanoseconds.seconds(5)
    /// Tries per node listing page, per block fetch round and for the metadata read.
    public var attemptsMax = 3
    /// Must match the writers' `fallbackNodesMax`: map blocks may sit on a fallback node.
    public var fallbackNodesMax = 3
    public var tickInterval = Nanoseconds.milliseconds(100)
    /// A node that has not answered for this long is treated as lost: the blocks it held are
    /// copied elsewhere. Until then its copies are assumed to be there (it may be rebooting).
    public var repairGrace = Nanoseconds.seconds(600)
    /// Copies in flight at once, and bytes per second started towards each target node (0: unthrottled).
    public var repairConcurrencyMax = 16
    public var repairBytesPerSecond: UInt64 = 64 << 20
    /// Extra copies are deleted (and drains declared done) only once the ring has been in
    /// force this long: every client must have learned it by then.
    public var ringSettle = Nanoseconds.seconds(30)
    /// Injected bugs for checking the simulator's checkers. Never set in production.
    public var canaryIgnoresHorizon = false
    public var canaryLeaks = false
    public init() {}
}

/// What one pass did (for logs, status and traces).
public struct CollectorPass: Sendable, Equatable {
    /// False when the metadata could not be read: nothing was deleted.
    public var completed: Bool
    public var refsListed: Int
    public var refsDeleted: Int
    /// Garbage found but younger than the grace period.
    public var garbagePending: Int
    public var nodesSkipped: Int
    public var volumesSkipped: Int
    /// Committed blocks found with fewer copies than their volume's replication (counting the
    /// nodes down for less than the repair grace as holding theirs).
    public var underReplicated: Int = 0
    public var copiesMade: Int = 0
    public var copiesFailed: Int = 0
    public var bytesCopied: UInt64 = 0
    /// Committed blocks with no copy on any node that answered (nothing to copy from).
    public var unrepairable: Int = 0
    /// How long the copying took (from the first copy to the last answer).
    public var repairTime: Nanoseconds = .zero
    /// Nodes that did not answer but are within the repair grace: assumed to keep their copies.
    public var nodesResting: Int = 0
    /// Rebalancing: the ring version of the pass, refs with copies off their placement,
    /// copies made to placement nodes, their bytes, and extra copies deleted.
    public var ringVersion: UInt64 = 0
    public var misplaced: Int = 0
    public var movesMade: Int = 0
    public var bytesMoved: UInt64 = 0
    public var copiesTrimmed: Int = 0
    /// Draining nodes found holding no reachable block: they may be removed from the ring.
    public var drained: [NodeID] = []
}

public struct RepairProgress: Sendable, Equatable {
    /// Copies planned this pass, made, and given up.
    public var total: Int
    public var copied: Int
    public var failed: Int
    public var bytesCopied: UInt64
    public var startedAt: Instant
}

public enum CollectorOutput: Sendable {
    case send(to: NodeID, PeerMessage)
    /// Delete these extra copies (sent as `deleteBlocks`): each ref is durable on every one
    /// of its placement nodes.
    case trim(to: NodeID, [BlockRef])
    case metadata(MetaRequestID, MetaRequest)
    case timer(at: Instant)
    case passCompleted(CollectorPass)
}
