import Logging

/// How log records are written: `text` for people and greps, `json` for log shippers.
public enum LogFormat: String, CaseIterable, Sendable {
    /// `torus: MESSAGE[ level=LEVEL][ key=value…]`: today's lines, with the level when it is
    /// not info and the metadata sorted by key.
    case text
    /// One JSON object a line: `{"time":…,"level":…,"label":…,"message":…,"metadata":{…}}`.
    case json
}

/// One log record rendered as one line (no trailing newline). Pure: the time comes in as
/// milliseconds since the Unix epoch, so tests can fix it.
public enum LogLine {
    /// The text line. `timeMillis` (optional) is written first as ISO-8601 UTC; the message
    /// comes right after `torus: ` so greps of today's log lines still match.
    public static func text(level: Logger.Level, message: String, metadata: Logger.Metadata,
                            timeMillis: Int64? = nil) -> String {
        var line = ""
        if let timeMillis { line += iso8601(millis: timeMillis) + " " }
        line += "torus: "
        line += message.contains(where: \.isNewline) ? escapedNewlines(message) : message
        if level != .info { line += " level=\(level.rawValue)" }
        for key in metadata.keys.sorted() {
            line += " \(key)=" + textValue(metadata[key]!)
        }
        return line
    }

    /// The JSON line: a fixed key order and metadata sorted by key, so equal records give
    /// equal lines.
    public static func json(level: Logger.Level, label: String, message: String, metadata: Logger.Metadata,
                            timeMillis: Int64) -> String {
        var line = "{\"time\":" + jsonString(iso8601(millis: timeMillis))
        line += ",\"level\":" + jsonString(level.rawValue)
        line += ",\"label\":" + jsonString(label)
        line += ",\"message\":" + jsonString(message)
        line += ",\"metadata\":" + jsonValue(.dictionary(metadata)) + "}"
        return line
    }

    /// A metadata value in a text line: bare when it has no space, quote, `=` or control
    /// character, otherwise quoted and escaped as a JSON string (as logfmt does).
    static func textValue(_ value: Logger.MetadataValue) -> String {
        let s: String
        switch value {
        case .string(let v): s = v
        case .stringConvertible(let v): s = v.description
        case .array, .dictionary: s = jsonValue(value)
        }
        let plain = !s.isEmpty && !s.unicodeScalars.contains { $0 == " " || $0 == "\"" || $0 == "=" || $0.value < 0x20 || $0.value == 0x7F }
        return plain ? s : jsonString(s)
    }

    static func jsonValue(_ value: Logger.MetadataValue) -> String {
        switch value {
        case .string(let v): return jsonString(v)
        case .stringConvertible(let v): return jsonString(v.description)
        case .array(let items): return "[" + items.map(jsonValue).joined(separator: ",") + "]"
        case .dictionary(let d):
            return "{" + d.keys.sorted().map { jsonString($0) + ":" + jsonValue(d[$0]!) }.joined(separator: ",") + "}"
        }
    }

    /// `s` as a JSON string literal: quotes, backslashes and control characters escaped;
    /// everything else (all of Unicode) kept as UTF-8, which JSON allows.
    static func jsonString(_ s: String) -> String {
        var out = "\""
        out.reserveCapacity(s.utf8.count + 2)
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where c.value < 0x20:
                let hex = String(c.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(c)
            }
        }
        out += "\""
        return out
    }

    /// A text message on one line: line breaks written as `\n` and `\r`.
    static func escapedNewlines(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// `2024-05-01T12:34:56.789Z` for milliseconds since the Unix epoch (proleptic Gregorian,
    /// UTC; civil-from-days after H. Hinnant, so no libc time zone state is involved).
    public static func iso8601(millis: Int64) -> String {
        let ms = Int(((millis % 1000) + 1000) % 1000)
        let secs = (millis - Int64(ms)) / 1000
        let days = Int((secs >= 0 ? secs : secs - 86_399) / 86_400)
        let daySecs = Int(secs - Int64(days) * 86_400)
        // Days since 1970-01-01 to year, month, day.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(daySecs / 3600, 2)):\(pad(daySecs / 60 % 60, 2)):"
            + "\(pad(daySecs % 60, 2)).\(pad(ms, 3))Z"
    }

    private static func pad(_ n: Int, _ width: Int) -> String {
        let s = String(n)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }
}
