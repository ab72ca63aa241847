import ArgumentParser
import TorusCore
import TorusRuntime

// Sizes (64KiB, 10GiB, a byte count) and durations (500ms, 5s, 10m, 0) of the options.
// HOST:PORT endpoints are read by `HostPort` (TorusRuntime).

func parseSize(_ s: String, what: String) throws -> UInt64 {
    let units: [(String, UInt64)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40), ("B", 1)]
    for (suffix, mult) in units where s.hasSuffix(suffix) {
        if let n = UInt64(s.dropLast(suffix.count)), n > 0, n <= (1 << 50) / mult { return n * mult }
    }
    if let n = UInt64(s), n > 0 { return n }
    throw ValidationError("cannot read \(what) '\(s)': use a size like 512MiB, 10GiB or a byte count")
}

/// `--volume NAME:SIZE`, e.g. vol1:10GiB.
func parseVolumeSpec(_ v: String) throws -> (String, UInt64) {
    let parts = v.split(separator: ":", maxSplits: 1)
    guard parts.count == 2 else { throw ValidationError("--volume '\(v)' must be NAME:SIZE, e.g. vol1:10GiB") }
    try checkVolumeName(String(parts[0]))
    return (String(parts[0]), try parseSize(String(parts[1]), what: "volume size"))
}

/// Refuses a volume name the cluster would refuse, before it goes into a request line.
func checkVolumeName(_ name: String) throws {
    guard VolumeServer.validName(name) else {
        let shown = name.count > 80 ? String(name.prefix(80)) + "... (\(name.utf8.count) bytes)" : name
        throw ValidationError("volume name '\(shown)' must be 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.', not starting with '-'")
    }
}

/// `--cache-size`: at least 4 MiB (room for a few blocks of any size), at most 64 GiB.
func parseCacheSize(_ text: String) throws -> Int {
    let bytes = try parseSize(text, what: "--cache-size")
    guard bytes >= 4 << 20 && bytes <= 64 << 30 else { throw ValidationError("--cache-size must be between 4MiB and 64GiB") }
    return Int(bytes)
}

/// A duration like 60s, 500ms, 5m or 0.
func parseDuration(_ text: String, what: String) throws -> Nanoseconds {
    if text == "0" { return .zero }
    for (suffix, mult) in [("ms", UInt64(1_000_000)), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000)]
    where text.hasSuffix(suffix) {
        if let n = UInt64(text.dropLast(suffix.count)), n <= (1 << 62) / mult { return Nanoseconds(n * mult) }
    }
    throw ValidationError("cannot read \(what) '\(text)': use a duration like 60s, 500ms, 5m or 0")
}
