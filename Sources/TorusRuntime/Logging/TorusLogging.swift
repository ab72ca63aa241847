import Logging
import NIOConcurrencyHelpers

/// Process-wide logging of torus: swift-log bootstrapped with `TorusLogHandler`, and the
/// loggers of its parts (`torus.node`, `torus.peer`, …).
///
///     TorusLogging.bootstrap(level: .debug, format: .json)   // once, at process start
///     let log = TorusLogging.logger("node")                  // label "torus.node"
///     log.warning("node \(id): heartbeat failed", metadata: ["node": "\(id)"])
public enum TorusLogging {
    /// What a bootstrap chose; handlers made afterwards take it.
    public struct Settings: Sendable, Equatable {
        public var level: Logger.Level = .info
        public var format: LogFormat = .text
        public var timestamps = false
        public var output: LogOutput = .stdout
        public init() {}
    }

    private struct State {
        var bootstrapped = false
        var settings = Settings()
    }

    private static let state = NIOLockedValueBox(State())

    /// Sets the level and format of every logger made from now on. Call it at process start,
    /// before the first log line: loggers made earlier keep what they were made with. Safe to
    /// call more than once (tests, or after `logger(_:)` bootstrapped the defaults):
    /// `LoggingSystem.bootstrap`, which may run only once per process, runs on the first call.
    public static func bootstrap(level: Logger.Level = .info, format: LogFormat = .text, timestamps: Bool = false,
                                 output: LogOutput = .stdout) {
        var settings = Settings()
        settings.level = level
        settings.format = format
        settings.timestamps = timestamps
        settings.output = output
        bootstrap(settings)
    }

    public static func bootstrap(_ settings: Settings) { install(settings) }

    /// Bootstraps swift-log on the first call (under the lock, so no logger is made in
    /// between with swift-log's default handler); `settings` (if any) replaces the current.
    private static func install(_ settings: Settings?) {
        state.withLockedValue { state in
            if let settings { state.settings = settings }
            guard !state.bootstrapped else { return }
            state.bootstrapped = true
            LoggingSystem.bootstrap { label in
                let s = TorusLogging.settings
                return TorusLogHandler(label: label, level: s.level, format: s.format, timestamps: s.timestamps, sink: s.output.sink)
            }
        }
    }

    /// The settings of the last bootstrap (the defaults before one).
    public static var settings: Settings { state.withLockedValue { $0.settings } }

    /// The logger of one part of torus, labelled `torus.PART` (`torus` for an empty part).
    /// Bootstraps the defaults (info, text, stdout) if nothing did yet, so torus lines never
    /// come out in swift-log's default format.
    public static func logger(_ part: String) -> Logger {
        install(nil)
        return Logger(label: part.isEmpty ? "torus" : "torus." + part)
    }
}
