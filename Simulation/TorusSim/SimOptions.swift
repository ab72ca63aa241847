import TorusCore

/// Everything that shapes one simulation run. A run is a pure function of these options.
public struct SimOptions: Sendable {
    public var seed: UInt64 = 1
    public var nodes = 5
    public var replication = 3
    public var queueDepth = 16
    public var duration = Nanoseconds.seconds(60)
    public var volumeBytes: UInt64 = 4 << 20
    /// Volumes, each with its own writer and workload (queue depth and mix per volume).
    public var volumes = 1
    public var blockSize = 16 << 10
    public var diskBytes: UInt64 = 64 << 20
    /// Inject crashes, restarts, partitions, drops, duplicates, metadata outages.
    public var faults = true
    /// Mean time between fault events (any kind).
    public var faultInterval = Nanoseconds.milliseconds(1500)
    public var dropProbability = 0.01
    public var duplicateProbability = 0.005
    /// Upper bound of one network hop's latency (the lower bound is 50 µs).
    public var networkLatencyMax = Nanoseconds.microseconds(400)
    /// Mean pause of a workload slot between two ops.
    public var thinkTimeMean = Nanoseconds.milliseconds(8)
    public var canary: VolumeClientConfig.Canary = .none

    /// The workload's op mix in percent (writes without FUA, FUA writes, and so on).
    public struct OpMix: Sendable, Equatable {
        public var read, write, fua, trim, flush: Int
        public init(read: Int, write: Int, fua: Int, trim: Int, flush: Int) {
            self.read = read; self.write = write; self.fua = fua; self.trim = trim; self.flush = flush
        }
        public var total: Int { read + write + fua + trim + flush }
    }
    public var opMix = OpMix(read: 42, write: 38, fua: 6, trim: 6, flush: 8)
    /// Largest op (bytes, a multiple of 4 KiB): 80% of ops take up to 4 sectors, 20% up to this.
    public var opSizeMax = 64 << 10
    /// Ops follow one another through each volume instead of landing at random.
    public var sequential = false

    /// Relative weights of the random fault events drawn every ~`faultInterval` (a missing
    /// kind never happens at random). The default is the classic mix; `quietWeight` is the
    /// share of draws that inject nothing.
    public var faultMix: [FaultKind: Int] = SimOptions.classicMix
    public var quietWeight = 12
    public static let classicMix: [FaultKind: Int] = [.crashNode: 35, .powerLoss: 5, .partition: 25, .metadataOutage: 15, .writerCrash: 8]
    /// Faults at fixed virtual times, in addition to (or instead of) the random ones.
    public var schedule: [ScheduledFault] = []
    /// Probability that a crash tears the write in flight, and that each unsynced sector survives it.
    public var tornWriteProbability = 0.5
    public var unsyncedSurvivalProbability = 0.5
    /// Probability that a disk write lands one block away from its target (on the nodes that
    /// may suffer media faults: see `mediaFaultNodes`).
    public var misdirectedWriteProbability = 0.0
    /// Largest writer clock offset a `clock-jump` sets (either direction).
    public var clockSkewMax = Nanoseconds.seconds(3)
    /// Largest extra latency of a metadata request during `metadata-slow`.
    public var metadataSlowMax = Nanoseconds.seconds(2)
    /// Per-node disk sizes (index = node - 1); nodes not listed use `diskBytes`.
    public var nodeDiskBytes: [UInt64] = []
    /// Failure domains: node i is in zone (i - 1) % zones, and placement spreads copies over
    /// zones first. Zero: every node is its own domain.
    public var zones = 0
    /// After the safety phase (`duration`, with faults), a liveness phase of this length heals
    /// everything, keeps the load running without faults and demands progress (ops and a
    /// flush completing). Zero: straight to the final check.
    public var livenessDuration = Nanoseconds.zero
    /// After the final read-back, every block of the committed map must be durable on
    /// `replication` distinct live nodes.
    public var checkConvergence = true
    /// A garbage collector runs with these knobs (nil: none).
    public var collector: CollectorConfig?
    /// With a collector: after the final read-back, passes run until no garbage is left, and
    /// every block a node still holds must be reachable from its volume's committed head.
    public var checkGarbage = true
    /// Every node verifies one stored block this often (nil: no scrubbing).
    public var scrubInterval: Nanoseconds?
    /// The writer takes a snapshot this often during the load (nil: never).
    public var snapshotInterval: Nanoseconds?
    /// With snapshots: this long into the load, vol0's newest snapshot is cloned into a new
    /// volume with its own writer and load (nil: never).
    public var cloneAfter: Nanoseconds?
    /// With snapshots: vol0 is rolled back to its newest snapshot this often (nil: never).
    public var rollbackInterval: Nanoseconds?
    /// The convergence check counts only copies whose bytes on disk match their checksum
    /// (otherwise it trusts the index).
    public var verifyCopies = false

    public init() {}

    public func diskBytes(node index: Int) -> UInt64 {
        index < nodeDiskBytes.count ? nodeDiskBytes[index] : diskBytes
    }

    /// The command line that reproduces this run.
    public var reproduceCommand: String {
        var s = "swift run -c release torus-sim run --seed \(seed) --nodes \(nodes) --replication \(replication)"
        s += " --queue-depth \(queueDepth) --duration \(duration.value / 1_000_000)ms"
        s += " --volume-size \(volumeBytes / 1024)KiB --block-size \(blockSize / 1024)KiB"
        if !faults { s += " --no-faults" }
        if canary != .none { s += " --canary \(canary.rawValue)" }
        return s
    }
}

/// Every fault the simulator can inject, by schedule (`ScheduledFault`) or at random (`SimOptions.faultMix`).
public enum FaultKind: String, CaseIterable, Sendable {
    /// A storage node process crashes (losing unsynced writes, maybe tearing one) and restarts after `for`.
    case crashNode = "crash-node"
    /// Every node loses power at once, then restarts.
    case powerLoss = "power-loss"
    /// The writer and one node cannot reach each other (both ways, or one way at random).
    case partition
    /// Only the node -> writer direction is cut (asymmetric).
    case partitionOneWay = "partition-oneway"
    /// For `for`, every message is lost with probability 0.2 and duplicated with 0.1
    /// (the scheduled form of the `drop` and `duplicate` rates).
    case lossyNetwork = "lossy-network"
    /// For `for`, one hop takes up to 50 ms (delay and heavy reordering).
    case slowNetwork = "slow-network"
    /// Clog nodes one at a time, then unclog them in a random order (FoundationDB's swizzle-clog).
    case swizzleClog = "swizzle-clog"
    /// The metadata store does not answer.
    case metadataOutage = "metadata-outage"
    /// The metadata store answers up to `metadataSlowMax` late.
    case metadataSlow = "metadata-slow"
    /// The store expires the writer's lease now (as if its clock or leader jumped).
    case leaseExpiry = "lease-expiry"
    /// A node loses its disk for good (replaced by an empty one) and restarts empty after
    /// `for`. At random at most replication - 1 times per run: reads put back what they find
    /// missing; only the collector (`gc`) re-replicates the rest.
    case wipeNode = "wipe-node"
    /// The writer process crashes and restarts after `for`.
    case writerCrash = "writer-crash"
    /// The writer crashes right after it sends a flush's commit (which may or may not land).
    case writerCrashMidFlush = "writer-crash-mid-flush"
    /// The writer is paused with a commit in flight; a new writer takes over once the lease
    /// expires; the old one resumes when the new one is ready (or after `for`).
    case writerPause = "writer-pause"
    /// The writer is frozen (its clock too, as in a VM pause) just before a log append leaves;
    /// a new writer takes over once the lease expires; the old one resumes when the new one is
    /// ready, still trusting its lease, and sends the append: the seal must refuse it.
    case writerPauseAppend = "writer-pause-append"
    /// As `writer-pause-append`, but a one-round FLUSH's record leaves and the rest of that
    /// step (its blocks' puts) is held: the successor finds a record whose blocks are nowhere
    /// and drops it; the resumed writer's puts must then be refused (the seal).
    case writerPauseBlocks = "writer-pause-blocks"
    /// The writer loses the metadata store, not the nodes, for `for`: it keeps appending until
    /// its lease runs out; once the lease could have expired a successor takes over while the
    /// old writer keeps running (it must acknowledge nothing the successor does not recover).
    case writerMetadataPartition = "writer-metadata-partition"
    /// The writer's clock jumps to an offset of up to `clockSkewMax` (back: it stands still).
    case clockJump = "clock-jump"
    /// One node's disk becomes 10-100x slower for `for`.
    case slowDisk = "slow-disk"
    /// One byte of a stored block flips on a node that may suffer media faults.
    case bitRot = "bit-rot"
    /// One sector becomes unreadable (until rewritten) on a node that may suffer media faults.
    case latentError = "latent-error"
    /// A node is gone for good (its disk with it) and never comes back. At random at most
    /// replication - 1 times per run, and only while more than `replication` nodes are left.
    /// The garbage collector's repair (`gc`) must bring every block back to full redundancy.
    case loseNode = "lose-node"
    /// A new, empty node joins the ring (a new ring version); the collector moves to it the
    /// blocks it now places there and deletes their old copies. Needs `gc`.
    case joinNode = "join-node"
    /// A node is drained: no new placements; the collector moves its blocks to the others
    /// and, once it holds none, it is removed from the ring and leaves. Needs `gc`.
    case drainNode = "drain-node"
    /// A volume is deleted (`torus volume delete`): its writer stops and its keys go; the
    /// collector must reclaim every block it had. At random only with several volumes, and
    /// one is always left. Needs `gc`.
    case deleteVolume = "delete-volume"
}

/// A fault at a fixed virtual time. `node` is 1-based (nil: drawn from the seed); `duration`
/// is how long until it heals (nil: drawn from the seed).
public struct ScheduledFault: Sendable, Equatable {
    public var at: Nanoseconds
    public var kind: FaultKind
    public var node: Int?
    public var duration: Nanoseconds?
    /// For writer faults: the volume (1-based) whose writer it hits (nil: drawn).
    public var volume: Int?
    public init(at: Nanoseconds, kind: FaultKind, node: Int? = nil, duration: Nanoseconds? = nil) {
        self.at = at
        self.kind = kind
        self.node = node
        self.duration = duration
    }
}

/// What a run found.
public struct SimResult: Sendable {
    public var seed: UInt64
    public var traceHash: UInt64
    public var violation: String?
    public var brokenPromise: String?
    public var simulatedSeconds: Double
    public var events: UInt64
    public var opsCompleted: Int
    public var readsChecked: Int
    public var readErrors: Int
    public var faultsInjected: Int
    public var writerRestarts: Int
    public var commits: Int
    /// The writer knobs this seed drew (cache, write-back timing, limits).
    public var knobs: String
    /// Copies that read-repair put back after a read found a bad one.
    public var repairs: Int
    /// Blocks the garbage collector's repair copied to restore full redundancy.
    public var copies: Int = 0
    /// Writes and flushes that failed with `noSpace` (the NBD client's ENOSPC).
    public var noSpaceErrors: Int = 0
    /// Rebalancing: copies the collector made to placement nodes, their bytes, and extra
    /// copies it deleted; ring versions made by joins, drains and removals.
    public var moves: Int = 0
    public var bytesMoved: UInt64 = 0
    public var trimmed: Int = 0
    public var ringVersion: UInt64 = 1
    /// Blocks (data and map) the volumes' committed heads name at the end.
    public var liveBlocks: Int = 0
    /// Copies the deleted volumes (`delete-volume`) had on live nodes when deleted.
    public var deletedVolumeBlocks: Int = 0
    /// Write-back copies the writers put on a fallback node (a placement node did not answer).
    public var fallbackPuts: Int = 0
    /// FLUSHes and FUA writes acknowledged while the metadata store was down (the commit log
    /// lets them go on until a checkpoint or the lease needs the store).
    public var flushesDuringOutage: Int = 0
    /// Commits by log append (`commits` counts checkpoints).
    public var logCommits: Int = 0
    public var passed: Bool { violation == nil }
    /// A liveness failure (progress or convergence after healing) rather than a broken safety promise.
    public var isLivenessFailure: Bool {
        brokenPromise == SectorModel.Promise.liveness.rawValue || brokenPromise == SectorModel.Promise.convergence.rawValue
            || brokenPromise == SectorModel.Promise.reclaim.rawValue
    }

    public var traceHex: String {
        let h = String(traceHash, radix: 16)
        return String(repeating: "0", count: 16 - h.count) + h
    }
}
