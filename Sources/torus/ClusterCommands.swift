import ArgumentParser
import TorusCore
import TorusRuntime

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a cluster in etcd (block size and replication of its volumes).",
        discussion: "Refuses to touch a cluster that already exists unless --force is given.")
    @Option(help: ArgumentHelp("etcd endpoint(s): etcd://HOST:PORT[,HOST:PORT...] or https://HOST:PORT.", discussion: etcdTLSHelp)) var metadata: String
    @OptionGroup var etcdUser: EtcdUserOption
    @Option(help: "Copies of every block.") var replication = 2
    @Option(name: .customLong("block-size"), help: "Block size (power of two, 4KiB to 1MiB).") var blockSize = "64KiB"
    @Option(name: .customLong("tls"), help: ArgumentHelp(
        "Require mutual TLS between storage nodes and volume servers; DIR gets a new cluster CA and a peer certificate (kept if DIR already holds ca-cert.pem, peer-cert.pem and peer-key.pem).",
        discussion: "Give DIR (ca-key.pem aside: it only signs more certificates) to every `torus node` and `torus nbd serve` as --peer-tls DIR."))
    var tls: String?
    @Flag(help: "Peers speak plaintext: anyone who can reach a node's port and knows the cluster id can read and write blocks. For tests and trusted networks.")
    var insecure = false
    @Flag(help: "Overwrite the config of an existing cluster.") var force = false

    func validate() throws {
        guard (tls != nil) != insecure else {
            throw ValidationError(insecure ? "--tls and --insecure exclude each other"
                : "choose how peers talk: --tls DIR (mutual TLS between nodes and servers) or --insecure (plaintext, for tests)")
        }
    }

    func run() throws {
        let bs = try parseSize(blockSize, what: "--block-size")
        guard bs >= 4096, bs <= 1 << 20, bs.nonzeroBitCount == 1 else {
            throw ValidationError("--block-size must be a power of two between 4KiB and 1MiB")
        }
        guard replication >= 1, replication <= 16 else { throw ValidationError("--replication must be between 1 and 16") }
        try onEtcd(metadata) { meta in
            // Refused before any file is written (the transaction below still settles a race).
            if try !force && ClusterCatalog.exists(meta) {
                throw RuntimeError.badInput("\(meta.location) already holds a cluster (\(ClusterCatalog.configKey) exists); use --force to overwrite its config")
            }
            if let tls { try Self.preparePeerTLS(tls) }
            try ClusterCatalog.initialize(meta, .init(blockSize: Int(bs), replication: replication, peerTLS: tls != nil), force: force)
            say("torus: cluster created in \(meta.location): block size \(bs), replication \(replication), peers \(tls.map { "over mutual TLS (--peer-tls \($0))" } ?? "in plaintext (--insecure)")")
        }
    }
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
    @OptionGroup var etcdUser: EtcdUserOption

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
        try Self.render(status, location: location, ringVersion: ringVersion)
    }

    /// Draining nodes the collector's last pass, under ring version `ringVersion`, found
    /// holding nothing needed.
    static func drained(_ m: [String: String], ringVersion: UInt64) -> [UInt32] {
        guard m["ring-version"] == "\(ringVersion)" else { return [] }
        return (m["drained"] ?? "").split(separator: ",").compactMap { UInt32($0) }
    }
}

struct Peer: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Storage nodes of a cluster in etcd.", subcommands: [List.self, Drain.self, Remove.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the ring's nodes and whether they are alive.")
        @Option(help: ArgumentHelp("etcd endpoint(s): etcd://HOST:PORT[,HOST:PORT...] or https://HOST:PORT.", discussion: etcdTLSHelp)) var metadata: String
        @OptionGroup var etcdUser: EtcdUserOption

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
        @OptionGroup var etcdUser: EtcdUserOption

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
        @OptionGroup var etcdUser: EtcdUserOption

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
