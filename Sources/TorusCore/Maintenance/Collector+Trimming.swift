/// Trimming: the extra copies of refs whose every placement node holds one durably.
extension Collector {

    /// Syncs the placement copies of every ref to trim (batched per node), then deletes the
    /// extra copies of those whose every placement node confirmed. Ends the pass.
    mutating func beginTrimming() {
        guard !trims.isEmpty else { return endPass(sweep: true, deleted: passDeleted) }
        stage = .trimming
        var perNode: [NodeID: [BlockRef]] = [:]
        for t in trims { for n in t.home { perNode[n, default: []].append(t.ref) } }
        for node in perNode.keys.sorted() {
            let refs = perNode[node]!
            for i in stride(from: 0, to: refs.count, by: config.deleteBatchRefs) {
                sendTrimSync(node, Array(refs[i..<min(refs.count, i + config.deleteBatchRefs)]), attempts: 0)
            }
        }
    }

    mutating func sendTrimSync(_ node: NodeID, _ refs: [BlockRef], attempts: Int) {
        let rpc = RPCID(nextRPC)
        nextRPC += 1
        trimSyncs[rpc] = (node, refs, now + config.rpcTimeout, attempts)
        out.append(.send(to: node, .syncBlocks(rpc, refs)))
    }

    mutating func trimSynced(_ rpc: RPCID, from node: NodeID, _ present: [BlockRef]) {
        guard stage == .trimming, let pending = trimSyncs[rpc], pending.node == node else { return }
        trimSyncs[rpc] = nil
        let asked = Set(pending.refs)
        for ref in present where asked.contains(ref) { trimConfirmed[ref, default: []].insert(node) }
        if trimSyncs.isEmpty { finishTrimming() }
    }

    mutating func expireTrimSyncs() {
        for rpc in trimSyncs.keys.sorted() {
            guard let p = trimSyncs[rpc], p.deadline <= now else { continue }
            trimSyncs[rpc] = nil
            // A node that does not answer keeps every extra copy of its refs this pass.
            if p.attempts + 1 < config.attemptsMax { sendTrimSync(p.node, p.refs, attempts: p.attempts + 1) }
        }
        if stage == .trimming && trimSyncs.isEmpty { finishTrimming() }
    }

    mutating func finishTrimming() {
        var perNode: [NodeID: [BlockRef]] = [:]
        for t in trims {
            let confirmed = trimConfirmed[t.ref] ?? []
            guard t.home.allSatisfy(confirmed.contains) else { continue }
            precondition(!t.extras.contains(where: t.home.contains), "trimming a placement copy of \(t.ref)")
            for n in t.extras { perNode[n, default: []].append(t.ref) }
        }
        for node in perNode.keys.sorted() {
            let refs = perNode[node]!
            passTrimmed += refs.count
            stats.copiesTrimmed += refs.count
            for i in stride(from: 0, to: refs.count, by: config.deleteBatchRefs) {
                out.append(.trim(to: node, Array(refs[i..<min(refs.count, i + config.deleteBatchRefs)])))
            }
        }
        endPass(sweep: true, deleted: passDeleted)
    }
}
