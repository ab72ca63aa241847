import TorusCore

/// Fault injection: the catalogue of `FaultKind`, at random and by schedule, and healing.
/// Each kind's effect is in +NodeFaults, +NetworkFaults or +WriterFaults (or +Ring).
extension Simulation {
    func nextFaultDelay() -> Nanoseconds { faultRandom.duration(.milliseconds(100), options.faultInterval * 2) }

    var nodesDown: Int { slots.filter { $0.node == nil }.count }

    /// A random fault event: a kind drawn by the weights of `faultMix` (in `FaultKind` order,
    /// then the quiet share), applied with parameters drawn from the seed.
    func injectFault() {
        defer { queue.push(now + nextFaultDelay(), .fault) }
        faultsInjected += 1
        let kinds = FaultKind.allCases.filter { (options.faultMix[$0] ?? 0) > 0 }
        let total = kinds.reduce(options.quietWeight) { $0 + options.faultMix[$1]! }
        guard total > 0 else { return }
        var roll = Int(faultRandom.below(UInt64(total)))
        for k in kinds {
            let w = options.faultMix[k]!
            if roll < w {
                applyFault(k, node: nil, duration: nil, random: true)
                return
            }
            roll -= w
        }
        // The quiet share: nothing this time.
    }

    /// Injects one fault. `node` is 0-based (nil: drawn); `duration` until it heals (nil: drawn).
    /// Random faults keep the cluster recoverable (at most replication - 1 nodes down at once);
    /// scheduled ones do what the scenario says.
    func applyFault(_ kind: FaultKind, node: Int?, duration: Nanoseconds?, volume: Int? = nil, random: Bool = false) {
        switch kind {
        case .leaseExpiry, .writerCrash, .writerCrashMidFlush, .writerPause, .writerPauseAppend, .writerPauseBlocks, .writerMetadataPartition, .clockJump:
            // A writer fault hits one volume's writer (drawn only when there are several).
            cur = volume ?? (vols.count > 1 ? Int(faultRandom.below(UInt64(vols.count))) : 0)
        default:
            break
        }
        switch kind {
        case .crashNode: applyCrashNode(node, duration: duration, random: random)
        case .wipeNode: applyWipeNode(node, duration: duration, random: random)
        case .loseNode: applyLoseNode(node, random: random)
        case .powerLoss: applyPowerLoss(duration: duration, random: random)
        case .partition: applyPartition(node, duration: duration)
        case .partitionOneWay: applyOneWayPartition(node, duration: duration)
        case .swizzleClog: applySwizzleClog(duration: duration)
        case .metadataOutage: applyMetadataOutage(duration: duration)
        case .lossyNetwork, .slowNetwork: applyNetworkFault(kind, duration: duration)
        case .metadataSlow: applyMetadataSlow(duration: duration)
        case .leaseExpiry: applyLeaseExpiry()
        case .writerCrash: applyWriterCrash(duration: duration)
        case .writerCrashMidFlush, .writerPause, .writerPauseAppend, .writerPauseBlocks: armWriterFault(kind, duration: duration)
        case .writerMetadataPartition: applyWriterMetadataPartition(duration: duration)
        case .clockJump: applyClockJump(duration: duration)
        case .slowDisk: applySlowDisk(node, duration: duration)
        case .deleteVolume:
            let left = vols.indices.filter { !vols[$0].deleted }
            guard collector != nil, left.count > 1 else { return }
            let i = volume ?? left[Int(faultRandom.below(UInt64(left.count)))]
            guard !vols[i].deleted else { return }
            // As `torus volume delete` does: a volume with clones is refused.
            guard !vols.contains(where: { !$0.deleted && $0.volume.origin == vols[i].volume.id }) else { return }
            deleteVolume(i)
        case .joinNode:
            if random { guard ringChanges < Self.ringChangesMax else { return } }
            joinNode()
        case .drainNode:
            if random { guard ringChanges < Self.ringChangesMax, nodesDown == 0 else { return } }
            drainNode(node)
        case .bitRot, .latentError: applyMediaFault(kind, node)
        }
    }

    /// How long a fault lasts: as given, or drawn from `lo...hi`.
    func lasting(_ duration: Nanoseconds?, _ lo: Nanoseconds, _ hi: Nanoseconds) -> Nanoseconds {
        duration ?? faultRandom.duration(lo, hi)
    }

    /// The node a fault hits: as given (0-based), or drawn from all of them.
    func pickNode(_ node: Int?) -> Int { node ?? Int(faultRandom.below(UInt64(slots.count))) }

    func heal(_ h: Heal) {
        switch h {
        case .restartNode(let n):
            if slots[n].node == nil && !slots[n].lost { bootNode(n) }
        case .partition(let id):
            network.heal(fault: id)
        case .metadata:
            store.available = true
        case .restartWriter(let vol):
            cur = vol
            guard client == nil else { return }
            startWriter()
            if loadRunning { restartWriterLoad() }
        case .metadataSpeed:
            metadataSlow = .zero
        case .network:
            if let (drop, dup, latency) = networkFault {
                networkFault = nil
                network.latencyMax = latency
                if finalPhase == nil && livenessFrom == nil {  // the phases turned drops off for good
                    network.dropProbability = drop
                    network.duplicateProbability = dup
                }
            }
        case .diskSpeed(let n):
            slots[n].slowFactor = 1
        case .clock(let vol):
            vols[vol].writerSkew = 0
        }
    }
}
