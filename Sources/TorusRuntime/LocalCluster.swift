import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TorusCore
import TorusNBD

#if canImport(Glibc)
import Glibc
#endif

/// A whole cluster in one process: `nodes` storage nodes on file disks under `dataDir`, the
/// embedded metadata store, and one writer per volume. The writers (and the metadata store's
/// driver) are confined to `loop`; each storage node to its own loop of the group. Writers
/// and nodes talk over TCP on loopback ports (the peer protocol, PeerTransport.swift). Disk
/// I/O and metadata fsyncs run on a thread pool and come back to the owning loop as inputs.
public final class LocalCluster: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var dataDir: String
        public var nodes: Int
        public var replication: Int
        public var blockSize: Int
        public var diskBytes: UInt64
        /// Volumes to create if missing (name, size).
        public var volumes: [(String, UInt64)]
        /// Created when no volume is given and the cluster has none yet.
        public var defaultVolume: (String, UInt64)? = ("vol0", 1 << 30)
        /// Metadata in etcd (`etcd://host:port[,host:port]`) instead of the embedded store in
        /// `dataDir/metadata`.
        public var metadata: String?
        /// Serve every volume read-only: no writer lock, so this runs next to the writer
        /// (`torus nbd serve --read-only`); reads see the last committed state.
        public var readOnly = false
        /// Writers reach nodes of this process over loopback TCP (the peer protocol) instead of
        /// handing messages to the node's event loop directly. Slower; tests use it to cover
        /// the wire path inside `torus up`.
        public var peerOverTCP = false
        /// Write-back cache of each volume's writer: dirty blocks, and written-back blocks until
        /// their replicas synced them. Half of it may be dirty, three quarters unsynced, before
        /// write-back and syncs start without waiting.
        public var cacheBytes = 1 << 30
        /// Unsynced blocks are synced at least this often (`VolumeClientConfig.syncDelay`).
        public var syncDelay = Nanoseconds.seconds(5)
        /// A dirty block is written back once it has been dirty this long, or sooner when dirty
        /// blocks fill half the cache or a FLUSH asks (`VolumeClientConfig.writebackDelay`).
        public var writebackDelay = Nanoseconds.seconds(5)
        /// Every write-back put is durable (`VolumeClientConfig.durableWriteback`).
        public var durableWrites = false
        /// Garbage collection passes this often (nil: off); garbage is deleted once it has
        /// been garbage for `gcGrace`.
        public var gcInterval: Nanoseconds? = .seconds(60)
        public var gcGrace = Nanoseconds.seconds(30)
        /// A node not answering for this long is treated as lost: its blocks are copied
        /// elsewhere, at most `repairBytesPerSecond` (0: unthrottled).
        public var repairGrace = Nanoseconds.seconds(600)
        public var repairBytesPerSecond: UInt64 = 64 << 20
        /// How long a new ring is in force before old copies are deleted (`CollectorConfig.ringSettle`).
        public var ringSettle = Nanoseconds.seconds(30)
        /// Each local node verifies stored blocks at this many bytes per second (0: off).
        public var scrubBytesPerSecond: UInt64 = 4 << 20
        public init(dataDir: String, nodes: Int = 3, replication: Int = 2, blockSize: Int = 64 << 10,
                    diskBytes: UInt64 = 2 << 30, volumes: [(String, UInt64)] = []) {
            self.dataDir = dataDir
            self.nodes = nodes
            self.replication = replication
            self.blockSize = blockSize
            self.diskBytes = diskBytes
            self.volumes = volumes
        }
    }

    /// Confined to the cluster's event loop.
    final class VolumeHost: PeerLinkOwner, @unchecked Sendable {
        var client: VolumeClient
        var adapter: ByteRangeAdapter
        var pending: [UInt64: EventLoopPromise<[ArraySlice<UInt8>]>] = [:]
        var nextRequest: UInt64 = 1
        var timer: Scheduled<Void>?
        var timerAt: Instant?
        /// A later tick the writer asked for while an earlier one was scheduled: the writer
        /// does not ask again, so it is scheduled when the earlier one has fired.
        var laterTick: Instant?
        var ready: EventLoopPromise<Void>?
        /// Connections to the storage nodes, and those written to since the last flush.
        var links: [NodeID: PeerLink] = [:]
        var linksToFlush: [PeerLink] = []
        /// Bumped when a fenced writer is replaced: replies and timers of an older writer are dropped.
        var generation = 0
        /// The size a resize asked the writer for (it grows once no flush is in flight).
        var growingTo: UInt64 = 0
        let label: String
        /// Where node messages go: the cluster's `clientReceived` for this volume.
        let deliver: @Sendable (NodeID, PeerLink, PeerMessage) -> Void
        var peerID: NodeID { client.clientID }
        init(client: VolumeClient, adapter: ByteRangeAdapter, deliver: @escaping @Sendable (NodeID, PeerLink, PeerMessage) -> Void) {
            self.client = client
            self.adapter = adapter
            self.label = "volume \(client.info.name)"
            self.deliver = deliver
        }
        func received(from node: NodeID, via link: PeerLink, _ msg: PeerMessage) { deliver(node, link, msg) }
    }

    public let loop: EventLoop
    let pool: NIOThreadPool
    /// Metadata requests (lease keep-alives, commits) run on a thread of their own, so they
    /// never wait behind disk I/O: a keep-alive queued behind seconds of fdatasync let a
    /// writer's lease expire under a heavy sequential write.
    let metaPool: NIOThreadPool
    /// Lease keep-alives get a thread of their own too: a commit or a listing that waits on a
    /// slow fsync (etcd's or ours) must not hold up the keep-alive that keeps a writer alive.
    let leasePool: NIOThreadPool
    /// Leases with a keep-alive queued or running (on `loop`): never more than one each.
    var keepAlivesInFlight: Set<Int64> = []
    /// When each lease's last keep-alive was sent (for the log when they stall).
    var lastKeepAlive: [Int64: Instant] = [:]
    let meta: any MetadataService
    let config: Configuration
    /// The placement ring; in `torus nbd serve` it follows etcd (LocalCluster+Ring.swift).
    var ring: Ring
    var ringWatch: (any MetadataWatch)?
    /// The storage nodes this process runs (all of them in `torus up`).
    var nodes: [NodeID: StorageNodeServer] = [:]
    /// Where writers reach each node of the ring.
    var nodeAddresses: [NodeID: (host: String, port: Int)] = [:]
    var volumes: [String: VolumeHost] = [:]
    /// The garbage collector (`torus up` only).
    var collectorHost: CollectorHost?
    var leaseTimer: RepeatedTask?
    /// Follows `/torus/volumes/`: volumes created, resized or deleted by any process.
    var volumeWatch: (any MetadataWatch)?
    let directory: VolumeDirectory
    /// Sent in HELLO: nodes refuse peers of another cluster.
    let clusterID: PeerClusterID

    init(loop: EventLoop, pool: NIOThreadPool, meta: any MetadataService, config: Configuration, clusterID: PeerClusterID, ring: Ring) {
        self.loop = loop
        self.pool = pool
        metaPool = NIOThreadPool(numberOfThreads: 1)
        metaPool.start()
        leasePool = NIOThreadPool(numberOfThreads: 1)
        leasePool.start()
        self.meta = meta
        self.config = config
        self.clusterID = clusterID
        self.ring = ring
        directory = VolumeDirectory()
    }

    /// Opens (or creates) the cluster in `config.dataDir` and every volume, and returns once all
    /// volumes are open for writing.
    public static func start(_ config: Configuration, group: EventLoopGroup, pool: NIOThreadPool) -> EventLoopFuture<LocalCluster> {
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
            let cluster = LocalCluster(loop: loop, pool: pool, meta: meta, config: config, clusterID: clusterID, ring: ring)
            var listening: [EventLoopFuture<Void>] = []
            for (id, disk, store) in disks {
                // Nodes take the group's other loops first, so writers and nodes run in parallel.
                let server = StorageNodeServer(id: id, store: store, disk: disk, loop: group.next(), pool: pool,
                                               clusterID: clusterID, log: runtimeLog)
                cluster.nodes[id] = server
                listening.append(server.loop.flatSubmit { server.start() }.hop(to: loop).map { port in
                    cluster.nodeAddresses[id] = ("127.0.0.1", port)
                })
            }
            return EventLoopFuture.andAllSucceed(listening, on: loop).flatMap {
                for id in cluster.nodes.keys.sorted() {
                    cluster.log("node \(id): peer protocol on 127.0.0.1:\(cluster.nodeAddresses[id]!.port)")
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
    static func startRemote(_ config: Configuration, group: EventLoopGroup, pool: NIOThreadPool) -> EventLoopFuture<LocalCluster> {
        let loop = group.next()
        guard let url = config.metadata else {
            return loop.makeFailedFuture(RuntimeError.badInput("serving without local nodes needs --metadata etcd://..."))
        }
        return pool.runIfActive(eventLoop: loop) { () throws -> (any MetadataService, PeerClusterID, ClusterCatalog.Config, [ClusterCatalog.Member], UInt64) in
            let meta = try EtcdMetadataService(url: url)
            let shape = try ClusterCatalog.config(meta)
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
            let cluster = LocalCluster(loop: loop, pool: pool, meta: meta, config: config, clusterID: clusterID,
                                       ring: ClusterCatalog.ring(members, version: version))
            cluster.noteAddresses(members)
            for m in members {
                cluster.log("node \(m.id): \(m.address) zone \(m.zone.isEmpty ? "-" : m.zone)\(m.draining ? " (draining)" : "")")
            }
            cluster.log("ring: version \(cluster.ring.version)" + (version == 0 ? " (none recorded: blocks are not rebalanced until a node registers)" : ""))
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

    func log(_ line: String) { runtimeLog(line) }

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

    // MARK: - Volumes

    /// Creates missing volumes, then opens every volume the metadata store knows.
    func openVolumes() -> EventLoopFuture<Void> {
        var chain = loop.makeSucceededVoidFuture()
        for (name, size) in config.volumes {
            chain = chain.flatMap { self.createVolume(name: name, sizeBytes: size, ifMissing: true).map { _ in } }
        }
        return chain.flatMap { self.listVolumes() }.flatMap { infos in
            if infos.isEmpty, self.config.volumes.isEmpty, let (name, size) = self.config.defaultVolume {
                return self.createVolume(name: name, sizeBytes: size, ifMissing: true).map { [$0] }
            }
            return self.loop.makeSucceededFuture(infos)
        }.flatMap { infos in
            EventLoopFuture.andAllSucceed(infos.map { self.openVolume($0) }, on: self.loop)
        }
    }

    public func listVolumes() -> EventLoopFuture<[VolumeInfo]> {
        let meta = self.meta
        return metaPool.runIfActive(eventLoop: loop) { try ClusterCatalog.listVolumes(meta) }
    }

    /// Creates a volume; with `ifMissing`, an existing volume of that name is returned instead.
    public func createVolume(name: String, sizeBytes: UInt64, ifMissing: Bool = false) -> EventLoopFuture<VolumeInfo> {
        let meta = self.meta, blockSize = config.blockSize, replication = config.replication
        return metaPool.runIfActive(eventLoop: loop) {
            try ClusterCatalog.createVolume(meta, name: name, sizeBytes: sizeBytes, blockSize: blockSize,
                                            replication: replication, ifMissing: ifMissing)
        }
    }

    static func validName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.unicodeScalars.allSatisfy { ($0.properties.isASCIIHexDigit || ("a"..."z").contains($0) || ("A"..."Z").contains($0) || "-_.".unicodeScalars.contains($0)) }
    }

    func openVolume(_ info: VolumeInfo) -> EventLoopFuture<Void> {
        if volumes[info.name] != nil { return loop.makeSucceededVoidFuture() }
        let name = info.name
        let host = VolumeHost(client: makeWriter(info), adapter: ByteRangeAdapter(sectorSize: 4096, volumeSize: info.sizeBytes)) { node, link, msg in
            self.clientReceived(name, from: node, via: link, msg)
        }
        let ready = loop.makePromise(of: Void.self)
        host.ready = ready
        volumes[info.name] = host
        directory.set(export(info))
        handleClient(info.name, host.client.start(now: SystemClock.now()))
        return ready.futureResult
    }

    func export(_ info: VolumeInfo) -> NBDExport {
        NBDExport(name: info.name, size: info.sizeBytes, readOnly: config.readOnly, multiConn: true,
                  description: "torus volume \(info.name)" + (config.readOnly ? " (read-only)" : ""),
                  payloadChunkBytes: info.blockSize)
    }

    func makeWriter(_ info: VolumeInfo) -> VolumeClient {
        var cfg = VolumeClientConfig()
        cfg.readOnly = config.readOnly
        cfg.leaseTTLSeconds = 10
        // Enough write-backs in flight to keep a node's group commit busy: 64 -> 256 raised
        // 1 MiB sequential writes by about a third (Benchmarks/nbd-bench.sh).
        cfg.writebacksInFlightMax = 256
        // Deferred syncing (docs/storage-core.md, "Volume writer and commit"): a node answers a
        // put once the bytes are written and a FLUSH syncs them, so a block rewritten before
        // then costs no disk sync, like a disk's volatile write cache. 4 KiB random writes at
        // QD32: ~13k IOPS durable, ~38k deferred (Benchmarks/results/results-2026-11-26-g.txt). The
        // cache holds every unsynced block, so it is big; half of it may be dirty.
        cfg.cacheBytesMax = config.cacheBytes
        cfg.dirtyBytesHigh = config.cacheBytes / 2
        cfg.durableWriteback = config.durableWrites
        cfg.unsyncedBytesHigh = config.cacheBytes / 4 * 3
        cfg.syncDelay = config.syncDelay
        // Like the kernel's page cache (dirty_expire_centisecs, 30 s), the writer lets a dirty
        // block wait before writing it back, so a block rewritten meanwhile is written back
        // once. 500 ms -> 5 s: 1 MiB sequential rewrites 1,100 -> 1,875 MB/s, 4 KiB random
        // writes 31.7k -> 49.4k IOPS (one node). Dirty blocks stay capped at half the cache,
        // so a FLUSH has no more to write back than before.
        cfg.writebackDelay = config.writebackDelay
        // Storage nodes route replies by the client's id, so every writer or reader of every
        // process needs its own (two servers of one volume shared one, and the second one's
        // connection took the first one's replies). Node ids are small; these are not.
        var rng = SystemRandomNumberGenerator()
        let clientID = NodeID(UInt32.random(in: 1_000_000...UInt32.max - 1, using: &rng))
        return VolumeClient(info: info, ring: ring, clientID: clientID, config: cfg, seed: info.id)
    }

    /// A writer that was fenced after it opened (its lease expired, e.g. when the process was
    /// stopped for longer than the lease) is replaced by a new one, which waits for the lease
    /// and takes a new epoch. Writes it had not flushed are gone, as after a crash, so the NBD
    /// connections that used it are closed (their clients see the failure instead of a silent
    /// loss) and new connections get the new writer.
    func replaceFencedWriter(_ name: String, _ host: VolumeHost) {
        host.generation += 1
        let generation = host.generation
        directory.bumpGeneration(name)
        closeLinks(host)
        host.timer?.cancel()
        host.timer = nil
        host.timerAt = nil
        loop.scheduleTask(in: .seconds(1)) {
            guard self.volumes[name] === host, host.generation == generation else { return }
            self.log("volume \(name): opening a new writer")
            host.client = self.makeWriter(host.client.info)
            self.handleClient(name, host.client.start(now: SystemClock.now()))
        }
    }

    /// Deletes a volume: it stops being served, requests in flight fail, its metadata goes.
    /// Its blocks stay on the nodes until the garbage collector's next pass finds them.
    public func deleteVolume(name: String) -> EventLoopFuture<Void> {
        loop.assertInEventLoop()
        guard volumes[name] != nil else {
            return loop.makeFailedFuture(RuntimeError.badInput("no volume named '\(name)'"))
        }
        stopServing(name, reason: "volume '\(name)' was deleted")
        let meta = self.meta
        return metaPool.runIfActive(eventLoop: loop) { try ClusterCatalog.deleteVolume(meta, name: name) }
    }

    /// Stops serving a volume: its NBD connections close, requests in flight fail, its writer
    /// gives up its lease.
    func stopServing(_ name: String, reason: String) {
        guard let host = volumes[name] else { return }
        directory.remove(name)
        directory.bumpGeneration(name)
        host.timer?.cancel()
        host.generation += 1
        volumes[name] = nil
        closeLinks(host)
        for id in host.pending.keys.sorted() {
            host.pending[id]!.fail(RuntimeError.badInput(reason))
        }
        host.pending.removeAll()
        if host.client.leaseID != 0 {
            _ = metaApply(.leaseRevoke(id: host.client.leaseID))
        }
    }

    /// Grows a volume: in the metadata store, then (through the watch, or at once here) in its
    /// writer. New NBD connections see the new size; open ones keep the size they negotiated.
    public func resizeVolume(name: String, sizeBytes: UInt64) -> EventLoopFuture<VolumeInfo> {
        let meta = self.meta
        return metaPool.runIfActive(eventLoop: loop) { try ClusterCatalog.resizeVolume(meta, name: name, sizeBytes: sizeBytes) }
            .map { old, new in
                self.reconcile(new)
                return new
            }
    }

    // MARK: - Following the volumes in the metadata store

    /// Starts the watch on `/torus/volumes/` (before the first listing, so nothing created in
    /// between is missed; changes already seen are idempotent).
    func watchVolumes() -> EventLoopFuture<Void> {
        let meta = self.meta, loop = self.loop
        return metaPool.runIfActive(eventLoop: loop) { () throws -> any MetadataWatch in
            try meta.watch(key: VolumeInfo.volumesPrefix, prefix: true, fromRevision: 0) { update in
                loop.execute { self.volumesChanged(update) }
            }
        }.map { watch in
            self.volumeWatch = watch
        }
    }

    func volumesChanged(_ update: MetadataWatchUpdate) {
        loop.assertInEventLoop()
        guard volumeWatch != nil else { return }  // shutting down
        switch update {
        case .events(let events):
            for e in events {
                let key = e.kv.key
                guard key.hasPrefix(VolumeInfo.volumesPrefix), key.hasSuffix("/info") else { continue }
                let name = String(key.dropFirst(VolumeInfo.volumesPrefix.count).dropLast("/info".count))
                switch e.kind {
                case .put:
                    guard let info = VolumeInfo.decode(e.kv.value) else {
                        log("volume \(name): \(key) is corrupt; not serving it")
                        continue
                    }
                    reconcile(info)
                case .delete:
                    if volumes[name] != nil {
                        log("volume \(name): deleted in \(meta.location); no longer serving it")
                        stopServing(name, reason: "volume '\(name)' was deleted")
                    }
                }
            }
        case .resync(_, let reason):
            log("volumes: \(reason); re-reading the volume list")
            listVolumes().whenSuccess { infos in
                let listed = Set(infos.map(\.name))
                for name in self.volumes.keys.sorted() where !listed.contains(name) {
                    self.log("volume \(name): no longer in \(self.meta.location); no longer serving it")
                    self.stopServing(name, reason: "volume '\(name)' was deleted")
                }
                for info in infos { self.reconcile(info) }
            }
        }
    }

    /// Brings what is served in line with one volume's description.
    func reconcile(_ info: VolumeInfo) {
        loop.assertInEventLoop()
        guard let host = volumes[info.name] else {
            log("volume \(info.name): found in \(meta.location); serving it")
            _ = openVolume(info)
            return
        }
        let current = host.client.info
        if info.id != current.id {
            log("volume \(info.name): recreated (id \(current.id) -> \(info.id)); serving the new one")
            stopServing(info.name, reason: "volume '\(info.name)' was recreated")
            _ = openVolume(info)
        } else if info.sizeBytes > max(current.sizeBytes, host.growingTo) {
            log("volume \(info.name): growing from \(current.sizeBytes) to \(info.sizeBytes) bytes")
            host.growingTo = info.sizeBytes
            handleClient(info.name, host.client.grow(to: info, now: SystemClock.now()))
        }
    }

    /// Serves one byte-granular request on a volume; fails with `VolumeError` or `RuntimeError`.
    /// Read data comes as parts to concatenate (see `ByteRangeAdapter.Output.complete`).
    public func submit(volume: String, _ request: ByteRangeAdapter.Request) -> EventLoopFuture<[ArraySlice<UInt8>]> {
        loop.assertInEventLoop()
        guard let host = volumes[volume] else {
            return loop.makeFailedFuture(RuntimeError.badInput("no volume named '\(volume)'"))
        }
        let id = host.nextRequest
        host.nextRequest += 1
        let promise = loop.makePromise(of: [ArraySlice<UInt8>].self)
        host.pending[id] = promise
        performAdapter(volume, host.adapter.request(id, request))
        return promise.futureResult
    }

    /// Flushes every volume (used on shutdown).
    public func flushAll() -> EventLoopFuture<Void> {
        loop.flatSubmit {
            EventLoopFuture.andAllSucceed(self.volumes.keys.sorted().map { self.submit(volume: $0, .flush).map { _ in } }, on: self.loop)
        }
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
                host.timer?.cancel()
                host.timer = nil
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

    public func exports() -> [NBDExport] { directory.all() }
    public var volumeDirectory: VolumeDirectory { directory }

    // MARK: - Effects

    func performAdapter(_ volume: String, _ outputs: [ByteRangeAdapter.Output]) {
        guard let host = volumes[volume] else { return }
        for o in outputs {
            switch o {
            case .submit(let op, let vop):
                handleClient(volume, host.client.submit(op, vop, now: SystemClock.now()))
            case .complete(let id, let result):
                guard let p = host.pending.removeValue(forKey: id) else { continue }
                switch result {
                case .success(let data): p.succeed(data)
                case .failure(let e): p.fail(e)
                }
            }
        }
    }

    func handleClient(_ volume: String, _ outputs: [ClientOutput]) {
        guard let host = volumes[volume] else { return }
        var replaceWriter = false
        defer {
            flushLinks(host)
            if host.client.info.sizeBytes > host.adapter.volumeSize { grew(volume, host) }
            if replaceWriter { replaceFencedWriter(volume, host) }
        }
        let generation = host.generation
        for o in outputs {
            switch o {
            case .send(let to, let msg):
                clientSend(host, to: to, msg)
            case .metadata(let id, let req):
                metaResponse(req).whenSuccess { response in
                    guard host.generation == generation else { return }  // for a replaced writer
                    self.handleClient(volume, host.client.metadataReply(id, response, now: SystemClock.now()))
                }
            case .timer(let at):
                scheduleTick(volume, host, at: at)
            case .complete(let op, let result):
                performAdapter(volume, host.adapter.opCompleted(op, result))
            case .phaseChanged(let phase):
                let wasOpen = host.ready == nil
                if phase == .ready, let p = host.ready {
                    host.ready = nil
                    p.succeed(())
                } else if phase == .fenced, let p = host.ready {
                    host.ready = nil
                    p.fail(RuntimeError.metadata("volume \(volume) could not be opened: writer fenced"))
                }
                log("volume \(volume): writer \(phase)\(phase == .fenced ? ": " + host.client.fenceReason : "")")
                if phase == .fenced && wasOpen && volumes[volume] === host { replaceWriter = true }
            }
        }
    }

    /// The writer took a new size: requests up to it are accepted, new NBD connections see it.
    func grew(_ volume: String, _ host: VolumeHost) {
        let info = host.client.info
        host.adapter.volumeSize = info.sizeBytes
        directory.set(export(info))
        log("volume \(volume): now \(info.sizeBytes) bytes")
    }

    /// Keeps one timer per writer at the earliest tick it asked for, and never forgets a later
    /// one: a writer asks for each tick once, and an idle writer whose tick is lost stops
    /// renewing its lease (it was fenced after ~10 s idle once a later request was dropped).
    func scheduleTick(_ volume: String, _ host: VolumeHost, at: Instant) {
        if let current = host.timerAt, current <= at {
            if at > current { host.laterTick = max(host.laterTick ?? at, at) }
            return
        }
        if let current = host.timerAt { host.laterTick = max(host.laterTick ?? current, current) }
        host.timer?.cancel()
        host.timerAt = at
        host.timer = loop.scheduleTask(deadline: SystemClock.deadline(at)) {
            host.timerAt = nil
            host.timer = nil
            let later = host.laterTick
            host.laterTick = nil
            guard self.volumes[volume] === host else { return }
            self.handleClient(volume, host.client.tick(now: SystemClock.now()))
            if let later, self.volumes[volume] === host { self.scheduleTick(volume, host, at: later) }
        }
    }

    /// A writer's message arrived from a node (on the cluster loop).
    func clientReceived(_ volume: String, from node: NodeID, via link: PeerLink, _ msg: PeerMessage) {
        loop.assertInEventLoop()
        // Only the current connection counts: an older one may carry replies to a replaced writer.
        guard let v = volumes[volume], v.links[node] === link else { return }
        handleClient(volume, v.client.receive(from: node, msg, now: SystemClock.now()))
    }

    func metaApply(_ request: MetaRequest) -> EventLoopFuture<MetaResponse> {
        let meta = self.meta
        let queued = SystemClock.now()
        var pool = metaPool
        if case .leaseKeepAlive(let id) = request {
            loop.assertInEventLoop()
            guard keepAlivesInFlight.insert(id).inserted else {
                // The writer timed out the previous one; it retries after this answer.
                return loop.makeSucceededFuture(.error(.unavailable("a keep-alive of lease \(id) is still in flight")))
            }
            pool = leasePool
        }
        let response = pool.runIfActive(eventLoop: loop) { () throws -> MetaResponse in
            let started = SystemClock.now()
            let response = try meta.apply(request, now: started)
            let done = SystemClock.now()
            if done - queued > .milliseconds(1000) {
                self.log("slow metadata request: \((started - queued).value / 1_000_000) ms queued, "
                    + "\((done - started).value / 1_000_000) ms to apply and sync (\(request.kindName))")
            }
            return response
        }
        if case .leaseKeepAlive(let id) = request {
            let previous = lastKeepAlive[id]
            lastKeepAlive[id] = queued
            if let previous, queued - previous > .seconds(5) {
                log("lease \(id): keep-alive sent \((queued - previous).value / 1_000_000) ms after the previous one")
            }
            response.whenComplete { result in
                self.keepAlivesInFlight.remove(id)
                switch result {
                case .success(.lease(_, let ttl)) where ttl > 0: break
                case .success(let r): self.log("lease \(id): keep-alive answered \(r)")
                case .failure(let e): self.log("lease \(id): keep-alive failed: \(e)")
                }
            }
        }
        return response
    }

    /// `metaApply` with a failure turned into the `.error` response a state machine expects.
    func metaResponse(_ request: MetaRequest) -> EventLoopFuture<MetaResponse> {
        metaApply(request).recover { .error(.unavailable("\($0)")) }
    }

    func expireLeases() {
        let meta = self.meta
        _ = metaPool.runIfActive(eventLoop: loop) { try meta.expireLeases(now: SystemClock.now()) }
    }
}

/// The exports the NBD server offers, readable from any thread.
public final class VolumeDirectory: @unchecked Sendable {
    private let lock = NIOLock()
    private var exports: [String: NBDExport] = [:]

    public func set(_ e: NBDExport) { lock.withLock { exports[e.name] = e } }
    public func remove(_ name: String) { _ = lock.withLock { exports.removeValue(forKey: name) } }
    public func lookup(_ name: String) -> NBDExport? { lock.withLock { exports[name] } }
    /// Changes when the volume's writer is replaced; connections of an older one must close.
    private var generations: [String: Int] = [:]
    public func bumpGeneration(_ name: String) { lock.withLock { generations[name, default: 0] += 1 } }
    public func generation(_ name: String) -> Int { lock.withLock { generations[name] ?? 0 } }
    public func all() -> [NBDExport] { lock.withLock { exports.values.sorted { $0.name < $1.name } } }
}

public enum RuntimeError: Error, CustomStringConvertible {
    case badInput(String)
    case metadata(String)
    case io(String)

    public var description: String {
        switch self {
        case .badInput(let s), .metadata(let s), .io(let s): s
        }
    }
}

func makeDirectory(_ path: String) throws {
    if mkdir(path, 0o755) != 0 && errno != EEXIST {
        throw RuntimeError.io("cannot create directory \(path): \(String(cString: strerror(errno)))")
    }
}

extension MetaRequest {
    /// A short name for logs.
    var kindName: String {
        switch self {
        case .txn: "txn"
        case .leaseGrant: "lease grant"
        case .leaseKeepAlive: "lease keep-alive"
        case .leaseRevoke: "lease revoke"
        case .leaseTimeToLive: "lease time-to-live"
        }
    }
}

/// Log lines of the runtime: one line each, flushed at once (they go to the terminal or the
/// log file of `torus up`).
@Sendable func runtimeLog(_ line: String) {
    TorusLogging.runtime.info("\(line)")
}
