/// The collector's state records, its configuration and what it hands out.
extension Collector {
    enum Stage: Sendable, Equatable { case idle, listing, metadata, marking, repairing, trimming }

    /// One node's listing (inventory) progress.
    struct ListState: Sendable {
        var after: BlockRef?
        var attempts = 0
        var done = false
    }

    struct VolumeState: Sendable {
        var info: VolumeInfo
        var epochKey: UInt64 = 0
        var head: VolumeHead?
        var snapshots: [SnapshotRecord] = []
        /// Every ref of this volume that a committed map (its head's, a snapshot's, a clone's)
        /// reaches, with the CRC-32C the map names.
        var reachable: [BlockRef: UInt32] = [:]
        var fetchesLeft = 0
        var failed = false
    }

    /// A map block fetch (marking).
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

    /// A copy to make (repair or move): fetched from a source, verified, put on the target.
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

    /// Rebalancing: a ref whose extra copies (off the placement) may be trimmed.
    struct Trim: Sendable {
        var ref: BlockRef
        var home: [NodeID]
        var extras: [NodeID]
    }

    /// Totals over every pass (for status and tests).
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
    /// Injected bug: marking skips snapshot roots, so their blocks look like garbage.
    public var canaryIgnoresSnapshots = false
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
