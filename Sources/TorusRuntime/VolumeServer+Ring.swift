import Logging
import NIOCore
import TorusCore

/// Following the ring in etcd (`torus nbd serve`): a watch on `/torus/ring` (members and the
/// version key) re-reads the ring on every change; a newer version goes to every writer and
/// to the collector, and new members' addresses to the peer links. Joins (a new `torus node`),
/// `torus peer drain` and `torus peer remove` thus take effect without a restart.
extension VolumeServer {
    static let ringWatchPrefix = "/torus/ring"

    func watchRing() -> EventLoopFuture<Void> {
        let meta = self.meta, loop = self.loop
        return metaPool.runIfActive(eventLoop: loop) { () throws -> any MetadataWatch in
            try meta.watch(key: Self.ringWatchPrefix, prefix: true, fromRevision: 0) { _ in
                loop.execute { self.rereadRing() }
            }
        }.map { watch in
            self.ringWatch = watch
            self.rereadRing()  // a change between the first read and the watch
        }
    }

    /// Reads the members and the version; adopts them when newer.
    func rereadRing() {
        loop.assertInEventLoop()
        guard ringWatch != nil else { return }  // shutting down
        let meta = self.meta
        metaPool.runIfActive(eventLoop: loop) { () throws -> ([ClusterCatalog.Member], UInt64) in
            (try ClusterCatalog.members(meta), try ClusterCatalog.ringVersion(meta))
        }.whenComplete { result in
            switch result {
            case .success(let (members, version)): self.adoptRing(members, version: version)
            case .failure(let e): RuntimeLoggers.ring.warning("ring: could not re-read it (\(e)); keeping version \(self.ring.version)")
            }
        }
    }

    func adoptRing(_ members: [ClusterCatalog.Member], version: UInt64) {
        loop.assertInEventLoop()
        guard version > ring.version else { return }
        let newRing = ClusterCatalog.ring(members, version: version)
        guard newRing.activeCount >= config.replication else {
            RuntimeLoggers.ring.warning("ring: version \(version) has \(newRing.activeCount) active node(s) for replication \(config.replication); keeping version \(ring.version)")
            return
        }
        ring = newRing
        noteAddresses(members)
        let listed = members.map { "\($0.id)\($0.draining ? " (draining)" : "")" }.joined(separator: ", ")
        RuntimeLoggers.ring.info("ring: version \(version): \(listed)")
        let now = SystemClock.now()
        for name in volumes.keys.sorted() {
            guard let host = volumes[name] else { continue }
            handleClient(name, host.client.updateRing(newRing, now: now))
        }
        if let host = collectorHost { handleCollector(host.collector.updateRing(newRing, now: now)) }
    }

    /// Where to reach each member (a node may come back on another address).
    func noteAddresses(_ members: [ClusterCatalog.Member]) {
        for m in members {
            guard let endpoint = try? HostPort(parsing: m.address) else {
                RuntimeLoggers.ring.error("unusable address '\(m.address)'", metadata: ["peer": "\(m.id)"])
                continue
            }
            nodeAddresses[m.id] = (endpoint.host, endpoint.port)
        }
    }
}
