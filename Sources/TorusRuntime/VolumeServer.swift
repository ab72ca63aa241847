import NIOCore
import NIOPosix
import TorusCore
import TorusNBD

/// Serves volumes: one writer (`VolumeClient`) per volume for the NBD and admin servers, and the
/// garbage collector. In `torus up` it also runs the storage nodes (`nodes` of them, on file
/// disks under `dataDir`) and, unless `metadata` names etcd, the embedded metadata store; in
/// `torus nbd serve` (`nodes == 0`) the nodes are `torus node` processes found in etcd.
/// Writers and the collector are confined to `loop`, each storage node to a loop of its own.
/// They speak the peer protocol: in memory to a node of this process (unless `peerOverTCP`),
/// over TCP otherwise (PeerTransport.swift). Disk I/O and metadata requests run on thread pools
/// and come back to the owning loop as inputs.
///
/// Startup and shutdown are in +Startup, the volumes' lifecycle in +Volumes and +VolumeWatch,
/// the writers' effects and timers in +Writers, metadata requests and lease keep-alives in
/// +Metadata, the collector in +Collector, following the ring in +Ring.
public final class VolumeServer: @unchecked Sendable {
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
        /// Mutual TLS to the storage nodes (`--peer-tls`; `torus nbd serve` on a `torus init --tls` cluster).
        public var peerTLS: PeerTLS?
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

    public let loop: EventLoop
    let pool: NIOThreadPool
    /// Metadata requests (commits, listings) run on a thread of their own, so they never wait
    /// behind disk I/O (docs/runtime.md, "Metadata requests").
    let metaPool: NIOThreadPool
    /// Lease keep-alives get a thread of their own too, so a slow commit never holds up the
    /// keep-alive that keeps a writer alive.
    let leasePool: NIOThreadPool
    /// Leases with a keep-alive queued or running (on `loop`): never more than one each.
    var keepAlivesInFlight: Set<Int64> = []
    /// When each lease's last keep-alive was sent (for the log when they stall).
    var lastKeepAlive: [Int64: Instant] = [:]
    let meta: any MetadataService
    let config: Configuration
    /// The placement ring; in `torus nbd serve` it follows etcd (VolumeServer+Ring.swift).
    var ring: Ring
    var ringWatch: (any MetadataWatch)?
    /// The storage nodes this process runs (all of them in `torus up`).
    var nodes: [NodeID: StorageNodeServer] = [:]
    /// Where writers reach each node of the ring.
    var nodeAddresses: [NodeID: (host: String, port: Int)] = [:]
    var volumes: [String: VolumeHost] = [:]
    /// Snapshots being taken here (VOL@SNAP): a second request for one is refused.
    var snapshotsUnderWay: Set<String> = []
    /// The garbage collector (none when read-only or with `gcInterval` nil).
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

    public func exports() -> [NBDExport] { directory.all() }
    public var volumeDirectory: VolumeDirectory { directory }
}
