import Foundation
import Logging
import NIOConcurrencyHelpers
import Testing
@testable import TorusRuntime

/// Collects the lines a handler writes, instead of standard output.
private final class Lines: Sendable {
    private let box = NIOLockedValueBox<[String]>([])
    var all: [String] { box.withLockedValue { $0 } }
    var sink: LogSink { { line in self.box.withLockedValue { $0.append(line) } } }
}

/// 2024-05-01T12:34:56.789Z
private let fixedMillis: Int64 = 1_714_566_896_789

private func logger(_ lines: Lines, format: LogFormat = .text, level: Logger.Level = .info, timestamps: Bool = false) -> Logger {
    Logger(label: "torus.test") { label in
        TorusLogHandler(label: label, level: level, format: format, timestamps: timestamps, sink: lines.sink, clock: { fixedMillis })
    }
}

private func parse(_ line: String) throws -> [String: Any] {
    try #require(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
}

@Suite("log handler")
struct LogHandlerTests {
    @Test("text: today's line first, then the level when not info, then metadata sorted by key")
    func textLine() {
        let lines = Lines()
        var log = logger(lines, level: .trace)
        log[metadataKey: "node"] = "n3"
        log.info("node n3: serving on 127.0.0.1:7000", metadata: ["address": "127.0.0.1:7000"])
        log.warning("node n3: heartbeat failed: timeout", metadata: ["volume": "big", "peer": "n1"])
        log.debug("plain")
        #expect(lines.all == [
            "torus: node n3: serving on 127.0.0.1:7000 address=127.0.0.1:7000 node=n3",
            "torus: node n3: heartbeat failed: timeout level=warning node=n3 peer=n1 volume=big",
            "torus: plain level=debug node=n3",
        ])
    }

    @Test("text: values with spaces, quotes or = are quoted; message line breaks escaped; optional time first")
    func textQuoting() {
        let lines = Lines()
        let log = logger(lines, timestamps: true)
        log.info("two\nlines", metadata: ["client": "volume big", "e": "a=\"b\"", "empty": "", "n": .stringConvertible(42)])
        #expect(lines.all == [#"2024-05-01T12:34:56.789Z torus: two\nlines client="volume big" e="a=\"b\"" empty="" n=42"#])
    }

    @Test("text: the record's metadata wins over the logger's")
    func metadataMerge() {
        let lines = Lines()
        var log = logger(lines)
        log[metadataKey: "node"] = "n1"
        log.info("x", metadata: ["node": "n2"])
        #expect(lines.all == ["torus: x node=n2"])
    }

    @Test("json: one object a line that parses back, with every field")
    func jsonLine() throws {
        let lines = Lines()
        var log = logger(lines, format: .json)
        log[metadataKey: "node"] = "n3"
        log.error("node n3: refused", metadata: ["list": ["a", "b"], "map": ["k": "v"]])
        let line = try #require(lines.all.first)
        #expect(!line.contains("\n"))
        #expect(line.hasPrefix(#"{"time":"2024-05-01T12:34:56.789Z","level":"error","label":"torus.test","message":"node n3: refused","#))
        let object = try parse(line)
        #expect(object["time"] as? String == "2024-05-01T12:34:56.789Z")
        #expect(object["level"] as? String == "error")
        #expect(object["label"] as? String == "torus.test")
        #expect(object["message"] as? String == "node n3: refused")
        let metadata = try #require(object["metadata"] as? [String: Any])
        #expect(metadata["node"] as? String == "n3")
        #expect(metadata["list"] as? [String] == ["a", "b"])
        #expect(metadata["map"] as? [String: String] == ["k": "v"])
    }

    @Test("json: quotes, backslashes, control characters and Unicode survive the round trip")
    func jsonEscaping() throws {
        let lines = Lines()
        let log = logger(lines, format: .json)
        let nasty = "say \"hi\"\\ back\nnext\r\tline \u{01}\u{1F} café 日本 🚀 \u{2028}"
        log.info("\(nasty)", metadata: [nasty: .string(nasty)])
        let line = try #require(lines.all.first)
        #expect(!line.contains("\n") && !line.contains("\r"))
        let object = try parse(line)
        #expect(object["message"] as? String == nasty)
        #expect((object["metadata"] as? [String: String])?[nasty] == nasty)
    }

    @Test("level filtering: records below the handler's level are not written")
    func levelFiltering() {
        let lines = Lines()
        let log = logger(lines, level: .warning)
        log.trace("t")
        log.debug("d")
        log.info("i")
        log.notice("n")
        log.warning("w")
        log.error("e")
        log.critical("c")
        #expect(lines.all == ["torus: w level=warning", "torus: e level=error", "torus: c level=critical"])
    }

    @Test("ISO-8601 UTC times, before and after the epoch and across leap days")
    func iso8601() {
        #expect(LogLine.iso8601(millis: 0) == "1970-01-01T00:00:00.000Z")
        #expect(LogLine.iso8601(millis: fixedMillis) == "2024-05-01T12:34:56.789Z")
        #expect(LogLine.iso8601(millis: 951_782_400_000) == "2000-02-29T00:00:00.000Z")
        #expect(LogLine.iso8601(millis: -1) == "1969-12-31T23:59:59.999Z")
        #expect(LogLine.iso8601(millis: 4_102_444_799_999) == "2099-12-31T23:59:59.999Z")
    }

    @Test("bootstrap twice: swift-log is bootstrapped once, the second call only changes the settings")
    func doubleBootstrap() {
        TorusLogging.bootstrap(level: .info, format: .text)
        TorusLogging.bootstrap(level: .info, format: .text, timestamps: true)
        #expect(TorusLogging.settings.timestamps)
        #expect(TorusLogging.logger("node").label == "torus.node")
        #expect(TorusLogging.logger("").label == "torus")
        TorusLogging.bootstrap(TorusLogging.Settings())
        #expect(TorusLogging.settings == TorusLogging.Settings())
    }
}
