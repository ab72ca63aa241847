import ArgumentParser
import NIOPosix
import TorusRuntime

struct Node: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a storage node: serve its disk to the cluster in etcd.",
        discussion: """
            The node keeps its id in DATA_DIR/node.id and its blocks in DATA_DIR/blocks.data \
            (preallocated to --size), joins the placement ring on first start and keeps a liveness \
            key under a lease while it runs. SIGINT/SIGTERM stop it cleanly.
            """)
    @Option(help: ArgumentHelp("etcd endpoint(s): etcd://HOST:PORT[,HOST:PORT...] or https://HOST:PORT.", discussion: etcdTLSHelp)) var metadata: String
    @OptionGroup var etcdUser: EtcdUserOption
    @Option(name: .customLong("data-dir"), help: "Directory for this node's data.") var dataDir: String
    @Option(help: "Size of the node's data file, e.g. 10GiB.") var size: String
    @Option(help: "Peer protocol listen address HOST:PORT (port 0: any).") var listen = "127.0.0.1:0"
    @Option(help: "Address other processes use to reach this node (default: the listen address).") var advertise: String?
    @Option(help: "Failure domain (zone, rack or host; up to 64 of a-z, A-Z, 0-9, '-', '_', '.'); copies of a block go to distinct zones.")
    var zone = ""
    @Option(name: .customLong("scrub-rate"), help: "Bytes per second of stored blocks verified against their checksums in the background (e.g. 4MiB); a bad copy is dropped and the collector copies it back. 0: off.")
    var scrubRate = "4MiB"
    @Option(name: .customLong("peer-tls"), help: peerTLSHelp) var peerTLS: String?
    @Option(help: metricsHelp) var metrics: String?
    @OptionGroup(title: "Logging") var logging: LoggingOptions

    func validate() throws {
        // The zone goes into the node's record in etcd, one `key=value` line each.
        guard zone.isEmpty || VolumeServer.validName(zone) else {
            throw ValidationError("--zone must be up to 64 characters of a-z, A-Z, 0-9, '-', '_', '.' (got \(zone.utf8.count) bytes)")
        }
    }

    func run() throws {
        logging.bootstrap()
        let bytes = try parseSize(size, what: "--size")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = NIOThreadPool(numberOfThreads: 4)
        pool.start()
        try serveMetrics(metrics, group: group)
        let daemon: NodeDaemon
        do {
            let scrub = scrubRate == "0" ? 0 : try parseSize(scrubRate, what: "--scrub-rate")
            let tls = try peerTLS.map { try PeerTLS.load(directory: $0) }
            daemon = try NodeDaemon.start(metadata: metadata, dataDir: dataDir, sizeBytes: bytes, listen: listen,
                                          advertise: advertise, zone: zone, scrubBytesPerSecond: scrub, tls: tls,
                                          group: group, pool: pool)
        } catch {
            serverLog.error("cannot start the node: \(error)")
            throw ExitCode(1)
        }
        runUntilSignalled("node \(daemon.server.id)") {
            daemon.shutdown()
            serverLog.info("node stopped")
            return 0
        }
    }
}
