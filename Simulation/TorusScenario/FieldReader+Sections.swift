import TorusCore
import TorusSim
import Yams

/// The sections of a scenario file, each read into `SimOptions` (or its own value) in the
/// order of `scenario`, so the first problem named stays the same.
extension FieldReader {
    mutating func scenario(_ root: Node) throws(ScenarioError) -> Scenario {
        let top = try mapping(root, "", known: ["name", "hunts", "seeds", "cluster", "volume", "workload", "faults", "schedule",
                                                "phases", "checks", "gc", "scrub", "canary", "expect"])
        guard let nameNode = top["name"] else { throw fail(root, "name", "missing (every scenario has a name)") }
        guard let huntsNode = top["hunts"] else { throw fail(root, "hunts", "missing (one line on the bug class it hunts)") }
        let name = try string(nameNode, "name")
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw fail(nameNode, "name", "expected letters, digits, '-' and '_', got '\(name)'")
        }
        var o = SimOptions()
        var seeds: [UInt64] = [1, 2, 3]
        if let node = top["seeds"] { seeds = try seedList(node) }
        if let node = top["cluster"] { try cluster(node, into: &o) }
        if let node = top["volume"] { try volume(node, into: &o) }
        if let node = top["workload"] { try workload(node, into: &o) }
        if let node = top["faults"] { try faults(node, into: &o) }
        if let node = top["schedule"] { try schedule(node, into: &o) }
        if let node = top["phases"] {
            let p = try mapping(node, "phases", known: ["safety", "liveness"])
            if let n = p["safety"] { o.duration = try duration(n, "phases.safety") }
            if let n = p["liveness"] { o.livenessDuration = try duration(n, "phases.liveness") }
        }
        for f in o.schedule where f.at >= o.duration {
            throw fail(top["schedule"], "schedule.at", "a fault at \(f.at.value / 1_000_000) ms is after the safety phase (\(o.duration.value / 1_000_000) ms)")
        }
        if let node = top["checks"] {
            let c = try mapping(node, "checks", known: ["convergence", "garbage", "verify-copies"])
            if let n = c["verify-copies"] { o.verifyCopies = try bool(n, "checks.verify-copies") }
            if let n = c["convergence"] { o.checkConvergence = try bool(n, "checks.convergence") }
            if let n = c["garbage"] { o.checkGarbage = try bool(n, "checks.garbage") }
        }
        if let node = top["scrub"] { o.scrubInterval = try duration(node, "scrub") }
        if let node = top["gc"] { o.collector = try collector(node) }
        for f in o.schedule where (f.kind == .joinNode || f.kind == .drainNode || f.kind == .deleteVolume) && o.collector == nil {
            throw fail(top["schedule"], "schedule.fault", "'\(f.kind.rawValue)' needs the collector (add a 'gc' section): it moves the blocks")
        }
        if let node = top["canary"] {
            let text = try string(node, "canary")
            guard let c = VolumeClientConfig.Canary(rawValue: text) else {
                throw fail(node, "canary", "unknown bug '\(text)' (known: \(VolumeClientConfig.Canary.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            o.canary = c
        }
        var expect = Scenario.Expectation.pass
        if let node = top["expect"] {
            let text = try string(node, "expect")
            guard let e = Scenario.Expectation(rawValue: text) else { throw fail(node, "expect", "expected 'pass' or 'caught', got '\(text)'") }
            expect = e
        }
        if expect == .caught && o.canary == .none { throw fail(top["expect"], "expect", "'caught' needs a canary to catch") }
        if expect == .pass && o.canary != .none { throw fail(top["canary"], "canary", "an injected bug must be expected 'caught'") }
        return Scenario(name: name, hunts: try string(huntsNode, "hunts"), seeds: seeds, options: o, expect: expect, path: path)
    }

    func seedList(_ node: Node) throws(ScenarioError) -> [UInt64] {
        guard case .sequence(let items) = node, !items.isEmpty else { throw fail(node, "seeds", "expected a list of seeds, e.g. [1, 2, 3]") }
        var seeds: [UInt64] = []
        for item in items {
            let text = try string(item, "seeds")
            guard let s = UInt64(text), s > 0 else { throw fail(item, "seeds", "expected a positive whole number, got '\(text)'") }
            seeds.append(s)
        }
        return seeds
    }

    func cluster(_ node: Node, into o: inout SimOptions) throws(ScenarioError) {
        let c = try mapping(node, "cluster", known: ["nodes", "replication", "block-size", "disk-size", "capacities", "zones"])
        if let n = c["nodes"] { o.nodes = try int(n, "cluster.nodes", 1...64) }
        if let n = c["replication"] { o.replication = try int(n, "cluster.replication", 1...o.nodes) }
        if let n = c["block-size"] {
            let bs = try size(n, "cluster.block-size")
            guard bs >= 4096, bs <= 1 << 20, bs.nonzeroBitCount == 1 else {
                throw fail(n, "cluster.block-size", "expected a power of two from 4KiB to 1MiB")
            }
            o.blockSize = Int(bs)
        }
        if let n = c["disk-size"] { o.diskBytes = try size(n, "cluster.disk-size") }
        if let n = c["zones"] { o.zones = try int(n, "cluster.zones", 1...o.nodes) }
        if let n = c["capacities"] {
            guard case .sequence(let items) = n, items.count <= o.nodes else {
                throw fail(n, "cluster.capacities", "expected a list of at most \(o.nodes) disk sizes (one per node, in node order)")
            }
            o.nodeDiskBytes = []
            for item in items { o.nodeDiskBytes.append(try size(item, "cluster.capacities")) }
        }
        if o.replication > o.nodes { throw fail(c["replication"] ?? node, "cluster.replication", "more copies than nodes") }
    }

    func volume(_ node: Node, into o: inout SimOptions) throws(ScenarioError) {
        let v = try mapping(node, "volume", known: ["size", "count"])
        if let n = v["count"] { o.volumes = try int(n, "volume.count", 1...16) }
        if let n = v["size"] {
            o.volumeBytes = try size(n, "volume.size")
            guard o.volumeBytes >= UInt64(o.blockSize), o.volumeBytes % 4096 == 0, o.volumeBytes <= 1 << 30 else {
                throw fail(n, "volume.size", "expected a multiple of 4KiB from the block size to 1GiB")
            }
        }
    }

    func workload(_ node: Node, into o: inout SimOptions) throws(ScenarioError) {
        let w = try mapping(node, "workload", known: ["queue-depth", "duration", "think-time", "mix", "pattern", "max-size", "snapshots", "clone-after", "rollbacks"])
        if let n = w["pattern"] {
            let text = try string(n, "workload.pattern")
            guard text == "random" || text == "sequential" else { throw fail(n, "workload.pattern", "expected random or sequential, got '\(text)'") }
            o.sequential = text == "sequential"
        }
        if let n = w["max-size"] {
            let bytes = try size(n, "workload.max-size")
            guard bytes % 4096 == 0, bytes <= 1 << 20 else { throw fail(n, "workload.max-size", "expected a multiple of 4KiB up to 1MiB") }
            o.opSizeMax = Int(bytes)
        }
        if let n = w["queue-depth"] { o.queueDepth = try int(n, "workload.queue-depth", 1...1024) }
        if let n = w["duration"] { o.duration = try duration(n, "workload.duration") }
        if let n = w["think-time"] { o.thinkTimeMean = try duration(n, "workload.think-time") }
        if let n = w["snapshots"] { o.snapshotInterval = try duration(n, "workload.snapshots") }
        if let n = w["clone-after"] { o.cloneAfter = try duration(n, "workload.clone-after") }
        if let n = w["rollbacks"] { o.rollbackInterval = try duration(n, "workload.rollbacks") }
        if (o.cloneAfter != nil || o.rollbackInterval != nil) && o.snapshotInterval == nil {
            throw fail(node, "workload", "'clone-after' and 'rollbacks' need 'snapshots' (they use the newest snapshot)")
        }
        if let n = w["mix"] {
            let m = try mapping(n, "workload.mix", known: ["read", "write", "fua", "trim", "flush"])
            var mix = SimOptions.OpMix(read: 0, write: 0, fua: 0, trim: 0, flush: 0)
            if let v = m["read"] { mix.read = try int(v, "workload.mix.read", 0...100) }
            if let v = m["write"] { mix.write = try int(v, "workload.mix.write", 0...100) }
            if let v = m["fua"] { mix.fua = try int(v, "workload.mix.fua", 0...100) }
            if let v = m["trim"] { mix.trim = try int(v, "workload.mix.trim", 0...100) }
            if let v = m["flush"] { mix.flush = try int(v, "workload.mix.flush", 0...100) }
            guard mix.total == 100 else { throw fail(n, "workload.mix", "percentages must add up to 100, got \(mix.total)") }
            o.opMix = mix
        }
    }

    func faults(_ node: Node, into o: inout SimOptions) throws(ScenarioError) {
        if case .scalar(let s) = node {
            guard s.string == "none" else { throw fail(node, "faults", "expected 'none' or a mapping of fault rates") }
            o.faults = false
            return
        }
        let f = try mapping(node, "faults", known: ["interval", "drop", "duplicate", "latency-max", "mix", "quiet", "torn-write",
                                                    "unsynced-survival", "misdirected-write", "clock-skew-max", "metadata-slow-max"])
        if let n = f["mix"] {
            let m = try mapping(n, "faults.mix", known: FaultKind.allCases.map(\.rawValue))
            o.faultMix = [:]
            for (k, v) in m { o.faultMix[FaultKind(rawValue: k)!] = try int(v, "faults.mix." + k, 0...1000) }
            if f["quiet"] == nil { o.quietWeight = 0 }
        }
        if let n = f["quiet"] { o.quietWeight = try int(n, "faults.quiet", 0...1000) }
        if let n = f["torn-write"] { o.tornWriteProbability = try fraction(n, "faults.torn-write") }
        if let n = f["unsynced-survival"] { o.unsyncedSurvivalProbability = try fraction(n, "faults.unsynced-survival") }
        if let n = f["misdirected-write"] { o.misdirectedWriteProbability = try probability(n, "faults.misdirected-write") }
        if let n = f["clock-skew-max"] { o.clockSkewMax = try duration(n, "faults.clock-skew-max") }
        if let n = f["metadata-slow-max"] { o.metadataSlowMax = try duration(n, "faults.metadata-slow-max") }
        if let n = f["interval"] { o.faultInterval = try duration(n, "faults.interval") }
        if let n = f["drop"] { o.dropProbability = try probability(n, "faults.drop") }
        if let n = f["duplicate"] { o.duplicateProbability = try probability(n, "faults.duplicate") }
        if let n = f["latency-max"] {
            o.networkLatencyMax = try duration(n, "faults.latency-max")
            guard o.networkLatencyMax.value > 50_000 else { throw fail(n, "faults.latency-max", "must be above the 50us minimum hop") }
        }
    }

    func schedule(_ node: Node, into o: inout SimOptions) throws(ScenarioError) {
        guard case .sequence(let items) = node else { throw fail(node, "schedule", "expected a list of {at, fault, node, for}") }
        for item in items {
            let e = try mapping(item, "schedule", known: ["at", "fault", "node", "for", "volume"])
            guard let atNode = e["at"] else { throw fail(item, "schedule.at", "missing (when the fault happens, e.g. 10s)") }
            guard let kindNode = e["fault"] else { throw fail(item, "schedule.fault", "missing (one of \(FaultKind.allCases.map(\.rawValue).joined(separator: ", ")))") }
            let kindText = try string(kindNode, "schedule.fault")
            guard let kind = FaultKind(rawValue: kindText) else {
                throw fail(kindNode, "schedule.fault", "unknown fault '\(kindText)' (known: \(FaultKind.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            var f = ScheduledFault(at: try duration(atNode, "schedule.at"), kind: kind)
            if let n = e["node"] { f.node = try int(n, "schedule.node", 1...o.nodes) }
            if let n = e["for"] { f.duration = try duration(n, "schedule.for") }
            if let n = e["volume"] { f.volume = try int(n, "schedule.volume", 1...o.volumes) }
            o.schedule.append(f)
        }
    }

    /// The garbage collector's settings: the simulator's (shorter) defaults, then the file's.
    func collector(_ node: Node) throws(ScenarioError) -> CollectorConfig {
        let g = try mapping(node, "gc", known: ["interval", "grace", "first", "repair-grace", "repair-rate", "repair-concurrency", "ring-settle"])
        var cfg = CollectorConfig()
        cfg.passInterval = .seconds(2)
        cfg.firstPassDelay = .seconds(1)
        cfg.grace = .seconds(1)
        cfg.rpcTimeout = .milliseconds(300)
        cfg.metadataTimeout = .milliseconds(500)
        cfg.tickInterval = .milliseconds(50)
        cfg.listBatchRefs = 64
        if let n = g["interval"] { cfg.passInterval = try duration(n, "gc.interval") }
        if let n = g["grace"] { cfg.grace = try duration(n, "gc.grace") }
        if let n = g["first"] { cfg.firstPassDelay = try duration(n, "gc.first") }
        cfg.repairGrace = .seconds(2)
        cfg.repairBytesPerSecond = 0
        if let n = g["repair-grace"] { cfg.repairGrace = try duration(n, "gc.repair-grace") }
        if let n = g["repair-rate"] { cfg.repairBytesPerSecond = try size(n, "gc.repair-rate") }
        if let n = g["repair-concurrency"] { cfg.repairConcurrencyMax = try int(n, "gc.repair-concurrency", 1...1024) }
        cfg.ringSettle = .seconds(2)
        if let n = g["ring-settle"] { cfg.ringSettle = try duration(n, "gc.ring-settle") }
        return cfg
    }
}
