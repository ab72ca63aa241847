import ArgumentParser
import Foundation
import TorusRuntime

struct Attach: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a volume a block device on this host (and mount a filesystem on it); prints the device.",
        discussion: """
            Uses the kernel's NBD client (nbd-client, /dev/nbdN) where the kernel has NBD, else \
            libnbd's nbdfuse and a loop device with direct I/O (/dev/loopN). With --mount, a \
            filesystem is mounted too: made first if the volume is empty and --fs says which, \
            grown to the volume if it was resized. `torus volume resize` grows the devices \
            attached on its host, online (--grow does it on another host). A volume attached for \
            writing cannot be attached again. Needs root. `torus detach` undoes it. More: docs/attach.md.
            """)

    @Argument(help: "The volume, or VOL@SNAP for a snapshot (with --read-only).") var volume: String?
    @Flag(help: "Attach read-only (a snapshot can only be attached so).") var readOnly = false
    @Option(help: "Filesystem to make if the volume is empty: ext4 or xfs (never formats a volume that holds one).") var fs: String?
    @Option(help: "Mount the filesystem at this directory (it must exist and not be a mount point).") var mount: String?
    @Option(help: "The NBD server: HOST:PORT of `torus up --nbd` or `torus nbd serve --listen`.") var nbd = "127.0.0.1:10809"
    @Option(help: "A full NBD URI instead of --nbd and the volume name (e.g. another server's export).") var uri: String?
    @Option(help: "auto (the kernel's NBD client if it is there, else nbdfuse), kernel, or fuse.") var via = "auto"
    @Flag(help: "List what is attached on this host.") var list = false
    @Flag(help: "Grow the attached device of VOLUME (and the filesystem mounted on it) to the volume's size, after `torus volume resize` on another host.")
    var grow = false

    func validate() throws {
        if list { return }
        if grow {
            guard let volume else { throw ValidationError("--grow needs the volume whose device to grow") }
            return try checkVolumeName(volume)
        }
        guard let volume else { throw ValidationError("give the volume to attach (or --list)") }
        let parts = volume.split(separator: "@", omittingEmptySubsequences: false).map(String.init)
        guard parts.count <= 2 else { throw ValidationError("expected VOLUME or VOLUME@SNAPSHOT, got '\(volume)'") }
        try checkVolumeName(parts[0])
        if parts.count == 2 {
            try checkSnapshotName(parts[1])
            guard readOnly else { throw ValidationError("\(volume) is a snapshot: attach it with --read-only") }
        }
        if let fs, fs != "ext4" && fs != "xfs" { throw ValidationError("--fs must be ext4 or xfs, not '\(fs)'") }
        if fs != nil && mount == nil { throw ValidationError("--fs needs --mount DIR") }
        guard ["auto", "kernel", "fuse"].contains(via) else { throw ValidationError("--via must be auto, kernel or fuse") }
        do { _ = try HostPort(parsing: nbd) } catch { throw ValidationError("--nbd '\(nbd)': \(error)") }
    }

    func run() throws {
        if list {
            let all = Attachment.all()
            if all.isEmpty { say("nothing attached") }
            for a in all { say(a.summary) }
            return
        }
        if grow {
            guard geteuid() == 0 else { say("torus: attach --grow needs root: run it with sudo"); throw ExitCode(1) }
            let lines = AttachGrowth.growAll(volume: volume!, to: nil)
            if lines.isEmpty { say("torus: \(volume!) is not attached for writing on this host") }
            for l in lines { say(l) }
            if lines.isEmpty || lines.contains(where: { $0.hasPrefix("torus:") }) { throw ExitCode(1) }
            return
        }
        do {
            guard geteuid() == 0 else { throw RuntimeFailure("attach needs root (loop or NBD devices and mounts): run it with sudo") }
            let volume = self.volume!
            let uri = self.uri ?? "nbd://\(nbd)/\(volume)"
            try checkFree(volume)
            if let mount { try checkMountPoint(mount) }
            try checkExport(uri)
            var attacher = Attacher(volume: volume, uri: uri, readOnly: readOnly, fs: fs, mount: mount, via: try Self.chooseVia(via))
            let a = try attacher.attach()
            say(a.device)
            if !a.mount.isEmpty { say("torus: \(a.fs) mounted at \(a.mount)") }
        } catch {
            say("torus: \(error)")
            throw ExitCode(1)
        }
    }

    /// One writable attachment per volume on this host; read-only ones may share it.
    func checkFree(_ volume: String) throws {
        for a in Attachment.all() where a.volume == volume && (!a.readOnly || !readOnly) {
            throw RuntimeFailure("\(volume) is already attached \(a.readOnly ? "read-only" : "for writing") at \(a.device): `torus detach \(a.device)` first")
        }
    }

    func checkMountPoint(_ dir: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw RuntimeFailure("mount point \(dir) is not a directory")
        }
        if try HostTools.status("mountpoint", ["-q", dir]).status == 0 {
            throw RuntimeFailure("\(dir) is already a mount point: unmount it or choose another directory")
        }
    }

    /// The export exists, and is writable for a writable attach.
    func checkExport(_ uri: String) throws {
        let size = try HostTools.status("nbdinfo", ["--size", uri], timeoutSeconds: 30)
        guard size.status == 0 else {
            throw RuntimeFailure("cannot attach \(uri): \(size.output.split(separator: "\n").last.map(String.init) ?? "nbdinfo failed")")
        }
        if !readOnly, try HostTools.status("nbdinfo", ["--is", "read-only", uri], timeoutSeconds: 30).status == 0 {
            throw RuntimeFailure("\(uri) is read-only: attach it with --read-only")
        }
    }

    static func chooseVia(_ via: String) throws -> Attachment.Via {
        let kernel = HostTools.find("nbd-client") != nil && (FileManager.default.fileExists(atPath: "/sys/block/nbd0")
            || (try? HostTools.status("modprobe", ["nbd"]))?.status == 0 && FileManager.default.fileExists(atPath: "/sys/block/nbd0"))
        switch via {
        case "kernel":
            guard kernel else { throw RuntimeFailure("this host has no kernel NBD client (needs /dev/nbd* after `modprobe nbd`, and nbd-client)") }
            return .kernel
        case "fuse": return .fuse
        default: return kernel ? .kernel : .fuse
        }
    }
}

struct Detach: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Undo `torus attach`: unmount what it mounted, flush, and release the device.",
        discussion: "Works when the server has died too: the device is released all the same.")

    @Argument(help: "The volume, its device (/dev/loopN, /dev/nbdN) or its mount point.") var target: String
    @Flag(help: "Unmount even if the filesystem is busy (lazily: it goes once its last user leaves).") var force = false

    func run() throws {
        do {
            guard geteuid() == 0 else { throw RuntimeFailure("detach needs root: run it with sudo") }
            let matches = Attachment.all().filter { [$0.volume, $0.device, $0.mount].contains(target) }
            guard let a = matches.first else { throw RuntimeFailure("nothing attached as \(target) (see `torus attach --list`)") }
            guard matches.count == 1 else { throw RuntimeFailure("\(target) is attached \(matches.count) times: name the device") }
            for line in try Detacher.detach(a, force: force) { say(line) }
        } catch {
            say("torus: \(error)")
            throw ExitCode(1)
        }
    }
}

/// The steps of `torus detach`, each going on if the server is gone.
enum Detacher {
    static func detach(_ a: Attachment, force: Bool) throws -> [String] {
        var notes: [String] = []
        if !a.mount.isEmpty, try HostTools.status("mountpoint", ["-q", a.mount]).status == 0 {
            let r = try HostTools.status("umount", (force ? ["-l"] : []) + [a.mount], timeoutSeconds: 300)
            guard r.status == 0 else {
                throw RuntimeFailure("cannot unmount \(a.mount): \(r.output.split(separator: "\n").last ?? "") (stop what uses it, or --force)")
            }
        }
        // The last writes reach the volume and are flushed (NBD FLUSH through the loop and nbdfuse).
        if !a.readOnly, let r = try? HostTools.status("blockdev", ["--flushbufs", a.device], timeoutSeconds: 60), r.status != 0 {
            notes.append("torus: could not flush \(a.device) (is the server gone?): \(r.output)")
        }
        if a.via == .kernel {
            _ = try HostTools.status("nbd-client", ["-d", a.device])
        } else {
            _ = try HostTools.status("losetup", ["-d", a.device])
            if try HostTools.status("fusermount3", ["-u", a.fuseDir]).status == 0 {
                // The helper flushes and exits; one stuck on a server that stopped answering is killed.
                for _ in 0..<200 where AttachGrowth.helperRuns(a) { usleep(50_000) }
                if AttachGrowth.helperRuns(a) { kill(a.pid, SIGKILL) }
                for suffix in ["", ".pid", ".log"] { try? FileManager.default.removeItem(atPath: a.fuseDir + suffix) }
            } else {
                // Still in use (a lazily unmounted filesystem writes through it): detached from the
                // tree now, the helper serves until the last user leaves, then exits by itself.
                _ = try HostTools.status("fusermount3", ["-uz", a.fuseDir])
                notes.append("torus: \(a.device) is still in use: it goes, with its \(a.helper), once its last user leaves")
            }
        }
        a.forget()
        return notes + ["detached \(a.volume) (\(a.device))"]
    }
}
