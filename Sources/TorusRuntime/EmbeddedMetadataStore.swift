import Glibc
import Synchronization
import TorusCore

/// Errors of `EmbeddedMetadataStore`.
public enum EmbeddedMetadataStoreError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A system call failed (open, write, fdatasync, rename, ...).
    case io(FileDiskError)
    /// Another store (in this or another process) has the directory open.
    case locked(directory: String)
    /// The journal is damaged in a way that is not a torn tail: a bad header, or a record with a
    /// valid checksum that cannot be decoded or replayed. Nothing is truncated in this case.
    case corruptJournal(path: String, offset: UInt64, reason: String)
    /// A snapshot could not be captured or restored exactly (see `MetadataSnapshotRestore`).
    case snapshotFailed(reason: String)
    /// An earlier journal write or sync failed, so memory may be ahead of disk; reopen the store.
    case failed(reason: String)
    case closed

    public var description: String {
        switch self {
        case .io(let error): return error.description
        case .locked(let dir): return "metadata directory \(dir) is in use by another store"
        case .corruptJournal(let path, let offset, let reason): return "corrupt metadata journal \(path) at byte \(offset): \(reason)"
        case .snapshotFailed(let reason): return "metadata snapshot failed: \(reason)"
        case .failed(let reason): return "metadata store failed earlier (\(reason)); reopen it"
        case .closed: return "metadata store is closed"
        }
    }
}

/// The metadata state machine persisted to an fsynced journal and recovered on restart: the
/// single-node metadata service of a local cluster.
///
/// `apply` returns only once a request that changed state is journaled and fdatasynced; after
/// a failed append the store refuses further work (`.failed`) until reopened. `init` replays
/// the journal and cuts a torn or corrupt tail (`recovery.truncatedBytes`). Callers pass
/// monotonic `Instant`s; lease expiries inside the machine are *journal-clock* times (use
/// `nextLeaseExpiry()` for the caller's clock), and leases alive at the last journaled time get
/// a full TTL after a restart. Watches live in memory; their handlers run under the store's
/// lock. Design (recovery, journal clock, compaction): docs/metadata.md, "The embedded store".
public final class EmbeddedMetadataStore: Sendable {
    /// What `init` found in the journal.
    public struct Recovery: Hashable, Sendable {
        /// Records applied from the journal (including a snapshot record).
        public var recordsReplayed: Int
        /// Bytes of torn or corrupt tail cut from the journal.
        public var truncatedBytes: UInt64
        /// The revision of the snapshot record the journal started with, if any.
        public var snapshotRevision: Int64?
        /// Leases renewed to their full TTL at recovery.
        public var renewedLeases: Int
    }

    public struct Status: Hashable, Sendable {
        public var revision: Int64
        public var journalBytes: UInt64
        public var compactions: Int
        public var lastCompactionFailure: String?
    }

    public static let journalName = "metadata.journal"
    public let directory: String
    public let recovery: Recovery
    private let state: Mutex<State>

    /// Opens the store in `directory` (created if needed), replaying `metadata.journal`.
    /// `now` is the caller's clock at opening; see "Time" above.
    public init(directory: String, now: Instant, compactionThresholdBytes: UInt64 = 64 << 20) throws {
        self.directory = directory
        do {
            try POSIXIO.makeDirectories(directory)
        } catch let error as FileDiskError {
            throw EmbeddedMetadataStoreError.io(error)
        }
        let lockPath = directory + "/LOCK"
        let lockFD = POSIXIO.open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC)
        guard lockFD >= 0 else { throw EmbeddedMetadataStoreError.io(FileDiskError(path: lockPath, operation: "open", errno: errno)) }
        guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            _ = Glibc.close(lockFD)
            if code == EWOULDBLOCK { throw EmbeddedMetadataStoreError.locked(directory: directory) }
            throw EmbeddedMetadataStoreError.io(FileDiskError(path: lockPath, operation: "lock", errno: code))
        }
        do {
            var (state, recovery) = try State.recover(path: directory + "/" + Self.journalName, now: now)
            state.lockFD = lockFD
            state.baseThreshold = compactionThresholdBytes
            state.threshold = max(compactionThresholdBytes, 2 * state.journal.size)
            self.recovery = recovery
            self.state = Mutex(state)
        } catch {
            _ = Glibc.close(lockFD)
            if let error = error as? FileDiskError { throw EmbeddedMetadataStoreError.io(error) }
            throw error
        }
    }

    deinit {
        state.withLock { $0.close() }
    }

    /// Applies `request` at the caller's time `now`; state changes are durable on return,
    /// and then reported to the watches they match.
    public func apply(_ request: MetaRequest, now: Instant) throws -> MetaResponse {
        try state.withLock { s throws -> MetaResponse in
            try s.usable()
            let t = s.advance(now)
            let revision = s.machine.revision
            let (response, notifications) = s.machine.apply(request, now: t)
            if State.changedState(request, response, revisionBefore: revision, nextAutoLeaseID: &s.nextAutoLeaseID) {
                try s.append(.request(request, now: t))
            }
            s.deliver(notifications)
            return response
        }
    }

    func registerWatch(key: String, prefix: Bool, fromRevision: Int64, handler: @escaping MetadataWatchHandler) throws -> WatchID {
        try state.withLock { s throws -> WatchID in
            try s.usable()
            switch s.machine.watch(key: key, prefix: prefix, fromRevision: fromRevision) {
            case .failure(let e):
                throw RuntimeError.metadata("\(location): cannot watch \(key): \(e)")
            case .success(let (id, replay)):
                s.watchHandlers[id] = handler
                s.deliver(replay)
                return id
            }
        }
    }

    func cancelWatch(_ id: WatchID) {
        state.withLock { s in
            s.machine.cancelWatch(id)
            s.watchHandlers[id] = nil
        }
    }

    /// Revokes the leases expired at the caller's time `now` (journaled when any is).
    public func expireLeases(now: Instant) throws {
        try state.withLock { s throws in
            try s.usable()
            let t = s.advance(now)
            guard let expiry = s.machine.nextLeaseExpiry(), expiry <= t else { return }
            let notifications = s.machine.expireLeases(now: t)
            try s.append(.expireLeases(now: t))
            s.deliver(notifications)
        }
    }

    /// A copy of the state machine (lease expiries are in the journal clock, see "Time").
    public func snapshot() -> MetadataStateMachine {
        state.withLock { $0.machine }
    }

    /// The earliest lease expiry in the caller's clock (possibly past), nil without leases:
    /// when to call `expireLeases` next.
    public func nextLeaseExpiry() -> Instant? {
        state.withLock { s in s.machine.nextLeaseExpiry().map { s.callerTime($0) } }
    }

    /// The journal-clock time corresponding to the caller's `now` (for comparing with times
    /// inside `snapshot()`).
    public func journalTime(_ now: Instant) -> Instant {
        state.withLock { $0.journalTime(now) }
    }

    /// Watches on `snapshot()` must start at or after this revision: when the store was
    /// restored from a compacted journal, older history is synthetic.
    public var oldestWatchableRevision: Int64 {
        state.withLock { max($0.machine.compactRevision, $0.snapshotRevision + 1) }
    }

    public func status() -> Status {
        state.withLock {
            Status(revision: $0.machine.revision, journalBytes: $0.journal.size, compactions: $0.compactions,
                   lastCompactionFailure: $0.lastCompactionFailure)
        }
    }

    /// Rewrites the journal as one snapshot record of the current state (atomic rename).
    public func compact() throws {
        try state.withLock { s throws in
            try s.usable()
            try s.compact()
        }
    }

    /// Closes the journal and releases the directory lock; later calls throw `.closed`.
    public func close() {
        state.withLock { $0.close() }
    }

    // MARK: - State

    struct State: Sendable {
        var machine: MetadataStateMachine
        var journal: MetadataJournalFile
        var nextAutoLeaseID: Int64 = 1
        /// Journal clock = journalBase + (caller now − callerBase), never decreasing.
        var journalBase: Instant
        var callerBase: Instant
        var lastTime: Instant
        var snapshotRevision: Int64 = 0
        var lockFD: Int32 = -1
        var baseThreshold: UInt64 = 64 << 20
        var threshold: UInt64 = 64 << 20
        var compactions = 0
        var lastCompactionFailure: String?
        var failure: String?
        var isClosed = false
        var watchHandlers: [WatchID: MetadataWatchHandler] = [:]

        func deliver(_ notifications: [WatchNotification]) {
            for n in notifications where !n.events.isEmpty { watchHandlers[n.watch]?(.events(n.events)) }
        }

        func journalTime(_ now: Instant) -> Instant {
            let (sum, overflow) = journalBase.nanoseconds.addingReportingOverflow((now - callerBase).value)
            return Instant(nanoseconds: overflow ? .max : sum)
        }

        func callerTime(_ t: Instant) -> Instant {
            if t >= journalBase {
                let (sum, overflow) = callerBase.nanoseconds.addingReportingOverflow((t - journalBase).value)
                return Instant(nanoseconds: overflow ? .max : sum)
            }
            return Instant(nanoseconds: callerBase.nanoseconds - min(callerBase.nanoseconds, (journalBase - t).value))
        }

        mutating func advance(_ now: Instant) -> Instant {
            lastTime = max(lastTime, journalTime(now))
            return lastTime
        }

        func usable() throws {
            if isClosed { throw EmbeddedMetadataStoreError.closed }
            if let failure { throw EmbeddedMetadataStoreError.failed(reason: failure) }
        }

        /// Whether an applied request changed the replicated state (and so must be journaled);
        /// tracks the state machine's automatic lease id counter.
        static func changedState(_ request: MetaRequest, _ response: MetaResponse, revisionBefore: Int64,
                                 nextAutoLeaseID: inout Int64) -> Bool {
            switch (request, response) {
            case (.txn, .txn(let result)): return result.revision != revisionBefore
            case (.leaseGrant(_, let requested), .lease(let id, _)):
                if requested == 0 { nextAutoLeaseID = id + 1 }
                return true
            case (.leaseKeepAlive, .lease), (.leaseRevoke, .revoked): return true
            default: return false
            }
        }

        mutating func append(_ record: MetadataJournalRecord) throws {
            do {
                try journal.append(MetadataJournalCodec.frame(record))
            } catch {
                failure = "journal append failed: \(error)"
                throw EmbeddedMetadataStoreError.io(error as? FileDiskError
                    ?? FileDiskError(path: journal.path, operation: "append", errno: EIO))
            }
            if journal.size > threshold {
                do {
                    try compact()
                } catch {
                    lastCompactionFailure = "\(error)"
                    threshold = max(threshold, journal.size) * 2
                }
            }
        }

        mutating func compact() throws {
            let snapshot = MetadataSnapshotRestore.capture(machine, nextAutoLeaseID: nextAutoLeaseID)
            let frame = MetadataJournalCodec.frame(.snapshot(snapshot, now: lastTime))
            // Prove the record restores this exact state before it replaces the journal.
            let decoded = try? MetadataJournalCodec.decode(frame[MetadataJournalCodec.frameHeaderSize...])
            guard case .snapshot(let roundTrip, _) = decoded, roundTrip == snapshot else {
                throw EmbeddedMetadataStoreError.snapshotFailed(reason: "snapshot record does not decode to the state")
            }
            var restored: MetadataStateMachine
            do {
                restored = try MetadataSnapshotRestore.restore(roundTrip, now: lastTime)
            } catch {
                throw EmbeddedMetadataStoreError.snapshotFailed(reason: error.reason)
            }
            var live = machine
            let grant = MetaRequest.leaseGrant(ttlSeconds: live.minLeaseTTLSeconds, id: 0)
            guard live.apply(grant, now: lastTime).0 == restored.apply(grant, now: lastTime).0 else {
                throw EmbeddedMetadataStoreError.snapshotFailed(reason: "lease id counter differs after restore")
            }
            let replacement: MetadataJournalFile
            do {
                replacement = try MetadataJournalFile.prepare(path: journal.path, records: [frame])
            } catch {
                throw EmbeddedMetadataStoreError.io(error as? FileDiskError
                    ?? FileDiskError(path: journal.path, operation: "compact", errno: EIO))
            }
            do {
                try replacement.install()
            } catch {
                if error.renamed {
                    // The journal was replaced but the rename may not survive a crash, so later
                    // appends to the new file might be lost: stop accepting work.
                    journal.close()
                    journal = replacement
                    failure = "journal compaction could not sync the directory: \(error.error)"
                } else {
                    replacement.close()
                }
                throw EmbeddedMetadataStoreError.io(error.error)
            }
            journal.close()
            journal = replacement
            compactions += 1
            lastCompactionFailure = nil
            threshold = max(baseThreshold, 2 * journal.size)
        }

        mutating func close() {
            guard !isClosed else { return }
            isClosed = true
            journal.close()
            if lockFD >= 0 { _ = Glibc.close(lockFD) }
        }
    }
}
