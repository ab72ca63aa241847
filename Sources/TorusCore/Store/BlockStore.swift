/// The node-local block store: immutable blocks named by `BlockRef` in fixed-size slots of
/// one disk, with an in-memory index made durable by an append-only, checksummed journal.
///
/// A deterministic, sans-I/O state machine: requests come in through `handle`, disk results
/// through `diskCompleted`, and every effect (disk requests, replies) is an output. It never
/// reads a clock, spawns work or iterates a hash table where order could leak into outputs.
///
/// ## Layout
/// `[journal region A][journal region B][slot 0][slot 1]...` (see `BlockStoreConfig`, and
/// `BlockStoreFormat` for the byte formats). No superblock: the region headers carry the
/// format facts. A slot holds exactly one block of `blockSize` bytes. Each region is
/// `[header][snapshot sectors][appended journal sectors...]`. The index (ref → slot, data
/// CRC32C) lives in memory; the length is always `blockSize`.
///
/// ## Driver contract
/// At boot read both regions (`journalRegions(config:)`), call `recover`, then `start()` and
/// perform its outputs. Feed every request to `handle` and every disk completion to
/// `diskCompleted`; perform every `.disk` output and deliver every `.reply`.
///
/// ## Durability: sync cycles (group commit)
/// A put writes its data to a free slot; when the write completes the ref enters the index
/// *unsynced* and gets work. At most one sync cycle is in flight; a cycle
/// 1. waits for every data write issued before it started,
/// 2. `sync`s the disk (the data of its batch is now durable),
/// 3. writes the journal records of up to `journalBatchLimitRecords` unjournaled index
///    changes, in the order they happened, into *new* sectors after the last written one (a
///    sector holding records is never rewritten, so a torn write can only hurt records that
///    were never acknowledged),
/// 4. `sync`s again, then marks the batch durable, frees the slots of durable deletes and
///    replies to its sync requests and to every durable put the batch covers.
/// Journal records therefore only point at durable data, and recovery needs no data scan.
/// Requests arriving during a cycle join the next one, which starts as soon as this one ends.
/// A sync request is answered once every index change that existed when its first cycle
/// fixed its batch is durable (one cycle, or more when the batch limit split the changes).
///
/// A cycle starts when the store is idle and: a sync request or durable put waits; a delete
/// waits to become durable (its slot is free only then, so deletes are not left waiting); at least
/// `lazyCommitThresholdRecords` changes are unjournaled; or a new generation is due. Below
/// the threshold, non-durable puts stay unjournaled until something else starts a cycle, so
/// the driver should send a `.sync(id, [])` periodically to bound what a crash may lose.
///
/// ## Generations and compaction
/// A region life has a generation, above every generation in any verified sector of either
/// region. The region header (written, then synced, only after the snapshot sectors are
/// durable) names the generation and the snapshot length; every journal sector carries the
/// generation and its own index. Recovery trusts the verified header with the highest
/// generation whose snapshot verifies, then the appended sectors up to the first one that
/// does not verify (or the first verified record that contradicts the state so far, which
/// only a bug could write: every record prefix is a consistent past state). Every recovery, every full region and every journal I/O error starts a
/// new generation in the *other* region: the cycle writes a snapshot of the durable index
/// with its batch folded in, syncs, writes the header, syncs, and appending continues there.
/// So a lost-but-not-overwritten sector from an earlier life can never look current, and the
/// old region stays intact (and is used by recovery) until the new header is durable. Gets
/// and puts keep working during a compaction; only journal appends wait. Size the regions at
/// a few times `snapshotSectorsMax` so compactions are rare (each costs one index snapshot).
///
/// ## Slots
/// `free` → `writing` (put in flight) → `used` (in the index) → `freeing` (deleted, delete
/// record not yet durable) → `free`. A slot is reused only after its delete record is
/// durable, so no replayed journal prefix ever has two refs on one slot.
///
/// ## Choices beyond the brief
/// - A put of a present ref with *different* bytes fails with `.corrupt(ref)`: a ref names
///   one content forever, so this is a caller bug or corruption on the wire.
/// - A delete of a ref whose put is still writing applies when the write completes; the put
///   still reports success (the delete came later). A later put of that ref cancels it.
/// - A get that finds the slot corrupt or unreadable also drops the ref (as a delete), so a
///   repair can put it again instead of hitting the idempotent-put path.
/// - A failed data write frees its slot and fails the put with `.ioError`. A failed sync
///   cycle fails the durable puts of its batch with `.ioError`, answers its syncs with what
///   was durable before, keeps the batch for the next cycle and, if the journal itself
///   failed, forces a new generation. After a failed cycle only waiting requests (and new
///   deletes) start another, so a dead disk cannot make the store spin.
/// - Over `outstandingRepliesLimitRequests`, puts and gets fail with `.ioError` and a sync
///   is answered at once with what is durable now.
/// - `DiskOpID`s are chosen by the store, counting up from `recover`'s `firstDiskOpID`
///   (default 1); a completion for an unknown id traps, so the driver must drop completions
///   from before a crash or give each life its own id range.
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

    // The journal pipeline.
    var cycle: Cycle?
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
        case let .get(id, ref): get(id, ref, &out)
        case let .delete(refs): delete(refs, &out)
        case let .sync(id, refs): sync(id, refs, &out)
        }
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
