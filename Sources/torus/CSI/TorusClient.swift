#if GRPC
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import TorusAPI
import TorusRuntime

/// The CSI driver's client of the Torus gRPC API (`torus nbd serve --grpc`): volumes,
/// snapshots and the cluster's status go through the process that holds the writers.
final class TorusClient: Sendable {
    let grpc: GRPCClient<HTTP2ClientTransport.Posix>
    let volumes: Torus_V1_VolumeService.Client<HTTP2ClientTransport.Posix>
    let snapshots: Torus_V1_SnapshotService.Client<HTTP2ClientTransport.Posix>
    let cluster: Torus_V1_ClusterService.Client<HTTP2ClientTransport.Posix>

    init(address: String) throws {
        let target: any ResolvableTarget
        if address.hasPrefix("/") {
            target = .unixDomainSocket(path: address)
        } else {
            let hp = try HostPort(parsing: address)
            target = .dns(host: hp.host, port: hp.port)
        }
        grpc = GRPCClient(transport: try .http2NIOPosix(target: target, transportSecurity: .plaintext))
        volumes = .init(wrapping: grpc)
        snapshots = .init(wrapping: grpc)
        cluster = .init(wrapping: grpc)
        let client = grpc
        Task { try? await client.runConnections() }
    }

    /// The volume, or nil when there is none of that name.
    func volume(_ name: String) async throws -> Torus_V1_Volume? {
        do {
            return try await volumes.getVolume(.with { $0.name = name }).volume
        } catch let e as RPCError where e.code == .notFound {
            return nil
        }
    }

    func allSnapshots(volume: String = "") async throws -> [Torus_V1_Snapshot] {
        try await snapshots.listSnapshots(.with { $0.volume = volume }).snapshots
    }
}
#endif
