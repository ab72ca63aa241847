import TorusCore

extension SimOptions {
    /// Swarm testing: a cluster shape, workload and fault mix drawn from `seed` alone, so
    /// `torus-sim swarm --from SEED --runs 1` reproduces any run. Shapes cover 1 to 7 nodes,
    /// replication 1 to 3, 4 KiB to 256 KiB blocks, queue depths 1 to 64, and fault mixes
    /// from none through lossy, slow and dense.
    public static func swarm(seed: UInt64) -> SimOptions {
        var r = SeededRandom(seed: seed ^ 0x5357_4152_4D00_0000)  // "SWARM": a stream apart from the run's own
        var o = SimOptions()
        o.seed = seed
        o.nodes = 1 + Int(r.below(7))
        o.replication = 1 + Int(r.below(UInt64(min(3, o.nodes))))
        o.blockSize = 4096 << Int(r.below(7))  // 4 KiB ... 256 KiB
        let blocks = UInt64(8 + r.below(249))
        o.volumeBytes = UInt64(o.blockSize) * blocks
        while o.volumeBytes > 16 << 20 { o.volumeBytes /= 2 }
        o.volumeBytes -= o.volumeBytes % 4096
        o.volumeBytes = max(o.volumeBytes, UInt64(o.blockSize))
        // Ample disk: without the collector (half the seeds) lost deleteBlocks messages leak
        // slots, and a full cluster is not what the swarm tests (seed 52 with 8x the volume
        // filled its only node). Capacity has its own scenarios (`*-full.yaml`).
        o.diskBytes = max(64 << 20, o.volumeBytes * 32)
        o.queueDepth = [1, 2, 4, 8, 16, 32, 64][Int(r.below(7))]
        o.duration = .seconds(10 + r.below(21))
        o.thinkTimeMean = .milliseconds(1 + r.below(20))
        o.faults = r.below(8) != 0
        o.faultInterval = .milliseconds(200 + r.below(3000))
        o.dropProbability = [0, 0.001, 0.01, 0.05, 0.1][Int(r.below(5))]
        o.duplicateProbability = [0, 0.001, 0.01, 0.05][Int(r.below(4))]
        o.networkLatencyMax = .microseconds([100, 400, 2_000, 20_000][Int(r.below(4))])
        // Half the seeds draw their own mix over the whole fault catalogue (each kind absent
        // or weighted 1-9), some with misdirected writes and a liveness phase.
        if r.chance(0.5) {
            o.faultMix = [:]
            // Not wipe-node: only the collector re-replicates, and half the seeds run without it.
            for k in FaultKind.allCases where k != .wipeNode && k != .loseNode && k != .joinNode && k != .drainNode && k != .deleteVolume && r.chance(0.5) { o.faultMix[k] = 1 + Int(r.below(9)) }
            o.quietWeight = Int(r.below(10))
        }
        if r.chance(0.25) { o.misdirectedWriteProbability = 0.005 }
        if r.chance(0.5) { o.livenessDuration = .seconds(5) }
        if r.chance(0.25) {
            o.volumes = 2 + Int(r.below(2))
            o.diskBytes *= UInt64(o.volumes)  // the same headroom per volume (see above)
        }
        if r.chance(0.25) { o.sequential = true }
        if r.chance(0.25) { o.opSizeMax = 256 << 10 }
        // Half the seeds run the garbage collector (its delete oracle and the final reclaim check).
        if r.chance(0.5) {
            var gc = CollectorConfig()
            gc.passInterval = .milliseconds(100 + r.below(3000))
            gc.firstPassDelay = .milliseconds(100 + r.below(2000))
            gc.grace = .milliseconds(r.below(1500))
            gc.rpcTimeout = .milliseconds(100 + r.below(500))
            gc.metadataTimeout = .milliseconds(500)
            gc.tickInterval = .milliseconds(50)
            gc.listBatchRefs = [8, 64, 4096][Int(r.below(3))]
            gc.repairGrace = .milliseconds(300 + r.below(5000))
            gc.repairBytesPerSecond = [0, 1 << 20, 16 << 20][Int(r.below(3))]
            gc.repairConcurrencyMax = 1 + Int(r.below(32))
            gc.ringSettle = .milliseconds(1000 + r.below(3000))
            o.collector = gc
            // Some of those join or drain nodes during the run (rebalancing under faults).
            if r.chance(0.3) {
                o.faultMix[.joinNode] = 1 + Int(r.below(3))
                o.faultMix[.drainNode] = Int(r.below(3))
            }
            if o.volumes > 1 && r.chance(0.3) { o.faultMix[.deleteVolume] = 1 }
        } else {
            // Without the collector nothing restores a copy that a media fault destroyed and a
            // read found bad while the good copy's node was down (seeds 2168, 2213): only a
            // later read that happens to try the bad node first repairs it. Production always
            // runs the collector; media faults are drawn only with it.
            o.faultMix[.bitRot] = nil
            o.faultMix[.latentError] = nil
            o.misdirectedWriteProbability = 0
        }
        // A third of the seeds take snapshots; some of those clone one or roll back to them.
        // Only with the collector: it alone reclaims what deleted snapshots kept.
        if r.chance(0.33) && o.collector != nil {
            o.snapshotInterval = .milliseconds(300 + r.below(2000))
            if r.chance(0.3) { o.cloneAfter = .milliseconds(1000 + r.below(5000)) }
            if r.chance(0.3) { o.rollbackInterval = .milliseconds(1000 + r.below(4000)) }
        }
        return o
    }

    /// One line describing a swarm shape.
    public var shapeDescription: String {
        "nodes=\(nodes) r=\(replication) block=\(blockSize / 1024)KiB volume=\(volumeBytes / 1024)KiB qd=\(queueDepth)"
            + " faults=\(faults ? "every~\(faultInterval.value / 1_000_000)ms drop=\(dropProbability) dup=\(duplicateProbability) lat<=\(networkLatencyMax.value / 1000)us" : "none")"
            + (faultMix == SimOptions.classicMix ? "" : " mix=" + FaultKind.allCases.compactMap { k in faultMix[k].map { "\(k.rawValue):\($0)" } }.joined(separator: ","))
            + (misdirectedWriteProbability > 0 ? " misdirected=\(misdirectedWriteProbability)" : "")
            + (livenessDuration.value > 0 ? " liveness=\(livenessDuration.value / 1_000_000_000)s" : "")
            + (volumes > 1 ? " volumes=\(volumes)" : "")
            + (sequential ? " sequential" : "") + (opSizeMax != 64 << 10 ? " max-size=\(opSizeMax >> 10)KiB" : "")
            + (collector.map { " gc=every~\($0.passInterval.value / 1_000_000)ms,grace=\($0.grace.value / 1_000_000)ms" } ?? "")
            + (snapshotInterval.map { " snapshots=every~\($0.value / 1_000_000)ms" } ?? "")
            + (cloneAfter.map { " clone-after=\($0.value / 1_000_000)ms" } ?? "")
            + (rollbackInterval.map { " rollbacks=every~\($0.value / 1_000_000)ms" } ?? "")
    }
}
