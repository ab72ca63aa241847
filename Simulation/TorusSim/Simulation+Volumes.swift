import TorusCore

/// The volumes under simulation: each one's writer process, workload, model and checks, and
/// the forwarding properties that read the current one's (`cur`) in place.
extension Simulation {
    /// One volume: its writer process (and a paused predecessor), workload, model and checks.
    final class VolumeSim {
        let volume: VolumeInfo
        var client: VolumeClient?
        /// The current writer's id on the network (a writer that takes over gets a new one).
        var clientID: NodeID
        var clientIncarnation: UInt64 = 0
        var clientTimerAt: Instant?
        var writerDown = false
        /// Deleted (`delete-volume`): no writer, no load, no read-back; the collector must
        /// reclaim every block it had.
        var deleted = false
        var model: SectorModel
        var inflight: [OpID: InflightOp] = [:]
        var sectorBusy: [UInt8]
        var slotGeneration: UInt64 = 0
        var finalNextRead: UInt64 = 0
        var readBackStarted = false
        /// Where the next sequential op starts.
        var cursor: UInt64 = 0
        var readBackDone = false
        /// The writer's clock offset (clock-jump) and the last time it saw (it never runs back).
        var writerSkew: Int64 = 0
        var lastWriterNow: Instant = .zero
        /// writer-crash-mid-flush / writer-pause wait for the writer's next commit.
        var armed: FaultKind?
        var armedDuration: Nanoseconds?
        /// A paused writer that a successor replaced: it resumes later with its old state.
        var paused: VolumeClient?
        var pausedUntil: Instant?
        var pausedResumeWhenSuccessorReady = false
        var pausedHeld: [(Instant, Event)] = []
        /// What a writer frozen before an append had still to send, and how far its clock lags.
        var pausedOutbox: [ClientOutput] = []
        var pausedClockLag: Int64 = 0
        var pausedAt: Instant = .zero
        var pausedFrozen = false
        /// Log checker: per segment epoch, the highest record position any writer acknowledged,
        /// and where a recovery found that segment's log to end.
        var ackedLog: [UInt64: UInt64] = [:]
        var recoveredLogEnd: [UInt64: UInt64] = [:]
        /// Fencing checker: the highest epoch granted, and the last committed head.
        var grantedEpoch: UInt64 = 0
        var lastCommit: (epoch: UInt64, generation: UInt64)?
        /// Snapshots asked for, in order, and the refs of each one known taken (the oracle's).
        var snapshots: [SnapshotModel] = []
        var snapshotRefs: [String: Set<BlockRef>] = [:]

        init(volume: VolumeInfo, clientID: NodeID) {
            self.volume = volume
            self.clientID = clientID
            model = SectorModel(sectorCount: Int(volume.sizeBytes) / SectorModel.sectorSize)
            sectorBusy = Array(repeating: 0, count: Int(volume.sizeBytes) / SectorModel.sectorSize)
        }
    }

    /// Writer ids: volume v's first writer is 1000 + 1000 v; each takeover takes the next.
    static func writerBase(volume v: Int) -> UInt32 { 1000 + 1000 * UInt32(v) }
    func volumeIndex(ofWriter id: NodeID) -> Int { Int((id.raw - 1000) / 1000) }

    // The current volume's state (see `cur`). The values with arrays inside are read in
    // place (`_read`), not copied: `client != nil` copied the whole writer, 100,000 times a
    // soak run.
    var v: VolumeSim { vols[cur] }
    var volume: VolumeInfo { vols[cur].volume }
    var client: VolumeClient? { _read { yield vols[cur].client } _modify { let s = vols[cur]; yield &s.client } }
    var clientID: NodeID { get { vols[cur].clientID } set { vols[cur].clientID = newValue } }
    var clientIncarnation: UInt64 { get { vols[cur].clientIncarnation } set { vols[cur].clientIncarnation = newValue } }
    var clientTimerAt: Instant? { get { vols[cur].clientTimerAt } set { vols[cur].clientTimerAt = newValue } }
    var writerDown: Bool { get { vols[cur].writerDown } set { vols[cur].writerDown = newValue } }
    var model: SectorModel { _read { yield vols[cur].model } _modify { let s = vols[cur]; yield &s.model } }
    var inflight: [OpID: InflightOp] { _read { yield vols[cur].inflight } _modify { let s = vols[cur]; yield &s.inflight } }
    var sectorBusy: [UInt8] { _read { yield vols[cur].sectorBusy } _modify { let s = vols[cur]; yield &s.sectorBusy } }
    var slotGeneration: UInt64 { get { vols[cur].slotGeneration } set { vols[cur].slotGeneration = newValue } }
    var finalNextRead: UInt64 { get { vols[cur].finalNextRead } set { vols[cur].finalNextRead = newValue } }
    var writerSkew: Int64 { get { vols[cur].writerSkew } set { vols[cur].writerSkew = newValue } }
    var lastWriterNow: Instant { get { vols[cur].lastWriterNow } set { vols[cur].lastWriterNow = newValue } }
    var armed: FaultKind? { get { vols[cur].armed } set { vols[cur].armed = newValue } }
    var armedDuration: Nanoseconds? { get { vols[cur].armedDuration } set { vols[cur].armedDuration = newValue } }
    var paused: VolumeClient? { _read { yield vols[cur].paused } _modify { let s = vols[cur]; yield &s.paused } }
    var pausedUntil: Instant? { get { vols[cur].pausedUntil } set { vols[cur].pausedUntil = newValue } }
    var pausedResumeWhenSuccessorReady: Bool {
        get { vols[cur].pausedResumeWhenSuccessorReady } set { vols[cur].pausedResumeWhenSuccessorReady = newValue }
    }
    var pausedHeld: [(Instant, Event)] { _read { yield vols[cur].pausedHeld } _modify { let s = vols[cur]; yield &s.pausedHeld } }
    var pausedOutbox: [ClientOutput] { get { vols[cur].pausedOutbox } set { vols[cur].pausedOutbox = newValue } }
    var grantedEpoch: UInt64 { get { vols[cur].grantedEpoch } set { vols[cur].grantedEpoch = newValue } }
    var lastCommit: (epoch: UInt64, generation: UInt64)? { get { vols[cur].lastCommit } set { vols[cur].lastCommit = newValue } }
    /// Every volume has no op in flight.
    var allIdle: Bool { vols.allSatisfy { $0.inflight.isEmpty } }

    struct InflightOp {
        enum Kind { case read, write(fua: Bool), trim, flush(mark: UInt64), snapshot(Int) }
        var kind: Kind
        var slot: Int
        var firstSector: UInt64
        var sectorCount: Int
        var value: UInt64
        var isSnapshot: Bool { if case .snapshot = kind { true } else { false } }
    }
}
