import Testing
import TorusCore
@testable import TorusSim

/// Short runs keep `swift test` fast in debug builds; the release runner covers long ones.
func quickOptions(seed: UInt64, canary: VolumeClientConfig.Canary = .none) -> SimOptions {
    var o = SimOptions()
    o.seed = seed
    o.duration = .seconds(20)
    o.volumeBytes = 1 << 20
    o.queueDepth = 8
    o.faultInterval = .milliseconds(700)
    o.canary = canary
    return o
}

@Suite("determinism")
struct DeterminismTests {
    @Test("the same seed twice gives the same trace hash")
    func sameSeedSameTrace() {
        let a = Simulation(options: quickOptions(seed: 7)).run()
        let b = Simulation(options: quickOptions(seed: 7)).run()
        #expect(a.traceHash == b.traceHash)
        #expect(a.events == b.events)
        #expect(a.opsCompleted == b.opsCompleted)
        #expect(a.passed, "\(a.violation ?? "")")
    }

    @Test("five different seeds give five different trace hashes")
    func differentSeedsDifferentTraces() {
        let hashes = (1...5).map { Simulation(options: quickOptions(seed: UInt64($0))).run().traceHash }
        #expect(Set(hashes).count == 5)
    }
}

@Suite("fixed seeds with crashes and network faults")
struct FixedSeedTests {
    @Test("each fixed seed keeps every promise", arguments: Array(UInt64(1)...20))
    func seedPasses(seed: UInt64) {
        let r = Simulation(options: quickOptions(seed: seed)).run()
        #expect(r.passed, "seed \(seed): \(r.violation ?? "")")
        #expect(r.faultsInjected > 0, "seed \(seed) injected no faults")
        #expect(r.readsChecked > 100, "seed \(seed) checked only \(r.readsChecked) sector reads")
        #expect(r.commits > 0, "seed \(seed) committed nothing")
    }
}

@Suite("canary: the checker must catch a known bug")
struct CanaryTests {
    @Test("an injected bug is caught within the fixed seeds, as a durability failure",
          arguments: [VolumeClientConfig.Canary.ackBeforeReplicaSync, .ackFlushBeforeCommit])
    func canaryIsCaught(canary: VolumeClientConfig.Canary) {
        var caught: [(UInt64, String)] = []
        for seed in UInt64(1)...20 {
            let r = Simulation(options: quickOptions(seed: seed, canary: canary)).run()
            if let promise = r.brokenPromise { caught.append((seed, promise + ": " + (r.violation ?? ""))) }
        }
        #expect(!caught.isEmpty, "no fixed seed caught \(canary.rawValue)")
        #expect(caught.contains { $0.1.contains("durability") }, "caught, but not as a durability failure: \(caught)")
        // Without the bug the same seeds pass (checked by FixedSeedTests), so the failure is the bug's.
    }
}
