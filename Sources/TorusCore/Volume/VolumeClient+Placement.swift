/// Where copies go, where reads and deletes look, and which nodes are avoided for a while.
extension VolumeClient {
    /// The placement nodes of `ref`, then the fallbacks a writer may use instead of a placement
    /// node that does not answer.
    func candidates(_ ref: BlockRef) -> [NodeID] {
        ring.candidates(for: ref.placementKey, replication: info.replication,
                        fallbacks: ring.fallbacks(replication: info.replication, max: config.fallbackNodesMax))
    }

    /// Where deletes go: `candidates`, then nodes being drained (copies anywhere else are
    /// left to the collector).
    func deleteCandidates(_ ref: BlockRef) -> [NodeID] {
        ring.readCandidates(for: ref.placementKey, replication: info.replication,
                            fallbacks: ring.fallbacks(replication: info.replication, max: config.fallbackNodesMax))
    }

    /// Where readers look: `candidates`, then every other active node (a copy lands beyond
    /// the fallbacks when they were all full), then nodes being drained.
    func readCandidates(_ ref: BlockRef) -> [NodeID] {
        ring.everyCandidate(for: ref.placementKey, replication: info.replication)
    }

    func isSuspect(_ node: NodeID) -> Bool {
        guard let until = suspects[node] else { return false }
        return until > now
    }

    /// `nodes` with the nodes that recently stopped answering moved to the end (stable).
    func healthyFirst(_ nodes: [NodeID]) -> [NodeID] {
        guard !suspects.isEmpty else { return nodes }
        return nodes.filter { !isSuspect($0) } + nodes.filter { isSuspect($0) }
    }

    /// Records an answer (or its absence) from `node`; after `putAttemptsBeforeFallback`
    /// failures in a row the node is avoided for `suspectDuration`.
    mutating func noteNode(_ node: NodeID, ok: Bool) {
        if ok {
            nodeFailures[node] = nil
            suspects[node] = nil
            return
        }
        let f = nodeFailures[node, default: 0] + 1
        nodeFailures[node] = f
        if f >= config.putAttemptsBeforeFallback { suspects[node] = now + config.suspectDuration }
    }

}
