/// Identifies one client request (an NBD request in production, a workload op in the simulator).
public struct OpID: WordHashable, Comparable, Sendable, CustomStringConvertible {
    public var raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public static func < (a: OpID, b: OpID) -> Bool { a.raw < b.raw }
    public var hashWord: UInt64 { raw }
    public var description: String { "op\(raw)" }
}

/// Correlates a metadata request with its response.
public struct MetaRequestID: WordHashable, Comparable, Sendable {
    public var raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public static func < (a: MetaRequestID, b: MetaRequestID) -> Bool { a.raw < b.raw }
    public var hashWord: UInt64 { raw }
}

/// A byte-range request on a volume. Offsets and lengths must be multiples of the sector size.
public enum VolumeOp: Sendable {
    case read(offset: UInt64, length: Int)
    /// With `fua`, completes only once the data is durable (committed). The data is `chunks`
    /// concatenated; a chunk that is exactly one whole block is cached as it is, without a copy
    /// (the NBD server cuts payloads at block boundaries for this).
    case write(offset: UInt64, chunks: [[UInt8]], fua: Bool)
    /// Completes once every write completed before it was submitted is durable.
    case flush
    /// Unmaps the range; it reads back as zeros.
    case trim(offset: UInt64, length: Int)
    /// A flush that commits by checkpoint and keeps that checkpoint as snapshot `name` (its
    /// key written in the same head transaction). The caller makes sure the name is free.
    case snapshot(name: String)
}

extension VolumeOp {
    /// A write whose data is one array.
    public static func write(offset: UInt64, data: [UInt8], fua: Bool) -> VolumeOp {
        .write(offset: offset, chunks: [data], fua: fua)
    }
}

/// Bytes held as consecutive pieces: a write's `chunks`, a read's `parts`.
extension Array where Element: RandomAccessCollection<UInt8> {
    /// Total bytes.
    public var byteCount: Int { reduce(0) { $0 + $1.count } }

    /// The bytes concatenated (a single whole array is shared, not copied).
    public var joined: [UInt8] {
        if count == 1 { return [UInt8](self[0]) }
        var all: [UInt8] = []
        all.reserveCapacity(byteCount)
        for c in self { all.append(contentsOf: c) }
        return all
    }
}

public enum VolumeOpResult: Sendable, Equatable {
    /// The bytes read: `parts` concatenated, in order. They are slices of cached blocks,
    /// shared rather than copied, so a reply can be written straight from them.
    case read(parts: [ArraySlice<UInt8>])
    case done

    /// A read result of one array.
    public static func read(_ bytes: [UInt8]) -> VolumeOpResult { .read(parts: [bytes[...]]) }

    /// The bytes of a read result, joined (nil for `.done`).
    public var readBytes: [UInt8]? {
        guard case .read(let parts) = self else { return nil }
        return parts.joined
    }

    /// Equal when both are `.done`, or reads of the same bytes however they are cut into parts.
    public static func == (a: VolumeOpResult, b: VolumeOpResult) -> Bool {
        switch (a, b) {
        case (.done, .done): true
        case (.read, .read): a.readBytes == b.readBytes
        default: false
        }
    }
}

/// Errors a volume user can get. Each says what happened and carries what it happened to.
public enum VolumeError: Error, Hashable, Sendable, CustomStringConvertible {
    case misaligned(offset: UInt64, length: Int, sectorSize: Int)
    case outOfRange(offset: UInt64, length: Int, volumeSize: UInt64)
    case tooLarge(length: Int, maximum: Int)
    /// No replica returned a verified copy of the block within the retry budget.
    case readFailed(block: UInt64)
    /// Another writer took the volume (or our lease is gone): nothing more from us becomes visible.
    case fenced(volume: String, reason: String)
    /// The lease could not be renewed in time, so durability cannot be acknowledged now.
    case leaseNotRenewed(volume: String)
    /// The metadata store did not answer the commit in time.
    case metadataUnavailable(volume: String)
    /// A write or trim on a read-only client.
    case readOnly(volume: String)
    /// No node that may hold the data has room for it: a flush cannot make it durable.
    case noSpace(volume: String)

    public var description: String {
        switch self {
        case .misaligned(let o, let l, let s): "request at offset \(o) length \(l) is not aligned to \(s)-byte sectors"
        case .outOfRange(let o, let l, let size): "request at offset \(o) length \(l) is beyond the volume size \(size)"
        case .tooLarge(let l, let m): "request length \(l) exceeds the maximum \(m)"
        case .readFailed(let b): "no replica returned a verified copy of block \(b)"
        case .fenced(let v, let r): "volume \(v): this writer was fenced (\(r)); reopen the volume"
        case .leaseNotRenewed(let v): "volume \(v): writer lease not renewed in time; durability not acknowledged"
        case .metadataUnavailable(let v): "volume \(v): metadata store unavailable; commit not acknowledged"
        case .readOnly(let v): "volume \(v) is open read-only"
        case .noSpace(let v): "volume \(v): no storage node that may hold the data has room for it; written data stays cached but is not durable"
        }
    }
}

/// Knobs of a volume client. Every limit has its unit in the name.
public struct VolumeClientConfig: Sendable {
    public var sectorSize = 4096
    /// 32 MiB (the NBD maximum) plus the two edge sectors a byte-granular request can add.
    public var requestBytesMax = (32 << 20) + 8192
    public var cacheBytesMax = 64 << 20
    /// A non-sequential read of at most this many bytes of a block that is not cached fetches
    /// only those bytes (0: always fetch whole blocks).
    public var rangeReadBytesMax = 16 << 10
    /// Background write-back starts when dirty bytes exceed this.
    public var dirtyBytesHigh = 16 << 20
    /// Dirty blocks older than this are written back even below the high-water mark.
    public var writebackDelay = Nanoseconds.milliseconds(500)
    public var writebacksInFlightMax = 64
    /// Write-back puts are durable (each node answers once its group commit covered the
    /// block). Off: nodes answer once the bytes are written, and a flush syncs the blocks its
    /// map names (`VolumeClient+Sync.swift`); a block rewritten before then costs its nodes no
    /// sync. Both keep every promise (the simulator runs both); the runtime turns it off unless
    /// `--durable-writes` (the trade-off: docs/storage-core.md, "Volume writer and commit").
    public var durableWriteback = true
    /// Written-back blocks not yet synced (they stay cached until they are) over this many
    /// bytes are synced without waiting for a FLUSH.
    public var unsyncedBytesHigh = 32 << 20
    /// Unsynced blocks are synced at least this often.
    public var syncDelay = Nanoseconds.seconds(1)
    /// A sync may wait for a replica's disk to write back everything it cached.
    public var syncTimeout = Nanoseconds.seconds(5)
    public var rpcTimeout = Nanoseconds.milliseconds(500)
    /// A put that failed this many times on one placement node moves to a fallback node.
    public var putAttemptsBeforeFallback = 2
    /// Further nodes (in ring preference order) that may hold a copy instead of a placement node.
    public var fallbackNodesMax = 3
    /// How long a node that stopped answering gets no new copies (then it is tried again).
    public var suspectDuration = Nanoseconds.seconds(1)
    public var metadataTimeout = Nanoseconds.seconds(2)
    public var retryBackoff = Nanoseconds.milliseconds(100)
    /// Full rounds over every replica before a read gives up.
    public var readRoundsMax = 20
    public var leaseTTLSeconds: Int64 = 10
    /// We stop acknowledging durability this long before the lease could expire in the store.
    public var leaseSafetyMargin = Nanoseconds.seconds(2)
    public var lockRetryInterval = Nanoseconds.milliseconds(500)
    public var tickInterval = Nanoseconds.milliseconds(50)
    /// A read-only client: no lease, no writer lock (any number may run next to the writer);
    /// it serves the last committed state, re-read every `readOnlyRefresh`. Writes and trims
    /// fail with `.readOnly`; a flush has nothing to do.
    public var readOnly = false
    /// With `readOnly`: serve this snapshot root instead of the head (it never changes).
    public var snapshotRoot: MapEntry?
    public var readOnlyRefresh = Nanoseconds.seconds(1)
    /// A FLUSH commits by checkpoint (map pages, root, head CAS in the metadata store) instead
    /// of a log append once this many records or this much time passed since the last one.
    public var checkpointRecords = 256
    public var checkpointInterval = Nanoseconds.seconds(5)
    /// Refs replaced by log commits, over this many (or half the volume's blocks),
    /// also call for a checkpoint: they can be deleted only once one no longer names them.
    public var checkpointGarbageMax = 8192
    /// A FLUSH that commits by log append sends its record as soon as every block it names
    /// has its put under way, and completes once both are durable (one round). Off: the
    /// record waits for the blocks (two rounds). Why it stays safe: docs/design.md.
    public var oneRoundFlush = true

    /// Injected bugs for checking the checkers. Never set in production.
    public var canary: Canary = .none

    public enum Canary: String, Sendable, CaseIterable {
        case none
        /// Commit without making the blocks the map names (data and map) durable on their replicas.
        case ackBeforeReplicaSync = "ack-before-sync"
        /// Acknowledge a flush without its commit: no log append, or (for a checkpoint) once the
        /// map is written, without committing the head.
        case ackFlushBeforeCommit = "ack-before-commit"
        /// Commit without comparing the writer's epoch, so a writer that lost its lock can
        /// still move the head (fencing broken).
        case skipEpochCompare = "skip-epoch-compare"
        /// Never retry a commit that got no answer: flushes hang after a metadata outage
        /// (a liveness bug).
        case noCommitRetry = "no-commit-retry"
        /// The garbage collector deletes every block no head reaches, ignoring that the
        /// current writer may still commit it (its epoch and the head's floor).
        case gcIgnoresHorizon = "gc-ignores-horizon"
        /// The garbage collector finds garbage but never deletes it (space leaks).
        case gcLeaks = "gc-leaks"
        /// The garbage collector does not mark snapshot roots: their blocks look like garbage.
        case gcIgnoresSnapshots = "gc-ignores-snapshots"
        /// The writer deletes the blocks it replaces even when a snapshot may still name them.
        case writerIgnoresSnapshots = "writer-ignores-snapshots"
        /// Acknowledge a log append once one node of the segment made it durable, not all.
        case ackBeforeLogReplicas = "ack-before-log-replicas"
        /// Storage nodes accept log records from epochs below their seal (fencing broken).
        case nodeIgnoresSeal = "node-ignores-seal"
        /// Opening replays the log tail but skips its last record.
        case replaySkipsRecord = "replay-skips-record"
        /// A checkpoint deletes the records it retires before its head CAS succeeded, so it
        /// runs ahead of what is durable in the metadata store.
        case truncateBeforeCheckpoint = "truncate-before-checkpoint"
        /// A storage node's recovery trusts the puts of its journal's last write without
        /// checking their slots, though that write's sync (data and journal) may not have completed.
        case storeTrustsLastWrite = "store-trusts-last-write"
        /// Recovery keeps the log's last record without checking that its blocks are durable,
        /// though one-round FLUSHes send the record together with the blocks' puts.
        case recoveryTrustsLastRecord = "recovery-trusts-last-record"
        /// Storage nodes refuse a sealed volume's older records but still take its blocks, so
        /// an old writer can complete a FLUSH whose record a recovery dropped.
        case nodeIgnoresDataSeal = "node-ignores-data-seal"
        /// Storage nodes serve a range read from the sectors it covers without checking them
        /// against their sector checksums, so rotten bytes reach the reader.
        case storeTrustsSectors = "store-trusts-sectors"
    }

    public init() {}
}

/// Effects of the volume client, for its driver to perform.
public enum ClientOutput: Sendable {
    case send(to: NodeID, PeerMessage)
    case metadata(MetaRequestID, MetaRequest)
    /// Call `tick(now:)` at (or after) this instant.
    case timer(at: Instant)
    case complete(OpID, Result<VolumeOpResult, VolumeError>)
    case phaseChanged(VolumeClient.Phase)
}
