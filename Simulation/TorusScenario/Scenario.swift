import Foundation
import TorusCore
import TorusSim
import Yams

/// A scenario file: a named, documented simulation setup with fixed seeds and an expectation.
/// The format (YAML) is described in `Scenarios/README.md`; every field is optional except
/// `name` and `hunts`, and each maps onto `SimOptions`.
public struct Scenario: Sendable {
    public enum Expectation: String, Sendable {
        /// Every check passes on every seed.
        case pass
        /// A checker catches the injected bug (`canary`) on at least one of the seeds.
        case caught
    }

    public var name: String
    /// One line: the bug class this scenario hunts.
    public var hunts: String
    public var seeds: [UInt64]
    /// The options of every run (the seed is set per run).
    public var options: SimOptions
    public var expect: Expectation
    /// Where it was read from (for messages and reproduce commands).
    public var path: String

    /// The options of one run.
    public func options(seed: UInt64) -> SimOptions {
        var o = options
        o.seed = seed
        return o
    }

    /// The command that reproduces one run of this scenario.
    public func reproduceCommand(seed: UInt64) -> String {
        "swift run -c release torus-sim run \(path) --seed \(seed)"
            + (expect == .pass && options.canary != .none ? " --canary \(options.canary.rawValue)" : "")
    }
}

/// A scenario file that cannot be used: one line naming the file, line, column and field.
public struct ScenarioError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

extension Scenario {
    /// Reads and checks a scenario file.
    public static func load(path: String) throws(ScenarioError) -> Scenario {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ScenarioError(description: "\(path): cannot read the file: \(error.localizedDescription)")
        }
        return try parse(text, path: path)
    }

    /// Parses scenario YAML; `path` only names the source in errors.
    public static func parse(_ text: String, path: String) throws(ScenarioError) -> Scenario {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw ScenarioError(description: "\(path):1:1: the file is empty; a scenario needs at least name and hunts")
            }
            root = node
        } catch let e as ScenarioError {
            throw e
        } catch let e as YamlError {
            throw ScenarioError(description: "\(path):\(yamlErrorLocation(e)): YAML syntax error: \(yamlErrorProblem(e))")
        } catch {
            throw ScenarioError(description: "\(path): YAML error: \(error)")
        }
        var reader = FieldReader(path: path)
        return try reader.scenario(root)
    }

    static func yamlErrorLocation(_ e: YamlError) -> String {
        switch e {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return "\(mark.line):\(mark.column)"
        case .duplicatedKeysInMapping(_, let context):
            return "\(context.mark.line):\(context.mark.column)"
        default:
            return "1:1"
        }
    }

    static func yamlErrorProblem(_ e: YamlError) -> String {
        switch e {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _):
            return problem
        case .duplicatedKeysInMapping(let duplicates, _):
            return "duplicate key \(duplicates.joined(separator: ", "))"
        default:
            return "\(e)".split(separator: "\n").first.map(String.init) ?? "\(e)"
        }
    }
}
