/// Sweep: deletes what no head reaches and no writer may commit, once past `grace`.
extension Collector {
    /// Whether `ref`, which no head reaches, can never be committed (or, for the commit log,
    /// replayed or relied on) again. The head is a checkpoint: its segment's records may still
    /// name blocks of its epoch from its floor on (docs/design.md, "The commit log").
    static func isCollectible(_ ref: BlockRef, epochKey: UInt64, head: VolumeHead?) -> Bool {
        // Seals fence writers that may still be running: kept while the volume exists.
        if ref.index == BlockRef.sealIndex { return false }
        // Nothing committed yet: no log to replay, and older epochs are fenced.
        guard let head else { return ref.epoch < epochKey }
        if ref.index == BlockRef.logIndex {
            // Records of the head's segment and of the current epoch (a checkpoint under way)
            // are live. An epoch between the head's and the current one was fenced before its
            // checkpoint landed (its CAS compares the epoch key): no head will name its segment.
            // (Its blocks stayed forever once a rollback left a head without a log.)
            return ref.epoch < head.epoch || (ref.epoch == head.epoch && ref.sequence < (head.log?.start ?? 0))
                || (ref.epoch > head.epoch && ref.epoch < epochKey)
        }
        // Epochs before the checkpoint's: no record left names them.
        if ref.epoch < head.epoch { return true }
        // The checkpoint's epoch: its records name only refs from the head's floor on.
        if ref.epoch == head.epoch { return ref.sequence < head.floor }
        // A writer that took the volume after this head and was fenced before its first checkpoint.
        return ref.epoch < epochKey
    }

    /// A clone whose maps could not be read may name blocks of its origins: those volumes are
    /// left out of this pass too.
    mutating func skipOriginsOfFailed() {
        var origins = volumes.values.filter(\.failed).map(\.info.origin)
        while let o = origins.popLast() {
            guard o != 0, let v = volumes[o], !v.failed else { continue }
            volumes[o]!.failed = true
            origins.append(v.info.origin)
        }
    }

    mutating func sweep() {
        var deletes: [NodeID: [BlockRef]] = [:]
        var seen: [NodeID: [BlockRef: Instant]] = [:]
        skipOriginsOfFailed()
        stats.volumesSkipped += volumes.values.filter(\.failed).count
        let draining = Set(ring.members.filter(\.draining).map(\.node))
        for node in inventory.keys.sorted() {
            var since: [BlockRef: Instant] = [:]
            for ref in inventory[node]! {
                let garbage: Bool
                if let v = volumes[ref.volume] {
                    garbage = !v.failed && v.reachable[ref] == nil
                        && (config.canaryIgnoresHorizon || Self.isCollectible(ref, epochKey: v.epochKey, head: v.head))
                } else {
                    garbage = !metadataDoubtful && orphansReached[ref] == nil
                }
                // A block no map reaches yet that a writer may still commit (a log record
                // names it, or a flush is under way) keeps its draining node in the ring, as a
                // reachable one does (`planRepairs`): it has no other copy to move (swarm
                // seed 1264, replication 1). Log blocks are the writer's to move.
                if !garbage && draining.contains(node) && !ref.isLogBlock && volumes[ref.volume]?.reachable[ref] == nil {
                    passDraining[node, default: 0] += 1
                }
                guard garbage else {
                    // A volume left out of this pass keeps what earlier passes found (garbage stays garbage).
                    if volumes[ref.volume]?.failed == true, let first = garbageSince[node]?[ref] { since[ref] = first }
                    continue
                }
                let first = garbageSince[node]?[ref] ?? now
                since[ref] = first
                if now - first >= config.grace && !config.canaryLeaks { deletes[node, default: []].append(ref) }
            }
            seen[node] = since
        }
        // Nodes left out of this pass keep their record, until they count as lost (a node
        // that comes back after that is simply listed afresh).
        for (node, since) in garbageSince where seen[node] == nil && ring.members.contains(where: { $0.node == node })
            && (downSince[node].map { now - $0 < config.repairGrace } ?? true) {
            seen[node] = since
        }
        garbageSince = seen
        var deleted = 0
        for node in deletes.keys.sorted() {
            let refs = deletes[node]!
            deleted += refs.count
            for i in stride(from: 0, to: refs.count, by: config.deleteBatchRefs) {
                out.append(.send(to: node, .deleteBlocks(Array(refs[i..<min(refs.count, i + config.deleteBatchRefs)]))))
            }
            for r in refs { garbageSince[node]![r] = nil }
        }
        stats.refsDeleted += deleted
        passDeleted = deleted
        planRepairs()
        if copiesQueued == 0 {
            beginTrimming()
        } else {
            stage = .repairing
            repairStartedAt = now
            repairTotal = copiesQueued
            pumpCopies()
        }
    }
}
