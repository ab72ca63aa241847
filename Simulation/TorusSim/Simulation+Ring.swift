import TorusCore

/// Ring changes under simulation: a node joins, a node is drained (and removed once the
/// collector finds it holds nothing needed), each a new ring version that the metadata store
/// records at once, the collector adopts at its next pass, and each writer learns after a
/// delay of up to `ringPropagationMax` (as a watch would tell it, late).
extension Simulation {
    /// Joins and drains a run may make at random (scheduled ones are not limited).
    static let ringChangesMax = 2
    static let ringPropagationMax = Nanoseconds.milliseconds(800)

    /// Records the ring version in the metadata store (the collector moves and trims only
    /// under the version in force).
    func publishRing() {
        let put = MetaTxn(compares: [], success: [.put(key: Ring.versionKey, value: MetaValue.u64(ring.version), lease: 0)],
                          failure: [])
        // The change is the operator's (or the joining node's) transaction: it lands even
        // when the store is down for the cluster right now.
        let available = store.available
        store.available = true
        let stored = store.handle(.txn(put), now: now)
        store.available = available
        precondition(stored != nil, "the ring version was not stored")
    }

    /// A new ring version: stored, given to the collector, and to each writer after a delay.
    func changeRing(_ newRing: Ring) {
        ring = newRing
        publishRing()
        traceNote("ring       version \(ring.version): " + ring.members.map { "\($0.node)\($0.draining ? "(draining)" : "")" }
            .joined(separator: " "))
        if collector != nil { handleCollector(collector!.updateRing(ring, now: now)) }
        for i in vols.indices {
            queue.push(now + faultRandom.duration(.zero, Self.ringPropagationMax), .ringUpdate(volume: i))
        }
    }

    /// A writer learns the ring in force (a paused one learns nothing: it is not running).
    func deliverRing(volume i: Int) {
        cur = i
        guard client != nil else { return }
        handleClient(client!.updateRing(ring, now: writerNow()))
    }

    /// A new, empty node joins the ring (in a zone by its number, like the others).
    func joinNode() {
        guard collector != nil else { return }
        let i = slots.count
        let config = Self.storeConfig(diskBytes: options.diskBytes(node: i), blockSize: options.blockSize,
                                      batchLimit: storeKnobs.batchLimit, lazyThreshold: storeKnobs.lazyThreshold,
                                      reservePercent: storeKnobs.reservePercent)
        let root = SeededRandom(seed: options.seed)
        slots.append(NodeSlot(id: NodeID(UInt32(i + 1)), disk: SimDisk(geometry: config.geometry),
                              random: root.derived(stream: 100 + UInt64(i)), config: config))
        ringChanges += 1
        traceEvent(.joinNode, UInt64(i))
        bootNode(i)
        changeRing(ring.joining(RingMember(node: slots[i].id, domain: options.zones > 0 ? "zone\(i % options.zones)" : "")))
    }

    /// Node `n` (0-based; nil: drawn) stops taking placements; its blocks move to the others.
    func drainNode(_ n: Int?) {
        guard collector != nil else { return }
        let active = slots.indices.filter { k in !slots[k].lost && ring.members.contains { $0.node == slots[k].id && !$0.draining } }
        // Every other node must be able to take the copies.
        guard active.count - 1 >= options.replication else { return }
        let pick = n ?? active[Int(faultRandom.below(UInt64(active.count)))]
        guard active.contains(pick) else { return }
        ringChanges += 1
        traceEvent(.drainNode, UInt64(pick))
        changeRing(ring.draining(slots[pick].id))
    }

    /// The collector found these draining nodes holding no reachable block: remove them from
    /// the ring, and they leave for good (the operator's `torus peer remove`).
    func removeDrained(_ nodes: [NodeID]) {
        for id in nodes {
            guard let m = ring.members.first(where: { $0.node == id }), m.draining else { continue }
            let n = Int(id.raw) - 1
            traceEvent(.nodeRemoved, UInt64(n))
            changeRing(ring.removing(id))
            crashNode(n)
            slots[n].lost = true
            slots[n].removed = true
        }
    }

    /// `torus volume delete`: the writer stops (its in-flight ops are lost with it), every key
    /// of the volume goes (an operator's transaction: it lands even during an outage).
    func deleteVolume(_ i: Int) {
        cur = i
        traceEvent(.deleteVolume, UInt64(i))
        crashWriter()
        if paused != nil { dropPaused() }
        vols[i].deleted = true
        // Its snapshots go with its keys.
        vols[i].snapshotRefs = [:]
        for k in vols[i].snapshots.indices { vols[i].snapshots[k].outcome = .deleted }
        let id = volume.id
        deletedVolumeBlocks += slots.reduce(0) { n, s in n + (s.node?.store.refs.filter { $0.volume == id }.count ?? 0) }
        vols[i].readBackDone = true
        vols[i].readBackStarted = true
        let txn = MetaTxn(compares: [], success: [.delete(key: VolumeInfo.volumesPrefix + volume.name + "/", prefix: true)], failure: [])
        let available = store.available
        store.available = true
        let done = store.handle(.txn(txn), now: now)
        store.available = available
        precondition(done != nil, "the volume's keys were not deleted")
    }

    /// Lost nodes the ring still names (a removed node is not skipped by the collector).
    var lostRingMembers: Int {
        slots.filter { s in s.lost && ring.members.contains { $0.node == s.id } }.count
    }

    /// Oracle for the collector's trims: a copy is deleted only when the block is durable on
    /// `replication` other nodes (those up, or down but not lost: a crash keeps synced data).
    func checkTrim(_ refs: [BlockRef], on node: NodeID) {
        // Only blocks some writer may still need: the writer itself deletes the ones it replaced.
        let committed = vols.map { Set($0.client?.committedRefs ?? []) }
        for ref in refs where violation == nil {
            guard vols.indices.contains(where: { vols[$0].client?.mayNeed(ref) == true || committed[$0].contains(ref) }) else { continue }
            let replication = vols.first { $0.volume.id == ref.volume }?.volume.replication ?? options.replication
            let others = slots.indices.filter { k in
                guard slots[k].id != node, !slots[k].lost else { return false }
                guard let store = slots[k].node?.store else { return true }
                return store.isDurable(ref)
            }
            if others.count < replication {
                violation = SectorModel.Violation(
                    promise: .durability,
                    detail: "the collector deleted the copy of \(ref) on \(Self.name(UInt64(node.raw))) while only \(others.count) "
                        + "other nodes hold it durably (replication \(replication))")
            }
        }
    }

    /// After the final collection: every committed block sits exactly on its placement
    /// nodes under the final ring (rebalancing finished, old copies deleted).
    func checkPlacement() {
        var off = 0
        var first: (BlockRef, [NodeID], [NodeID])?
        for vs in vols {
            guard let c = vs.client else { continue }
            let r = vs.volume.replication
            for ref in c.committedRefs {
                let home = ring.placement(for: ref.placementKey, replication: r).sorted()
                let holders = slots.indices.filter { slots[$0].node?.store.isDurable(ref) ?? false }.map { slots[$0].id }.sorted()
                if holders != home {
                    off += 1
                    if first == nil { first = (ref, holders, home) }
                }
            }
        }
        if let (ref, holders, home) = first {
            violation = SectorModel.Violation(
                promise: .convergence,
                detail: "\(off) committed blocks are not exactly on their placement after rebalancing, e.g. \(ref) on "
                    + "\(holders.map(\.description).joined(separator: ",")), placement \(home.map(\.description).joined(separator: ","))")
        }
    }
}
