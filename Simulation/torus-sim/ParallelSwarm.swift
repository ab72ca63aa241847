import TorusSim

#if canImport(Glibc)
import Glibc
#endif

/// `swarm --jobs N`: seeds run in child processes (`torus-sim swarm --from SEED --runs 1`), up
/// to N at once, each its own deterministic simulation; results are printed in seed order.
///
/// Processes, not threads: each seed keeps its own crash report (a failed precondition in one
/// child prints that seed's reproduce command and exits 4, the other seeds go on), and a run is
/// exactly what `--runs 1` of that seed does alone.
struct ParallelSwarm {
    let from: UInt64
    let runs: UInt64
    let jobs: Int

    struct Outcome {
        var lines: [String]
        var simulatedSeconds: Double
        /// 0 pass, SimExit.safety / .liveness / .crash.
        var status: Int32
    }

    /// Runs every seed; returns the exit status of the whole swarm.
    func run() -> Int32 {
        var template = Array("/tmp/torus-swarm.XXXXXX".utf8CString)
        guard let dirPointer = mkdtemp(&template) else {
            print("torus-sim: cannot create a scratch directory in /tmp: \(String(cString: strerror(errno)))")
            return SimExit.crash
        }
        let dir = String(cString: dirPointer)
        defer { rmdir(dir) }

        let start = wallSeconds()
        var running: [pid_t: UInt64] = [:]
        var done: [UInt64: Outcome] = [:]
        var next = from
        var printUpTo = from
        let end = from + runs
        var passed: UInt64 = 0
        var simSeconds = 0.0
        var statuses: [Int32] = []

        while printUpTo < end {
            while running.count < jobs && next < end {
                guard let pid = spawn(seed: next, output: "\(dir)/\(next).out") else {
                    done[next] = Outcome(lines: ["FAILED: seed \(next): could not start a child process (\(String(cString: strerror(errno))))"],
                                         simulatedSeconds: 0, status: SimExit.crash)
                    next += 1
                    continue
                }
                running[pid] = next
                next += 1
            }
            if !running.isEmpty {
                var raw: Int32 = 0
                let pid = waitpid(-1, &raw, 0)
                if pid < 0 {
                    if errno == EINTR { continue }
                    print("torus-sim: waitpid failed: \(String(cString: strerror(errno)))")
                    return SimExit.crash
                }
                guard let seed = running.removeValue(forKey: pid) else { continue }
                done[seed] = collect(seed: seed, rawStatus: raw, output: "\(dir)/\(seed).out")
            }
            // Print finished seeds in order.
            while let o = done.removeValue(forKey: printUpTo) {
                for line in o.lines { print(line) }
                simSeconds += o.simulatedSeconds
                if o.status == 0 { passed += 1 } else { statuses.append(o.status) }
                printUpTo += 1
            }
        }
        let wall = wallSeconds() - start
        print("swarm: \(passed) passed, \(statuses.count) failed; \(fmt(simSeconds)) simulated s in \(fmt(wall)) s (\(wall > 0 ? Int(simSeconds / wall) : 0)x, \(jobs) jobs)")
        return SimExit.worst(statuses)
    }

    /// Starts `torus-sim swarm --from SEED --runs 1` with its output to `output`.
    private func spawn(seed: UInt64, output: String) -> pid_t? {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let args = [CommandLine.arguments[0], "swarm", "--from", "\(seed)", "--runs", "1"]
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, "/proc/self/exe", &actions, nil, &argv, environ)
        guard rc == 0 else { errno = rc; return nil }
        return pid
    }

    /// A child's lines (without its one-seed swarm summary) and status.
    private func collect(seed: UInt64, rawStatus: Int32, output: String) -> Outcome {
        var lines: [String] = []
        if let f = fopen(output, "r") {
            var line: UnsafeMutablePointer<CChar>?
            var capacity = 0
            while getline(&line, &capacity, f) > 0 {
                var text = String(cString: line!)
                if text.hasSuffix("\n") { text.removeLast() }
                if !text.hasPrefix("swarm: ") { lines.append(text) }
            }
            free(line)
            fclose(f)
        }
        unlink(output)
        var seconds = 0.0
        if let first = lines.first, let r = first.range(of: " sim=") {
            let digits = first[r.upperBound...].prefix { $0.isNumber || $0 == "." }
            seconds = Double(digits) ?? 0
        }
        let signal = rawStatus & 0x7f
        let status: Int32
        if signal == 0 {
            let code = (rawStatus >> 8) & 0xff
            status = code == 0 || code == SimExit.safety || code == SimExit.liveness ? code : SimExit.crash
        } else {
            status = SimExit.crash
        }
        if status == SimExit.crash {
            // The child printed its reproduce command on stderr; say it here too, in order.
            lines.append("FAILED: the simulator crashed on seed \(seed) (\(signal == 0 ? "exit status \((rawStatus >> 8) & 0xff)" : "signal \(signal)"))")
            lines.append("reproduce: swift run -c release torus-sim swarm --from \(seed) --runs 1")
        }
        return Outcome(lines: lines, simulatedSeconds: seconds, status: status)
    }
}
