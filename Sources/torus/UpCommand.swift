import ArgumentParser
import NIOCore
import NIOPosix
import TorusNBD
import TorusRuntime

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
    @OptionGroup var etcdUser: EtcdUserOption
    @Option(help: "Event-loop threads: the volume writers and NBD use one, the storage nodes are spread over all (default: one per core).")
    var threads: Int?
    @OptionGroup(title: "Write cache") var writeCache: WriteCacheOptions
    @Flag(name: .customLong("peer-over-tcp"), help: "Send writer-to-node traffic over loopback TCP (the peer protocol) instead of handing it to the node in memory. Slower; for testing the wire path.")
    var peerOverTCP = false
    @Option(help: metricsHelp) var metrics: String?
    @OptionGroup(title: "NBD over TLS") var tls: NBDTLSOptions
    @OptionGroup(title: "gRPC API") var api: APIOptions
    @OptionGroup(title: "Garbage collection and repair") var maintenance: MaintenanceOptions
    @OptionGroup(title: "Logging") var logging: LoggingOptions

    func validate() throws {
        guard nodes >= 1 && nodes <= 64 else { throw ValidationError("--nodes must be between 1 and 64") }
        if let threads { guard threads >= 1 && threads <= 256 else { throw ValidationError("--threads must be between 1 and 256") } }
        guard replication >= 1 && replication <= nodes else { throw ValidationError("--replication must be between 1 and --nodes (\(nodes))") }
    }

    /// The cluster's shape from the options (every option is read before anything starts).
    func makeConfiguration() throws -> VolumeServer.Configuration {
        let bs = try parseSize(blockSize, what: "--block-size")
        guard bs >= 4096, bs <= 1 << 20, bs.nonzeroBitCount == 1 else {
            throw ValidationError("--block-size must be a power of two between 4KiB and 1MiB")
        }
        let disk = try parseSize(diskSize, what: "--disk-size")
        guard disk >= 64 * bs else { throw ValidationError("--disk-size must hold at least 64 blocks") }
        let vols = try volumes.map(parseVolumeSpec)
        var config = VolumeServer.Configuration(dataDir: dataDir, nodes: nodes, replication: replication, blockSize: Int(bs),
                                                diskBytes: disk, volumes: vols)
        if !vols.isEmpty { config.defaultVolume = nil }
        config.metadata = metadata
        config.peerOverTCP = peerOverTCP
        try writeCache.apply(to: &config)
        try maintenance.apply(to: &config)
        return config
    }

    func run() throws {
        logging.bootstrap()
        let config = try makeConfiguration()
        let nbdTLS: NBDServerTLS?
        do { nbdTLS = try tls.load() } catch {
            serverLog.error("cannot set up NBD over TLS: \(error)")
            throw ExitCode(1)
        }
        // One loop per core: the volume writers on one, the storage nodes spread over the others.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads ?? System.coreCount)
        let pool = NIOThreadPool(numberOfThreads: 4)
        pool.start()
        try serveMetrics(metrics, group: group)
        serverLog.info("starting \(nodes) nodes (replication \(replication)) in \(dataDir) ...")
        let cluster: VolumeServer
        do {
            cluster = try VolumeServer.start(config, group: group, pool: pool).wait()
        } catch {
            serverLog.error("cannot start: \(error)")
            throw ExitCode(1)
        }
        let server: Channel
        do {
            server = try NBDServer.bind(nbd, cluster: cluster, group: cluster.loop, tls: nbdTLS).wait()
        } catch {
            serverLog.error("cannot listen for NBD on \(nbd): \(error)")
            throw ExitCode(1)
        }
        do {
            _ = try AdminServer.bind(dataDir: dataDir, cluster: cluster, group: group).wait()
        } catch {
            serverLog.error("cannot open the admin socket \(AdminServer.socketPath(dataDir: dataDir)): \(error)")
            throw ExitCode(1)
        }
        try api.serve(cluster, tls: tls)
        printAttachHints(cluster.exports().map { (name: $0.name, size: $0.size) }, tls: nbdTLS?.mode)
        if LoggingOptions.printsHints { say("Ctrl-C flushes every volume and stops.") }

        runUntilSignalled("the cluster: flushing volumes") { flushAndClose(cluster, server) }
    }

    /// The NBD URI of every volume (logged), and how to attach the first one (with text logs).
    func printAttachHints(_ exports: [(name: String, size: UInt64)], tls: NBDTLSMode?) {
        let unix = nbd.hasPrefix("/") || nbd.hasPrefix("./")
        let scheme = tls == .require ? "nbds" : "nbd"
        let uri = { (name: String) in unix ? "\(scheme)+unix:///\(name)?socket=\(nbd)" : "\(scheme)://\(nbd)/\(name)" }
        serverLog.info("serving NBD on \(nbd)\(tls.map { " (TLS \($0.rawValue))" } ?? "")")
        logExports(exports, uri: uri)
        if let first = exports.first, LoggingOptions.printsHints {
            let firstURI = uri(first.name)
            say("attach it with:")
            say("  nbdinfo \(firstURI)")
            say("  nbdcopy image.raw \(firstURI)      # write an image into the volume")
            say("  qemu-img info \(firstURI)")
            if tls == .require { say("  (nbds:// clients add ?tls-certificates=DIR: see --help)") }
            if !unix && tls != .require {
                let endpoint = try? HostPort(parsing: nbd)
                say("  sudo nbd-client \(endpoint?.host ?? "127.0.0.1") \(endpoint.map { "\($0.port)" } ?? "10809") -N \(first.name) /dev/nbd0   # Linux kernel client")
            }
        }
    }
}
