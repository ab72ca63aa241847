import Glibc
import NIOCore
import NIOPosix
import Testing
import TorusCore
@testable import TorusRuntime

/// `VolumeServer` over the TCP peer transport: writers reach the nodes through their loopback
/// ports, and a node refuses peers that are not of its cluster or do not speak the protocol.
@Suite("peer transport", .serialized)
struct PeerTransportTests {
    static func withCluster(metadata: String? = nil, overTCP: Bool = true,
                            _ body: (VolumeServer, MultiThreadedEventLoopGroup) throws -> Void) throws {
        let dir = ScratchDirectory("peer")
        defer { dir.remove() }
        try withCluster(in: dir.path, metadata: metadata, overTCP: overTCP, body)
    }

    static func withCluster(in path: String, metadata: String?, overTCP: Bool = true, _ body: (VolumeServer, MultiThreadedEventLoopGroup) throws -> Void) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        defer {
            try? group.syncShutdownGracefully()
            try? pool.syncShutdownGracefully()
        }
        var config = VolumeServer.Configuration(dataDir: path, nodes: 2, replication: 2, blockSize: 64 << 10,
                                                diskBytes: 64 << 20, volumes: [("t", 8 << 20)])
        config.defaultVolume = nil
        config.metadata = metadata
        config.peerOverTCP = overTCP
        let cluster = try VolumeServer.start(config, group: group, pool: pool).wait()
        try body(cluster, group)
        try cluster.shutdown().wait()
    }

    static func submit(_ cluster: VolumeServer, _ request: ByteRangeAdapter.Request) throws -> [UInt8] {
        try cluster.loop.flatSubmit { cluster.submit(volume: "t", request) }.wait().flatMap { $0 }
    }

    static func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
        var rng = SeededRandom(seed: seed)
        return (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    }

    /// Connects to `port` and sends `bytes`; returns whether the node closed the connection.
    static func closedAfterSending(_ bytes: [UInt8], port: Int, group: EventLoopGroup) throws -> Bool {
        let channel = try ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port).wait()
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        try channel.writeAndFlush(buffer).wait()
        let closed = channel.eventLoop.makePromise(of: Bool.self)
        channel.closeFuture.whenComplete { _ in closed.succeed(true) }
        channel.eventLoop.scheduleTask(in: .seconds(3)) { closed.succeed(false) }
        let result = try closed.futureResult.wait()
        try? channel.close().wait()
        return result
    }

    static func encoded(_ frame: PeerFrame) throws -> [UInt8] {
        var buffer = ByteBufferAllocator().buffer(capacity: 64)
        try PeerCodec.encode(frame, into: &buffer)
        return buffer.readBytes(length: buffer.readableBytes)!
    }

    @Test("in one process, writes reach both replicas without a socket and read back after a flush")
    func inProcessRoundTrip() throws {
        try Self.withCluster(overTCP: false) { cluster, _ in
            let data = Self.pattern(1 << 20, seed: 8)
            _ = try Self.submit(cluster, .write(offset: 8192, data: data, fua: false))
            _ = try Self.submit(cluster, .flush)
            #expect(try Self.submit(cluster, .read(offset: 8192, length: data.count)) == data)
            for id in cluster.nodes.keys.sorted() {
                let host = cluster.nodes[id]!
                let (tcp, local) = try host.loop.submit { (host.peers.count, host.localPeers.count) }.wait()
                #expect(tcp == 0 && local == 1, "node \(id): \(tcp) peer connections, \(local) in-process writers")
                let used = try host.loop.submit { host.usage().usedBytes }.wait()
                #expect(used >= 1 << 20, "node \(id) holds \(used) bytes")
            }
        }
    }

    @Test("writes reach both replicas over TCP and read back after a flush")
    func roundTrip() throws {
        try Self.withCluster { cluster, _ in
            let data = Self.pattern(1 << 20, seed: 7)
            _ = try Self.submit(cluster, .write(offset: 4096, data: data, fua: false))
            _ = try Self.submit(cluster, .flush)
            #expect(try Self.submit(cluster, .read(offset: 4096, length: data.count)) == data)
            // Both nodes hold a connection from the writer (replication 2 on 2 nodes).
            for id in cluster.nodes.keys.sorted() {
                let host = cluster.nodes[id]!
                let peers = try host.loop.submit { host.peers.count }.wait()
                #expect(peers == 1, "node \(id) has \(peers) peer connections")
                #expect(host.port > 0)
            }
        }
    }

    @Test("a node closes connections from another cluster, before HELLO, or with garbage; service goes on")
    func refusals() throws {
        try Self.withCluster { cluster, group in
            let port = cluster.nodes[NodeID(1)]!.port
            let foreign = PeerClusterID([UInt8](repeating: 0xAB, count: 16))!
            #expect(foreign != cluster.clusterID)
            let hello = try Self.encoded(.hello(node: NodeID(99), cluster: foreign, maxVersion: PeerCodec.version))
            #expect(try Self.closedAfterSending(hello, port: port, group: group))
            let early = try Self.encoded(.message(.getBlock(RPCID(1), BlockRef(volume: 1, epoch: 1, sequence: 1, index: 0))))
            #expect(try Self.closedAfterSending(early, port: port, group: group))
            #expect(try Self.closedAfterSending(Self.pattern(100, seed: 3), port: port, group: group))
            // A HELLO of this cluster that speaks only the previous protocol version is refused.
            let old = try Self.encoded(.hello(node: NodeID(97), cluster: cluster.clusterID, maxVersion: PeerCodec.version - 1))
            #expect(try Self.closedAfterSending(old, port: port, group: group))
            // A well-formed HELLO of this cluster is accepted (the connection stays open).
            let ours = try Self.encoded(.hello(node: NodeID(98), cluster: cluster.clusterID, maxVersion: PeerCodec.version))
            #expect(try !Self.closedAfterSending(ours, port: port, group: group))

            let data = Self.pattern(256 << 10, seed: 9)
            _ = try Self.submit(cluster, .write(offset: 0, data: data, fua: true))
            #expect(try Self.submit(cluster, .read(offset: 0, length: data.count)) == data)
        }
    }

    @Test("a writer fenced after its lease expired is replaced; flushed data survives; the NBD generation moves on")
    func fencedWriterIsReplaced() throws {
        try Self.fencedWriterIsReplaced(metadata: nil)
    }

    static func fencedWriterIsReplaced(metadata: String?) throws {
        try Self.withCluster(metadata: metadata) { cluster, _ in
            let data = Self.pattern(512 << 10, seed: 11)
            _ = try Self.submit(cluster, .write(offset: 65536, data: data, fua: false))
            _ = try Self.submit(cluster, .flush)
            #expect(cluster.volumeDirectory.generation("t") == 0)
            // Take the writer's lease away, as if the process had been stopped past its TTL.
            let lease = try cluster.loop.submit { cluster.volumes["t"]!.client.leaseID }.wait()
            #expect(lease != 0)
            guard case .revoked = try cluster.meta.apply(.leaseRevoke(id: lease), now: SystemClock.now()) else {
                Issue.record("revoking lease \(lease) failed")
                return
            }
            // The next keep-alive (every TTL/3) finds the lease gone; a new writer opens.
            var replaced = false
            for _ in 0..<200 where !replaced {
                usleep(100_000)
                let (gen, ready) = try cluster.loop.submit {
                    (cluster.volumes["t"]!.generation, cluster.volumes["t"]!.client.phase == .ready)
                }.wait()
                replaced = gen == 1 && ready
            }
            #expect(replaced, "the fenced writer was not replaced within 20 s")
            #expect(cluster.volumeDirectory.generation("t") == 1)
            #expect(try Self.submit(cluster, .read(offset: 65536, length: data.count)) == data)
            let more = Self.pattern(4096, seed: 12)
            _ = try Self.submit(cluster, .write(offset: 0, data: more, fua: true))
            #expect(try Self.submit(cluster, .read(offset: 0, length: 4096)) == more)
        }
    }
}

/// The same cluster with its metadata in a real etcd (started by the suite).
@Suite("local cluster on etcd", .serialized, .etcdServer)
struct EtcdClusterTests {
    /// Each test starts from an empty /torus/ (the suite shares one etcd; a volume head left
    /// by another test would name blocks on disks that no longer exist).
    static func wipe(_ server: EtcdTestServer) throws {
        let client = try EtcdClient(endpoints: [server.endpoint], timeout: .seconds(5))
        guard case .txn = try client.apply(.txn(MetaTxn(success: [.delete(key: "/torus/", prefix: true)]))) else {
            throw RuntimeError.metadata("cannot clear /torus/ in etcd")
        }
    }

    @Test("volumes, flushed data and the cluster id live in etcd across a restart")
    func restartOnEtcd() throws {
        let server = try #require(EtcdTestServer.shared)
        try Self.wipe(server)
        let dir = ScratchDirectory("etcd-cluster")
        defer { dir.remove() }
        let data = PeerTransportTests.pattern(1 << 20, seed: 21)
        var firstID: PeerClusterID?
        try PeerTransportTests.withCluster(in: dir.path, metadata: server.endpoint) { cluster, _ in
            firstID = cluster.clusterID
            _ = try PeerTransportTests.submit(cluster, .write(offset: 8192, data: data, fua: false))
            _ = try PeerTransportTests.submit(cluster, .flush)
        }
        // No embedded store was made: the metadata is in etcd only.
        #expect(access(dir.path + "/metadata", F_OK) != 0)
        let client = try EtcdClient(endpoints: [server.endpoint], timeout: .seconds(5))
        guard case .txn(let t) = try client.apply(.txn(MetaTxn(success: [.range(key: "/torus/", prefix: true)]))),
              case .range(let kvs) = t.results.first else {
            Issue.record("cannot list /torus/ in etcd")
            return
        }
        let keys = Set(kvs.map(\.key))
        for key in ["/torus/cluster/id", "/torus/cluster/nodes", "/torus/volumes/t/info", "/torus/volumes/t/head"] {
            #expect(keys.contains(key), "etcd lacks \(key); has \(keys.sorted())")
        }
        try PeerTransportTests.withCluster(in: dir.path, metadata: server.endpoint) { cluster, _ in
            #expect(cluster.clusterID == firstID)
            let back = try PeerTransportTests.submit(cluster, .read(offset: 8192, length: data.count))
            #expect(back == data)
        }
    }

    @Test("a writer whose etcd lease is revoked is replaced and sees the last commit")
    func fencedOnEtcd() throws {
        let server = try #require(EtcdTestServer.shared)
        try Self.wipe(server)
        try PeerTransportTests.fencedWriterIsReplaced(metadata: server.endpoint)
    }
}
