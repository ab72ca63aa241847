import Glibc
import Testing
import TorusCore
import TorusRuntime

/// A throwaway single-member etcd for tests: Debian's `etcd-server` (`/usr/bin/etcd`, or the
/// binary named by `TORUS_ETCD_BINARY`) on free loopback ports with a temporary data directory.
/// Starting fails with a clear message when etcd is not installed: tests never skip silently.
final class EtcdTestServer: Sendable {
    /// The server the enclosing `.etcdServer` suite started.
    @TaskLocal static var shared: EtcdTestServer?

    static let startTimeoutSeconds = 15.0
    static let stopTimeoutSeconds = 5.0

    let endpoint: String
    let pid: pid_t
    let directory: ScratchDirectory

    struct StartError: Error, CustomStringConvertible {
        var description: String
    }

    static var binary: String {
        if let path = getenv("TORUS_ETCD_BINARY") { return String(cString: path) }
        return "/usr/bin/etcd"
    }

    private init(endpoint: String, pid: pid_t, directory: ScratchDirectory) {
        self.endpoint = endpoint
        self.pid = pid
        self.directory = directory
    }

    /// Starts etcd and waits until it serves a linearizable read (it has elected itself leader).
    /// The ports are picked free a moment before etcd binds them, and suites start their etcds
    /// in parallel, so one can be taken in between: etcd then exits with "address already in
    /// use" (it happened once in CI), and a new pair of ports is tried, up to five times.
    static func start() throws -> EtcdTestServer {
        let binary = Self.binary
        guard access(binary, X_OK) == 0 else {
            throw StartError(description: "etcd is not installed at \(binary): install Debian's etcd-server "
                + "(apt-get install etcd-server, as scripts/test.sh does) or set TORUS_ETCD_BINARY")
        }
        for attempt in 1... {
            do {
                return try startOnce(binary)
            } catch let e as StartError where attempt < 5 && e.description.contains("address already in use") {
                continue
            }
        }
        preconditionFailure("unreachable: the last attempt returns or throws")
    }

    private static func startOnce(_ binary: String) throws -> EtcdTestServer {
        let (clientPort, peerPort) = try freeLoopbackPorts()
        let directory = ScratchDirectory("etcd")
        let client = "http://127.0.0.1:\(clientPort)", peer = "http://127.0.0.1:\(peerPort)"
        let arguments = [
            binary, "--name", "t", "--data-dir", directory.path + "/data",
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "t=" + peer,
        ]
        let log = directory.path + "/etcd.log"
        let pid: pid_t
        do {
            pid = try spawn(arguments, log: log)
        } catch {
            directory.remove()
            throw error
        }
        let server = EtcdTestServer(endpoint: client, pid: pid, directory: directory)
        do {
            try server.waitUntilReady(log: log)
        } catch {
            server.stop()
            throw error
        }
        return server
    }

    /// Stops etcd (SIGTERM, then SIGKILL after `stopTimeoutSeconds`) and removes its data.
    func stop() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        var waited = 0.0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if waited >= Self.stopTimeoutSeconds {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                break
            }
            usleep(20_000)
            waited += 0.02
        }
        directory.remove()
    }

    private func waitUntilReady(log: String) throws {
        let client = try EtcdClient(endpoints: [endpoint], timeout: .seconds(1))
        let probe = MetaRequest.txn(MetaTxn(success: [.range(key: "probe", prefix: false)]))
        var waited = 0.0
        var last = "no answer yet"
        while waited < Self.startTimeoutSeconds {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                throw StartError(description: "etcd exited during startup (status \(status)); log:\n\(Self.tail(log))")
            }
            do {
                if case .txn = try client.apply(probe) { return }
                last = "probe answered \(try client.apply(probe))"
            } catch {
                last = "\(error)"
            }
            usleep(50_000)
            waited += 0.05
        }
        throw StartError(description: "etcd at \(endpoint) not ready after \(Self.startTimeoutSeconds) s (\(last)); log:\n\(Self.tail(log))")
    }

    /// Two distinct loopback ports nobody listened on a moment ago.
    static func freeLoopbackPorts() throws -> (UInt16, UInt16) {
        let a = try boundLoopbackSocket(), b = try boundLoopbackSocket()
        defer { close(a.fd); close(b.fd) }
        return (a.port, b.port)
    }

    /// A TCP socket bound to an ephemeral loopback port (not listening).
    static func boundLoopbackSocket() throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw StartError(description: "socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { s in
                bind(fd, s, length) == 0 && getsockname(fd, s, &length) == 0
            }
        }
        guard ok else {
            close(fd)
            throw StartError(description: "bind: \(String(cString: strerror(errno)))")
        }
        return (fd, UInt16(bigEndian: address.sin_port))
    }

    private static func spawn(_ arguments: [String], log: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ)
        guard rc == 0 else {
            throw StartError(description: "cannot start \(arguments[0]): \(String(cString: strerror(rc)))")
        }
        return pid
    }

    private static func tail(_ path: String, bytes: Int = 2000) -> String {
        guard let f = fopen(path, "r") else { return "(no log)" }
        defer { fclose(f) }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        return String(decoding: data.suffix(bytes), as: UTF8.self)
    }
}

/// Starts one etcd for a whole suite (make the suite `.serialized` if its tests compare
/// revisions) and publishes it as `EtcdTestServer.shared`; fails the suite if etcd cannot start.
struct EtcdServerTrait: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?,
                      performing function: @Sendable () async throws -> Void) async throws {
        let server = try EtcdTestServer.start()
        defer { server.stop() }
        try await EtcdTestServer.$shared.withValue(server) { try await function() }
    }
}

extension Trait where Self == EtcdServerTrait {
    static var etcdServer: Self { Self() }
}
