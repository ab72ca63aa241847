import Testing
import TorusCore
import TorusScenario
import TorusSim

#if canImport(Glibc)
import Glibc
#endif

/// The scenario files in Scenarios/: every one runs on its fixed seeds with its expectation,
/// every canary is caught by some scenario, and malformed files get one-line errors.
@Suite("scenario files")
struct ScenarioTests {
    static var directory: String { SourceScanTests.packageRoot() + "/Scenarios" }

    /// File names of the scenarios.
    static var files: [String] {
        SourceScanTests.files(in: directory, suffix: ".yaml").map { String($0.dropFirst(directory.count + 1)) }
    }

    /// Runs `file` on each of its seeds, expecting every run to pass; returns the results.
    func passingRuns(_ file: String) throws -> (Scenario, [(seed: UInt64, result: SimResult)]) {
        let sc = try Scenario.load(path: Self.directory + "/" + file)
        let runs = sc.seeds.map { seed in (seed, Simulation(options: sc.options(seed: seed)).run()) }
        for (seed, r) in runs { #expect(r.passed, "\(file) seed \(seed): \(r.violation ?? "")") }
        return (sc, runs)
    }

    @Test("there are scenario files, and the index lists every one")
    func index() throws {
        let files = Self.files
        #expect(files.count >= 10, "found \(files)")
        let text = try #require(SourceScanTests.read(Self.directory + "/README.md"))
        for f in files { #expect(text.contains(f), "Scenarios/README.md does not list \(f)") }
    }

    @Test("every scenario meets its expectation on its fixed seeds", arguments: files)
    func scenario(_ file: String) throws {
        let sc = try Scenario.load(path: Self.directory + "/" + file)
        #expect(sc.seeds.count >= 3, "\(file): at least three fixed seeds")
        var violations: [String] = []
        for seed in sc.seeds {
            let r = Simulation(options: sc.options(seed: seed)).run()
            if let v = r.violation { violations.append("seed \(seed): \(v)") }
            if sc.expect == .pass { #expect(r.opsCompleted > 0 && r.readsChecked > 0, "\(file) seed \(seed) did no work") }
        }
        switch sc.expect {
        case .pass: #expect(violations.isEmpty, "\(file): \(violations)")
        case .caught: #expect(!violations.isEmpty, "\(file): the injected bug \(sc.options.canary.rawValue) was not caught")
        }
    }

    @Test("every injectable bug is caught by a scenario")
    func canariesCovered() throws {
        var covered: Set<String> = []
        for f in Self.files {
            let sc = try Scenario.load(path: Self.directory + "/" + f)
            if sc.expect == .caught { covered.insert(sc.options.canary.rawValue) }
        }
        for c in VolumeClientConfig.Canary.allCases where c != .none {
            #expect(covered.contains(c.rawValue), "no scenario expects \(c.rawValue) to be caught")
        }
    }

    @Test("each canary is caught by the checker meant for it", arguments: [
        ("canary-skip-epoch-compare.yaml", "fencing"),
        ("canary-no-commit-retry.yaml", "liveness"),
        // Lost unsynced copies: missing after healing, or gone after the final power loss.
        ("canary-ack-before-sync.yaml", "durability|convergence"),
        ("canary-gc-ignores-horizon.yaml", "durability"),
        ("canary-gc-leaks.yaml", "reclaim"),
        // The commit log: the log checker sees an acknowledgement the successor's recovery did
        // not find; the others lose acknowledged data.
        ("canary-node-ignores-seal.yaml", "fencing"),
        ("canary-ack-before-log-replicas.yaml", "durability|fencing"),
        ("canary-replay-skips-record.yaml", "durability"),
        ("canary-truncate-before-checkpoint.yaml", "fencing|durability"),
        // One sync per store cycle: the recovery checker sees a copy claimed without its bytes.
        ("canary-store-trusts-last-write.yaml", "durability"),
        // One round per FLUSH: a record dropped by recovery but completed by the old writer's
        // late block puts (log checker), or kept though its blocks were never stored.
        ("canary-node-ignores-data-seal.yaml", "fencing"),
        ("canary-recovery-trusts-last-record.yaml", "durability"),
        // Range reads of known sectors: rotten bytes served unchecked are wrong data.
        ("canary-store-trusts-sectors.yaml", "no wrong data"),
    ])
    func canaryPromise(_ file: String, _ promise: String) throws {
        let sc = try Scenario.load(path: Self.directory + "/" + file)
        let r = Simulation(options: sc.options(seed: sc.seeds[0])).run()
        let broken = promise.split(separator: "|").map(String.init).first { r.brokenPromise?.hasPrefix($0) == true }
        #expect(broken != nil, "\(file): \(r.violation ?? "passed")")
        #expect(r.isLivenessFailure == ["liveness", "reclaim", "convergence"].contains { broken == $0 })
    }

    @Test("FLUSHes go on through a metadata outage (log appends) until the lease needs the store")
    func flushesDuringOutage() throws {
        let sc = try Scenario.load(path: Self.directory + "/metadata-outage-30s.yaml")
        let r = Simulation(options: sc.options(seed: 1)).run()
        #expect(r.passed, "\(r.violation ?? "")")
        #expect(r.flushesDuringOutage > 0, "no FLUSH was acknowledged during the 30 s outage")
        // The lease (4 s here) cannot be renewed: acknowledgements stop within it, not 30 s later.
        #expect(r.flushesDuringOutage < r.opsCompleted / 10, "\(r.flushesDuringOutage) FLUSHes acknowledged in the outage")
    }

    @Test("a node back within the repair grace costs no copies; down past it, its blocks are copied")
    func repairGrace() throws {
        let sc = try Scenario.load(path: Self.directory + "/node-returns.yaml")
        let within = Simulation(options: sc.options(seed: 1)).run()
        #expect(within.passed, "\(within.violation ?? "")")
        #expect(within.copies == 0, "a node down 4 s with a 10 s grace caused \(within.copies) copies")
        // It catches up on what it missed, and only that: each block moved to it had a copy
        // put on a fallback node while it was down (no full rebuild).
        #expect(within.moves > 0 && within.moves <= within.fallbackPuts,
                "the returning node received \(within.moves) blocks; \(within.fallbackPuts) copies went to fallbacks while it was down")
        // Past the grace: the collector copies once two passes in a row found a block short
        // (passes are slow while a node does not answer its listing), so the node stays away longer.
        var o = sc.options(seed: 1)
        o.collector!.repairGrace = .seconds(1)
        o.schedule[0].duration = .seconds(8)
        let past = Simulation(options: o).run()
        #expect(past.passed, "\(past.violation ?? "")")
        #expect(past.copies > 0, "a node down 8 s with a 1 s grace caused no copies")
    }

    @Test("scrubbing finds rotten copies no read touches; without it the byte-level convergence check fails")
    func scrubRepairsRot() throws {
        let sc = try Scenario.load(path: Self.directory + "/scrub-bit-rot.yaml")
        // On some seeds a write replaces every rotten block before the end; not on all.
        var caughtWithout: [UInt64] = []
        for seed in sc.seeds {
            let r = Simulation(options: sc.options(seed: seed)).run()
            #expect(r.passed, "seed \(seed): \(r.violation ?? "")")
            var o = sc.options(seed: seed)
            o.scrubInterval = nil
            let without = Simulation(options: o).run()
            if without.brokenPromise?.hasPrefix("convergence") == true { caughtWithout.append(seed) }
        }
        #expect(caughtWithout.count >= 2, "without scrubbing only seeds \(caughtWithout) kept rotten copies")
    }

    @Test("a full cluster answers writes and flushes with noSpace (ENOSPC) instead of hanging, and loses nothing")
    func clusterFull() throws {
        let sc = try Scenario.load(path: Self.directory + "/cluster-full.yaml")
        let r = Simulation(options: sc.options(seed: 1)).run()
        #expect(r.passed, "\(r.violation ?? "")")
        #expect(r.noSpaceErrors > 0, "the cluster never ran out of space")
    }

    @Test("with room left on some nodes, a block whose usual candidates are all full is still stored (no ENOSPC)")
    func enospcOnlyWhenTheClusterIsFull() throws {
        for (seed, r) in try passingRuns("uneven-full.yaml").1 {
            #expect(r.noSpaceErrors == 0, "seed \(seed): \(r.noSpaceErrors) ENOSPC errors with 3 nodes mostly empty")
        }
    }

    @Test("after a node is lost for good, the repair alone restores full redundancy")
    func lostNodeRepaired() throws {
        let sc = try Scenario.load(path: Self.directory + "/lose-node-r2.yaml")
        let r = Simulation(options: sc.options(seed: 1)).run()
        #expect(r.passed, "\(r.violation ?? "")")
        #expect(r.copies > 0)
        // Without the collector the same run ends short of copies (convergence fails).
        var o = sc.options(seed: 1)
        o.collector = nil
        let without = Simulation(options: o).run()
        #expect(without.brokenPromise?.hasPrefix("convergence") == true, "\(without.violation ?? "passed")")
    }

    @Test("a node joining a 4-node cluster receives about its fifth of the stored copies, and old copies go")
    func joinMovesItsShare() throws {
        let (sc, runs) = try passingRuns("join-rebalance.yaml")
        for (seed, r) in runs {
            #expect(r.ringVersion == 2)
            let stored = Double(r.liveBlocks * sc.options.replication)
            let share = Double(r.moves) / stored
            // Ideal 1/5; reads that find a block missing on its new node put it there too. Blocks
            // written back after the join go to the new node directly and are not moves (seed 2:
            // 131 moved, 111 written there), hence the low floor; convergence checks placement.
            #expect(share > 0.10 && share < 0.27, "seed \(seed): moved \(r.moves) of \(Int(stored)) stored copies (\(share))")
            #expect(r.trimmed >= r.moves * 9 / 10, "seed \(seed): \(r.moves) moved but only \(r.trimmed) old copies deleted")
        }
        // Without deleting old copies (the ring never settles), the placement check fails.
        var o = sc.options(seed: 1)
        o.collector!.ringSettle = .seconds(3600)
        let stuck = Simulation(options: o).run()
        #expect(stuck.brokenPromise?.hasPrefix("convergence") == true && stuck.violation?.contains("placement") == true,
                "\(stuck.violation ?? "passed")")
    }

    @Test("the collector reclaims every block of deleted volumes while the survivor loses nothing")
    func deletedVolumesReclaimed() throws {
        // The reclaim check fails a run if any block of them is left.
        for (seed, r) in try passingRuns("gc-delete-volume.yaml").1 {
            #expect(r.deletedVolumeBlocks > 20, "seed \(seed): the deleted volumes had only \(r.deletedVolumeBlocks) copies")
        }
    }

    @Test("a drained node ends up holding nothing needed and is removed; nothing is lost")
    func drainRemoves() throws {
        for (seed, r) in try passingRuns("drain-during-writes.yaml").1 {
            #expect(r.ringVersion == 3, "seed \(seed): the drain (version 2) must end in a removal (version 3)")
            #expect(r.moves > 0)
        }
    }

    @Test("every fault kind is used by some scenario, by weight or by schedule")
    func faultCatalogueCovered() throws {
        var used: Set<FaultKind> = []
        for f in Self.files {
            let o = try Scenario.load(path: Self.directory + "/" + f).options
            for (k, w) in o.faultMix where w > 0 && o.faults { used.insert(k) }
            for e in o.schedule { used.insert(e.kind) }
        }
        for k in FaultKind.allCases { #expect(used.contains(k), "no scenario injects \(k.rawValue)") }
    }

    @Test("the readable trace does not change the trace hash, and names faults and messages")
    func readableTrace() throws {
        let sc = try Scenario.load(path: Self.directory + "/writer-pause-takeover.yaml")
        var o = sc.options(seed: 1)
        o.duration = .seconds(6)
        let plain = Simulation(options: o).run()
        let sim = Simulation(options: o)
        nonisolated(unsafe) var lines: [String] = []
        sim.traceSink = { lines.append($0) }
        let traced = sim.run()
        #expect(plain.traceHash == traced.traceHash)
        #expect(lines.count > 1000)
        #expect(lines.contains { $0.contains("FAULT writer1 paused") }, "\(lines.filter { $0.contains("FAULT") }.prefix(5))")
        #expect(lines.contains { $0.contains("writer2 -> node") && $0.contains("putBlock") })
        #expect(lines.allSatisfy { $0.first?.isNumber == true })
    }

    @Test("a scenario run twice with one seed gives the same trace; another seed another trace")
    func determinism() throws {
        let sc = try Scenario.load(path: Self.directory + "/baseline-faults.yaml")
        let a = Simulation(options: sc.options(seed: 1)).run()
        let b = Simulation(options: sc.options(seed: 1)).run()
        let c = Simulation(options: sc.options(seed: 2)).run()
        #expect(a.traceHash == b.traceHash)
        #expect(a.traceHash != c.traceHash)
    }

    @Test("malformed scenarios get one line naming file, line, column and field", arguments: [
        ("name: x\nhunts: y\ncluster:\n  nodez: 3\n", "f.yaml:4:3: field 'cluster.nodez': unknown field"),
        ("name: x\nhunts: y\ncluster: {nodes: 3, replication: 4}\n", "f.yaml:3:34: field 'cluster.replication': expected a whole number from 1 to 3, got '4'"),
        ("name: x\nhunts: [y\n", "f.yaml:3:1: YAML syntax error"),
        ("name: x\nhunts: y\nfaults: {drop: lots}\n", "f.yaml:3:16: field 'faults.drop': expected a probability"),
        ("hunts: y\n", "f.yaml:1:1: field 'name': missing"),
        ("name: x\nhunts: y\nworkload: {duration: forever}\n", "f.yaml:3:22: field 'workload.duration': expected a duration"),
        ("name: x\nhunts: y\ncanary: ack-before-sync\n", "f.yaml:3:9: field 'canary': an injected bug must be expected 'caught'"),
        ("name: x\nhunts: y\nseeds: 7\n", "f.yaml:3:8: field 'seeds': expected a list of seeds"),
        ("- just\n- a list\n", "f.yaml:1:1: field '': expected a mapping"),
        ("", "f.yaml:1:1: the file is empty"),
        ("name: x\nhunts: y\nname: z\n", "f.yaml:"),
        ("name: x\nhunts: y\nvolume: {size: 3KiB}\n", "f.yaml:3:16: field 'volume.size'"),
        ("name: x\nhunts: y\nschedule:\n  - {at: 1s, fault: meteor}\n", "f.yaml:4:21: field 'schedule.fault': unknown fault 'meteor'"),
        ("name: x\nhunts: y\nschedule:\n  - {fault: crash-node}\n", "f.yaml:4:5: field 'schedule.at': missing"),
        ("name: x\nhunts: y\ncluster: {nodes: 3}\nschedule:\n  - {at: 1s, fault: crash-node, node: 4}\n", "f.yaml:5:39: field 'schedule.node'"),
        ("name: x\nhunts: y\nworkload: {duration: 10s}\nschedule:\n  - {at: 20s, fault: power-loss}\n", "f.yaml:5:3: field 'schedule.at': a fault at 20000 ms is after the safety phase"),
        ("name: x\nhunts: y\nfaults: {mix: {crash-node: 1, gremlins: 2}}\n", "f.yaml:3:31: field 'faults.mix.gremlins': unknown field"),
        ("name: x\nhunts: y\nworkload: {mix: {read: 50, write: 40}}\n", "f.yaml:3:17: field 'workload.mix': percentages must add up to 100, got 90"),
        ("name: x\nhunts: y\ncluster: {nodes: 2, capacities: [1MiB, 1MiB, 1MiB]}\n", "f.yaml:3:33: field 'cluster.capacities'"),
        ("name: x\nhunts: y\nchecks: {convergence: maybe}\n", "f.yaml:3:23: field 'checks.convergence': expected true or false"),
        ("name: x\nhunts: y\nphases: {liveness: soon}\n", "f.yaml:3:20: field 'phases.liveness': expected a duration"),
        ("name: x\nhunts: y\nvolume: {count: 0}\n", "f.yaml:3:17: field 'volume.count': expected a whole number from 1 to 16"),
        ("name: x\nhunts: y\nschedule:\n  - {at: 1s, fault: writer-crash, volume: 2}\n", "f.yaml:4:43: field 'schedule.volume': expected a whole number from 1 to 1"),
    ])
    func malformed(_ text: String, _ expected: String) {
        do {
            _ = try Scenario.parse(text, path: "f.yaml")
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.description.hasPrefix(expected), "got: \(error.description)")
            #expect(!error.description.contains("\n"), "not one line: \(error.description)")
        }
    }

    @Test("a missing file is a one-line error too")
    func missingFile() {
        #expect(throws: ScenarioError.self) { try Scenario.load(path: "/nonexistent/x.yaml") }
    }
}

@Suite("swarm shapes")
struct SwarmShapeTests {
    @Test("a seed always draws the same shape; seeds cover varied, valid shapes")
    func shapes() {
        #expect(SimOptions.swarm(seed: 7).shapeDescription == SimOptions.swarm(seed: 7).shapeDescription)
        var nodeCounts: Set<Int> = [], blockSizes: Set<Int> = [], faultless = 0
        for seed in 1...200 as ClosedRange<UInt64> {
            let o = SimOptions.swarm(seed: seed)
            #expect(o.seed == seed)
            #expect(o.replication >= 1 && o.replication <= o.nodes && o.nodes <= 7, "seed \(seed): \(o.shapeDescription)")
            #expect(o.volumeBytes >= UInt64(o.blockSize) && o.volumeBytes % 4096 == 0, "seed \(seed): \(o.shapeDescription)")
            nodeCounts.insert(o.nodes)
            blockSizes.insert(o.blockSize)
            if !o.faults { faultless += 1 }
        }
        #expect(nodeCounts.count == 7 && blockSizes.count == 7, "nodes \(nodeCounts), blocks \(blockSizes)")
        #expect(faultless > 0 && faultless < 100)
    }

    @Test("a 4 KiB volume runs (the workload once asked for more sectors than the volume had)")
    func tinyVolume() {
        var o = SimOptions()
        o.volumeBytes = 4096
        o.blockSize = 4096
        o.duration = .seconds(5)
        let r = Simulation(options: o).run()
        #expect(r.passed, "\(r.violation ?? "")")
        #expect(r.opsCompleted > 0)
    }
}
