import NIOCore
import TorusCore

/// The cluster as `torus status` reads it, for the gRPC API of the process that serves.
extension VolumeServer {
    /// The status and the ring's version: from etcd's catalog (`torus nbd serve`), or, in
    /// `torus up`, from the nodes this process runs.
    public func clusterStatus() -> EventLoopFuture<(status: ClusterCatalog.Status, ringVersion: UInt64)> {
        let meta = self.meta
        guard config.metadata == nil else {
            return metaPool.runIfActive(eventLoop: loop) { (try ClusterCatalog.status(meta), try ClusterCatalog.ringVersion(meta)) }
        }
        let ring = self.ring, served = Set(volumes.filter { !$0.key.contains("@") && !$0.value.client.config.readOnly }.keys)
        let cfg = ClusterCatalog.Config(blockSize: config.blockSize, replication: config.replication)
        let members = ring.members.map { m in
            ClusterCatalog.Member(id: m.node, address: nodeAddresses[m.node].map { "\($0.host):\($0.port)" } ?? "", zone: m.domain,
                                  capacityBytes: config.diskBytes, draining: m.draining)
        }
        return usage().flatMap { usage in
            self.metaPool.runIfActive(eventLoop: self.loop) {
                let volumes = try ClusterCatalog.listVolumes(meta)
                let r = try meta.apply(.txn(MetaTxn(success: [.range(key: Self.maintenanceKey, prefix: false)])), now: SystemClock.now())
                var maintenance: [String: String] = [:]
                if case .txn(let t) = r, case .range(let kvs)? = t.results.first, let kv = kvs.first { maintenance = ClusterCatalog.parse(kv.value) }
                let status = ClusterCatalog.Status(config: cfg, members: members, alive: Set(members.map(\.id)),
                                                   usage: Dictionary(usage, uniquingKeysWith: { a, _ in a }), volumes: volumes,
                                                   openForWriting: served, maintenance: maintenance)
                return (status, ring.version)
            }
        }
    }

    /// Whether this server serves `name` (a volume, or `VOL@SNAP`) and takes writes to it.
    public func serves(_ name: String) -> (served: Bool, writable: Bool) {
        loop.assertInEventLoop()
        guard let host = volumes[name] else { return (false, false) }
        return (true, !host.client.config.readOnly)
    }
}
