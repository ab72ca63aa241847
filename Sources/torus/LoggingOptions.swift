import ArgumentParser
import Logging
import TorusRuntime

/// `--log-level`, `--log-format` and `--log-timestamps` of the long-running commands
/// (`@OptionGroup(title: "Logging") var logging: LoggingOptions`; `logging.bootstrap()` first
/// thing in `run()`).
struct LoggingOptions: ParsableArguments {
    @Option(name: .customLong("log-level"), help: ArgumentHelp(
        "Least severe log lines shown: trace, debug, info (default), notice, warning, error or critical.",
        discussion: "Lifecycle lines are info; failures that are retried (a peer or heartbeat that failed) are warning, those that are not error; debug and trace add chatter for troubleshooting.",
        valueName: "level"),
        transform: LoggingOptions.level)
    var logLevel: Logger.Level = .info

    @Option(name: .customLong("log-format"), help: ArgumentHelp(
        "text (default): 'torus: MESSAGE', then level=LEVEL when not info and the metadata (node, peer, volume, address) as key=value. json: one JSON object a line with time (ISO-8601 UTC), level, label, message and metadata, for log shippers.",
        valueName: "text|json"),
        transform: LoggingOptions.format)
    var logFormat: LogFormat = .text

    @Flag(name: .customLong("log-timestamps"), help: "Start text log lines with the time (ISO-8601 UTC); JSON lines always carry it. Off by default: journald and most log collectors add their own.")
    var logTimestamps = false

    /// Sets up swift-log for the process (log lines go to standard output).
    func bootstrap() {
        TorusLogging.bootstrap(level: logLevel, format: logFormat, timestamps: logTimestamps)
    }

    /// Hints for a person at the terminal (how to attach a volume, how to stop) are printed
    /// with text logs only: JSON output stays one object a line.
    static var printsHints: Bool { TorusLogging.settings.format == .text }

    static func level(_ text: String) throws -> Logger.Level {
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            throw ValidationError("use one of " + Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))
        }
        return level
    }

    static func format(_ text: String) throws -> LogFormat {
        guard let format = LogFormat(rawValue: text.lowercased()) else {
            throw ValidationError("use text or json")
        }
        return format
    }
}

/// The lifecycle lines of the long-running commands (starting, serving, stopping), labelled
/// `torus`. Made on first use, after `LoggingOptions.bootstrap()`.
let serverLog = TorusLogging.logger("")

/// One line per exported volume: its NBD URI and size.
func logExports(_ exports: [(name: String, size: UInt64)], uri: (String) -> String) {
    for e in exports {
        serverLog.info("exporting \(uri(e.name)) (\(e.size) bytes)", metadata: ["volume": "\(e.name)"])
    }
}
