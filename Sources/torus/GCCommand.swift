import ArgumentParser
import TorusRuntime

#if canImport(Glibc)
import Glibc
#endif

struct GC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Run a garbage-collection pass on a running `torus up` now and show the space it freed.",
        discussion: """
            The collector lists every block on every node, reads every volume's committed map and \
            deletes the blocks no volume can reach any more (overwritten, trimmed, of deleted \
            volumes, or left by a writer that crashed) once they have been unreachable for \
            --gc-grace. `torus up` runs a pass every --gc-interval on its own; this runs one now.
            """)
    @Option(name: .customLong("data-dir"), help: "The --data-dir of the running `torus up`.") var dataDir = "./torus-data"

    func run() throws {
        func usedBytes() throws -> UInt64 {
            try request("usage").compactMap { line in
                line.split(separator: " ").first { $0.hasPrefix("used=") }.flatMap { UInt64($0.dropFirst(5)) }
            }.reduce(0, +)
        }
        do {
            let before = try usedBytes()
            let pass = try request("gc")
            // Nodes free a deleted block's slot once its delete record is durable: wait (up to
            // 5 s) until the figure stops moving.
            var after = try usedBytes()
            for _ in 0..<25 {
                usleep(200_000)
                let now = try usedBytes()
                if now == after { break }
                after = now
            }
            for l in pass { say("gc: \(l)") }
            say("gc: blocks in use on all nodes: \(humanBytes(before)) before, \(humanBytes(after)) after (\(before) -> \(after) bytes)")
        } catch let e as ExitCode {
            throw e
        } catch {
            say("torus: \(error)")
            throw ExitCode(1)
        }
    }

    func request(_ line: String) throws -> [String] {
        let lines = try AdminClient.request(line, dataDir: dataDir)
        guard lines.last == "ok" else {
            for l in lines { say("torus: \(l)") }
            throw ExitCode(1)
        }
        return Array(lines.dropLast())
    }
}
