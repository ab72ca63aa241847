import TorusCore

/// Everything that shapes one simulation run. A run is a pure function of these options.
public struct SimOptions: Sendable {
    public var seed: UInt64 = 1
    public var nodes = 5
    public var replication = 3
    public var queueDepth = 16
    public var duration = Nanoseconds.seconds(60)
    public var volumeBytes: UInt64 = 4 << 20
    public var blockSize = 16 << 10
    public var diskBytes: UInt64 = 64 << 20
    /// Inject crashes, restarts, partitions, drops, duplicates, metadata outages.
    public var faults = true
    /// Mean time between fault events (any kind).
    public var faultInterval = Nanoseconds.milliseconds(1500)
    public var dropProbability = 0.01
    public var duplicateProbability = 0.005
    /// Upper bound of one network hop's latency (the lower bound is 50 µs).
    public var networkLatencyMax = Nanoseconds.microseconds(400)
    /// Mean pause of a workload slot between two ops.
    public var thinkTimeMean = Nanoseconds.milliseconds(8)
    public var canary: VolumeClientConfig.Canary = .none

    public init() {}

    /// The command line that reproduces this run.
    public var reproduceCommand: String {
        var s = "swift run -c release torus-sim run --seed \(seed) --nodes \(nodes) --replication \(replication)"
        s += " --queue-depth \(queueDepth) --duration \(duration.value / 1_000_000)ms"
        s += " --volume-size \(volumeBytes / 1024)KiB --block-size \(blockSize / 1024)KiB"
        if !faults { s += " --no-faults" }
        if canary != .none { s += " --canary \(canary.rawValue)" }
        return s
    }
}

/// What a run found.
public struct SimResult: Sendable {
    public var seed: UInt64
    public var traceHash: UInt64
    public var violation: String?
    public var brokenPromise: String?
    public var simulatedSeconds: Double
    public var events: UInt64
    public var opsCompleted: Int
    public var readsChecked: Int
    public var readErrors: Int
    public var faultsInjected: Int
    public var writerRestarts: Int
    public var commits: Int
    /// The writer knobs this seed drew (cache, write-back timing, limits).
    public var knobs: String
    public var passed: Bool { violation == nil }

    public var traceHex: String {
        let h = String(traceHash, radix: 16)
        return String(repeating: "0", count: 16 - h.count) + h
    }
}
