import Logging
import NIOCore
import NIOPosix
import TorusCore

/// One storage node on real parts: its `StorageNode` state machine confined to `loop`, a file
/// disk (requests the page cache serves at once run inline, the rest on `pool`), and a
/// peer-protocol listener (`PeerServerHandler` per connection). Used by `torus up` (several
/// in one process) and by `torus node` (one per process).
public final class StorageNodeServer: @unchecked Sendable {
    public let id: NodeID
    var node: StorageNode
    let disk: FileDisk
    public let loop: EventLoop
    let pool: NIOThreadPool
    let clusterID: PeerClusterID
    /// The node's log lines, with `node=ID` on each.
    let logger: Logger
    /// The listener's port; set before `start` completes.
    public private(set) var port = 0
    var listener: Channel?
    /// Connections by the client that said HELLO on them.
    var peers: [NodeID: PeerServerHandler] = [:]
    /// Writers of this process that reach the node without a socket (`LocalPeer`), by client id.
    var localPeers: [NodeID: LocalPeer] = [:]
    var scrubber: RepeatedTask?
    var scrubReported = StorageNode.ScrubStats()
    /// Writes up to this many bytes run on the event loop, the rest on `pool` (see `perform`).
    let inlineWriteMax: Int
    /// Mutual TLS on accepted connections (`torus node --peer-tls`).
    let tls: PeerTLS?

    /// `inlineWriteMax`: `torus node` (a loop of its own) writes every block inline; `torus up`
    /// (loops shared with the NBD server) only journal-sized writes.
    public init(id: NodeID, store: BlockStore, disk: FileDisk, loop: EventLoop, pool: NIOThreadPool,
                clusterID: PeerClusterID, inlineWriteMax: Int = StorageNodeServer.journalWriteMax,
                tls: PeerTLS? = nil, logger: Logger = TorusLogging.logger("node")) {
        self.inlineWriteMax = inlineWriteMax
        self.tls = tls
        self.id = id
        node = StorageNode(id: id, store: store)
        self.disk = disk
        self.loop = loop
        self.pool = pool
        self.clusterID = clusterID
        var logger = logger
        logger[metadataKey: "node"] = "\(id)"
        self.logger = logger
    }

    /// Opens the node's data file and rebuilds its store from the journal (blocking: call
    /// it on a thread pool).
    public static func openStore(path: String, config: BlockStoreConfig) throws -> (FileDisk, BlockStore) {
        let disk = try FileDisk(path: path, capacityBytes: config.geometry.capacityBytes)
        let regions = BlockStore.journalRegions(config: config)
        let a = try disk.readSync(offset: regions.a.offset, length: regions.a.length)
        let b = try disk.readSync(offset: regions.b.offset, length: regions.b.length)
        let store = BlockStore.recover(config: config, regionA: a, regionB: b, readSlot: { slot in
            try? disk.readSync(offset: config.slotOffset(slot), length: config.blockSize)
        })
        return (disk, store)
    }

    /// Store geometry for a data file of `diskBytes` with `blockSize` slots (production's
    /// journal size, lazy journaling and 2% reserve: `BlockStoreConfig.sized`).
    public static func storeConfig(blockSize: Int, diskBytes: UInt64) -> BlockStoreConfig {
        BlockStoreConfig.sized(diskBytes: diskBytes, blockSize: blockSize)
    }

    /// Binds the peer listener (port 0: any free port), then starts the node (journal
    /// compaction after recovery). Completes with the port.
    public func start(host: String = "127.0.0.1", port: Int = 0) -> EventLoopFuture<Int> {
        ServerBootstrap(group: loop)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.recvAllocator, value: PeerCodec.receiveAllocator)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        PeerFrameReader(), PeerFrameEncoder(), PeerServerHandler(server: self))
                    try self.tls?.secureAccepted(channel)
                }
            }
            .bind(host: host, port: port)
            .flatMapThrowing { channel in
                guard let bound = channel.localAddress?.port else { throw RuntimeError.io("node \(self.id): listener has no port") }
                self.listener = channel
                self.port = bound
                self.perform(self.node.start())
                return bound
            }
    }

    /// Stops listening and closes the peer connections (the disk stays open until `disk.close()`).
    /// Slots used and total (on `loop`).
    func usage() -> ClusterCatalog.Usage {
        loop.assertInEventLoop()
        let store = node.store
        return ClusterCatalog.Usage(usedBytes: UInt64(store.usedSlots + store.pendingSlots) * UInt64(store.config.blockSize),
                                    capacityBytes: UInt64(store.totalSlots) * UInt64(store.config.blockSize))
    }

    /// Verifies one stored block every blockSize / `bytesPerSecond` seconds (0: never): a bad
    /// copy is dropped and logged, and the collector copies the block back from a good replica.
    public func startScrubbing(bytesPerSecond: UInt64) {
        guard bytesPerSecond > 0 else { return }
        let every = TimeAmount.nanoseconds(Int64(max(1_000_000, UInt64(node.store.config.blockSize) * 1_000_000_000 / bytesPerSecond)))
        loop.execute {
            self.scrubber = self.loop.scheduleRepeatedTask(initialDelay: every, delay: every) { _ in
                // What the previous verifications found (they complete after their disk read).
                self.scrubReport(since: self.scrubReported)
                self.scrubReported = self.node.scrubStats
                self.perform(self.node.scrubNext())
            }
        }
    }

    /// Logs a finished round and every bad copy found (a round's result shows in the node's log).
    func scrubReport(since before: StorageNode.ScrubStats) {
        let s = node.scrubStats
        TorusMetrics.scrub(node: id, verified: max(0, s.verified - before.verified), bad: max(0, s.bad - before.bad))
        if s.bad > before.bad {
            logger.warning("""
                scrub found a bad copy (checksum mismatch or unreadable); dropped it, the collector copies the \
                block back from a good replica (\(s.bad) bad so far)
                """)
        }
        if s.rounds > before.rounds {
            logger.debug("scrub round \(s.rounds) done: \(s.verified) blocks verified, \(s.bad) bad copies found so far")
        }
    }

    public func stop() -> EventLoopFuture<Void> {
        loop.flatSubmit {
            self.scrubber?.cancel()
            self.scrubber = nil
            let channels = self.peers.values.compactMap { $0.channel }
            self.peers.removeAll()
            self.localPeers.removeAll()
            var closing = channels.map { $0.close() }
            if let l = self.listener { closing.append(l.close()) }
            return EventLoopFuture.andAllComplete(closing, on: self.loop)
        }
    }

    /// A message arrived from a writer.
    func received(from peer: NodeID, _ msg: PeerMessage) {
        if !node.store.holdsCycles {
            // Everything read in this turn of the event loop (any connection) joins one store
            // cycle, so a FLUSH's block and record arriving together cost one disk sync.
            node.holdCycles()
            loop.execute { self.perform(self.node.releaseCycles()) }
        }
        perform(node.receive(from: peer, msg))
    }

    /// The largest journal write (a few sectors): the default `inlineWriteMax`.
    public static let journalWriteMax = 16 << 10

    func perform(_ outputs: [StorageNode.Output]) {
        loop.assertInEventLoop()
        var touched: [PeerServerHandler] = []
        var touchedLocal: [LocalPeer] = []
        // Disk requests the page cache served at once, fed back after this batch (as if a
        // very fast thread had done them): no thread hop for cached reads and most writes.
        var immediate: [(DiskOpID, DiskCompletion)] = []
        defer {
            for (op, completion) in immediate { perform(node.diskCompleted(op, completion)) }
            for h in touched { h.flush() }
            for p in touchedLocal { p.flush() }
        }
        for o in outputs {
            switch o {
            case .send(let to, let msg):
                // Replies go back on the connection of the client that asked; a client that
                // went away retries on a new connection.
                if let local = localPeers[to] {
                    if local.batch.isEmpty { touchedLocal.append(local) }
                    local.batch.append(msg)
                    continue
                }
                guard let peer = peers[to] else { continue }
                if !peer.needsFlush { touched.append(peer) }
                peer.send(msg)
            case .disk(let op, let req):
                let disk = self.disk
                if let done = disk.performWithoutBlocking(req) {
                    immediate.append((op, done))
                    continue
                }
                if case .write(_, let bytes) = req, bytes.count <= inlineWriteMax {
                    // A write into the page cache costs less than two thread hops (ext4 takes no
                    // RWF_NOWAIT writes); the price is a loop stalled while the kernel throttles.
                    immediate.append((op, disk.perform(req)))
                    continue
                }
                pool.runIfActive(eventLoop: loop) { disk.perform(req) }.whenComplete { result in
                    let completion: DiskCompletion
                    switch result {
                    case .success(let c): completion = c
                    case .failure:
                        switch req {
                        case .read: completion = .read(.failure(.ioError(offset: 0)))
                        case .write(let off, _): completion = .written(.failure(.ioError(offset: off)))
                        case .sync: completion = .synced(.failure(.ioError(offset: 0)))
                        }
                    }
                    self.perform(self.node.diskCompleted(op, completion))
                }
            }
        }
    }
}
