import ArgumentParser
import TorusCore
import TorusScenario
import TorusSim

#if canImport(Glibc)
import Glibc
#endif

/// Exit statuses of torus-sim.
enum SimExit {
    static let safety: Int32 = 1    // a safety promise broke (durability, wrong data, fencing), or a canary went uncaught
    static let badFile: Int32 = 2   // a malformed scenario file
    static let liveness: Int32 = 3  // no progress or no convergence after healing
    static let crash: Int32 = 4     // the simulator itself crashed (a precondition failed)

    /// The status for a set of results: safety failures win over liveness ones.
    static func status(_ results: [SimResult]) -> Int32 {
        worst(results.map { $0.passed ? 0 : $0.isLivenessFailure ? liveness : safety })
    }

    /// The status of several runs from theirs: a crash wins over a safety failure, which
    /// wins over a liveness one; 0 when all passed.
    static func worst(_ statuses: [Int32]) -> Int32 {
        for s in [crash, safety, liveness] where statuses.contains(s) { return s }
        return 0
    }
}

// A crash of the simulator (a failed precondition traps) still prints the one command that
// reproduces it, from a signal handler: the message is prepared before every run.
nonisolated(unsafe) var crashReport: UnsafeMutablePointer<CChar>?
nonisolated(unsafe) var crashReportLength = 0

func prepareCrashReport(_ reproduce: String) {
    let text = "\ntorus-sim: the simulator crashed (exit status 4). Reproduce: \(reproduce)\n"
    free(crashReport)
    crashReport = strdup(text)
    crashReportLength = text.utf8.count
}

func installCrashHandler() {
    for sig in [SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE, SIGABRT] {
        signal(sig) { _ in
            if let m = crashReport { _ = write(2, m, crashReportLength) }
            _exit(SimExit.crash)
        }
    }
}

@main
struct TorusSimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "torus-sim",
        abstract: "Deterministic, fault-injecting simulator for the Torus storage core.",
        discussion: """
            Runs storage nodes, a volume writer and a metadata store in virtual time with crashes, \
            power loss, partitions, message drops and metadata outages, and checks every read \
            against the promises of docs/design.md ("Promises to users"). The same seed always \
            gives the same trace hash.
            """,
        subcommands: [Run.self, Sweep.self, Swarm.self, CheckDeterminism.self],
        defaultSubcommand: Run.self
    )

    static func main() {
        installCrashHandler()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

struct SimulationFlags: ParsableArguments {
    @Option(help: "Storage nodes.") var nodes = 5
    @Option(help: "Copies of every block.") var replication = 3
    @Option(name: .customLong("queue-depth"), help: "Concurrent ops from the workload.") var queueDepth = 16
    @Option(help: "Simulated duration of the load phase, e.g. 60s, 500ms, 2m.") var duration = "60s"
    @Option(name: .customLong("volume-size"), help: "Volume size, e.g. 4MiB.") var volumeSize = "4MiB"
    @Option(name: .customLong("block-size"), help: "Block size, e.g. 16KiB.") var blockSize = "16KiB"
    @Flag(name: .customLong("no-faults"), help: "Run without crashes, partitions, drops or outages.") var noFaults = false
    @Option(help: "Inject a known bug to check that the checkers catch it: \(VolumeClientConfig.Canary.allCases.map(\.rawValue).joined(separator: ", ")).")
    var canary = "none"

    func options(seed: UInt64) throws -> SimOptions {
        var o = SimOptions()
        o.seed = seed
        guard nodes >= 1, nodes <= 64 else { throw ValidationError("--nodes must be between 1 and 64") }
        guard replication >= 1, replication <= nodes else { throw ValidationError("--replication must be between 1 and --nodes (\(nodes))") }
        guard queueDepth >= 1, queueDepth <= 1024 else { throw ValidationError("--queue-depth must be between 1 and 1024") }
        o.nodes = nodes
        o.replication = replication
        o.queueDepth = queueDepth
        o.duration = try parseDuration(duration)
        o.volumeBytes = try parseSize(volumeSize, name: "--volume-size")
        let bs = try parseSize(blockSize, name: "--block-size")
        guard bs >= 4096, bs <= 1 << 20, bs.nonzeroBitCount == 1 else {
            throw ValidationError("--block-size must be a power of two between 4KiB and 1MiB")
        }
        o.blockSize = Int(bs)
        guard o.volumeBytes >= bs, o.volumeBytes % 4096 == 0, o.volumeBytes <= 1 << 30 else {
            throw ValidationError("--volume-size must be a multiple of 4KiB between the block size and 1GiB")
        }
        o.faults = !noFaults
        guard let c = VolumeClientConfig.Canary(rawValue: canary) else {
            throw ValidationError("unknown --canary \(canary); known: \(VolumeClientConfig.Canary.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        o.canary = c
        return o
    }
}

func parseDuration(_ s: String) throws -> Nanoseconds {
    let units: [(String, UInt64)] = [("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000)]
    for (suffix, mult) in units where s.hasSuffix(suffix) {
        if let n = UInt64(s.dropLast(suffix.count)), n > 0, n < 1 << 40 / (mult / 1_000_000) { return Nanoseconds(n * mult) }
    }
    throw ValidationError("cannot read duration '\(s)': use e.g. 60s, 500ms or 2m")
}

func parseSize(_ s: String, name: String) throws -> UInt64 {
    let units: [(String, UInt64)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("B", 1)]
    for (suffix, mult) in units where s.hasSuffix(suffix) {
        if let n = UInt64(s.dropLast(suffix.count)), n > 0, n <= (1 << 40) / mult { return n * mult }
    }
    if let n = UInt64(s), n > 0 { return n }
    throw ValidationError("cannot read \(name) '\(s)': use e.g. 4MiB, 16KiB")
}

/// Loads a scenario, or prints its one-line error and exits with status 2.
func loadScenario(_ path: String) throws -> Scenario {
    do {
        return try Scenario.load(path: path)
    } catch {
        print("torus-sim: \(error)")
        throw ExitCode(2)
    }
}

func wallSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func summary(_ r: SimResult, wall: Double) -> String {
    let speed = wall > 0 ? r.simulatedSeconds / wall : 0
    let evs = wall > 0 ? Double(r.events) / wall : 0
    return "seed=\(r.seed) trace=\(r.traceHex) checks=\(r.passed ? "passed" : "FAILED")"
        + " sim=\(fmt(r.simulatedSeconds))s wall=\(fmt(wall))s speed=\(Int(speed))x events=\(r.events) events/s=\(Int(evs))"
        + " ops=\(r.opsCompleted) reads-checked=\(r.readsChecked) read-errors=\(r.readErrors)"
        + " faults=\(r.faultsInjected) writer-restarts=\(r.writerRestarts) checkpoints=\(r.commits) log-commits=\(r.logCommits)" + (r.flushesDuringOutage > 0 ? " outage-flushes=\(r.flushesDuringOutage)" : "") + " repairs=\(r.repairs)" + (r.copies > 0 ? " copies=\(r.copies)" : "") + (r.noSpaceErrors > 0 ? " enospc=\(r.noSpaceErrors)" : "")
            + (r.ringVersion > 1 || r.moves > 0 || r.trimmed > 0 ? " ring-version=\(r.ringVersion) moves=\(r.moves) moved-bytes=\(r.bytesMoved) trimmed=\(r.trimmed) live-blocks=\(r.liveBlocks) fallback-puts=\(r.fallbackPuts)" : "")
}

/// Runs once, writing the readable trace when asked.
func simulate(_ options: SimOptions, reproduce: String, traceFile: UnsafeMutablePointer<FILE>?) -> SimResult {
    prepareCrashReport(reproduce)
    let sim = Simulation(options: options)
    if let f = traceFile {
        fputs("# seed \(options.seed)\n", f)
        sim.traceSink = { line in
            fputs(line, f)
            fputs("\n", f)
        }
    }
    let result = sim.run()
    if let f = traceFile { fputs("# seed \(options.seed): trace hash \(result.traceHex)\n", f) }
    return result
}

func openTrace(_ path: String?) throws -> UnsafeMutablePointer<FILE>? {
    guard let path else { return nil }
    guard let f = fopen(path, "w") else { throw ValidationError("cannot write the trace file \(path)") }
    return f
}

func closeTrace(_ f: UnsafeMutablePointer<FILE>?, _ path: String?) {
    guard let f else { return }
    fclose(f)
    print("trace written to \(path!)")
}

func fmt(_ x: Double) -> String {
    let v = (x * 100).rounded() / 100
    return String(v)
}

extension TorusSimCommand {
    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a scenario file, or the built-in workload shaped by flags; print a summary line per seed.",
            discussion: """
                With a scenario file (Scenarios/*.yaml) every seed it lists runs, or only --seed. \
                Exit status: 0 when every check passed (or, for a scenario expecting an injected \
                bug to be caught, when it was caught); 1 when a safety promise broke (durability, \
                no wrong data, fencing) or a canary went uncaught; 2 for a bad scenario file; 3 \
                for a liveness failure (no progress or no full redundancy after healing); 4 when \
                the simulator itself crashed. Every failure prints the command that reproduces it.
                """)
        @Argument(help: "A scenario file (YAML). Without it, the flags below shape the run (with it, only --canary applies: it injects that bug and reports as for a scenario that must pass).") var scenario: String?
        @Option(help: "Seed of the run; every random choice derives from it.") var seed: UInt64?
        @OptionGroup var flags: SimulationFlags
        @Flag(help: "Also print the knobs this seed drew for the writer.") var verbose = false
        @Option(help: "Write a readable trace (virtual time, node, event) of every run to this file.") var trace: String?

        func run() throws {
            let traceFile = try openTrace(trace)
            defer { closeTrace(traceFile, trace) }
            guard let path = scenario else {
                let options = try flags.options(seed: seed ?? 1)
                let start = wallSeconds()
                let result = simulate(options, reproduce: options.reproduceCommand, traceFile: traceFile)
                print(summary(result, wall: wallSeconds() - start))
                if verbose { print("knobs: \(result.knobs)") }
                if let v = result.violation {
                    print("FAILED: \(v)")
                    print("reproduce: \(options.reproduceCommand)")
                    throw ExitCode(SimExit.status([result]))
                }
                return
            }
            var sc = try loadScenario(path)
            if flags.canary != "none" {
                // Inject a bug into this scenario and report what the checkers say, as for a
                // scenario that must pass: does this scenario catch that bug?
                guard let c = VolumeClientConfig.Canary(rawValue: flags.canary) else {
                    throw ValidationError("unknown --canary \(flags.canary); known: \(VolumeClientConfig.Canary.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                sc.options.canary = c
                sc.expect = .pass
            }
            var caught = false
            var failures: [SimResult] = []
            for s in seed.map({ [$0] }) ?? sc.seeds {
                let start = wallSeconds()
                let result = simulate(sc.options(seed: s), reproduce: sc.reproduceCommand(seed: s), traceFile: traceFile)
                print("\(sc.name): " + summary(result, wall: wallSeconds() - start))
                if verbose { print("knobs: \(result.knobs)") }
                if let v = result.violation {
                    if sc.expect == .caught {
                        caught = true
                        print("caught the injected bug \(sc.options.canary.rawValue): \(v)")
                    } else {
                        failures.append(result)
                        print("FAILED: \(v)")
                        print("reproduce: \(sc.reproduceCommand(seed: s))")
                    }
                }
            }
            if sc.expect == .caught && !caught {
                print("FAILED: the injected bug \(sc.options.canary.rawValue) was not caught on seeds \((seed.map { [$0] } ?? sc.seeds).map(String.init).joined(separator: ", "))")
                throw ExitCode(SimExit.safety)
            }
            if !failures.isEmpty { throw ExitCode(SimExit.status(failures)) }
        }
    }

    struct Swarm: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Swarm testing: each seed draws its own cluster shape, workload and fault mix.",
            discussion: "Exit status 1 when any run broke a safety promise, else 3 when any failed liveness or convergence; each failure prints the command that reproduces it.")
        @Option(help: "First seed.") var from: UInt64 = 1
        @Option(help: "Number of runs.") var runs: UInt64 = 100
        @Option(help: "Write a readable trace (virtual time, node, event) of every run to this file.") var trace: String?
        @Option(help: "Seeds run at once, each in its own process (0: one per CPU core). Output stays in seed order.")
        var jobs = 1

        func validate() throws {
            guard jobs >= 0 && jobs <= 256 else { throw ValidationError("--jobs must be from 0 (one per core) to 256") }
            guard runs <= UInt64.max - from else { throw ValidationError("--from plus --runs must stay below 2^64") }
            guard trace == nil || jobs == 1 else { throw ValidationError("--trace needs --jobs 1 (one run writes the trace file at a time)") }
        }

        func run() throws {
            let workers = jobs == 0 ? max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) : jobs
            if workers > 1 && runs > 1 {
                let status = ParallelSwarm(from: from, runs: runs, jobs: workers).run()
                if status != 0 { throw ExitCode(status) }
                return
            }
            let traceFile = try openTrace(trace)
            defer { closeTrace(traceFile, trace) }
            let start = wallSeconds()
            var failures: [UInt64] = []
            var failed: [SimResult] = []
            var simSeconds = 0.0
            for seed in from..<(from + runs) {
                let options = SimOptions.swarm(seed: seed)
                let t0 = wallSeconds()
                let r = simulate(options, reproduce: "swift run -c release torus-sim swarm --from \(seed) --runs 1", traceFile: traceFile)
                simSeconds += r.simulatedSeconds
                print(summary(r, wall: wallSeconds() - t0) + " " + options.shapeDescription)
                if let v = r.violation {
                    failures.append(seed)
                    failed.append(r)
                    print("FAILED: \(v)")
                    print("reproduce: swift run -c release torus-sim swarm --from \(seed) --runs 1")
                }
            }
            let wall = wallSeconds() - start
            print("swarm: \(runs - UInt64(failures.count)) passed, \(failures.count) failed; \(fmt(simSeconds)) simulated s in \(fmt(wall)) s (\(wall > 0 ? Int(simSeconds / wall) : 0)x)")
            if !failures.isEmpty { throw ExitCode(SimExit.status(failed)) }
        }
    }

    struct CheckDeterminism: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check-determinism",
            abstract: "Run each seed of a scenario twice and compare the trace hashes.")
        @Argument(help: "A scenario file (YAML).") var scenario: String
        @Option(help: "Seeds, e.g. 1-20 or 3.") var seeds = "1-5"

        func run() throws {
            let sc = try loadScenario(scenario)
            let parts = seeds.split(separator: "-").compactMap { UInt64($0) }
            guard (parts.count == 1 || parts.count == 2), parts[0] > 0, parts.last! >= parts[0], parts.last! - parts[0] < 10_000 else {
                throw ValidationError("--seeds must be N or FROM-TO, e.g. 1-20")
            }
            var differ: [UInt64] = []
            for s in parts[0]...parts.last! {
                prepareCrashReport(sc.reproduceCommand(seed: s))
                let a = Simulation(options: sc.options(seed: s)).run()
                let b = Simulation(options: sc.options(seed: s)).run()
                print("\(sc.name) seed=\(s) trace=\(a.traceHex) again=\(b.traceHex)\(a.traceHash == b.traceHash ? "" : " DIFFERENT")")
                if a.traceHash != b.traceHash { differ.append(s) }
            }
            if !differ.isEmpty {
                print("FAILED: nondeterministic on seeds \(differ.map(String.init).joined(separator: ", ")); reproduce: swift run -c release torus-sim check-determinism \(scenario) --seeds \(differ[0])")
                throw ExitCode(1)
            }
            print("deterministic: \(parts.last! - parts[0] + 1) seed(s), each run twice with the same trace")
        }
    }

    struct Sweep: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run consecutive seeds and report every failure with its reproduce command.")
        @Option(help: "First seed.") var from: UInt64 = 1
        @Option(help: "Number of seeds.") var count: UInt64 = 200
        @OptionGroup var flags: SimulationFlags

        func validate() throws {
            guard count <= UInt64.max - from else { throw ValidationError("--from plus --count must stay below 2^64") }
        }

        func run() throws {
            let start = wallSeconds()
            var failures = 0
            var failed: [SimResult] = []
            var simSeconds = 0.0
            for seed in from..<(from + count) {
                let options = try flags.options(seed: seed)
                let t0 = wallSeconds()
                prepareCrashReport(options.reproduceCommand)
                let r = Simulation(options: options).run()
                simSeconds += r.simulatedSeconds
                print(summary(r, wall: wallSeconds() - t0))
                if let v = r.violation {
                    failures += 1
                    failed.append(r)
                    print("FAILED: \(v)")
                    print("reproduce: \(options.reproduceCommand)")
                }
            }
            let wall = wallSeconds() - start
            print("seeds \(from)..<\(from + count): sim=\(fmt(simSeconds))s wall=\(fmt(wall))s speed=\(Int(simSeconds / max(wall, 1e-9)))x")
            print("sweep: \(count - UInt64(failures)) passed, \(failures) failed")
            if failures > 0 { throw ExitCode(SimExit.status(failed)) }
        }
    }
}
