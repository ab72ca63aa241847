/// Inventory: every node lists the refs it holds, page by page.
extension Collector {
    /// Per-pass state starts empty: `endPass` clears it.
    mutating func beginPass() {
        adoptPendingRing()
        stage = .listing
        passStartedAt = now
        for m in ring.members.map(\.node).sorted() {
            listing[m] = ListState()
            inventory[m] = []
            sendList(m)
        }
    }

    mutating func sendList(_ node: NodeID) {
        let rpc = RPCID(nextRPC)
        nextRPC += 1
        listRPCs[rpc] = (node, now + config.rpcTimeout)
        out.append(.send(to: node, .listBlocks(rpc, after: listing[node]!.after, limit: config.listBatchRefs)))
    }

    mutating func listed(_ rpc: RPCID, from node: NodeID, _ refs: [BlockRef], complete: Bool) {
        guard stage == .listing, let pending = listRPCs[rpc], pending.node == node else { return }
        listRPCs[rpc] = nil
        var l = listing[node]!
        // Refs come in order after `after`; anything else is a confused node: skip it.
        if let first = refs.first, let after = l.after, first <= after { return skipNode(node) }
        inventory[node]!.append(contentsOf: refs)
        stats.refsListed += refs.count
        downSince[node] = nil
        l.attempts = 0
        if complete || refs.isEmpty {
            l.done = true
            listing[node] = l
        } else {
            l.after = refs.last
            listing[node] = l
            sendList(node)
        }
        if listing.values.allSatisfy(\.done) { beginMetadata() }
    }

    mutating func skipNode(_ node: NodeID) {
        stats.nodesSkipped += 1
        if downSince[node] == nil { downSince[node] = passStartedAt }
        inventory[node] = nil
        listing[node]!.done = true
        for (rpc, l) in listRPCs where l.node == node { listRPCs[rpc] = nil }
        if listing.values.allSatisfy(\.done) { beginMetadata() }
    }
}
