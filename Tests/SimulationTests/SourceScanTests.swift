import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The core and the simulator must be deterministic by construction: no wall clock, threads,
/// global randomness, or Foundation file and network APIs. This test reads their sources.
@Suite("determinism hygiene")
struct SourceScanTests {
    static let banned: [(pattern: String, why: String)] = [
        ("Date()", "wall clock"),
        ("DispatchQueue", "threads"),
        ("Task {", "unstructured concurrency"),
        ("Task.detached", "unstructured concurrency"),
        ("Thread", "threads"),
        ("SystemRandomNumberGenerator", "global randomness"),
        (".random(", "unseeded randomness (use SeededRandom)"),
        ("random()", "unseeded randomness (use SeededRandom)"),
        ("import Foundation", "Foundation (file and network APIs)"),
        ("FileManager", "file API"),
        ("FileHandle", "file API"),
        ("URLSession", "network API"),
        ("fopen(", "file API"),
        ("socket(", "network API"),
        ("usleep", "wall clock"),
        ("clock_gettime", "wall clock"),
    ]

    /// Directories scanned, relative to the package root.
    static let scanned = ["Sources/TorusCore", "Sources/TorusNBD", "Simulation/TorusSim"]

    static func packageRoot() -> String {
        // This file lives in <root>/Tests/SimulationTests/.
        var parts = String(#filePath).split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }

    /// Paths of the files ending in `suffix` under `dir` (recursively), sorted.
    static func files(in dir: String, suffix: String = ".swift") -> [String] {
        var result: [String] = []
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        while let entry = readdir(d) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name == "." || name == ".." { continue }
            let path = dir + "/" + name
            if name.hasSuffix(suffix) {
                result.append(path)
            } else if entry.pointee.d_type == DT_DIR {
                result += files(in: path, suffix: suffix)
            }
        }
        return result.sorted()
    }

    static func read(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n <= 0 { break }
            bytes += buf[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test("core and simulator sources use no wall clock, threads, global randomness or Foundation I/O")
    func noNondeterminism() {
        let root = Self.packageRoot()
        var files: [String] = []
        for d in Self.scanned { files += Self.files(in: root + "/" + d) }
        #expect(files.count >= 10, "found only \(files.count) source files under \(root)")
        var offences: [String] = []
        for file in files {
            guard let text = Self.read(file) else {
                offences.append("\(file): unreadable")
                continue
            }
            for (lineNo, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let code = line.split(separator: "//", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
                for (pattern, why) in Self.banned where code.contains(pattern) {
                    offences.append("\(file):\(lineNo + 1): \(pattern) (\(why))")
                }
            }
        }
        #expect(offences.isEmpty, "\(offences.joined(separator: "\n"))")
    }

    @Test("the scan itself catches a banned call")
    func scanDetects() {
        let sample = "let t = Date()\nlet q = DispatchQueue(label: \"x\")"
        let hits = Self.banned.filter { sample.contains($0.pattern) }
        #expect(hits.count == 2)
    }
}
