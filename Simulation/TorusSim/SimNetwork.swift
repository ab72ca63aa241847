import TorusCore

/// The simulated network between the writer, the storage nodes and the metadata store.
///
/// Fault model: every message gets a seeded latency (so messages reorder), may be dropped,
/// may be delivered twice; directed links can be blocked (symmetric or one-way partitions).
/// A crash of either end loses messages in flight (connections reset); the simulation checks
/// that with incarnation numbers.
struct SimNetwork {
    var random: SeededRandom
    var latencyMin = Nanoseconds.microseconds(50)
    var latencyMax: Nanoseconds
    var dropProbability: Double
    var duplicateProbability: Double
    /// Blocked directed links (from.raw << 32 | to.raw) → id of the fault that blocks them.
    private var blocked: [UInt64: UInt64] = [:]

    init(random: SeededRandom, latencyMax: Nanoseconds, dropProbability: Double, duplicateProbability: Double) {
        self.random = random
        self.latencyMax = latencyMax
        self.dropProbability = dropProbability
        self.duplicateProbability = duplicateProbability
    }

    var partitionCount: Int { blocked.count }

    mutating func latency() -> Nanoseconds { random.duration(latencyMin, latencyMax) }

    /// When the copies of one message arrive: none (dropped), one, or two (duplicated).
    mutating func deliveries() -> (first: Nanoseconds?, duplicate: Nanoseconds?) {
        if random.chance(dropProbability) { return (nil, nil) }
        let first = latency()
        if random.chance(duplicateProbability) { return (first, first + latency()) }
        return (first, nil)
    }

    func isBlocked(_ from: NodeID, _ to: NodeID) -> Bool {
        !blocked.isEmpty && blocked[Self.link(from, to)] != nil
    }

    mutating func block(_ from: NodeID, _ to: NodeID, fault: UInt64) { blocked[Self.link(from, to)] = fault }

    mutating func heal(fault: UInt64) { blocked = blocked.filter { $0.value != fault } }

    mutating func healAll() { blocked.removeAll() }

    private static func link(_ from: NodeID, _ to: NodeID) -> UInt64 { UInt64(from.raw) << 32 | UInt64(to.raw) }
}

/// The metadata store under simulation: the metadata state machine behind a switch that makes
/// it unavailable (requests are lost, like a dead etcd endpoint). Public so the metadata
/// conformance suite can hold it to the same tests as the embedded store and etcd.
public struct SimMetadataStore: Sendable {
    public private(set) var machine = MetadataStateMachine()
    public var available = true
    private var requests = 0

    public init() {}

    /// The response, or nil when the store is down and the request is lost.
    public mutating func handle(_ request: MetaRequest, now: Instant) -> MetaResponse? {
        apply(request, now: now)?.0
    }

    /// `handle` with the watch notifications the request caused.
    public mutating func apply(_ request: MetaRequest, now: Instant) -> (MetaResponse, [WatchNotification])? {
        guard available else { return nil }
        let result = machine.apply(request, now: now)
        requests += 1
        if requests % 32 == 0 { machine.checkInvariants() }  // walks the whole store: sampled
        return result
    }

    /// Expires leases whose TTL passed (etcd's lessor does this on its own clock); returns the
    /// watch notifications of the keys they took with them.
    @discardableResult
    public mutating func tick(now: Instant) -> [WatchNotification] {
        machine.expireLeases(now: now)
    }

    public mutating func watch(key: String, prefix: Bool, fromRevision: Int64) -> Result<(WatchID, [WatchNotification]), MetaError> {
        machine.watch(key: key, prefix: prefix, fromRevision: fromRevision)
    }

    public mutating func cancelWatch(_ id: WatchID) { machine.cancelWatch(id) }
}
