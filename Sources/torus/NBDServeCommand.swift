import ArgumentParser
import NIOCore
import NIOPosix
import TorusRuntime

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
        @OptionGroup var etcdUser: EtcdUserOption
        @Option(help: "NBD listen address: HOST:PORT, or a Unix socket path.") var listen = "127.0.0.1:10809"
        @Option(help: "Event-loop threads (default: one per core).") var threads: Int?
        @Flag(name: .customLong("read-only"), help: "Export every volume read-only, without taking writer locks.")
        var readOnly = false
        @OptionGroup(title: "Write cache") var writeCache: WriteCacheOptions
        @OptionGroup(title: "Garbage collection and repair (not with --read-only)") var maintenance: MaintenanceOptions
        @Option(help: metricsHelp) var metrics: String?
        @OptionGroup(title: "NBD over TLS") var tls: NBDTLSOptions
        @OptionGroup(title: "gRPC API") var api: APIOptions
        @Option(name: .customLong("peer-tls"), help: peerTLSHelp) var peerTLS: String?
        @OptionGroup(title: "Logging") var logging: LoggingOptions

        func run() throws {
            logging.bootstrap()
            var config = VolumeServer.Configuration(dataDir: "/nonexistent", nodes: 0, replication: 1, volumes: [])
            config.defaultVolume = nil
            config.metadata = metadata
            config.readOnly = readOnly
            try writeCache.apply(to: &config)
            try maintenance.apply(to: &config)
            let nbdTLS: NBDServerTLS?
            do {
                nbdTLS = try tls.load()
                config.peerTLS = try peerTLS.map { try PeerTLS.load(directory: $0) }
            } catch {
                serverLog.error("cannot set up TLS: \(error)")
                throw ExitCode(1)
            }
            let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads ?? System.coreCount))
            let pool = NIOThreadPool(numberOfThreads: 4)
            pool.start()
            try serveMetrics(metrics, group: group)
            let cluster: VolumeServer
            let server: Channel
            do {
                cluster = try VolumeServer.start(config, group: group, pool: pool).wait()
                server = try NBDServer.bind(listen, cluster: cluster, group: cluster.loop, tls: nbdTLS).wait()
            } catch {
                serverLog.error("cannot serve: \(error)")
                throw ExitCode(1)
            }
            try api.serve(cluster, tls: tls)
            serverLog.info("serving NBD on \(listen)\(nbdTLS.map { " (TLS \($0.mode.rawValue))" } ?? "")")
            let scheme = nbdTLS?.mode == .require ? "nbds" : "nbd"
            logExports(cluster.exports().map { (name: $0.name, size: $0.size) }) { "\(scheme)://\(listen)/\($0)" }
            runUntilSignalled("the NBD server: flushing volumes") { flushAndClose(cluster, server) }
        }
    }
}
