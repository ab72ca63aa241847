import Foundation

/// Runs the host's tools (losetup, mount, mkfs, nbdfuse, ...) for `torus attach`: argv only,
/// never a shell, output captured for the one-line errors.
enum HostTools {
    struct Failure: Error, CustomStringConvertible {
        var command: String
        var status: Int32
        var output: String
        var description: String {
            let said = output.split(separator: "\n").last.map { ": \($0)" } ?? ""
            return "\(command) failed (status \(status))\(said)"
        }
    }

    /// Runs `tool` with `args`, returns its stdout (trimmed); throws `Failure` on a non-zero exit.
    @discardableResult
    static func run(_ tool: String, _ args: [String], timeoutSeconds: Double = 120) throws -> String {
        let r = try status(tool, args, timeoutSeconds: timeoutSeconds)
        guard r.status == 0 else { throw Failure(command: ([tool] + args).joined(separator: " "), status: r.status, output: r.output) }
        return r.output
    }

    /// Runs `tool`, returns its exit status and output (stdout and stderr together).
    static func status(_ tool: String, _ args: [String], timeoutSeconds: Double = 120) throws -> (status: Int32, output: String) {
        guard let path = find(tool) else { throw RuntimeFailure("\(tool) is not installed (Debian: \(package(tool)))") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while p.isRunning && Date() < deadline { usleep(10_000) }
        if p.isRunning {
            p.terminate()
            throw RuntimeFailure("\(tool) \(args.joined(separator: " ")) did not finish within \(Int(timeoutSeconds)) s")
        }
        return (p.terminationStatus, String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Starts a long-lived process (it forks itself into its own session) with its output in
    /// `log` and no other file of ours open (Foundation's `Process` would hand it the sockets it
    /// waits on, and wait forever), and waits for the first process to exit.
    static func spawnDetached(_ path: String, _ args: [String], log: String) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let open = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).compactMap { Int32($0) }
        for fd in open where fd > 2 { posix_spawn_file_actions_addclose(&actions, fd) }
        let argv = ([path] + args).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard rc == 0 else { throw RuntimeFailure("cannot start \(path): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    /// The tool's path in the usual directories, or nil.
    static func find(_ tool: String) -> String? {
        if tool.hasPrefix("/") { return FileManager.default.isExecutableFile(atPath: tool) ? tool : nil }
        for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"] {
            let path = dir + "/" + tool
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    /// A program installed beside this executable (as `swift build` and the image put
    /// torus-fuse), or in the usual directories.
    static func besideSelf(_ tool: String) -> String? {
        if let me = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            let path = (me as NSString).deletingLastPathComponent + "/" + tool
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return find(tool)
    }

    static func package(_ tool: String) -> String {
        switch tool {
        case "nbdfuse": "nbdfuse"
        case "nbdinfo": "libnbd-bin"
        case "fusermount3": "fuse3"
        case "nbd-client": "nbd-client"
        case "mkfs.xfs", "xfs_growfs": "xfsprogs"
        case "mkfs.ext4", "resize2fs": "e2fsprogs"
        default: "util-linux"
        }
    }
}

/// An error that is one line for the user.
struct RuntimeFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
