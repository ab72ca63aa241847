#if GRPC
import GRPCCore
import NIOCore
import TorusCore
import TorusRuntime

/// `torus.v1.VolumeService`: create, list, get, resize and delete volumes.
struct VolumeAPI: Torus_V1_VolumeService.SimpleServiceProtocol {
    let cluster: VolumeServer

    func createVolume(request: Torus_V1_CreateVolumeRequest, context: ServerContext) async throws -> Torus_V1_CreateVolumeResponse {
        let cluster = self.cluster, name = request.name, size = request.sizeBytes, ifMissing = request.ifMissing
        let info = try await cluster.call {
            cluster.createVolume(name: name, sizeBytes: size, ifMissing: ifMissing).flatMapThrowing { info -> VolumeInfo in
                guard info.sizeBytes == size else {
                    throw TorusRuntime.RuntimeError.exists("volume '\(name)' already exists with \(info.sizeBytes) bytes, not \(size)")
                }
                return info
            }.flatMap { info in cluster.openVolume(info).map { info } }
        }
        return .with { $0.volume = .init(info, openForWriting: true) }
    }

    func listVolumes(request: Torus_V1_ListVolumesRequest, context: ServerContext) async throws -> Torus_V1_ListVolumesResponse {
        let cluster = self.cluster
        let status = try await cluster.call { cluster.clusterStatus() }.status
        return .with { r in r.volumes = status.volumes.map { .init($0, openForWriting: status.openForWriting.contains($0.name)) } }
    }

    func getVolume(request: Torus_V1_GetVolumeRequest, context: ServerContext) async throws -> Torus_V1_GetVolumeResponse {
        let cluster = self.cluster
        let status = try await cluster.call { cluster.clusterStatus() }.status
        guard let info = status.volumes.first(where: { $0.name == request.name }) else {
            throw RPCError(code: .notFound, message: "no volume named '\(request.name)'")
        }
        return .with { $0.volume = .init(info, openForWriting: status.openForWriting.contains(info.name)) }
    }

    func resizeVolume(request: Torus_V1_ResizeVolumeRequest, context: ServerContext) async throws -> Torus_V1_ResizeVolumeResponse {
        let cluster = self.cluster, name = request.name, size = request.sizeBytes
        let info = try await cluster.call { cluster.resizeVolume(name: name, sizeBytes: size) }
        return .with { $0.volume = .init(info, openForWriting: true) }
    }

    func deleteVolume(request: Torus_V1_DeleteVolumeRequest, context: ServerContext) async throws -> Torus_V1_DeleteVolumeResponse {
        let cluster = self.cluster, name = request.name
        try await cluster.call { cluster.deleteVolume(name: name) }
        return .init()
    }
}

extension Torus_V1_Volume {
    init(_ info: VolumeInfo, openForWriting: Bool) {
        self.init()
        name = info.name
        id = info.id
        sizeBytes = info.sizeBytes
        blockSize = UInt32(info.blockSize)
        replication = UInt32(info.replication)
        originID = info.origin
        self.openForWriting = openForWriting
    }
}
#endif
