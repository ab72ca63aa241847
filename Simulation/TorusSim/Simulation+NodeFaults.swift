import TorusCore

/// Faults of storage nodes and their disks: crashes, wiped and lost disks, power loss, slow
/// disks, and media faults (bit rot, latent errors, misdirected writes).
extension Simulation {
    func applyCrashNode(_ node: Int?, duration: Nanoseconds?, random: Bool) {
        if random { guard nodesDown < options.replication - 1 else { return } }
        let n: Int
        if let node {
            n = node
        } else {
            let up = slots.indices.filter { slots[$0].node != nil }
            guard !up.isEmpty else { return }
            n = up[Int(faultRandom.below(UInt64(up.count)))]
        }
        traceEvent(.nodeCrash, UInt64(n))
        crashNode(n)
        queue.push(now + lasting(duration, .milliseconds(200), .seconds(4)), .heal(.restartNode(n)))
    }

    /// The node restarts with an empty disk.
    func applyWipeNode(_ node: Int?, duration: Nanoseconds?, random: Bool) {
        if random { guard nodesDown == 0, wipes < options.replication - 1 else { return } }
        let n = pickNode(node)
        wipes += 1
        traceEvent(.wipeNode, UInt64(n))
        crashNode(n)
        slots[n].disk = SimDisk(geometry: slots[n].config.geometry)
        queue.push(now + lasting(duration, .milliseconds(200), .seconds(4)), .heal(.restartNode(n)))
    }

    /// The node never comes back (while enough nodes are left for every copy).
    func applyLoseNode(_ node: Int?, random: Bool) {
        let lost = slots.filter(\.lost).count
        if random { guard nodesDown == 0, lost < options.replication - 1 else { return } }
        guard slots.count - lost - 1 >= options.replication else { return }
        let n: Int
        if let node {
            n = node
        } else {
            let left = slots.indices.filter { !slots[$0].lost }
            n = left[Int(faultRandom.below(UInt64(left.count)))]
        }
        guard !slots[n].lost else { return }
        traceEvent(.loseNode, UInt64(n))
        crashNode(n)
        slots[n].lost = true
    }

    func applyPowerLoss(duration: Nanoseconds?, random: Bool) {
        if random { guard nodesDown == 0 else { return } }
        traceEvent(.powerLoss)
        for n in slots.indices {
            crashNode(n)
            queue.push(now + lasting(duration, .milliseconds(100), .seconds(2)), .heal(.restartNode(n)))
        }
    }

    func applySlowDisk(_ node: Int?, duration: Nanoseconds?) {
        let n = pickNode(node)
        slots[n].slowFactor = 10 + faultRandom.below(91)
        traceEvent(.slowDisk, UInt64(n), slots[n].slowFactor)
        queue.push(now + lasting(duration, .seconds(1), .seconds(5)), .heal(.diskSpeed(n)))
    }

    /// Bit rot or a latent error in a written sector of a media-fault node's slot area.
    func applyMediaFault(_ kind: FaultKind, _ node: Int?) {
        let media = slots.indices.filter { slots[$0].mediaFaults }
        guard let n = node ?? (media.isEmpty ? nil : media[Int(faultRandom.below(UInt64(media.count)))]) else { return }
        let firstSlotSector = slots[n].config.slotAreaOffset / UInt64(slots[n].config.sectorSize)
        let written = slots[n].disk.writtenSectors(from: firstSlotSector)
        guard !written.isEmpty else { return }
        let sector = written[Int(mediaRandom.below(UInt64(written.count)))]
        if kind == .bitRot {
            slots[n].disk.rot(sector: sector, byte: Int(mediaRandom.below(UInt64(slots[n].config.sectorSize))))
            traceEvent(.bitRot, UInt64(n), sector)
        } else {
            slots[n].disk.makeUnreadable(sector: sector)
            traceEvent(.latentError, UInt64(n), sector)
        }
    }

    /// A write on a media-fault node may land one block away from where it was aimed
    /// (within the slot area: the journal is checksummed and written elsewhere).
    func misdirect(node n: Int, offset: UInt64, length: Int) -> UInt64 {
        let p = options.misdirectedWriteProbability
        guard p > 0, mediaFaultsActive, slots[n].mediaFaults else { return offset }
        let config = slots[n].config
        guard offset >= config.slotAreaOffset, mediaRandom.chance(p) else { return offset }
        let shift = UInt64(config.blockSize)
        let up = offset + shift
        let target = mediaRandom.chance(0.5) && offset >= config.slotAreaOffset + shift ? offset - shift
            : (up + UInt64(length) <= config.geometry.capacityBytes ? up : offset)
        if target != offset { traceEvent(.misdirectedWrite, UInt64(n), offset) }
        return target
    }
}
