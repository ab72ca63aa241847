/// Bookkeeping types of `VolumeClient`.
extension VolumeClient {
    struct CacheEntry: Sendable {
        /// The whole block; empty while `loading`.
        var data: [UInt8]
        /// Bumped by every write applied to this block.
        var version: UInt64
        /// The newest version whose write-back completed (so `entries` names it).
        var writtenVersion: UInt64
        var loading: Bool
        var lastUse: UInt64
        /// When the block last went from clean to dirty (for age-based write-back).
        var dirtySince: Instant
        var isDirty: Bool { version != writtenVersion }
    }

    /// One block-sized piece of a client op.
    struct Piece: Sendable {
        var op: OpID
        var block: UInt64
        var offsetInBlock: Int
        var length: Int
        /// Where in the op's buffer (reads) or data (writes) this piece starts.
        var bufferOffset: Int
    }

    struct BlockedWrite: Sendable {
        var piece: Piece
        var data: ArraySlice<UInt8>
    }

    enum FetchWaiter: Sendable {
        case read(Piece)
        case write(Piece, ArraySlice<UInt8>)
        case open
    }

    struct Fetch: Sendable {
        var ref: BlockRef
        var crc: UInt32
        var nodes: [NodeID]
        var nextNode = 0
        var round = 0
        var retryAt: Instant?
        var waiters: [FetchWaiter] = []
        /// Only these bytes of the block (a small read that missed the cache), or the whole block.
        var range: Range<Int>?
        /// Nodes whose copy failed its checksum (they dropped it): repaired from the good copy.
        var badCopies: [NodeID] = []
    }

    struct Writeback: Sendable {
        var ref: BlockRef
        var entry: MapEntry
        var version: UInt64
        var data: [UInt8]
        /// Replicas still to confirm, sorted.
        var remaining: [NodeID]
        /// Nodes that confirmed a copy (durable for map blocks; data blocks are synced later).
        var confirmed: [NodeID] = []
        /// Placement then fallback nodes, in preference order.
        var candidates: [NodeID]
        /// Failed attempts per node still in `remaining`.
        var failures: [NodeID: Int] = [:]
        /// Replicas to resend to at `retryAt` after an error reply.
        var retryAt: Instant?
        var retryNodes: [NodeID] = []
        /// Candidates that refused this block for lack of space.
        var noSpace: Set<NodeID> = []
        /// The puts are durable (map blocks; data blocks with durable write-back, or while
        /// the unsynced blocks are over their high-water mark); otherwise the copies are
        /// unsynced once confirmed.
        var durable = true
    }

    /// A read-repair put in flight: the good bytes of `ref` going back to `node`.
    struct Repair: Sendable {
        var ref: BlockRef
        var data: [UInt8]
        var node: NodeID
        var attempts: Int
        var deadline: Instant
    }

    struct PendingRPC: Sendable {
        enum Purpose: Sendable {
            case put(block: UInt64)
            case get(block: UInt64)
            /// A sync of these refs (see `VolumeClient+Sync.swift`).
            case sync([BlockRef])
            /// The commit log: an append, a seal or a tail read (`VolumeClient+Log.swift`).
            case log(LogRPC)
        }
        var purpose: Purpose
        var node: NodeID
        var deadline: Instant
    }

    struct PendingMeta: Sendable {
        enum Purpose: Sendable {
            case grant, readLock, acquire(previousEpoch: UInt64), keepAlive, commit, readHead, refreshHead
            /// Recovery records where the opened head's log ends (`VolumeClient+Recovery.swift`).
            case closeLog
        }
        var purpose: Purpose
        var request: MetaRequest
        var sentAt: Instant
        var deadline: Instant
    }

    struct PendingOp: Sendable {
        enum Kind: Sendable { case read, write(fua: Bool), trim }
        var kind: Kind
        var remaining: Int
        /// A read's data, one part per piece (block) from `firstBlock` on.
        var parts: [ArraySlice<UInt8>] = []
        var firstBlock: UInt64 = 0
        var error: VolumeError?
    }

    struct FlushWaiter: Sendable {
        var op: OpID
        /// A snapshot to keep of this flush's checkpoint.
        var snapshot: String?
    }

    /// The blocks a flush waits for, in block order, with the version each must reach.
    /// Blocks before `cursor` are done: written versions only grow, and a block leaves the
    /// cache only when clean, so done stays done.
    struct FlushTargets: Sendable {
        var blocks: [UInt64]
        var versions: [UInt64]
        var cursor = 0
    }

    /// Eviction order of clean, loaded blocks without a write-back (least recently used first).
    struct UseKey: Comparable, WordHashable, Sendable {
        var lastUse: UInt64
        var block: UInt64
        var hashWord: UInt64 { lastUse &* 0x9E37_79B9_7F4A_7C15 ^ block }
        static func < (a: UseKey, b: UseKey) -> Bool { (a.lastUse, a.block) < (b.lastUse, b.block) }
    }

    /// Write-back order of dirty blocks without a write-back (dirty longest first).
    struct DirtyKey: Comparable, Hashable, Sendable {
        var since: Instant
        var block: UInt64
        static func < (a: DirtyKey, b: DirtyKey) -> Bool { (a.since, a.block) < (b.since, b.block) }
    }

    /// The map a flush commits: copies of the pages changed since the last commit; every other
    /// entry is the committed one, which only this flush's commit changes. Copying the whole map
    /// cost O(volume size) per FLUSH.
    struct MapSnapshot: Sendable {
        /// Blocks in the volume when it was taken (0: not taken yet).
        var count = 0
        var pages: [Int: [MapEntry?]] = [:]
        var entriesPerPage = 1

        var isEmpty: Bool { count == 0 }

        init() {}

        init(of entries: [MapEntry?], pages changed: [Int], entriesPerPage: Int) {
            count = entries.count
            self.entriesPerPage = entriesPerPage
            for p in changed {
                let lo = p * entriesPerPage
                pages[p] = Array(entries[lo..<min(entries.count, lo + entriesPerPage)])
            }
        }

        /// The entries of page `p` this snapshot changes against `committed`, in block order
        /// (none if the page did not change).
        func changes(inPage p: Int, from committed: [MapEntry?]) -> [(index: Int, entry: MapEntry?)] {
            guard let page = pages[p] else { return [] }
            let lo = p * entriesPerPage
            return page.indices.compactMap { k in page[k] != committed[lo + k] ? (lo + k, page[k]) : nil }
        }

        /// Sets entry `i`, whose page the snapshot holds.
        mutating func set(_ i: Int, _ entry: MapEntry?) {
            pages[i / entriesPerPage]![i % entriesPerPage] = entry
        }

        /// Entry `i` as of the snapshot, given the committed map.
        func entry(_ i: Int, committed: [MapEntry?]) -> MapEntry? {
            if let page = pages[i / entriesPerPage] { return page[i % entriesPerPage] }
            return committed[i]
        }
    }

    struct FlushState: Sendable {
        enum Stage: Sendable {
            /// Waiting until each block's written version reaches its target.
            case writeback(FlushTargets)
            /// The snapshot is fixed; waiting until every copy it names is durable.
            case sync
            /// A log record being appended on every node of the segment.
            case append
            /// Checkpoint: map pages, root and the new segment's header being written.
            case map(pending: Int)
            case commit
        }
        var waiters: [FlushWaiter]
        var stage: Stage
        var snapshot = MapSnapshot()
        var snapshotPages: [Int] = []
        var newPageRefs: [MapEntry?] = []
        var newRoot: MapEntry?
        var head: VolumeHead?
        /// The head's garbage-collection floor, fixed with the snapshot.
        var floor: UInt64 = 0
        var commitSent = false
        /// A checkpoint's new segment (its header is among the map stage's puts).
        var newSegment: LogSegment?
        /// One round: the record was sent while blocks it names were still being written back.
        var early: EarlyRecord?
        /// Snapshots this flush keeps: it commits by checkpoint.
        var snapshotNames: [String] { Array(Set(waiters.compactMap(\.snapshot))).sorted() }
        var takesSnapshot: Bool { waiters.contains { $0.snapshot != nil } }
    }

    /// The record a one-round FLUSH sent ahead of its blocks' durability.
    struct EarlyRecord: Sendable {
        var position: UInt64
        var durable = false
        /// A node refused it or did not answer: the flush commits by checkpoint instead.
        var failed = false
    }

    enum OpenState: Sendable {
        case grantLease, readLock, acquire, readHead, loadRoot, loadPages(remaining: Int), done
    }
}
