import Foundation

/// Grows attached devices (and the filesystems `attach` mounted on them) to their volume's
/// new size, online: torus-fuse reconnects and takes the new size (SIGUSR1), the loop device
/// re-reads it, then resize2fs or xfs_growfs grow the mounted filesystem.
enum AttachGrowth {
    /// Grows every attachment of `volume` on this host; one line per attachment.
    static func growAll(volume: String) -> [String] {
        let mine = Attachment.all().filter { $0.volume == volume && !$0.readOnly }
        guard !mine.isEmpty else { return [] }
        guard geteuid() == 0 else {
            return ["torus: \(volume) is attached here: run `sudo torus attach --grow \(volume)` to grow its device"]
        }
        return mine.map { a in
            do { return try grow(a) } catch { return "torus: \(a.device) was not grown: \(error)" }
        }
    }

    /// Grows one attachment; what it did.
    static func grow(_ a: Attachment) throws -> String {
        guard a.via == .fuse, a.helper == "torus-fuse" else {
            throw RuntimeFailure("\(a.via == .kernel ? "the kernel NBD client" : "nbdfuse") keeps the size it connected with: "
                                 + "detach and attach \(a.volume) again to use the new size")
        }
        let before = try deviceBytes(a.device)
        guard kill(a.pid, SIGUSR1) == 0 else { throw RuntimeFailure("torus-fuse (pid \(a.pid)) is gone: detach \(a.device)") }
        // The helper reconnects; its file takes the new size (stat reads it afresh: no attribute cache).
        var fileBytes: UInt64 = 0
        for _ in 0..<200 {
            var st = stat()
            if stat(a.fuseDir + "/disk", &st) == 0 { fileBytes = UInt64(st.st_size) }
            if fileBytes > before { break }
            usleep(50_000)
        }
        guard fileBytes > before else { return "\(a.device): already \(before) bytes (the volume is no larger)" }
        try HostTools.run("losetup", ["-c", a.device])
        let after = try deviceBytes(a.device)
        var line = "\(a.device): \(before) -> \(after) bytes"
        if !a.mount.isEmpty {
            if a.fs == "xfs" {
                try HostTools.run("xfs_growfs", [a.mount], timeoutSeconds: 600)
            } else if !hasCapability(24) {
                // ext4's online resize ioctl wants CAP_SYS_RESOURCE (some containers drop it).
                return line + "; ext4 at \(a.mount) not grown online: this process lacks CAP_SYS_RESOURCE; "
                    + "it grows when \(a.volume) is next attached"
            } else {
                try HostTools.run("resize2fs", [a.device], timeoutSeconds: 600)
            }
            line += ", \(a.fs) at \(a.mount) grown"
        }
        return line
    }

    /// Whether this process has capability `bit` in effect (/proc/self/status, CapEff).
    static func hasCapability(_ bit: Int) -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let mask = UInt64(line.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16) else { return true }
        return mask & (1 << UInt64(bit)) != 0
    }

    static func deviceBytes(_ device: String) throws -> UInt64 {
        let text = try HostTools.run("blockdev", ["--getsize64", device])
        guard let n = UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw RuntimeFailure("blockdev --getsize64 \(device) said '\(text)'")
        }
        return n
    }
}
