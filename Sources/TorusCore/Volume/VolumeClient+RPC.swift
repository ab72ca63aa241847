/// RPC and metadata request bookkeeping: ids, deadlines, and what a tick finds timed out.
extension VolumeClient {
    mutating func allocateRPC(_ purpose: PendingRPC.Purpose, node: NodeID, timeout: Nanoseconds? = nil) -> RPCID {
        let id = RPCID(nextRPC)
        nextRPC += 1
        rpcs[id] = PendingRPC(purpose: purpose, node: node, deadline: now + (timeout ?? config.rpcTimeout))
        return id
    }

    mutating func sendMeta(_ purpose: PendingMeta.Purpose, _ request: MetaRequest) {
        let id = MetaRequestID(nextMeta)
        nextMeta += 1
        metaPending[id] = PendingMeta(purpose: purpose, request: request, sentAt: now,
                                      deadline: now + config.metadataTimeout)
        out.append(.metadata(id, request))
    }

    // MARK: Timeouts

    /// Runs on every tick. Each table is first scanned for anything due, without allocating
    /// (most ticks find nothing); what is due is handled in key order.
    mutating func expireRPCs() {
        var expired: [RPCID] = []
        for (id, pending) in rpcs where pending.deadline <= now { expired.append(id) }
        expired.sort()
        for id in expired {
            let pending = rpcs.removeValue(forKey: id)!
            switch pending.purpose {
            case .get(let block):
                noteNode(pending.node, ok: false)
                if fetches[block] != nil { fetchFailed(block) }
            case .put(let block):
                noteNode(pending.node, ok: false)
                if writebacks[block] != nil { putFailed(block, node: pending.node, retryAfterBackoff: false) }
            case .sync(let refs):
                syncFailed(pending.node, refs)
            case .log(let what):
                logRPCExpired(what, node: pending.node)
            }
        }
        if repairs.values.contains(where: { $0.deadline <= now }) {
            for rpc in repairs.keys.sorted() where repairs[rpc]!.deadline <= now {
                let r = repairs.removeValue(forKey: rpc)!
                if r.attempts < Self.repairAttemptsMax { sendRepair(r) }
            }
        }
        func due(_ at: Instant?) -> Bool { at.map { $0 <= now } ?? false }
        if fetches.values.contains(where: { due($0.retryAt) }) {
            for block in fetches.keys.sorted() {
                if due(fetches[block]?.retryAt) { sendGet(block) }
            }
        }
        guard writebacks.values.contains(where: { due($0.retryAt) }) else { return }
        for block in writebacks.keys.sorted() {
            if due(writebacks[block]?.retryAt) {
                let nodes = writebacks[block]!.retryNodes
                writebacks[block]!.retryAt = nil
                writebacks[block]!.retryNodes = []
                for n in nodes where writebacks[block]!.remaining.contains(n) { resendPut(block, to: n) }
            }
        }
    }
}
