/// A member of the placement ring.
public struct RingMember: Hashable, Sendable {
    public var node: NodeID
    /// Relative capacity weight (> 0).
    public var weight: Double
    /// Failure domain label (zone/rack/host); replicas go to distinct domains when possible.
    public var domain: String
    /// Being drained: gets no new placements, but readers still look there (after every
    /// placement and fallback node) until its blocks have moved and it is removed.
    public var draining: Bool
    public init(node: NodeID, weight: Double = 1, domain: String = "", draining: Bool = false) {
        precondition(weight > 0, "ring weight must be positive for \(node)")
        self.node = node
        self.weight = weight
        self.domain = domain.isEmpty ? node.description : domain
        self.draining = draining
    }
}

/// Weighted rendezvous (highest random weight) placement.
///
/// Each (key, node) pair gets the score `-weight / ln(u)` with `u` a stable hash in (0,1);
/// the nodes with the highest scores hold the key. Adding or removing one node moves only the
/// keys that it gains or loses, in proportion to its weight.
///
/// Rings are versioned: every join, drain and removal makes a new version (kept in the
/// metadata store), and a node being drained stays a member, without placements, until its
/// blocks have moved (`Collector`).
public struct Ring: Hashable, Sendable {
    /// Metadata key holding the version of the ring in force (`MetaValue.u64`).
    public static let versionKey = "/torus/ring-version"
    public var version: UInt64
    public private(set) var members: [RingMember]
    /// Members that take placements (not draining).
    public let activeCount: Int
    /// `members[i].draining`, kept apart: placement runs on every block I/O.
    private let drainingAt: [Bool]

    /// All weights equal: the order by raw hash is the rendezvous order, no logarithm needed.
    private let uniformWeights: Bool
    /// Failure domain of every member (by position in `members`) as a small number, built
    /// once: placement runs on every block I/O.
    private let domainIndex: [Int]
    private let domainCount: Int

    public init(version: UInt64 = 1, members: [RingMember]) {
        self.version = version
        self.members = members.sorted { $0.node < $1.node }
        uniformWeights = Set(members.map(\.weight)).count <= 1
        var domains: [String: Int] = [:]
        domainIndex = self.members.map { m in
            if let d = domains[m.domain] { return d }
            domains[m.domain] = domains.count
            return domains.count - 1
        }
        domainCount = domains.count
        drainingAt = self.members.map(\.draining)
        activeCount = members.filter { !$0.draining }.count
        precondition(Set(self.members.map(\.node)).count == self.members.count, "duplicate node in ring")
    }

    /// All members ordered by preference for `key` (best first).
    public func ordered(for key: UInt64) -> [NodeID] {
        orderedIndices(for: key).map { members[$0].node }
    }

    /// Positions in `members`, best first (ties: lower node id, which is the lower position).
    private func orderedIndices(for key: UInt64) -> [Int] {
        if uniformWeights {
            // -w/ln(u) grows with u, and u grows with the hash: sort by hash. (An insertion
            // sort straight into the result, the scores on the stack: rings are small and
            // this runs on every block I/O.)
            let n = members.count
            return [Int](unsafeUninitializedCapacity: n) { position, initialized in
                withUnsafeTemporaryAllocation(of: UInt64.self, capacity: n) { score in
                    for i in 0..<n {
                        let h = StableHasher.mix(key, UInt64(members[i].node.raw) &* 0x9E37_79B9) >> 11
                        // Best first: higher score, then lower position (positions arrive in
                        // order, so an equal score stays behind the earlier one).
                        var at = i
                        while at > 0 && score[at - 1] < h {
                            score[at] = score[at - 1]
                            position[at] = position[at - 1]
                            at -= 1
                        }
                        score[at] = h
                        position[at] = i
                    }
                }
                initialized = n
            }
        }
        var scored: [(Double, Int)] = []
        scored.reserveCapacity(members.count)
        for (i, m) in members.enumerated() {
            let h = StableHasher.mix(key, UInt64(m.node.raw) &* 0x9E37_79B9)
            // u in (0, 1): never 0 so the log is finite.
            let u = (Double(h >> 11) + 0.5) / Double(1 << 53)
            scored.append((-m.weight / log(u), i))
        }
        scored.sort { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 < $1.1 }
        return scored.map(\.1)
    }

    /// `replication` active members over distinct domains first, then `fallbacks` more active
    /// ones, in order; with `draining`, then every draining member. (With fewer active members
    /// than `replication`, draining ones fill the placement: better than no placement.)
    private func pick(_ order: [Int], replication: Int, fallbacks: Int, draining: Bool = false) -> [NodeID] {
        var chosen: [NodeID] = []
        chosen.reserveCapacity(min(members.count, replication + fallbacks))
        // By position: reads may ask for every member, so no quadratic `contains`.
        var taken = Flags(count: members.count)
        func take(_ i: Int) {
            taken.set(i)
            chosen.append(members[i].node)
        }
        var usedDomain = Flags(count: domainCount)
        for i in order where chosen.count < replication && !drainingAt[i] && !usedDomain[domainIndex[i]] {
            usedDomain.set(domainIndex[i])
            take(i)
        }
        // Fewer domains than replicas: fill with the best remaining nodes.
        for i in order where chosen.count < replication && !drainingAt[i] && !taken[i] { take(i) }
        for i in order where chosen.count < replication && !taken[i] { take(i) }
        for i in order where chosen.count < replication + fallbacks && !drainingAt[i] && !taken[i] { take(i) }
        if draining { for i in order where drainingAt[i] && !taken[i] { take(i) } }
        return chosen
    }

    /// Flags by position: one word for up to 64 (no allocation), an array beyond.
    private struct Flags {
        private var word: UInt64 = 0
        private var more: [Bool]
        init(count: Int) { more = count > 64 ? [Bool](repeating: false, count: count) : [] }
        subscript(i: Int) -> Bool { more.isEmpty ? word & (1 << UInt64(i)) != 0 : more[i] }
        mutating func set(_ i: Int) {
            if more.isEmpty { word |= 1 << UInt64(i) } else { more[i] = true }
        }
    }

    /// `replication` distinct nodes for `key`, spread over distinct failure domains first.
    public func placement(for key: UInt64, replication: Int) -> [NodeID] {
        precondition(replication >= 1, "replication must be at least 1")
        return pick(orderedIndices(for: key), replication: replication, fallbacks: 0)
    }

    /// The placement followed by up to `fallbacks` further nodes in preference order: where a
    /// writer puts a copy when a placement node does not answer, and so where readers look
    /// after the placement nodes. Readers and writers agree on it as long as the ring does.
    public func candidates(for key: UInt64, replication: Int, fallbacks: Int) -> [NodeID] {
        precondition(replication >= 1, "replication must be at least 1")
        return pick(orderedIndices(for: key), replication: replication, fallbacks: fallbacks)
    }

    /// Where readers look: `candidates`, then the draining members (their copies stay until
    /// the collector has moved them).
    public func readCandidates(for key: UInt64, replication: Int, fallbacks: Int) -> [NodeID] {
        precondition(replication >= 1, "replication must be at least 1")
        return pick(orderedIndices(for: key), replication: replication, fallbacks: fallbacks, draining: true)
    }

    /// Where readers look for a block, in order: the placement, every other active member
    /// in preference order (so the fallbacks first; a writer puts a copy beyond them only when
    /// they were all full), then the draining members.
    public func everyCandidate(for key: UInt64, replication: Int) -> [NodeID] {
        precondition(replication >= 1, "replication must be at least 1")
        return pick(orderedIndices(for: key), replication: replication, fallbacks: members.count, draining: true)
    }

    /// Fallbacks a client of a volume with `replication` uses, given its own cap.
    public func fallbacks(replication: Int, max: Int) -> Int { Swift.max(0, Swift.min(max, activeCount - replication)) }

    /// A copy with `node` marked draining (a new version).
    public func draining(_ node: NodeID) -> Ring {
        Ring(version: version + 1, members: members.map { m in
            var m = m
            if m.node == node { m.draining = true }
            return m
        })
    }

    /// A copy with `member` added (a new version).
    public func joining(_ member: RingMember) -> Ring {
        Ring(version: version + 1, members: members + [member])
    }

    /// A copy without `node` (a new version).
    public func removing(_ node: NodeID) -> Ring {
        Ring(version: version + 1, members: members.filter { $0.node != node })
    }
}

// `log` without Foundation: natural logarithm via the standard library's floating-point support.
@inline(__always) private func log(_ x: Double) -> Double {
    precondition(x > 0 && x < 1)
    // ln(x) = ln(m * 2^e) = ln(m) + e ln 2, with m in [1, 2)
    let e = Double(x.exponent)
    let m = x.significand
    // atanh series: ln(m) = 2 atanh((m-1)/(m+1)); converges fast for m in [1,2)
    let y = (m - 1) / (m + 1)
    let y2 = y * y
    var term = y
    var sum = 0.0
    var k = 1.0
    while k < 40 {
        sum += term / k
        term *= y2
        k += 2
    }
    return 2 * sum + e * 0.693_147_180_559_945_3
}
