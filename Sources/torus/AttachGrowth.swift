import Foundation

/// Grows attached devices (and the filesystems `attach` mounted on them) to their volume's
/// new size, online: torus-fuse reconnects and takes the new size (SIGUSR1), the loop device
/// re-reads it, then resize2fs or xfs_growfs grow the mounted filesystem.
enum AttachGrowth {
    /// What a growth did: the device's size, and whether a mounted filesystem fills it now.
    struct Outcome {
        var line: String
        var deviceBytes: UInt64
        /// nil when nothing is mounted; false when the filesystem could not grow online.
        var filesystemGrown: Bool?
    }

    /// Grows every attachment of `volume` on this host to `bytes`; one line per attachment.
    static func growAll(volume: String, to bytes: UInt64?) -> [String] {
        let mine = Attachment.all().filter { $0.volume == volume && !$0.readOnly }
        guard !mine.isEmpty else { return [] }
        guard geteuid() == 0 else {
            return ["torus: \(volume) is attached here: run `sudo torus attach --grow \(volume)` to grow its device"]
        }
        return mine.map { a in
            do { return try grow(a, to: bytes).line } catch { return "torus: \(a.device) was not grown: \(error)" }
        }
    }

    /// Grows one attachment until its device has `bytes` (nil: whatever the server says now),
    /// then the filesystem on it, if mounted (also when the device had grown before).
    static func grow(_ a: Attachment, to bytes: UInt64?) throws -> Outcome {
        guard a.via == .fuse, a.helper == "torus-fuse" else {
            throw RuntimeFailure("\(a.via == .kernel ? "the kernel NBD client" : "nbdfuse") keeps the size it connected with: "
                                 + "detach and attach \(a.volume) again to use the new size")
        }
        guard helperRuns(a) else { throw RuntimeFailure("torus-fuse (pid \(a.pid)) is gone: detach \(a.device) and attach it again") }
        let before = try deviceBytes(a.device)
        var fileBytes = fuseFileBytes(a)
        // The server applies a resize to its writer shortly after the metadata says so: ask again
        // each second until the file has the size (or 30 s pass).
        // Without a target size, one reconnect and a second's wait.
        let ticks = bytes == nil ? 20 : 600
        var tick = 0
        while fileBytes < (bytes ?? before + 1) && tick < ticks {
            if tick % 20 == 0 { kill(a.pid, SIGUSR1) }
            usleep(50_000)
            fileBytes = fuseFileBytes(a)
            tick += 1
        }
        if let bytes, fileBytes < bytes {
            throw RuntimeFailure("torus-fuse still sees \(fileBytes) bytes, not \(bytes), after 30 s (see \(a.fuseDir).log)")
        }
        if fileBytes > before { try HostTools.run("losetup", ["-c", a.device]) }
        let after = try deviceBytes(a.device)
        var out = Outcome(line: after > before ? "\(a.device): \(before) -> \(after) bytes" : "\(a.device): \(after) bytes",
                          deviceBytes: after, filesystemGrown: nil)
        guard !a.mount.isEmpty else { return out }
        if a.fs == "xfs" {
            try HostTools.run("xfs_growfs", [a.mount], timeoutSeconds: 600)
        } else if !hasCapability(24) {
            // ext4's online resize ioctl wants CAP_SYS_RESOURCE (some containers drop it).
            out.line += "; ext4 at \(a.mount) not grown online: this process lacks CAP_SYS_RESOURCE; it grows when \(a.volume) is next attached"
            out.filesystemGrown = false
            return out
        } else {
            try HostTools.run("resize2fs", [a.device], timeoutSeconds: 600)  // "nothing to do" when it fills the device
        }
        out.line += ", \(a.fs) at \(a.mount) fills it"
        out.filesystemGrown = true
        return out
    }

    /// The pid recorded is still our helper (not a process that reused the number).
    static func helperRuns(_ a: Attachment) -> Bool {
        guard a.pid > 0, kill(a.pid, 0) == 0,
              let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(a.pid)/exe") else { return false }
        return (exe as NSString).lastPathComponent.hasPrefix(a.helper)
    }

    static func fuseFileBytes(_ a: Attachment) -> UInt64 {
        var st = stat()
        return stat(a.fuseDir + "/disk", &st) == 0 ? UInt64(st.st_size) : 0
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
