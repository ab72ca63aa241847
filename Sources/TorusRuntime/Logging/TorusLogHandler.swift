import Logging

#if canImport(Glibc)
@preconcurrency import Glibc  // stdout and stderr are C globals
#elseif canImport(Darwin)
@preconcurrency import Darwin
#endif

/// Where finished log lines go (without their newline). Called from any thread.
public typealias LogSink = @Sendable (String) -> Void

/// Which standard stream the log lines go to.
public enum LogOutput: String, CaseIterable, Sendable {
    case stdout, stderr

    /// Writes each line with one `fwrite` (stdio locks the stream for it, so lines of
    /// concurrent threads and of `print` never mix) and flushes it at once, so a line shows
    /// in a log file as soon as it is written.
    public var sink: LogSink {
        switch self {
        case .stdout: return { LogOutput.write($0, to: LogOutput.standardStream(.stdout)) }
        case .stderr: return { LogOutput.write($0, to: LogOutput.standardStream(.stderr)) }
        }
    }

    private static func standardStream(_ output: LogOutput) -> UnsafeMutablePointer<FILE> {
        // Qualified: the cases of this enum hide the C globals of the same names.
        #if canImport(Glibc)
        output == .stdout ? Glibc.stdout : Glibc.stderr
        #else
        output == .stdout ? Darwin.stdout : Darwin.stderr
        #endif
    }

    private static func write(_ line: String, to stream: UnsafeMutablePointer<FILE>) {
        var line = line
        line.append("\n")
        line.withUTF8 { bytes in
            _ = fwrite(bytes.baseAddress, 1, bytes.count, stream)
            _ = fflush(stream)
        }
    }
}

/// The swift-log handler of torus: one line per record (`LogLine`, in text or JSON) handed
/// to a sink. Level filtering is swift-log's: `Logger` calls `log(event:)` only for records
/// at `logLevel` or above.
public struct TorusLogHandler: LogHandler {
    public let label: String
    public let format: LogFormat
    /// Text lines start with the time (JSON lines always carry it).
    public let timestamps: Bool
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let sink: LogSink
    /// Milliseconds since the Unix epoch (fixed in tests).
    let clock: @Sendable () -> Int64

    public init(label: String, level: Logger.Level = .info, format: LogFormat = .text, timestamps: Bool = false,
                metadataProvider: Logger.MetadataProvider? = nil, sink: @escaping LogSink = LogOutput.stdout.sink,
                clock: @escaping @Sendable () -> Int64 = TorusLogHandler.wallClockMillis) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.timestamps = timestamps
        self.metadataProvider = metadataProvider
        self.sink = sink
        self.clock = clock
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        // The record's own metadata wins over the provider's, which wins over the logger's.
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let own = event.metadata { merged.merge(own) { $1 } }
        if let error = event.error { merged["error"] = "\(error)" }
        let message = event.message.description
        switch format {
        case .text:
            sink(LogLine.text(level: event.level, message: message, metadata: merged, timeMillis: timestamps ? clock() : nil))
        case .json:
            sink(LogLine.json(level: event.level, label: label, message: message, metadata: merged, timeMillis: clock()))
        }
    }

    /// The real time, in milliseconds since the Unix epoch.
    @Sendable public static func wallClockMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}
