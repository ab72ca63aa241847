/// A member of the placement ring.
public struct RingMember: Hashable, Sendable {
    public var node: NodeID
    /// Relative capacity weight (> 0).
    public var weight: Double
    /// Failure domain label (zone/rack/host); replicas go to distinct domains when possible.
    public var domain: String
    public init(node: NodeID, weight: Double = 1, domain: String = "") {
        precondition(weight > 0, "ring weight must be positive for \(node)")
        self.node = node
        self.weight = weight
        self.domain = domain.isEmpty ? node.description : domain
    }
}

/// Weighted rendezvous (highest random weight) placement.
///
/// Each (key, node) pair gets the score `-weight / ln(u)` with `u` a stable hash in (0,1);
/// the nodes with the highest scores hold the key. Adding or removing one node moves only the
/// keys that it gains or loses, in proportion to its weight.
public struct Ring: Hashable, Sendable {
    public var version: UInt64
    public private(set) var members: [RingMember]

    /// All weights equal: the order by raw hash is the rendezvous order, no logarithm needed.
    private let uniformWeights: Bool
    /// Failure domain of every member, built once: placement runs on every block I/O.
    private let domainOf: [NodeID: String]

    public init(version: UInt64 = 1, members: [RingMember]) {
        self.version = version
        self.members = members.sorted { $0.node < $1.node }
        uniformWeights = Set(members.map(\.weight)).count <= 1
        domainOf = Dictionary(uniqueKeysWithValues: members.map { ($0.node, $0.domain) })
        precondition(Set(self.members.map(\.node)).count == self.members.count, "duplicate node in ring")
    }

    /// All members ordered by preference for `key` (best first).
    public func ordered(for key: UInt64) -> [NodeID] {
        if uniformWeights {
            // -w/ln(u) grows with u, and u grows with the hash: sort by hash.
            var scored = members.map { (StableHasher.mix(key, UInt64($0.node.raw) &* 0x9E37_79B9) >> 11, $0.node) }
            scored.sort { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 < $1.1 }
            return scored.map(\.1)
        }
        var scored: [(Double, NodeID)] = []
        scored.reserveCapacity(members.count)
        for m in members {
            let h = StableHasher.mix(key, UInt64(m.node.raw) &* 0x9E37_79B9)
            // u in (0, 1): never 0 so the log is finite.
            let u = (Double(h >> 11) + 0.5) / Double(1 << 53)
            scored.append((-m.weight / log(u), m.node))
        }
        scored.sort { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 < $1.1 }
        return scored.map(\.1)
    }

    /// `replication` distinct nodes for `key`, spread over distinct failure domains first.
    public func placement(for key: UInt64, replication: Int) -> [NodeID] {
        precondition(replication >= 1, "replication must be at least 1")
        let order = ordered(for: key)
        var chosen: [NodeID] = []
        var domains: Set<String> = []
        for n in order where chosen.count < replication {
            if domains.insert(domainOf[n]!).inserted { chosen.append(n) }
        }
        // Fewer domains than replicas: fill with the best remaining nodes.
        for n in order where chosen.count < replication && !chosen.contains(n) { chosen.append(n) }
        return chosen
    }

    /// The placement followed by up to `fallbacks` further nodes in preference order: where a
    /// writer puts a copy when a placement node does not answer, and so where readers look
    /// after the placement nodes. Readers and writers agree on it as long as the ring does.
    public func candidates(for key: UInt64, replication: Int, fallbacks: Int) -> [NodeID] {
        var result = placement(for: key, replication: replication)
        for n in ordered(for: key) where result.count < replication + fallbacks && !result.contains(n) {
            result.append(n)
        }
        return result
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
