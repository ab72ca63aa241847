import ArgumentParser
import Foundation
import TorusCore

@main
struct FuzzCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "torus-fuzz",
        abstract: "Feed mutated inputs to a parser: the NBD server, the peer codec, scenario files or metadata values.",
        discussion: """
            Each input is a corpus file (Tests/fuzz-corpus/TARGET, real captures) mutated by a \
            seeded generator, so a run is reproducible from its seed. A crash (a trap or a broken \
            invariant) stops the run with a nonzero status; rerun with the same seed and \
            --save-inputs DIR to keep each input before it runs. Inputs slower than a second are \
            reported as hangs. See docs/fuzzing.md.
            """)

    @Argument(help: "nbd, peer, scenario or metadata.") var target: String
    @Option(help: "Stop after this many inputs.") var runs = 100_000
    @Option(help: "Stop after this many seconds (whichever comes first).") var seconds: Double?
    @Option(help: "Seed of the mutations.") var seed: UInt64 = 1
    @Option(help: "Directory of seed inputs (default Tests/fuzz-corpus/TARGET; scenario: Scenarios too).") var corpus: String?
    @Option(name: .customLong("max-length"), help: "Longest input in bytes.") var maxLength = 1 << 16
    @Option(name: .customLong("save-inputs"), help: "Write each input to DIR/current before running it (slow; to find a crash's input).")
    var saveInputs: String?
    @Option(name: .customLong("write-corpus"), help: "Write the generated seed inputs of peer or metadata to DIR and exit.")
    var writeCorpus: String?

    func validate() throws {
        guard FuzzTarget(rawValue: target) != nil else {
            throw ValidationError("unknown target '\(target)': use \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard runs > 0, maxLength > 0 else { throw ValidationError("--runs and --max-length must be positive") }
    }

    func run() throws {
        let fuzz = FuzzTarget(rawValue: target)!
        if let dir = writeCorpus {
            print("wrote \(try SeedCorpus.write(fuzz, to: dir)) inputs to \(dir)")
            return
        }
        var dirs = [corpus ?? "Tests/fuzz-corpus/\(target)"]
        if fuzz == .scenario && corpus == nil { dirs.append("Scenarios") }
        let seeds = try dirs.flatMap(Self.load).filter { !$0.isEmpty }
        guard !seeds.isEmpty else { throw ValidationError("no corpus files in \(dirs.joined(separator: ", ")) (run from the repository root)") }
        var mutator = Mutator(random: SeededRandom(seed: seed), maxLength: maxLength)
        let start = Date()
        var slowest = 0.0, done = 0, accepted = 0
        print("torus-fuzz \(target): \(seeds.count) corpus inputs, seed \(seed), up to \(runs) inputs")
        while done < runs {
            if let seconds, done % 1000 == 0, Date().timeIntervalSince(start) > seconds { break }
            let base = seeds[mutator.below(seeds.count)]
            // Every corpus input as it is first, then mutations.
            let input = done < seeds.count ? seeds[done] : mutator.mutate(base, other: seeds[mutator.below(seeds.count)])
            if let dir = saveInputs { try Data(input).write(to: URL(fileURLWithPath: dir + "/current")) }
            let t0 = Date()
            if fuzz.run(input) { accepted += 1 }
            let took = Date().timeIntervalSince(t0)
            slowest = max(slowest, took)
            if took > 1 { throw FuzzFailure("input \(done) of seed \(seed) took \(String(format: "%.1f", took)) s (a hang?)") }
            done += 1
            if done % 50_000 == 0 { print("  \(done) inputs, \(String(format: "%.0f", Double(done) / Date().timeIntervalSince(start))) per second") }
        }
        let rss = Self.residentMiB()
        print("torus-fuzz \(target): \(done) inputs (\(accepted) accepted) in \(String(format: "%.1f", Date().timeIntervalSince(start))) s, no crash, "
              + "slowest input \(String(format: "%.1f", slowest * 1000)) ms, RSS \(rss) MiB")
        if rss > 1024 { throw FuzzFailure("resident memory grew to \(rss) MiB") }
    }

    static func load(_ dir: String) throws -> [[UInt8]] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return try names.sorted().map { [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/" + $0))) }
    }

    static func residentMiB() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) / 1024
    }
}

struct FuzzFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
