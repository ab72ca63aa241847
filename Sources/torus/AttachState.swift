import Foundation

/// What `torus attach` set up on this host, one file per attached device under
/// `/run/torus/attach/` (TORUS_ATTACH_DIR overrides it): enough for `--list` and `detach`.
struct Attachment: Equatable {
    enum Via: String { case fuse, kernel }
    var volume: String
    var uri: String
    var device: String
    var via: Via
    var readOnly: Bool
    /// fuse: the FUSE mount point (holding the file `disk`), its process, and which helper it
    /// is (torus-fuse, which follows a resize, or libnbd's nbdfuse).
    var fuseDir = ""
    var pid: Int32 = 0
    var helper = ""
    /// The filesystem `attach` mounted, if any.
    var mount = ""
    var fs = ""
    /// The CSI staging path this attachment serves (the CSI node plugin's), if any.
    var stage = ""

    static var directory: String { ProcessInfo.processInfo.environment["TORUS_ATTACH_DIR"] ?? "/run/torus/attach" }
    var stateFile: String { Self.directory + "/" + (device as NSString).lastPathComponent + ".state" }

    func encoded() -> String {
        ["volume=\(volume)", "uri=\(uri)", "device=\(device)", "via=\(via.rawValue)", "read-only=\(readOnly)",
         "fuse=\(fuseDir)", "pid=\(pid)", "helper=\(helper)", "mount=\(mount)", "fs=\(fs)", "stage=\(stage)"].joined(separator: "\n") + "\n"
    }

    static func decode(_ text: String) -> Attachment? {
        var f: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            f[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        guard let volume = f["volume"], let uri = f["uri"], let device = f["device"], let via = f["via"].flatMap(Via.init) else { return nil }
        return Attachment(volume: volume, uri: uri, device: device, via: via, readOnly: f["read-only"] == "true",
                          fuseDir: f["fuse"] ?? "", pid: Int32(f["pid"] ?? "") ?? 0, helper: f["helper"] ?? "nbdfuse",
                          mount: f["mount"] ?? "", fs: f["fs"] ?? "", stage: f["stage"] ?? "")
    }

    func save() throws {
        try FileManager.default.createDirectory(atPath: Self.directory, withIntermediateDirectories: true)
        try encoded().write(toFile: stateFile, atomically: true, encoding: .utf8)
    }

    func forget() { try? FileManager.default.removeItem(atPath: stateFile) }

    static func all() -> [Attachment] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".state") }.sorted().compactMap { name in
            (try? String(contentsOfFile: directory + "/" + name, encoding: .utf8)).flatMap(decode)
        }
    }

    /// Whether the nbdfuse process still runs (the kernel path has none).
    var alive: Bool { via == .kernel || (pid > 0 && kill(pid, 0) == 0) }

    var summary: String {
        var s = "\(volume) \(device) \(readOnly ? "read-only" : "read-write") via \(via == .fuse ? "\(helper) + loop" : "kernel NBD") from \(uri)"
        if !mount.isEmpty { s += ", \(fs.isEmpty ? "mounted" : fs) at \(mount)" }
        if via == .fuse { s += alive ? ", \(helper) pid \(pid)" : ", \(helper) DEAD (pid \(pid)): detach it" }
        return s
    }
}
