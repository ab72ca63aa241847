#if GRPC
import GRPCCore
import NIOCore
import TorusCore
import TorusRuntime

/// `torus.v1.ClusterService`: what `torus status` shows, as structured data.
struct ClusterAPI: Torus_V1_ClusterService.SimpleServiceProtocol {
    let cluster: VolumeServer

    func getStatus(request: Torus_V1_GetStatusRequest, context: ServerContext) async throws -> Torus_V1_GetStatusResponse {
        let cluster = self.cluster
        let (s, ringVersion) = try await cluster.call { cluster.clusterStatus() }
        return .with { r in
            r.replication = UInt32(s.config.replication)
            r.blockSize = UInt32(s.config.blockSize)
            r.ringVersion = ringVersion
            r.nodes = s.members.map { m in
                .with { n in
                    n.id = m.id.raw
                    n.address = m.address
                    n.zone = m.zone
                    n.alive = s.alive.contains(m.id)
                    n.draining = m.draining
                    n.usedBytes = s.usage[m.id]?.usedBytes ?? 0
                    n.capacityBytes = s.usage[m.id]?.capacityBytes ?? m.capacityBytes
                }
            }
            r.volumes = s.volumes.map { .init($0, openForWriting: s.openForWriting.contains($0.name)) }
            r.usedBytes = r.nodes.reduce(0) { $0 + $1.usedBytes }
            r.capacityBytes = r.nodes.reduce(0) { $0 + $1.capacityBytes }
            r.redundancy = Redundancy(maintenance: s.maintenance).rawValue
            r.maintenance = s.maintenance
        }
    }
}
#endif
