import Logging
import NIOCore
import NIOPosix
import TorusCore

/// Starting and stopping: `torus up` opens its storage nodes and metadata store here, `torus nbd
/// serve` finds its nodes in etcd; both then open every volume and start the collector.
extension VolumeServer {
    /// Opens (or creates) the cluster in `config.dataDir` and every volume, and returns once all
    /// volumes are open for writing.
    public static func start(_ config: Configuration, group: EventLoopGroup, pool: NIOThreadPool) -> EventLoopFuture<VolumeServer> {
        if config.nodes == 0 { return startRemote(config, group: group, pool: pool) }
        let loop = group.next()
        return pool.runIfActive(eventLoop: loop) { () throws -> (any MetadataService, PeerClusterID, [(NodeID, FileDisk, BlockStore)]) in
            try makeDirectory(config.dataDir)
            let meta: any MetadataService
            if let url = config.metadata {
                meta = try EtcdMetadataService(url: url)
            } else {
                meta = try EmbeddedMetadataStore(directory: config.dataDir + "/metadata", now: SystemClock.now())
            }
            try checkClusterShape(meta, config)
            let clusterID = try loadClusterID(meta)
            var disks: [(NodeID, FileDisk, BlockStore)] = []
            let storeConfig = Self.storeConfig(config)
            for i in 1...config.nodes {
                let dir = config.dataDir + "/node-\(i)"
                try makeDirectory(dir)
                let (disk, store) = try StorageNodeServer.openStore(path: dir + "/blocks.data", config: storeConfig)
                disks.append((NodeID(UInt32(i)), disk, store))
            }
            return (meta, clusterID, disks)
        }.flatMap { meta, clusterID, disks in
            let ring = Ring(members: (1...config.nodes).map { RingMember(node: NodeID(UInt32($0))) })
            let cluster = VolumeServer(loop: loop, pool: pool, meta: meta, config: config, clusterID: clusterID, ring: ring)
            var listening: [EventLoopFuture<Void>] = []
            for (id, disk, store) in disks {
                // Nodes take the group's other loops first, so writers and nodes run in parallel.
                let server = StorageNodeServer(id: id, store: store, disk: disk, loop: group.next(), pool: pool,
                                               clusterID: clusterID)
                cluster.nodes[id] = server
                listening.append(server.loop.flatSubmit { server.start() }.hop(to: loop).map { port in
                    cluster.nodeAddresses[id] = ("127.0.0.1", port)
                })
            }
            return EventLoopFuture.andAllSucceed(listening, on: loop).flatMap {
                for id in cluster.nodes.keys.sorted() {
                    let address = "127.0.0.1:\(cluster.nodeAddresses[id]!.port)"
                    cluster.nodes[id]!.logger.info("peer protocol listening", metadata: ["address": "\(address)"])
                    cluster.nodes[id]!.startScrubbing(bytesPerSecond: config.scrubBytesPerSecond)
                    // Used and total bytes for the metrics (no-op without `--metrics`).
                    let server = cluster.nodes[id]!
                    _ = server.loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(5)) { _ in
                        let u = server.usage()
                        TorusMetrics.nodeUsage(node: id, used: u.usedBytes, capacity: u.capacityBytes)
                    }
                }
                cluster.leaseTimer = loop.scheduleRepeatedTask(initialDelay: .milliseconds(200), delay: .milliseconds(200)) { _ in
                    cluster.expireLeases()
                }
                return cluster.watchVolumes().flatMap { cluster.openVolumes() }.map {
                    cluster.startCollector()
                    return cluster
                }
            }
        }
    }

    /// `torus nbd serve`: writers and NBD only; the storage nodes are `torus node` processes
    /// found in etcd (`ClusterCatalog`). Volumes created, resized or deleted later are followed
    /// through a watch (`watchVolumes`).
    static func startRemote(_ config: Configuration, group: EventLoopGroup, pool: NIOThreadPool) -> EventLoopFuture<VolumeServer> {
        let loop = group.next()
        guard let url = config.metadata else {
            return loop.makeFailedFuture(RuntimeError.badInput("serving without local nodes needs --metadata etcd://..."))
        }
        return pool.runIfActive(eventLoop: loop) { () throws -> (any MetadataService, PeerClusterID, ClusterCatalog.Config, [ClusterCatalog.Member], UInt64) in
            let meta = try EtcdMetadataService(url: url)
            let shape = try ClusterCatalog.config(meta)
            try PeerTLS.check(clusterRequiresTLS: shape.peerTLS, given: config.peerTLS, location: meta.location)
            let members = try ClusterCatalog.members(meta)
            let active = members.filter { !$0.draining }.count
            guard active >= shape.replication else {
                throw RuntimeError.badInput("\(meta.location): the ring has \(active) active node(s), replication \(shape.replication) needs at least \(shape.replication); start more `torus node`s")
            }
            return (meta, try loadClusterID(meta), shape, members, try ClusterCatalog.ringVersion(meta))
        }.flatMap { meta, clusterID, shape, members, version in
            var config = config
            config.blockSize = shape.blockSize
            config.replication = shape.replication
            config.defaultVolume = nil
            let cluster = VolumeServer(loop: loop, pool: pool, meta: meta, config: config, clusterID: clusterID,
                                       ring: ClusterCatalog.ring(members, version: version))
            cluster.noteAddresses(members)
            for m in members {
                RuntimeLoggers.ring.info("ring member: zone \(m.zone.isEmpty ? "-" : m.zone)\(m.draining ? " (draining)" : "")",
                                         metadata: ["peer": "\(m.id)", "address": "\(m.address)"])
            }
            RuntimeLoggers.ring.info("ring: version \(cluster.ring.version)\(version == 0 ? " (none recorded: blocks are not rebalanced until a node registers)" : "")")
            return cluster.watchVolumes().flatMap { cluster.watchRing() }.flatMap { cluster.openVolumes() }.map {
                cluster.startCollector()
                return cluster
            }
        }
    }

    /// The cluster's identity for the peer protocol, made at the first start.
    static func loadClusterID(_ meta: any MetadataService) throws -> PeerClusterID {
        let key = "/torus/cluster/id"
        let kvs = try readKey(meta, key)
        if let kv = kvs.first {
            guard let id = PeerClusterID(kv.value) else { throw RuntimeError.metadata("\(key) is corrupt") }
            return id
        }
        var rng = SystemRandomNumberGenerator()
        let id = PeerClusterID((0..<PeerClusterID.size).map { _ in UInt8.random(in: 0...255, using: &rng) })!
        // Create-if-absent: two first starts racing on one etcd agree on one id.
        let r = try meta.apply(.txn(MetaTxn(compares: [MetaCompare(key: key, result: .equal, target: .createRevision(0))],
                                            success: [.put(key: key, value: id.bytes, lease: 0)])), now: SystemClock.now())
        guard case .txn(let t) = r else { throw RuntimeError.metadata("\(meta.location): writing \(key): \(r)") }
        return t.succeeded ? id : try loadClusterID(meta)
    }

    /// The values at `key` (zero or one), or an error naming the metadata store.
    static func readKey(_ meta: any MetadataService, _ key: String) throws -> [MetaKeyValue] {
        let r = try meta.apply(.txn(MetaTxn(success: [.range(key: key, prefix: false)])), now: SystemClock.now())
        if case .error(let e) = r { throw RuntimeError.metadata("\(meta.location): reading \(key): \(e)") }
        guard case .txn(let t) = r, case .range(let kvs) = t.results.first else {
            throw RuntimeError.metadata("\(meta.location): unexpected reply reading \(key): \(r)")
        }
        return kvs
    }

    /// The node count fixes where every block lives (the ring). It is recorded at the first
    /// start; a later start with another count is refused instead of losing track of data.
    static func checkClusterShape(_ meta: any MetadataService, _ config: Configuration) throws {
        let key = "/torus/cluster/nodes"
        let now = SystemClock.now()
        let kvs = try readKey(meta, key)
        if let kv = kvs.first {
            guard let nodes = MetaValue.u64(kv.value) else { throw RuntimeError.metadata("\(key) is corrupt") }
            guard nodes == UInt64(config.nodes) else {
                throw RuntimeError.badInput("\(config.dataDir) holds a cluster of \(nodes) nodes; start it with --nodes \(nodes) "
                    + "(changing the node count needs rebalancing, which is not supported yet)")
            }
            return
        }
        _ = try meta.apply(.txn(MetaTxn(success: [.put(key: key, value: MetaValue.u64(UInt64(config.nodes)), lease: 0)])), now: now)
    }

    static func storeConfig(_ config: Configuration) -> BlockStoreConfig {
        StorageNodeServer.storeConfig(blockSize: config.blockSize, diskBytes: config.diskBytes)
    }

    /// Flushes every volume, then gives up the writers' leases (so a restart need not wait
    /// for them to expire) and stops the timers.
    public func shutdown() -> EventLoopFuture<Void> {
        loop.submit {
            self.volumeWatch?.cancel()
            self.volumeWatch = nil
            self.ringWatch?.cancel()
            self.ringWatch = nil
            self.stopCollector()
        }.flatMap { self.flushAll() }.flatMap { () -> EventLoopFuture<Void> in
            self.leaseTimer?.cancel()
            var revokes: [EventLoopFuture<Void>] = []
            for name in self.volumes.keys.sorted() {
                let host = self.volumes[name]!
                host.ticks.cancel()
                host.generation += 1  // nothing more reaches this writer
                let lease = host.client.leaseID
                if lease != 0 {
                    revokes.append(self.metaApply(.leaseRevoke(id: lease)).map { _ in }.recover { _ in })
                }
            }
            return EventLoopFuture.andAllComplete(revokes, on: self.loop)
        }.flatMap { () -> EventLoopFuture<Void> in
            // Stop the nodes and close their data files (releasing their locks).
            let stopping = self.nodes.keys.sorted().map { id -> EventLoopFuture<Void> in
                let server = self.nodes[id]!
                return server.stop().hop(to: self.loop).flatMap {
                    self.pool.runIfActive(eventLoop: self.loop) { server.disk.close() }
                }
            }
            return EventLoopFuture.andAllComplete(stopping, on: self.loop)
        }.always { _ in
            self.metaPool.shutdownGracefully { _ in }
            self.leasePool.shutdownGracefully { _ in }
        }
    }
}
