/// Read-repair: the good bytes a fetch found are put back where a copy was bad or missing.
extension VolumeClient {
    /// Read-repair: a durable put of the good bytes to every node whose copy failed its
    /// checksum (or could not be read), retried on timeout or error up to `repairAttemptsMax`.
    mutating func repairBadCopies(_ f: Fetch, _ data: [UInt8]) {
        guard !config.readOnly else { return }
        // Not onto a node being drained: its copies are on their way out.
        let targets = Set(candidates(f.ref))
        for node in Set(f.badCopies).sorted() where repairs.count < Self.repairsInFlightMax && targets.contains(node) {
            stats.readRepairs += 1
            sendRepair(Repair(ref: f.ref, data: data, node: node, attempts: 0, deadline: now))
        }
    }

    mutating func sendRepair(_ r: Repair) {
        var r = r
        r.attempts += 1
        r.deadline = now + config.rpcTimeout
        let rpc = RPCID(nextRPC)
        nextRPC += 1
        repairs[rpc] = r
        out.append(.send(to: r.node, .putBlock(rpc, r.ref, r.data, durable: true, restore: true, copy: true)))
    }

    mutating func repairReplied(_ rpc: RPCID, from node: NodeID, _ result: Result<Void, StoreError>) {
        guard let r = repairs[rpc], r.node == node else { return }
        repairs[rpc] = nil
        if case .failure = result, r.attempts < Self.repairAttemptsMax { sendRepair(r) }
    }
}
