#if GRPC
import GRPCCore
import NIOCore
import TorusCore
import TorusRuntime

/// `torus.v1.SnapshotService`: snapshots, rollback and clones, as `torus snapshot` does them.
struct SnapshotAPI: Torus_V1_SnapshotService.SimpleServiceProtocol {
    let cluster: VolumeServer

    func createSnapshot(request: Torus_V1_CreateSnapshotRequest, context: ServerContext) async throws -> Torus_V1_CreateSnapshotResponse {
        let cluster = self.cluster, volume = request.volume, name = request.name
        let entry = try await cluster.call { cluster.createSnapshot(volume: volume, name: name) }
        return .with { $0.snapshot = .init(entry, exclusiveBytes: 0) }
    }

    func listSnapshots(request: Torus_V1_ListSnapshotsRequest, context: ServerContext) async throws -> Torus_V1_ListSnapshotsResponse {
        let cluster = self.cluster, volume = request.volume.isEmpty ? nil : request.volume
        let listed = try await cluster.call {
            cluster.listSnapshots(volume: volume).map { entries in
                // Space is read from the maps served here (on the loop, like the maps).
                var space: [String: [String: UInt64]] = [:]
                for v in Set(entries.map(\.volume)) { space[v] = cluster.snapshotSpace(volume: v) }
                return entries.map { Torus_V1_Snapshot($0, exclusiveBytes: space[$0.volume]?[$0.name] ?? 0) }
            }
        }
        return .with { $0.snapshots = listed }
    }

    func deleteSnapshot(request: Torus_V1_DeleteSnapshotRequest, context: ServerContext) async throws -> Torus_V1_DeleteSnapshotResponse {
        let cluster = self.cluster, volume = request.volume, name = request.name
        try await cluster.call { cluster.deleteSnapshot(volume: volume, name: name) }
        return .init()
    }

    func rollback(request: Torus_V1_RollbackRequest, context: ServerContext) async throws -> Torus_V1_RollbackResponse {
        let cluster = self.cluster, volume = request.volume, snapshot = request.snapshot, force = request.force
        try await cluster.call { cluster.rollback(volume: volume, to: snapshot, force: force) }
        return .init()
    }

    func cloneVolume(request: Torus_V1_CloneVolumeRequest, context: ServerContext) async throws -> Torus_V1_CloneVolumeResponse {
        let cluster = self.cluster, volume = request.volume, snapshot = request.snapshot, newName = request.newName
        let info = try await cluster.call { cluster.cloneVolume(volume: volume, snapshot: snapshot, as: newName) }
        return .with { $0.volume = .init(info, openForWriting: true) }
    }
}

extension Torus_V1_Snapshot {
    init(_ entry: SnapshotCatalog.Entry, exclusiveBytes: UInt64) {
        self.init()
        volume = entry.volume
        name = entry.name
        sizeBytes = entry.record.sizeBytes
        generation = entry.record.generation
        self.exclusiveBytes = exclusiveBytes
    }
}
#endif
