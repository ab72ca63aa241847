import TorusCore
import Yams

/// Walks the YAML tree, checking every field and naming the first problem.
struct FieldReader {
    let path: String

    func fail(_ node: Node?, _ field: String, _ message: String) -> ScenarioError {
        let at = node?.mark.map { "\($0.line):\($0.column)" } ?? "1:1"
        return ScenarioError(description: "\(path):\(at): field '\(field)': \(message)")
    }

    /// The entries of a mapping, refusing keys not in `known`.
    func mapping(_ node: Node, _ field: String, known: [String]) throws(ScenarioError) -> [String: Node] {
        guard case .mapping(let m) = node else { throw fail(node, field, "expected a mapping of \(known.joined(separator: ", "))") }
        var out: [String: Node] = [:]
        for (k, v) in m {
            guard let key = k.string else { throw fail(k, field, "keys must be plain words") }
            let name = field.isEmpty ? key : field + "." + key
            guard known.contains(key) else {
                throw fail(k, name, "unknown field (known\(field.isEmpty ? "" : " in '\(field)'"): \(known.joined(separator: ", ")))")
            }
            out[key] = v
        }
        return out
    }

    func string(_ node: Node, _ field: String) throws(ScenarioError) -> String {
        guard case .scalar(let s) = node else { throw fail(node, field, "expected text") }
        return s.string
    }

    func int(_ node: Node, _ field: String, _ range: ClosedRange<Int>) throws(ScenarioError) -> Int {
        let text = try string(node, field)
        guard let n = Int(text), range.contains(n) else {
            throw fail(node, field, "expected a whole number from \(range.lowerBound) to \(range.upperBound), got '\(text)'")
        }
        return n
    }

    func probability(_ node: Node, _ field: String) throws(ScenarioError) -> Double {
        let text = try string(node, field)
        guard let p = Double(text), p >= 0, p <= 0.5 else {
            throw fail(node, field, "expected a probability from 0 to 0.5, got '\(text)'")
        }
        return p
    }

    func fraction(_ node: Node, _ field: String) throws(ScenarioError) -> Double {
        let text = try string(node, field)
        guard let p = Double(text), p >= 0, p <= 1 else { throw fail(node, field, "expected a probability from 0 to 1, got '\(text)'") }
        return p
    }

    func size(_ node: Node, _ field: String) throws(ScenarioError) -> UInt64 {
        let text = try string(node, field)
        let units: [(String, UInt64)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("B", 1)]
        for (suffix, mult) in units where text.hasSuffix(suffix) {
            if let n = UInt64(text.dropLast(suffix.count)), n > 0, n <= (1 << 40) / mult { return n * mult }
        }
        if let n = UInt64(text), n > 0 { return n }
        throw fail(node, field, "expected a size like 4MiB or 16KiB, got '\(text)'")
    }

    func bool(_ node: Node, _ field: String) throws(ScenarioError) -> Bool {
        let text = try string(node, field)
        guard let b = Bool(text) else { throw fail(node, field, "expected true or false, got '\(text)'") }
        return b
    }

    func duration(_ node: Node, _ field: String) throws(ScenarioError) -> Nanoseconds {
        let text = try string(node, field)
        let units: [(String, UInt64)] = [("us", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000)]
        for (suffix, mult) in units where text.hasSuffix(suffix) {
            if let n = UInt64(text.dropLast(suffix.count)), n > 0, n <= (1 << 50) / mult { return Nanoseconds(n * mult) }
        }
        throw fail(node, field, "expected a duration like 60s, 500ms, 400us or 2m, got '\(text)'")
    }
}
