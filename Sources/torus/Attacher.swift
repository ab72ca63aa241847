import Foundation

/// Makes an NBD export a block device on this host, through the kernel's NBD client where the
/// kernel has one, else through libnbd's nbdfuse and a loop device; optionally with a
/// filesystem mounted on it. Every step that succeeded is undone if a later one fails, so a
/// failed attach leaves nothing behind (docs/attach.md).
struct Attacher {
    var volume: String
    var uri: String
    var readOnly: Bool
    var fs: String?
    var mount: String?
    var via: Attachment.Via
    /// The CSI staging path, recorded with the attachment.
    var stage = ""
    private var undo: [() -> Void] = []

    init(volume: String, uri: String, readOnly: Bool, fs: String?, mount: String?, via: Attachment.Via) {
        self.volume = volume
        self.uri = uri
        self.readOnly = readOnly
        self.fs = fs
        self.mount = mount
        self.via = via
    }

    mutating func attach() throws -> Attachment {
        do {
            var a = try device()
            if let mount { try mountFilesystem(&a, at: mount) }
            try a.save()
            return a
        } catch {
            for step in undo.reversed() { step() }
            throw error
        }
    }

    /// The export as a device: /dev/nbdN, or /dev/loopN over an nbdfuse file.
    private mutating func device() throws -> Attachment {
        var a = Attachment(volume: volume, uri: uri, device: "", via: via, readOnly: readOnly)
        a.stage = stage
        if via == .kernel {
            a.device = try kernelDevice()
            return a
        }
        let dir = Attachment.directory + "/" + volume + "-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        undo.append { for suffix in ["", ".pid", ".log"] { try? FileManager.default.removeItem(atPath: dir + suffix) } }
        let (pid, helper) = try startNBDFuse(dir: dir)
        undo.append {
            _ = try? HostTools.status("fusermount3", ["-u", dir])
            if kill(pid, 0) == 0 { kill(pid, SIGKILL) }
        }
        a.fuseDir = dir
        a.pid = pid
        a.helper = helper
        a.device = try HostTools.run("losetup", ["--find", "--show", "--direct-io=on"] + (readOnly ? ["--read-only"] : []) + [dir + "/disk"])
        let dev = a.device
        undo.append { _ = try? HostTools.status("losetup", ["-d", dev]) }
        return a
    }

    /// The FUSE helper in its own session (it outlives this command), ready once its pid file
    /// exists: torus-fuse (beside this executable) if it is there, else libnbd's nbdfuse.
    private func startNBDFuse(dir: String) throws -> (pid: Int32, helper: String) {
        let log = dir + ".log", pidFile = dir + ".pid"
        let setsid = HostTools.find("setsid") ?? "/usr/bin/setsid"
        let helper: String
        if let own = HostTools.besideSelf("torus-fuse") {
            helper = "torus-fuse"
            try HostTools.spawnDetached(setsid, ["-f", own] + (readOnly ? ["-r"] : []) + ["-P", pidFile, dir, uri], log: log)
        } else if let nbdfuse = HostTools.find("nbdfuse") {
            helper = "nbdfuse"
            try HostTools.spawnDetached(setsid, ["-f", nbdfuse] + (readOnly ? ["-r"] : []) + ["-P", pidFile, dir + "/disk", uri], log: log)
        } else {
            throw RuntimeFailure("neither torus-fuse (built with torus) nor nbdfuse (Debian: nbdfuse) is installed")
        }
        for _ in 0..<300 {
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
               FileManager.default.fileExists(atPath: dir + "/disk") {
                return (pid, helper)
            }
            usleep(50_000)
        }
        let said = (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").last.map(String.init) ?? "no output"
        throw RuntimeFailure("\(helper) could not attach \(uri): \(said)")
    }

    /// A free /dev/nbdN connected with nbd-client (it reconnects if the server restarts).
    private mutating func kernelDevice() throws -> String {
        guard let u = URLComponents(string: uri), u.scheme == "nbd", let host = u.host else {
            throw RuntimeFailure("the kernel NBD client needs an nbd://HOST:PORT/EXPORT address, not \(uri)")
        }
        let export = String(u.path.dropFirst())
        let count = ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/block")) ?? []).filter { $0.hasPrefix("nbd") }.count
        guard let n = (0..<count).first(where: { !FileManager.default.fileExists(atPath: "/sys/block/nbd\($0)/pid") }) else {
            throw RuntimeFailure("every /dev/nbd device is in use (modprobe nbd nbds_max=N for more)")
        }
        let dev = "/dev/nbd\(n)"
        try HostTools.run("nbd-client", [host, String(u.port ?? 10809), dev, "-N", export, "-persist"] + (readOnly ? ["-readonly"] : []))
        undo.append { _ = try? HostTools.status("nbd-client", ["-d", dev]) }
        return dev
    }

    /// Makes the filesystem if the device is empty (never over another one), mounts it, and
    /// grows it to the device (a volume resized since it was made).
    private mutating func mountFilesystem(_ a: inout Attachment, at dir: String) throws {
        let found = try HostTools.status("blkid", ["-p", "-o", "value", "-s", "TYPE", a.device])
        // 0: a signature; 2: none found (or nothing could be read: checked below); others
        // (conflicting signatures, usage errors): never format.
        guard found.status == 0 || found.status == 2 else {
            throw RuntimeFailure("blkid cannot tell what \(volume) holds (status \(found.status)): \(found.output); refusing to format it")
        }
        var type = found.status == 0 ? found.output : ""
        if let fs, type.isEmpty {
            guard !readOnly else { throw RuntimeFailure("\(volume) holds no filesystem, and a read-only attach cannot make one") }
            try Self.checkBlank(a.device, volume: volume)
            try HostTools.run(fs == "xfs" ? "mkfs.xfs" : "mkfs.ext4", ["-q", a.device], timeoutSeconds: 600)
            type = fs
        } else if let fs, type != fs {
            throw RuntimeFailure("\(volume) holds a \(type) filesystem, not \(fs): refusing to format it (attach with --fs \(type))")
        } else if type.isEmpty {
            throw RuntimeFailure("\(volume) holds no filesystem: give --fs ext4 or --fs xfs to make one")
        }
        if type == "ext4" && !readOnly { try growExt4(a.device) }
        // A snapshot of a mounted filesystem needs its journal replayed, which a read-only device cannot take.
        let options = readOnly ? ["-o", type == "xfs" ? "ro,norecovery" : "ro,noload"] : []
        try HostTools.run("mount", options + ["-t", type, a.device, dir])
        undo.append { _ = try? HostTools.status("umount", [dir]) }
        a.mount = dir
        a.fs = type
        if type == "xfs" && !readOnly { try HostTools.run("xfs_growfs", [dir]) }
    }

    /// mkfs only on a volume whose first and last MiB read back as zeros (a new volume): a read
    /// error, or data without a filesystem signature (a database on the raw device), is refused.
    static func checkBlank(_ device: String, volume: String) throws {
        guard let h = FileHandle(forReadingAtPath: device) else { throw RuntimeFailure("cannot open \(device) to check it is blank") }
        defer { try? h.close() }
        let size = try h.seekToEnd()
        for offset in Set([0, size > 1 << 20 ? size - (1 << 20) : 0]) {
            try h.seek(toOffset: offset)
            guard let data = try h.read(upToCount: 1 << 20), data.count == Int(min(1 << 20, size - offset)) else {
                throw RuntimeFailure("cannot read \(device) at \(offset) to check it is blank: refusing to format \(volume)")
            }
            guard data.allSatisfy({ $0 == 0 }) else {
                throw RuntimeFailure("\(volume) holds data but no filesystem blkid knows: refusing to format it")
            }
        }
    }

    /// Grows an ext4 smaller than its device (the volume was resized), before it is mounted:
    /// offline, after the check resize2fs demands (online growth fails on small filesystems).
    private func growExt4(_ device: String) throws {
        let header = try HostTools.run("dumpe2fs", ["-h", device])
        func field(_ name: String) -> UInt64? {
            header.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                .flatMap { UInt64($0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces)) }
        }
        guard let blocks = field("Block count"), let size = field("Block size"),
              let bytes = UInt64(try HostTools.run("blockdev", ["--getsize64", device])), blocks * size + size <= bytes else { return }
        let check = try HostTools.status("e2fsck", ["-f", "-p", device], timeoutSeconds: 600)
        guard check.status <= 1 else { throw RuntimeFailure("e2fsck found errors on \(volume) (status \(check.status)): \(check.output.split(separator: "\n").last ?? "")") }
        try HostTools.run("resize2fs", [device], timeoutSeconds: 600)
    }
}
