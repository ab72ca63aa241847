import Logging
import NIOCore
import NIOPosix
import TorusCore

#if canImport(Glibc)
import Glibc
#endif

/// `torus node`: one storage node process. It keeps its identity in `DATA_DIR/node.id`, its
/// blocks in `DATA_DIR/blocks.data`, joins the ring in etcd (`ClusterCatalog`) and keeps a
/// liveness key under a lease alive while it runs.
public final class NodeDaemon: @unchecked Sendable {
    public let server: StorageNodeServer
    let meta: any MetadataService
    let pool: NIOThreadPool
    let address: String
    var lease: Int64 = 0
    /// The usage last written to etcd (rewritten only when it changes).
    var publishedUsage: [UInt8] = []
    var heartbeat: RepeatedTask?
    /// Heartbeats run on a thread of their own: never behind disk I/O on `pool`.
    let heartbeatPool = NIOThreadPool(numberOfThreads: 1)
    static let leaseTTLSeconds: Int64 = 10

    init(server: StorageNodeServer, meta: any MetadataService, pool: NIOThreadPool, address: String) {
        self.server = server
        self.meta = meta
        self.pool = pool
        self.address = address
    }

    /// Opens (or creates) the node and registers it; blocks until it serves.
    public static func start(metadata url: String, dataDir: String, sizeBytes: UInt64, listen: String, advertise: String?,
                             zone: String, scrubBytesPerSecond: UInt64 = 4 << 20, tls: PeerTLS? = nil,
                             group: EventLoopGroup, pool: NIOThreadPool) throws -> NodeDaemon {
        let meta = try EtcdMetadataService(url: url)
        let shape = try ClusterCatalog.config(meta)
        try PeerTLS.check(clusterRequiresTLS: shape.peerTLS, given: tls, location: meta.location)
        let clusterID = try VolumeServer.loadClusterID(meta)
        try makeDirectory(dataDir)
        let id = try loadOrAllocateID(dataDir + "/node.id", meta)
        let storeConfig = StorageNodeServer.storeConfig(blockSize: shape.blockSize, diskBytes: sizeBytes)
        let (disk, store) = try StorageNodeServer.openStore(path: dataDir + "/blocks.data", config: storeConfig)
        let endpoint: HostPort
        do {
            endpoint = try HostPort(parsing: listen)
        } catch {
            throw RuntimeError.badInput("--listen '\(listen)' must be HOST:PORT (\(error))")
        }
        let (host, port) = (endpoint.host, endpoint.port)
        let server = StorageNodeServer(id: id, store: store, disk: disk, loop: group.next(), pool: pool,
                                       clusterID: clusterID, inlineWriteMax: .max, tls: tls)
        let bound = try server.loop.flatSubmit { server.start(host: host, port: port) }.wait()
        let address = advertise ?? "\(host):\(bound)"
        try ClusterCatalog.register(meta, ClusterCatalog.Member(id: id, address: address, zone: zone, capacityBytes: sizeBytes))
        server.startScrubbing(bytesPerSecond: scrubBytesPerSecond)
        let daemon = NodeDaemon(server: server, meta: meta, pool: pool, address: address)
        try daemon.renewLiveness()
        daemon.heartbeatPool.start()
        daemon.heartbeat = server.loop.scheduleRepeatedTask(initialDelay: .seconds(3), delay: .seconds(3)) { _ in
            let usage = server.usage()
            TorusMetrics.nodeUsage(node: id, used: usage.usedBytes, capacity: usage.capacityBytes)
            _ = daemon.heartbeatPool.runIfActive(eventLoop: server.loop) {
                do {
                    try daemon.renewLiveness()
                    try daemon.publish(usage)
                } catch {
                    // Retried on the next beat, 3 s later.
                    server.logger.warning("heartbeat failed: \(error)")
                }
            }
        }
        // `node ID: ` starts the line for scripts that read the node's id from its log.
        server.logger.info("node \(id): serving on \(host):\(bound) (advertised as \(address)), \(sizeBytes) bytes in \(dataDir), \(meta.location)",
                           metadata: ["address": "\(address)"])
        return daemon
    }

    /// Keeps the lease alive, or takes a new one (after etcd was unreachable for longer than
    /// the TTL) and writes the liveness key under it. Runs on the pool.
    func renewLiveness() throws {
        if lease != 0, case .lease(_, let ttl) = try meta.apply(.leaseKeepAlive(id: lease), now: SystemClock.now()), ttl > 0 {
            return
        }
        guard case .lease(let id, _) = try meta.apply(.leaseGrant(ttlSeconds: Self.leaseTTLSeconds, id: 0), now: SystemClock.now()) else {
            throw RuntimeError.metadata("\(meta.location): cannot grant the node's lease")
        }
        lease = id
        publishedUsage = []  // the old lease took the usage key with it
        let key = ClusterCatalog.alivePrefix + "\(server.id.raw)/alive"
        guard case .txn = try meta.apply(.txn(MetaTxn(success: [.put(key: key, value: Array(address.utf8), lease: id)])), now: SystemClock.now()) else {
            throw RuntimeError.metadata("\(meta.location): cannot write \(key)")
        }
    }

    /// Writes the node's usage (`ClusterCatalog.Usage`) under its lease when it changed.
    func publish(_ usage: ClusterCatalog.Usage) throws {
        let value = usage.encoded()
        guard value != publishedUsage else { return }
        let key = ClusterCatalog.usageKey(server.id)
        guard case .txn = try meta.apply(.txn(MetaTxn(success: [.put(key: key, value: value, lease: lease)])), now: SystemClock.now()) else {
            throw RuntimeError.metadata("\(meta.location): cannot write \(key)")
        }
        publishedUsage = value
    }

    /// Leaves the liveness key, stops serving and closes the data file.
    public func shutdown() {
        heartbeat?.cancel()
        try? heartbeatPool.syncShutdownGracefully()
        if lease != 0 { _ = try? meta.apply(.leaseRevoke(id: lease), now: SystemClock.now()) }
        try? server.stop().wait()
        server.disk.close()
    }

    static func loadOrAllocateID(_ path: String, _ meta: any MetadataService) throws -> NodeID {
        if let f = fopen(path, "r") {
            defer { fclose(f) }
            var buffer = [CChar](repeating: 0, count: 32)
            guard fgets(&buffer, 32, f) != nil,
                  let raw = UInt32(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                      .trimmingSpacesAndNewlines()), raw > 0 else {
                throw RuntimeError.io("\(path) is corrupt: it must hold this node's id")
            }
            return NodeID(raw)
        }
        let id = try ClusterCatalog.allocateNodeID(meta)
        let tmp = path + ".tmp"
        guard let f = fopen(tmp, "w") else { throw RuntimeError.io("cannot create \(tmp): \(String(cString: strerror(errno)))") }
        fputs("\(id.raw)\n", f)
        fflush(f)
        let synced = fsync(fileno(f)) == 0
        fclose(f)
        guard synced, rename(tmp, path) == 0 else { throw RuntimeError.io("cannot write \(path): \(String(cString: strerror(errno)))") }
        return id
    }
}

extension String {
    fileprivate func trimmingSpacesAndNewlines() -> String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\n" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\n" { s = s.dropLast() }
        return String(s)
    }
}
