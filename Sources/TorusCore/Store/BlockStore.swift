/// The node-local block store: immutable blocks named by `BlockRef` in fixed-size slots of
/// one disk, with an in-memory index made durable by an append-only, checksummed journal.
/// A deterministic, sans-I/O state machine: it never reads a clock, spawns work or iterates a
/// hash table where order could leak into outputs.
///
/// Driver contract: at boot read both regions (`journalRegions(config:)`), call `recover`,
/// then `start()` and perform its outputs. Feed every request to `handle` and every disk
/// completion to `diskCompleted`; perform every `.disk` output and deliver every `.reply`.
/// Send `.sync(id, [])` periodically: below `lazyCommitThresholdRecords`, non-durable puts stay
/// unjournaled until something starts a sync cycle. A completion for an unknown `DiskOpID`
/// traps: drop completions from before a crash, or give each life its own id range.
///
/// Design (layout, sync cycles, generations, slots, edge cases): docs/storage-core.md,
/// "The block store (node-local)".
public struct BlockStore: Sendable {
    /// One of the two journal regions.
    public enum JournalRegion: Hashable, Sendable {
        case a, b
        public var other: JournalRegion { self == .a ? .b : .a }
    }

    /// Where journal appends go in the current life.
    public struct JournalCursor: Hashable, Sendable {
        public var region: JournalRegion
        public var generation: UInt64
        /// Index (within the region) of the next sector to write; never decreases in a life.
        public var nextSector: Int
    }

    public let config: BlockStoreConfig
    /// What boot found on disk.
    public let recoveryReport: RecoveryReport
    /// The region being appended to; nil until the first compaction of this life is durable.
    public internal(set) var journal: JournalCursor?
    /// Compactions completed in this life (for tests and metrics).
    public internal(set) var compactionsCompleted = 0
    /// Sync cycles that failed on a disk error in this life.
    public internal(set) var cyclesFailed = 0

    // Index and slots.
    var index: [BlockRef: Entry] = [:]
    var durableIndex: [BlockRef: DurableEntry] = [:]
    var slots: [SlotState]
    /// Stack of free slots; `popLast` allocates.
    var freeList: [Int]
    var freeingCount = 0

    // Index changes not yet durable in the journal, oldest first; seq strictly increasing.
    var unjournaled: [Change] = []
    /// Entries of `unjournaled` that are cancelled puts.
    var cancelledCount = 0
    var nextSeq: UInt64 = 1
    /// Every change with `seq <= durableThroughSeq` is durable in the journal.
    var durableThroughSeq: UInt64 = 0

    // Requests in flight.
    var puts: [DiskOpID: PendingPut] = [:]
    var putByRef: [BlockRef: DiskOpID] = [:]
    var reads: [DiskOpID: PendingRead] = [:]
    var durableWaiters: [DurableWaiter] = []
    var queuedSyncs: [SyncWaiter] = []
    var outstandingReplies = 0
    /// Per-sector checksums of blocks read lately, for range reads.
    var sectorSums: SectorChecksums
    /// Injected bug (simulator canary `store-trusts-sectors`): sector reads go unchecked.
    public var trustsSectorReads = false

    // The journal pipeline.
    var cycle: Cycle?
    /// Set by a driver while it hands over a batch of requests that arrived together: no
    /// cycle starts until `releaseCycles`, so one disk sync covers the whole batch.
    public private(set) var holdsCycles = false
    var needsNewGeneration = true
    var nextGeneration: UInt64
    var lastCycleFailed = false
    var nextOpID: UInt64 = 1

    init(config: BlockStoreConfig, recovered: [BlockRef: DurableEntry], report: RecoveryReport, firstDiskOpID: DiskOpID) {
        self.config = config
        self.nextOpID = firstDiskOpID.raw
        self.recoveryReport = report
        self.nextGeneration = report.nextGeneration
        var slots = [SlotState](repeating: .free, count: config.totalSlots)
        for (ref, e) in recovered {
            index[ref] = Entry(slot: e.slot, crc: e.crc, putSeq: 0)
            slots[e.slot] = .used
        }
        self.durableIndex = recovered
        self.slots = slots
        self.sectorSums = SectorChecksums(blockSize: config.blockSize, sectorSize: config.geometry.sectorSize,
                                          slots: config.totalSlots)
        // Descending, so the lowest free slot is allocated first.
        self.freeList = (0..<config.totalSlots).reversed().filter { slots[$0] == .free }
    }

    /// Outputs to perform right after `recover`: the compaction that starts this life's
    /// generation. Any later call would start it too; calling this first just avoids delay.
    public mutating func start() -> [StoreOutput] {
        var out: [StoreOutput] = []
        start(into: &out)
        return out
    }

    /// `start()`, appending to `out` (a caller's buffer reused across steps).
    public mutating func start(into out: inout [StoreOutput]) {
        startCycleIfWanted(&out)
    }

    /// Applies one request; returns the disk requests to perform and any immediate replies.
    public mutating func handle(_ request: StoreRequest) -> [StoreOutput] {
        var out: [StoreOutput] = []
        handle(request, into: &out)
        return out
    }

    /// `handle(_:)`, appending to `out` (a caller's buffer reused across steps).
    public mutating func handle(_ request: StoreRequest, into out: inout [StoreOutput]) {
        switch request {
        case let .put(id, ref, data, durable, restore): put(id, ref, data, durable: durable, restore: restore, &out)
        case let .get(id, ref): get(id, ref, nil, &out)
        case let .getRange(id, ref, range): get(id, ref, range, &out)
        case let .delete(refs): delete(refs, &out)
        case let .sync(id, refs): sync(id, refs, &out)
        }
        if !holdsCycles { startCycleIfWanted(&out) }
    }

    /// Holds cycles back while a batch of requests is handed over (see `holdsCycles`).
    public mutating func holdCycles() { holdsCycles = true }

    /// Ends a batch: starts the cycle it wants, if any.
    public mutating func releaseCycles(into out: inout [StoreOutput]) {
        holdsCycles = false
        startCycleIfWanted(&out)
    }

    /// Applies the result of a disk request this store emitted. Traps on an unknown id or a
    /// completion of the wrong kind (driver bugs).
    public mutating func diskCompleted(_ id: DiskOpID, _ completion: DiskCompletion) -> [StoreOutput] {
        var out: [StoreOutput] = []
        diskCompleted(id, completion, into: &out)
        return out
    }

    /// `diskCompleted(_:_:)`, appending to `out` (a caller's buffer reused across steps).
    public mutating func diskCompleted(_ id: DiskOpID, _ completion: DiskCompletion, into out: inout [StoreOutput]) {
        if let put = puts.removeValue(forKey: id) {
            guard case let .written(result) = completion else {
                preconditionFailure("data write \(id.raw) completed as \(completion)")
            }
            dataWritten(id, put, result, &out)
        } else if let read = reads.removeValue(forKey: id) {
            guard case let .read(result) = completion else {
                preconditionFailure("data read \(id.raw) completed as \(completion)")
            }
            dataRead(read, result, &out)
        } else if let phase = cycle?.phase, phase.op == id {
            cycleStepCompleted(phase, completion, &out)
        } else {
            preconditionFailure("completion for unknown disk op \(id.raw) (phase \(String(describing: cycle?.phase)))")
        }
        startCycleIfWanted(&out)
    }

    // MARK: Queries

    /// Refs in the index (synced or not), sorted.
    public var refs: [BlockRef] { index.keys.sorted() }
    /// Whether the index holds `ref` (synced or not).
    public func hasRef(_ ref: BlockRef) -> Bool { index[ref] != nil }

    /// Where `ref`'s bytes are on the disk, if the index holds it (for the simulator's checks).
    public func location(of ref: BlockRef) -> (offset: UInt64, crc: UInt32)? {
        index[ref].map { (config.slotOffset($0.slot), $0.crc) }
    }

    /// Up to `limit` (at least 1) refs in the index after `after`, in order, and whether none follow.
    public func listRefs(after: BlockRef?, limit: Int) -> (refs: [BlockRef], complete: Bool) {
        let limit = max(1, limit)
        var keys = after.map { a in index.keys.filter { $0 > a } } ?? Array(index.keys)
        keys.sort()
        if keys.count <= limit { return (keys, true) }
        return (Array(keys.prefix(limit)), false)
    }
    /// Refs whose put record is durable and which are still in the index, sorted.
    public var durableRefs: [BlockRef] { index.filter { $0.value.putSeq <= durableThroughSeq }.keys.sorted() }
    /// Slots holding a ref of the index.
    public var usedSlots: Int { index.count }
    /// Slots being written or waiting for their delete record to become durable.
    public var pendingSlots: Int { puts.count + freeingCount }
    public var freeSlots: Int { freeList.count }
    public var totalSlots: Int { config.totalSlots }
    /// Whether a sync cycle (possibly a compaction) is in flight.
    public var cycleInFlight: Bool { cycle != nil }

    public func isDurable(_ ref: BlockRef) -> Bool {
        guard let e = index[ref] else { return false }
        return e.putSeq <= durableThroughSeq
    }

    /// The refs of `refs` that are present and durable, sorted, without duplicates.
    func presentDurable(_ refs: [BlockRef]) -> [BlockRef] {
        var seen: [BlockRef] = refs.filter { isDurable($0) }
        seen.sort()
        var out: [BlockRef] = []
        for r in seen where out.last != r { out.append(r) }
        return out
    }

    mutating func nextOp() -> DiskOpID {
        defer { nextOpID += 1 }
        return DiskOpID(nextOpID)
    }
}

// MARK: - Internal state types

extension BlockStore {
    enum SlotState: Hashable, Sendable {
        case free, writing, used, freeing
    }

    /// An index entry; `putSeq` is the seq of the change that inserted it (0 = recovered),
    /// unique per insertion, so it also tells two lives of a ref apart.
    struct Entry: Hashable, Sendable {
        var slot: Int
        var crc: UInt32
        var putSeq: UInt64
    }

    struct DurableEntry: Hashable, Sendable {
        var slot: Int
        var crc: UInt32
    }

    struct Change: Hashable, Sendable {
        var seq: UInt64
        var record: BlockStoreFormat.Record
        /// A put deleted before any journal write saw it: its slot is already free and no
        /// record of it is ever written (see `removeFromIndex`).
        var cancelled = false
    }

    struct Requester: Hashable, Sendable {
        var id: StoreRequestID
        var durable: Bool
    }

    struct PendingPut: Sendable {
        var ref: BlockRef
        var slot: Int
        var crc: UInt32
        var requesters: [Requester]
        var deleteRequested: Bool
    }

    struct PendingRead: Sendable {
        var id: StoreRequestID
        var ref: BlockRef
        var putSeq: UInt64
        /// The bytes asked for (nil: the whole block).
        var range: Range<Int>?
        /// The sectors read, when only those were (verified by their own checksums).
        var sectors: Range<Int>?
    }

    struct DurableWaiter: Hashable, Sendable {
        var id: StoreRequestID
        var seq: UInt64
    }

    struct SyncWaiter: Hashable, Sendable {
        var id: StoreRequestID
        var refs: [BlockRef]
        /// Set by the first cycle that takes the request: the last change that existed when
        /// that cycle fixed its batch. Answered once that change is durable.
        var requiredSeq: UInt64?
    }
}
