import ArgumentParser
import Dispatch
import NIOCore
import NIOPosix
import TorusCore
import TorusRuntime

#if canImport(Glibc)
import Glibc
#endif

@main
struct TorusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "torus",
        abstract: "Distributed block storage: pooled node disks, replicated volumes, served over NBD.",
        subcommands: [Up.self, Volume.self, Init.self, Node.self, NBD.self, Peer.self, Status.self, GC.self]
    )

    static func main() {
        if CommandLine.arguments.dropFirst().first == "up" { reexecWithFastMemcpy() }
        keepBigBuffersOnTheHeap()
        main(nil)
    }
}

/// glibc 2.36 copies 2112 bytes or more with `rep movsb`, which runs at ~3 GB/s instead of
/// ~45 GB/s on AMD Zen 3 when source and destination sit 4, 12 or 16 bytes apart within a
/// page (NBD and peer frames put 16- to 28-byte headers in front of block data). The threshold
/// is a tunable read at process start only, so `torus up` re-executes itself once with it set.
/// `TORUS_KEEP_MEMCPY=1` turns this off.
func reexecWithFastMemcpy() {
    #if arch(x86_64)
    let setting = "glibc.cpu.x86_rep_movsb_threshold=2147483647"
    if getenv("TORUS_KEEP_MEMCPY") != nil { return }
    let current = getenv("GLIBC_TUNABLES").map { String(cString: $0) } ?? ""
    if current.contains("x86_rep_movsb_threshold") { return }
    setenv("GLIBC_TUNABLES", current.isEmpty ? setting : current + ":" + setting, 1)
    setenv("TORUS_KEEP_MEMCPY", "1", 1)  // never loop, even if exec'ing ourselves ignores the tunable
    // Exec the resolved path, not /proc/self/exe, so the process keeps its name ("torus").
    var path = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &path, path.count - 1)
    guard n > 0 else { return }
    execv(path, CommandLine.unsafeArgv)
    // exec failed: carry on with the default copies.
    #endif
}

/// How `https://` etcd endpoints get their TLS files (shown in every --metadata help).
let etcdTLSHelp = "For https:// endpoints set TORUS_ETCD_CA (CA bundle), and TORUS_ETCD_CERT and TORUS_ETCD_KEY (client certificate and key) when etcd checks client certificates."

/// Prints a line and flushes at once, so progress shows up immediately also in log files.
func say(_ line: String) {
    print(line)
    fflush(nil)
}

func parseSize(_ s: String, what: String) throws -> UInt64 {
    let units: [(String, UInt64)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40), ("B", 1)]
    for (suffix, mult) in units where s.hasSuffix(suffix) {
        if let n = UInt64(s.dropLast(suffix.count)), n > 0, n <= (1 << 50) / mult { return n * mult }
    }
    if let n = UInt64(s), n > 0 { return n }
    throw ValidationError("cannot read \(what) '\(s)': use a size like 512MiB, 10GiB or a byte count")
}

struct Up: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a whole local cluster in one process and serve its volumes over NBD.",
        discussion: """
            Starts --nodes storage nodes with file disks under --data-dir, the embedded metadata \
            store in the same directory, and the NBD server. On the first start without --volume, \
            one volume vol0 of 1 GiB is created. Ctrl-C (SIGINT) or SIGTERM flushes every volume and \
            exits; starting again on the same directory serves every flushed byte.
            """
    )

    @Option(name: .customLong("data-dir"), help: "Directory for node disks and metadata.") var dataDir = "./torus-data"
    @Option(help: "Storage nodes to run.") var nodes = 3
    @Option(help: "Copies of every block.") var replication = 2
    @Option(help: "NBD listen address: HOST:PORT, or a Unix socket path (absolute or ./relative).") var nbd = "127.0.0.1:10809"
    @Option(name: .customLong("volume"), help: "NAME:SIZE of a volume to create if missing (repeatable), e.g. vol1:10GiB.")
    var volumes: [String] = []
    @Option(name: .customLong("block-size"), help: "Block size of new volumes (power of two, 4KiB to 1MiB).") var blockSize = "64KiB"
    @Option(name: .customLong("disk-size"), help: "Size of each node's data file (preallocated).") var diskSize = "2GiB"
    @Option(help: ArgumentHelp("Keep the metadata in etcd (etcd://HOST:PORT[,HOST:PORT...] or https://...) instead of the embedded store in --data-dir.", discussion: etcdTLSHelp))
    var metadata: String?
    @Option(help: "Event-loop threads: the volume writers and NBD use one, the storage nodes are spread over all (default: one per core).")
    var threads: Int?
    @OptionGroup(title: "Write cache") var writeCache: WriteCacheOptions
    @Flag(name: .customLong("peer-over-tcp"), help: "Send writer-to-node traffic over loopback TCP (the peer protocol) instead of handing it to the node in memory. Slower; for testing the wire path.")
    var peerOverTCP = false
    @Option(help: metricsHelp) var metrics: String?
    @OptionGroup(title: "Garbage collection and repair") var maintenance: MaintenanceOptions

    func validate() throws {
        guard nodes >= 1 && nodes <= 64 else { throw ValidationError("--nodes must be between 1 and 64") }
        if let threads { guard threads >= 1 && threads <= 256 else { throw ValidationError("--threads must be between 1 and 256") } }
        guard replication >= 1 && replication <= nodes else { throw ValidationError("--replication must be between 1 and --nodes (\(nodes))") }
    }

    func run() throws {
        let bs = try parseSize(blockSize, what: "--block-size")
        guard bs >= 4096, bs <= 1 << 20, bs.nonzeroBitCount == 1 else {
            throw ValidationError("--block-size must be a power of two between 4KiB and 1MiB")
        }
        let disk = try parseSize(diskSize, what: "--disk-size")
        guard disk >= 64 * bs else { throw ValidationError("--disk-size must hold at least 64 blocks") }
        var vols: [(String, UInt64)] = []
        for v in volumes {
            let parts = v.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { throw ValidationError("--volume '\(v)' must be NAME:SIZE, e.g. vol1:10GiB") }
            vols.append((String(parts[0]), try parseSize(String(parts[1]), what: "volume size")))
        }
        var config = VolumeServer.Configuration(dataDir: dataDir, nodes: nodes, replication: replication, blockSize: Int(bs),
                                                diskBytes: disk, volumes: vols)
        if !vols.isEmpty { config.defaultVolume = nil }
        config.metadata = metadata
        config.peerOverTCP = peerOverTCP
        try writeCache.apply(to: &config)
        try maintenance.apply(to: &config)

        // One loop per core: the volume writers on one, the storage nodes spread over the others.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads ?? System.coreCount)
        let pool = NIOThreadPool(numberOfThreads: 4)
        pool.start()
        try serveMetrics(metrics, group: group)
        say("torus: starting \(nodes) nodes (replication \(replication)) in \(dataDir) ...")
        let cluster: VolumeServer
        do {
            cluster = try VolumeServer.start(config, group: group, pool: pool).wait()
        } catch {
            say("torus: cannot start: \(error)")
            throw ExitCode(1)
        }
        let server: Channel
        do {
            server = try NBDServer.bind(nbd, cluster: cluster, group: cluster.loop).wait()
        } catch {
            say("torus: cannot listen for NBD on \(nbd): \(error)")
            throw ExitCode(1)
        }
        do {
            _ = try AdminServer.bind(dataDir: dataDir, cluster: cluster, group: group).wait()
        } catch {
            say("torus: cannot open the admin socket \(AdminServer.socketPath(dataDir: dataDir)): \(error)")
            throw ExitCode(1)
        }
        let unix = nbd.hasPrefix("/") || nbd.hasPrefix("./")
        say("torus: serving NBD on \(nbd)")
        for e in cluster.exports() {
            let uri = unix ? "nbd+unix:///\(e.name)?socket=\(nbd)" : "nbd://\(nbd)/\(e.name)"
            say("  volume \(e.name): \(e.size) bytes  \(uri)")
        }
        if let first = cluster.exports().first {
            let uri = unix ? "nbd+unix:///\(first.name)?socket=\(nbd)" : "nbd://\(nbd)/\(first.name)"
            say("attach it with:")
            say("  nbdinfo \(uri)")
            say("  nbdcopy image.raw \(uri)      # write an image into the volume")
            say("  qemu-img info \(uri)")
            if !unix {
                let parts = nbd.split(separator: ":")
                say("  sudo nbd-client \(parts.first ?? "127.0.0.1") \(parts.last ?? "10809") -N \(first.name) /dev/nbd0   # Linux kernel client")
            }
        }
        say("Ctrl-C flushes every volume and stops.")

        runUntilSignalled("the cluster: flushing volumes") { flushAndClose(cluster, server) }
    }
}

struct Volume: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list, inspect, grow and delete volumes (of a running `torus up`, or in etcd with --metadata).",
        subcommands: [Create.self, List.self, Info.self, Resize.self, Delete.self]
    )

    struct Target: ParsableArguments {
        @Option(name: .customLong("data-dir"), help: "The --data-dir of the running `torus up`.") var dataDir = "./torus-data"
        @Option(help: ArgumentHelp("Work on the cluster in etcd (etcd://HOST:PORT or https://HOST:PORT) instead of a running `torus up`.", discussion: etcdTLSHelp))
        var metadata: String?
    }

    static func run(_ line: String, _ target: Target) throws {
        if let url = target.metadata {
            try runOnMetadata(line, url)
            return
        }
        let lines: [String]
        do {
            lines = try AdminClient.request(line, dataDir: target.dataDir)
        } catch {
            say("torus: \(error)")
            throw ExitCode(1)
        }
        for l in lines where l != "ok" { say(l) }
        if lines.last != "ok" { throw ExitCode(1) }
    }

    /// The same requests straight against etcd (a `torus nbd serve` picks new volumes up).
    static func runOnMetadata(_ line: String, _ url: String) throws {
        let words = line.split(separator: " ").map(String.init)
        do {
            let meta = try EtcdMetadataService(url: url)
            switch words[0] {
            case "list":
                for v in try ClusterCatalog.listVolumes(meta).sorted(by: { $0.name < $1.name }) { say(describe(v)) }
            case "info":
                guard let v = try ClusterCatalog.listVolumes(meta).first(where: { $0.name == words[1] }) else {
                    throw RuntimeError.badInput("no volume named '\(words[1])'")
                }
                say(describe(v))
            case "create":
                let shape = try ClusterCatalog.config(meta)
                say(describe(try ClusterCatalog.createVolume(meta, name: words[1], sizeBytes: UInt64(words[2])!, blockSize: shape.blockSize,
                                                             replication: shape.replication, ifMissing: false)))
            case "delete":
                guard try ClusterCatalog.listVolumes(meta).contains(where: { $0.name == words[1] }) else {
                    throw RuntimeError.badInput("no volume named '\(words[1])'")
                }
                try ClusterCatalog.deleteVolume(meta, name: words[1])
            case "resize":
                let (old, new) = try ClusterCatalog.resizeVolume(meta, name: words[1], sizeBytes: UInt64(words[2])!)
                say(describe(new) + (old.sizeBytes == new.sizeBytes ? " (unchanged)" : " (was \(old.sizeBytes))"))
            default:
                throw RuntimeError.badInput("unknown request '\(line)'")
            }
        } catch {
            say("torus: \(error)")
            throw ExitCode(1)
        }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a volume and start serving it over NBD.")
        @Argument(help: "Volume name (a-z, A-Z, 0-9, '-', '_', '.').") var name: String
        @Argument(help: "Size, e.g. 10GiB.") var size: String
        @OptionGroup var target: Target
        func run() throws { try Volume.run("create \(name) \(try parseSize(size, what: "size"))", target) }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List volumes.")
        @OptionGroup var target: Target
        func run() throws { try Volume.run("list", target) }
    }

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one volume.")
        @Argument var name: String
        @OptionGroup var target: Target
        func run() throws { try Volume.run("info \(name)", target) }
    }

    struct Resize: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Grow a volume (shrinking is refused: it would drop data).",
            discussion: """
                The servers exporting the volume pick the new size up at once (they watch the \
                metadata store). NBD clients learn an export's size when they connect, so \
                reconnect them to use the new space.
                """)
        @Argument var name: String
        @Argument(help: "New size, e.g. 20GiB (not smaller than the current size).") var size: String
        @OptionGroup var target: Target
        func run() throws { try Volume.run("resize \(name) \(try parseSize(size, what: "size"))", target) }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a volume (the garbage collector reclaims its blocks on a later pass).")
        @Argument var name: String
        @OptionGroup var target: Target
        func run() throws { try Volume.run("delete \(name)", target) }
    }
}

struct GC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Run a garbage-collection pass on a running `torus up` now and show the space it freed.",
        discussion: """
            The collector lists every block on every node, reads every volume's committed map and \
            deletes the blocks no volume can reach any more (overwritten, trimmed, of deleted \
            volumes, or left by a writer that crashed) once they have been unreachable for \
            --gc-grace. `torus up` runs a pass every --gc-interval on its own; this runs one now.
            """)
    @Option(name: .customLong("data-dir"), help: "The --data-dir of the running `torus up`.") var dataDir = "./torus-data"

    func run() throws {
        func usedBytes() throws -> UInt64 {
            try request("usage").compactMap { line in
                line.split(separator: " ").first { $0.hasPrefix("used=") }.flatMap { UInt64($0.dropFirst(5)) }
            }.reduce(0, +)
        }
        do {
            let before = try usedBytes()
            let pass = try request("gc")
            // Nodes free a deleted block's slot once its delete record is durable: wait (up to
            // 5 s) until the figure stops moving.
            var after = try usedBytes()
            for _ in 0..<25 {
                usleep(200_000)
                let now = try usedBytes()
                if now == after { break }
                after = now
            }
            for l in pass { say("gc: \(l)") }
            say("gc: blocks in use on all nodes: \(humanBytes(before)) before, \(humanBytes(after)) after (\(before) -> \(after) bytes)")
        } catch let e as ExitCode {
            throw e
        } catch {
            say("torus: \(error)")
            throw ExitCode(1)
        }
    }

    func request(_ line: String) throws -> [String] {
        let lines = try AdminClient.request(line, dataDir: dataDir)
        guard lines.last == "ok" else {
            for l in lines { say("torus: \(l)") }
            throw ExitCode(1)
        }
        return Array(lines.dropLast())
    }
}

let metricsHelp = ArgumentHelp("Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9100): NBD requests, repair, rebalancing, garbage collection, scrubbing, node usage. Off by default.")

/// `--metrics HOST:PORT`: installs the Prometheus backend and listens, before anything is
/// measured; exits with a clear message when the address is unusable.
func serveMetrics(_ address: String?, group: EventLoopGroup) throws {
    guard let address else { return }
    do {
        let channel = try TorusMetrics.serve(address, group: group).wait()
        say("torus: metrics on http://\(channel.localAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? address)/metrics")
    } catch {
        say("torus: cannot serve metrics on \(address): \(error)")
        throw ExitCode(1)
    }
}

/// The collector's knobs, shared by `torus up` and `torus nbd serve`.
struct MaintenanceOptions: ParsableArguments {
    @Option(name: .customLong("gc-interval"), help: "Time between passes of the collector, which deletes garbage and copies blocks short of copies (e.g. 60s, 5m); 0 turns it off.")
    var gcInterval = "60s"
    @Option(name: .customLong("gc-grace"), help: "Garbage is deleted once it has been unreachable this long (read-only clients may still read a head this old).")
    var gcGrace = "30s"
    @Option(name: .customLong("repair-grace"), help: "A node silent this long counts as lost: the blocks it held are copied to other nodes. A node back sooner keeps its copies (nothing is copied for it).")
    var repairGrace = "10m"
    @Option(name: .customLong("repair-rate"), help: "Most bytes per second the repair and rebalancing copy to each node (e.g. 64MiB); 0: unthrottled.")
    var repairRate = "64MiB"
    @Option(name: .customLong("ring-settle"), help: "After a ring change (a node joined, is drained or removed), how long before old copies of moved blocks are deleted and a drain is declared done: every server must have learned the new ring by then.")
    var ringSettle = "30s"
    @Option(name: .customLong("scrub-rate"), help: "torus up: bytes per second each node verifies against checksums in the background; a bad copy is dropped and copied back. 0: off.")
    var scrubRate = "4MiB"

    func apply(to config: inout VolumeServer.Configuration) throws {
        let interval = try parseDuration(gcInterval, what: "--gc-interval")
        config.gcInterval = interval.value == 0 ? nil : interval
        config.gcGrace = try parseDuration(gcGrace, what: "--gc-grace")
        config.repairGrace = try parseDuration(repairGrace, what: "--repair-grace")
        config.repairBytesPerSecond = repairRate == "0" ? 0 : try parseSize(repairRate, what: "--repair-rate")
        config.ringSettle = try parseDuration(ringSettle, what: "--ring-settle")
        config.scrubBytesPerSecond = scrubRate == "0" ? 0 : try parseSize(scrubRate, what: "--scrub-rate")
    }
}

struct WriteCacheOptions: ParsableArguments {
    @Option(name: .customLong("cache-size"), help: ArgumentHelp(
        "Cache of each volume's writer: written blocks until their replicas stored them durably, and recently used blocks.",
        discussion: "Written blocks reach their replicas at once but are synced to disk only by a FLUSH or FUA write, after --sync-delay, or when unsynced blocks fill three quarters of the cache; until then the writer keeps them, so a replica that crashes first gets them again. A working set bigger than the cache is written at the speed of the replicas' disks, with pauses of a second or more while a sync writes the backlog; --durable-writes trades throughput for a steady pace."))
    var cacheSize = "1GiB"
    @Option(name: .customLong("sync-delay"), help: "Written blocks are synced to the replicas' disks at least this often even without a FLUSH (e.g. 5s, 500ms).")
    var syncDelay = "5s"
    @Option(name: .customLong("writeback-delay"), help: "A written block waits this long in the writer's cache before it is sent to its replicas, so a block rewritten meanwhile is sent once; a FLUSH, a FUA write or a cache half full of written blocks sends sooner (e.g. 5s, 500ms, 0).")
    var writebackDelay = "5s"
    @Flag(name: .customLong("durable-writes"), help: "Sync every written block on its replicas before taking more (the mode before deferred syncing): a steadier tail when writes outrun the disks, but several times fewer small random writes.")
    var durableWrites = false

    func apply(to config: inout VolumeServer.Configuration) throws {
        config.cacheBytes = try parseCacheSize(cacheSize)
        config.syncDelay = try parseDuration(syncDelay, what: "--sync-delay")
        guard config.syncDelay >= .milliseconds(10) else { throw ValidationError("--sync-delay must be at least 10ms") }
        config.writebackDelay = try parseDuration(writebackDelay, what: "--writeback-delay")
        guard config.writebackDelay <= .seconds(600) else { throw ValidationError("--writeback-delay must be at most 10m") }
        config.durableWrites = durableWrites
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

/// Waits for SIGINT or SIGTERM, then runs `stop` and exits with its status.
func runUntilSignalled(_ what: String, stop: @escaping @Sendable () -> Int32) -> Never {
    let queue = DispatchQueue(label: "torus.signals")
    var sources: [DispatchSourceSignal] = []
    nonisolated(unsafe) var stopping = false  // only touched on `queue`
    for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
        source.setEventHandler {
            if stopping {
                // A shutdown that cannot finish (a flush that cannot complete) must not trap
                // the operator: a second signal exits at once.
                say("torus: second signal: exiting without waiting; writes not yet flushed may be lost")
                Glibc._exit(130)
            }
            stopping = true
            say("torus: stopping \(what) ... (signal again to exit at once)")
            DispatchQueue.global().async { Glibc.exit(stop()) }
        }
        source.resume()
        sources.append(source)
    }
    withExtendedLifetime(sources) { dispatchMain() }
}

/// Flushes every volume, releases the writers' leases, closes the NBD listener; the exit status.
func flushAndClose(_ cluster: VolumeServer, _ server: Channel) -> Int32 {
    do {
        try cluster.shutdown().wait()
        try? server.close().wait()
        say("torus: flushed; bye")
        return 0
    } catch {
        say("torus: flush failed on shutdown: \(error)")
        return 1
    }
}

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a cluster in etcd (block size and replication of its volumes).",
        discussion: "Refuses to touch a cluster that already exists unless --force is given.")
    @Option(help: ArgumentHelp("etcd endpoint(s): etcd://HOST:PORT[,HOST:PORT...] or https://HOST:PORT.", discussion: etcdTLSHelp)) var metadata: String
    @Option(help: "Copies of every block.") var replication = 2
    @Option(name: .customLong("block-size"), help: "Block size (power of two, 4KiB to 1MiB).") var blockSize = "64KiB"
    @Flag(help: "Overwrite the config of an existing cluster.") var force = false

    func run() throws {
        let bs = try parseSize(blockSize, what: "--block-size")
        guard bs >= 4096, bs <= 1 << 20, bs.nonzeroBitCount == 1 else {
            throw ValidationError("--block-size must be a power of two between 4KiB and 1MiB")
        }
        guard replication >= 1, replication <= 16 else { throw ValidationError("--replication must be between 1 and 16") }
        try onEtcd(metadata) { meta in
            try ClusterCatalog.initialize(meta, .init(blockSize: Int(bs), replication: replication), force: force)
            say("torus: cluster created in \(meta.location): block size \(bs), replication \(replication)")
        }
    }
}

struct Node: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a storage node: serve its disk to the cluster in etcd.",
        discussion: """
            The node keeps its id in DATA_DIR/node.id and its blocks in DATA_DIR/blocks.data \
            (preallocated to --size), joins the placement ring on first start and keeps a liveness \
            key under a lease while it runs. SIGINT/SIGTERM stop it cleanly.
            """)
    @Option(help: ArgumentHelp("etcd endpoint(s): etcd://HOST:PORT[,HOST:PORT...] or https://HOST:PORT.", discussion: etcdTLSHelp)) var metadata: String
    @Option(name: .customLong("data-dir"), help: "Directory for this node's data.") var dataDir: String
    @Option(help: "Size of the node's data file, e.g. 10GiB.") var size: String
    @Option(help: "Peer protocol listen address HOST:PORT (port 0: any).") var listen = "127.0.0.1:0"
    @Option(help: "Address other processes use to reach this node (default: the listen address).") var advertise: String?
    @Option(help: "Failure domain (zone, rack or host); copies of a block go to distinct zones.") var zone = ""
    @Option(name: .customLong("scrub-rate"), help: "Bytes per second of stored blocks verified against their checksums in the background (e.g. 4MiB); a bad copy is dropped and the collector copies it back. 0: off.")
    var scrubRate = "4MiB"
    @Option(help: metricsHelp) var metrics: String?

    func run() throws {
        let bytes = try parseSize(size, what: "--size")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = NIOThreadPool(numberOfThreads: 4)
        pool.start()
        try serveMetrics(metrics, group: group)
        let daemon: NodeDaemon
        do {
            let scrub = scrubRate == "0" ? 0 : try parseSize(scrubRate, what: "--scrub-rate")
            daemon = try NodeDaemon.start(metadata: metadata, dataDir: dataDir, sizeBytes: bytes, listen: listen,
                                          advertise: advertise, zone: zone, scrubBytesPerSecond: scrub, group: group, pool: pool)
        } catch {
            say("torus: cannot start the node: \(error)")
            throw ExitCode(1)
        }
        runUntilSignalled("node \(daemon.server.id)") {
            daemon.shutdown()
            say("torus: node stopped")
            return 0
        }
    }
}

struct NBD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nbd", abstract: "Serve the volumes of a cluster in etcd over NBD.", subcommands: [Serve.self])

    struct Serve: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Export every volume over NBD, writing through the storage nodes registered in etcd.",
            discussion: """
                Opening a volume takes its writer lock in etcd (a key under this server's lease with \
                a new epoch); a second server waits until the lock is free. SIGINT/SIGTERM flush every \
                volume and release the locks.

                With --read-only no lock is taken, so any number of these run next to the writer: \
                exports are read-only (writes fail with EPERM) and show the last committed (flushed) \
                state, re-read every second. Volumes created, resized or deleted later are followed \
                through an etcd watch.
                """)
        @Option(help: ArgumentHelp("etcd endpoint(s): etcd://HOST:PORT[,HOST:PORT...] or https://HOST:PORT.", discussion: etcdTLSHelp)) var metadata: String
        @Option(help: "NBD listen address: HOST:PORT, or a Unix socket path.") var listen = "127.0.0.1:10809"
        @Option(help: "Event-loop threads (default: one per core).") var threads: Int?
        @Flag(name: .customLong("read-only"), help: "Export every volume read-only, without taking writer locks.")
        var readOnly = false
        @OptionGroup(title: "Write cache") var writeCache: WriteCacheOptions
        @OptionGroup(title: "Garbage collection and repair (not with --read-only)") var maintenance: MaintenanceOptions
        @Option(help: metricsHelp) var metrics: String?

        func run() throws {
            var config = VolumeServer.Configuration(dataDir: "/nonexistent", nodes: 0, replication: 1, volumes: [])
            config.defaultVolume = nil
            config.metadata = metadata
            config.readOnly = readOnly
            try writeCache.apply(to: &config)
            try maintenance.apply(to: &config)
            let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads ?? System.coreCount))
            let pool = NIOThreadPool(numberOfThreads: 4)
            pool.start()
            try serveMetrics(metrics, group: group)
            let cluster: VolumeServer
            let server: Channel
            do {
                cluster = try VolumeServer.start(config, group: group, pool: pool).wait()
                server = try NBDServer.bind(listen, cluster: cluster, group: cluster.loop).wait()
            } catch {
                say("torus: cannot serve: \(error)")
                throw ExitCode(1)
            }
            say("torus: serving NBD on \(listen)")
            for e in cluster.exports() { say("  volume \(e.name): \(e.size) bytes  nbd://\(listen)/\(e.name)") }
            runUntilSignalled("the NBD server: flushing volumes") { flushAndClose(cluster, server) }
        }
    }
}

struct Peer: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Storage nodes of a cluster in etcd.", subcommands: [List.self, Drain.self, Remove.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the ring's nodes and whether they are alive.")
        @Option(help: ArgumentHelp("etcd endpoint(s): etcd://HOST:PORT[,HOST:PORT...] or https://HOST:PORT.", discussion: etcdTLSHelp)) var metadata: String

        func run() throws {
            try onEtcd(metadata) { meta in
                let alive = try ClusterCatalog.alive(meta)
                for m in try ClusterCatalog.members(meta) {
                    say("\(m.id) address=\(m.address) zone=\(m.zone.isEmpty ? "-" : m.zone) capacity=\(m.capacityBytes) \(alive.contains(m.id) ? "alive" : "DOWN")"
                        + (m.draining ? " draining" : ""))
                }
                say("ring version \(try ClusterCatalog.ringVersion(meta))")
            }
        }
    }

    struct Drain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Drain a node: it gets no new blocks, and its blocks move to the other nodes.",
            discussion: """
                A new ring version without placements on the node. The collector of `torus nbd serve` copies each \
                block the node holds to its new placement (throttled like repair, `--repair-rate`), deletes the old \
                copy once every new one is durable, and reports the node as drained in `torus status` once it holds \
                nothing needed. Then `torus peer remove ID` takes it out of the ring and the node can be stopped. \
                Reads and writes go on throughout. Refused when the other nodes are fewer than the replication factor.
                """)
        @Argument(help: "The node's id (`torus peer list`).") var id: UInt32
        @Option(help: ArgumentHelp("etcd endpoint(s): etcd://HOST:PORT[,HOST:PORT...] or https://HOST:PORT.", discussion: etcdTLSHelp)) var metadata: String

        func run() throws {
            try onEtcd(metadata) { meta in
                try ClusterCatalog.drain(meta, NodeID(id))
                say("node \(id) is draining (ring version \(try ClusterCatalog.ringVersion(meta))): its blocks move to the other nodes "
                    + "in the background; `torus status` shows progress and says when it is drained; then run `torus peer remove \(id)`")
            }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a node from the ring.",
            discussion: """
                Without --force, only a drained node (`torus peer drain`, then `torus status` reports it drained): \
                nothing is lost. With --force, any node, e.g. one that died for good: its blocks are no longer \
                counted, so the collector copies them from the other copies at once (blocks whose only copies were \
                there are lost).
                """)
        @Argument(help: "The node's id (`torus peer list`).") var id: UInt32
        @Flag(help: "Remove the node even if it was not drained (it is dead, or its data may be lost).") var force = false
        @Option(help: ArgumentHelp("etcd endpoint(s): etcd://HOST:PORT[,HOST:PORT...] or https://HOST:PORT.", discussion: etcdTLSHelp)) var metadata: String

        func run() throws {
            try onEtcd(metadata) { meta in
                let status = try ClusterCatalog.status(meta)
                guard let m = status.members.first(where: { $0.id.raw == id }) else { throw RuntimeError.badInput("no node \(id) in the ring") }
                let version = try ClusterCatalog.ringVersion(meta)
                let drained = Status.drained(status.maintenance, ringVersion: version).contains(id)
                if !force {
                    guard m.draining else {
                        throw RuntimeError.badInput("node \(id) is not draining: run `torus peer drain \(id)` first and wait until "
                                                    + "`torus status` reports it drained (or use --force for a node that is gone for good)")
                    }
                    guard drained else {
                        throw RuntimeError.badInput("node \(id) is draining but not drained yet (see `torus status`); "
                                                    + "removing it now could lose the only copies it holds (--force to do it anyway)")
                    }
                }
                try ClusterCatalog.remove(meta, NodeID(id))
                say("node \(id) removed from the ring (version \(try ClusterCatalog.ringVersion(meta)))"
                    + (drained ? "; it held nothing needed and may be stopped" : "; the collector copies its blocks from the other copies"))
            }
        }
    }
}

/// Runs `body` on the etcd at `url`; any error is printed as one line and exits with status 1.
func onEtcd(_ url: String, _ body: (EtcdMetadataService) throws -> Void) throws {
    do {
        try body(try EtcdMetadataService(url: url))
    } catch {
        say("torus: \(error)")
        throw ExitCode(1)
    }
}

/// `1.5 GiB`-style sizes for people.
func humanBytes(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var value = Double(n), unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(n) B" : "\(fixed(value, 1)) \(units[unit])"
}

/// `x` rounded to `digits` decimals (no Foundation here).
func fixed(_ x: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let n = Int((x * scale).rounded())
    if digits == 0 { return "\(n)" }
    let whole = n / Int(scale), frac = n % Int(scale)
    let fracText = String(frac)
    return "\(whole)." + String(repeating: "0", count: digits - fracText.count) + fracText
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the cluster in etcd: nodes, capacity, volumes and health.",
        discussion: """
            Health is OK when every node is alive; DEGRADED when some are down (blocks with a copy \
            on them have fewer copies until they return); UNAVAILABLE when fewer nodes are alive \
            than the replication factor. Nodes from 80% full are warned about. Exit status: 0 OK, \
            2 DEGRADED or UNAVAILABLE, 1 when etcd cannot be read.
            """)
    @Option(help: ArgumentHelp("etcd endpoint(s): etcd://HOST:PORT[,HOST:PORT...] or https://HOST:PORT.", discussion: etcdTLSHelp)) var metadata: String

    func run() throws {
        let status: ClusterCatalog.Status
        let location: String
        let ringVersion: UInt64
        do {
            let meta = try EtcdMetadataService(url: metadata)
            location = meta.location
            status = try ClusterCatalog.status(meta)
            ringVersion = try ClusterCatalog.ringVersion(meta)
        } catch {
            say("torus: \(error)")
            throw ExitCode(1)
        }
        let members = status.members
        let up = members.filter { status.alive.contains($0.id) }
        say("cluster: \(location), block size \(humanBytes(UInt64(status.config.blockSize))), replication \(status.config.replication), "
            + "\(members.count) node(s), \(up.count) alive")
        say("")
        say(pad("NODE", 6) + pad("ADDRESS", 24) + pad("ZONE", 8) + pad("STATE", 7) + pad("USED", 12) + pad("CAPACITY", 12) + "USE%")
        var used: UInt64 = 0, capacity: UInt64 = 0
        var warnings: [String] = []
        for m in members {
            let isUp = status.alive.contains(m.id)
            var usedText = "-", pct = "-"
            var cap = m.capacityBytes
            if let u = status.usage[m.id] {
                cap = u.capacityBytes
                usedText = humanBytes(u.usedBytes)
                let p = u.capacityBytes == 0 ? 0 : Double(u.usedBytes) * 100 / Double(u.capacityBytes)
                pct = fixed(p, 0) + "%"
                if p >= 80 { warnings.append("node \(m.id.raw) is \(pct) full") }
                used += u.usedBytes
            }
            capacity += cap
            say(pad("\(m.id.raw)", 6) + pad(m.address, 24) + pad(m.zone.isEmpty ? "-" : m.zone, 8) + pad(isUp ? "alive" : "DOWN", 7)
                + pad(usedText, 12) + pad(humanBytes(cap), 12) + pad(pct, 6) + (m.draining ? "draining" : ""))
        }
        let pct = capacity == 0 ? 0 : Double(used) * 100 / Double(capacity)
        say("")
        say("capacity: \(humanBytes(used)) used of \(humanBytes(capacity)) raw (\(fixed(pct, 1))%); "
            + "\(humanBytes(capacity / UInt64(max(1, status.config.replication)))) usable at replication \(status.config.replication)")
        if pct >= 80 { warnings.append("the cluster is \(fixed(pct, 0))% full") }
        let provisioned = status.volumes.reduce(UInt64(0)) { $0 + $1.sizeBytes }
        say("volumes: \(status.volumes.count), \(humanBytes(provisioned)) provisioned")
        for v in status.volumes {
            say("  \(v.name): \(humanBytes(v.sizeBytes))\(status.openForWriting.contains(v.name) ? ", open for writing" : "")")
        }
        let down = members.filter { !status.alive.contains($0.id) }.map { "\($0.id.raw)" }
        let fullyRedundant = Self.showMaintenance(status.maintenance)
        Self.showRebalancing(status, ringVersion: ringVersion)
        for w in warnings { say("warning: \(w)") }
        if up.count < status.config.replication {
            say("health: UNAVAILABLE: \(up.count) of \(members.count) node(s) alive; replication \(status.config.replication) needs \(status.config.replication)")
            throw ExitCode(2)
        } else if !down.isEmpty {
            if fullyRedundant {
                say("health: DEGRADED: node(s) \(down.joined(separator: ", ")) down; their blocks were copied elsewhere "
                    + "(full redundancy on the nodes alive)")
            } else {
                say("health: DEGRADED: node(s) \(down.joined(separator: ", ")) down; blocks with a copy there have fewer than "
                    + "\(status.config.replication) copies until they return or are repaired")
            }
            throw ExitCode(2)
        }
        say("health: OK")
    }

    /// Draining nodes the collector's last pass, under ring version `ringVersion`, found
    /// holding nothing needed.
    static func drained(_ m: [String: String], ringVersion: UInt64) -> [UInt32] {
        guard m["ring-version"] == "\(ringVersion)" else { return [] }
        return (m["drained"] ?? "").split(separator: ",").compactMap { UInt32($0) }
    }

    /// Prints the ring version and where rebalancing stands.
    static func showRebalancing(_ status: ClusterCatalog.Status, ringVersion: UInt64) {
        let m = status.maintenance
        let draining = status.members.filter(\.draining).map(\.id.raw)
        let drainedNow = drained(m, ringVersion: ringVersion)
        let moved = "\(m["moved-total"] ?? "0") blocks (\(humanBytes(UInt64(m["bytes-moved-total"] ?? "0") ?? 0))) moved since its server started"
        var line = "ring: version \(ringVersion)"
        if m["ring-version"] != "\(ringVersion)" {
            line += "; rebalancing: not yet judged under this version (next collector pass); \(moved)"
        } else if let off = Int(m["misplaced"] ?? ""), off > 0 || (Int(m["trimmed"] ?? "") ?? 0) > 0 {
            line += "; rebalancing: \(off) blocks off their placement at the last pass, \(m["trimmed"] ?? "0") old copies deleted; \(moved)"
        } else {
            line += "; balanced at the last pass; \(moved)"
        }
        say(line)
        for id in draining {
            say(drainedNow.contains(id) ? "node \(id): drained: it holds nothing needed; `torus peer remove \(id)` takes it out of the ring"
                                        : "node \(id): draining: its blocks are moving to the other nodes")
        }
    }

    /// Prints the collector's state (`/torus/maintenance/status`); true when its last pass
    /// found every committed block with all its copies.
    static func showMaintenance(_ m: [String: String]) -> Bool {
        guard let time = m["time"].flatMap({ Int($0) }) else {
            say("redundancy: unknown (no collector pass recorded yet; `torus nbd serve` runs them)")
            return false
        }
        let age = max(0, SystemClock.wallSeconds() - time)
        let copiedTotal = m["copied-total"] ?? "0"
        let bytesTotal = UInt64(m["bytes-copied-total"] ?? "0") ?? 0
        if m["repairing"] == "true" {
            let rate = UInt64(m["repair-rate"] ?? "0") ?? 0
            let eta = Int(m["repair-eta"] ?? "-1") ?? -1
            say("repair: \(m["repair-copied"] ?? "?") of \(m["repair-total"] ?? "?") blocks copied "
                + "(\(humanBytes(UInt64(m["repair-bytes"] ?? "0") ?? 0))) at \(humanBytes(rate))/s"
                + (eta >= 0 ? ", about \(eta) s left" : "") + " (as of \(age) s ago)")
            return false
        }
        let short = Int(m["short"] ?? "") ?? -1
        let complete = m["last-pass-complete"] == "true" && m["nodes-skipped"] != nil
        let totals = "\(copiedTotal) blocks (\(humanBytes(bytesTotal))) copied by the collector since its server started"
        if short == 0 && complete && m["volumes-skipped"] == "0" && (m["nodes-resting"] ?? "0") != "0" {
            say("redundancy: waiting: \(m["nodes-resting"]!) node(s) silent for less than the repair grace are assumed to keep "
                + "their copies (collector pass \(age) s ago); \(totals)")
            return false
        }
        if short == 0 && complete && m["volumes-skipped"] == "0" {
            say("redundancy: full: every committed block has all its copies (collector pass \(age) s ago); \(totals)")
            return true
        }
        if short > 0 {
            let lost = Int(m["unrepairable"] ?? "0") ?? 0
            say("redundancy: \(short) committed blocks short of copies at the last pass (\(age) s ago)"
                + (lost > 0 ? ", \(lost) with no copy on any node that answered" : "") + "; \(totals)")
        } else {
            say("redundancy: not known: the last collector pass (\(age) s ago) could not read every volume; \(totals)")
        }
        return false
    }

    private func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
    }
}
