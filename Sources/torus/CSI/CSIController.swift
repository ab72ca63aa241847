#if GRPC
import GRPCCore
import TorusAPI
import SwiftProtobuf

/// CSI Controller: volumes and snapshots, through the Torus gRPC API. Idempotent by name:
/// a CSI name maps to one Torus name (CSINames), so a retried create finds what it made.
struct CSIController: Csi_V1_Controller.SimpleServiceProtocol {
    let client: TorusClient

    func createVolume(request: Csi_V1_CreateVolumeRequest, context: ServerContext) async throws -> Csi_V1_CreateVolumeResponse {
        guard !request.name.isEmpty else { throw RPCError(code: .invalidArgument, message: "CreateVolume needs a name") }
        try CSICapabilities.check(request.volumeCapabilities)
        guard let size = CSINames.size(required: request.capacityRange.requiredBytes, limit: request.capacityRange.limitBytes) else {
            throw RPCError(code: .outOfRange, message: "no size of whole 4 KiB sectors fits \(request.capacityRange)")
        }
        let name = CSINames.volume(forName: request.name)
        if var existing = try await client.volume(name) {
            let limit = request.capacityRange.limitBytes
            // A clone made by an earlier try that stopped before growing it: finish the job.
            if request.hasVolumeContentSource && existing.originID != 0 && Int64(existing.sizeBytes) < size {
                existing = try await client.volumes.resizeVolume(.with { $0.name = name; $0.sizeBytes = UInt64(size) }).volume
            }
            guard Int64(existing.sizeBytes) >= request.capacityRange.requiredBytes, limit == 0 || Int64(existing.sizeBytes) <= limit else {
                throw RPCError(code: .alreadyExists, message: "volume \(name) (for \(request.name)) exists with \(existing.sizeBytes) bytes")
            }
            return response(existing, source: request.volumeContentSource, has: request.hasVolumeContentSource)
        }
        let made: Torus_V1_Volume
        switch request.volumeContentSource.type {
        case .snapshot(let s):
            guard let (vol, snap) = CSINames.split(snapshotID: s.snapshotID) else {
                throw RPCError(code: .notFound, message: "no snapshot \(s.snapshotID)")
            }
            made = try await clone(vol, snap, as: name, size: size)
        case .volume(let v):
            guard try await client.volume(v.volumeID) != nil else { throw RPCError(code: .notFound, message: "no volume \(v.volumeID)") }
            // A clone of a volume: of a snapshot taken for it, which can go once the clone is made
            // (the clone's map names the blocks; the collector keeps them).
            // Named per attempt, so a retry never reuses an older image; deleted whatever happens.
            let temporary = "csi-clone-" + CSINames.digest(name + "\(UInt64.random(in: 0...UInt64.max))").prefix(16)
            _ = try await client.snapshots.createSnapshot(.with { $0.volume = v.volumeID; $0.name = temporary })
            do {
                made = try await clone(v.volumeID, temporary, as: name, size: size)
            } catch {
                _ = try? await client.snapshots.deleteSnapshot(.with { $0.volume = v.volumeID; $0.name = temporary })
                throw error
            }
            _ = try? await client.snapshots.deleteSnapshot(.with { $0.volume = v.volumeID; $0.name = temporary })
        case nil:
            made = try await client.volumes.createVolume(.with { $0.name = name; $0.sizeBytes = UInt64(size); $0.ifMissing = true }).volume
        }
        return response(made, source: request.volumeContentSource, has: request.hasVolumeContentSource)
    }

    /// A clone, grown to `size` if the snapshot is smaller.
    private func clone(_ volume: String, _ snapshot: String, as name: String, size: Int64) async throws -> Torus_V1_Volume {
        var made = try await client.snapshots.cloneVolume(.with { $0.volume = volume; $0.snapshot = snapshot; $0.newName = name }).volume
        if Int64(made.sizeBytes) < size {
            made = try await client.volumes.resizeVolume(.with { $0.name = name; $0.sizeBytes = UInt64(size) }).volume
        }
        return made
    }

    private func response(_ v: Torus_V1_Volume, source: Csi_V1_VolumeContentSource, has: Bool) -> Csi_V1_CreateVolumeResponse {
        .with { r in
            r.volume.volumeID = v.name
            r.volume.capacityBytes = Int64(v.sizeBytes)
            if has { r.volume.contentSource = source }
        }
    }

    func deleteVolume(request: Csi_V1_DeleteVolumeRequest, context: ServerContext) async throws -> Csi_V1_DeleteVolumeResponse {
        guard !request.volumeID.isEmpty else { throw RPCError(code: .invalidArgument, message: "DeleteVolume needs a volume id") }
        // Deleting a volume deletes its snapshots with it (they are its keys): refused while it
        // has any, as the spec asks of drivers whose snapshots do not outlive their volume.
        if try await client.volume(request.volumeID) != nil {
            let snaps = try await client.allSnapshots(volume: request.volumeID)
            if !snaps.isEmpty {
                throw RPCError(code: .failedPrecondition, message: "volume \(request.volumeID) has snapshots "
                               + "(\(snaps.map(\.name).joined(separator: ", "))): delete them first")
            }
        }
        do {
            _ = try await client.volumes.deleteVolume(.with { $0.name = request.volumeID })
        } catch let e as RPCError where e.code == .notFound {
            // Gone already: deleting is idempotent.
        }
        return .init()
    }

    func validateVolumeCapabilities(request: Csi_V1_ValidateVolumeCapabilitiesRequest,
                                    context: ServerContext) async throws -> Csi_V1_ValidateVolumeCapabilitiesResponse {
        guard !request.volumeID.isEmpty else { throw RPCError(code: .invalidArgument, message: "ValidateVolumeCapabilities needs a volume id") }
        guard !request.volumeCapabilities.isEmpty else { throw RPCError(code: .invalidArgument, message: "no volume capabilities given") }
        guard try await client.volume(request.volumeID) != nil else { throw RPCError(code: .notFound, message: "no volume \(request.volumeID)") }
        do {
            try CSICapabilities.check(request.volumeCapabilities)
        } catch let e as RPCError {
            return .with { $0.message = e.message }
        }
        return .with { $0.confirmed.volumeCapabilities = request.volumeCapabilities }
    }

    func listVolumes(request: Csi_V1_ListVolumesRequest, context: ServerContext) async throws -> Csi_V1_ListVolumesResponse {
        let all = try await client.volumes.listVolumes(.init()).volumes.sorted { $0.name < $1.name }
        let page = try CSIPaging.page(all.count, maxEntries: request.maxEntries, token: request.startingToken)
        return .with { r in
            r.entries = all[page.range].map { v in .with { $0.volume.volumeID = v.name; $0.volume.capacityBytes = Int64(v.sizeBytes) } }
            r.nextToken = page.next
        }
    }

    /// Room for new volumes: free bytes on the nodes, divided by the replication.
    func getCapacity(request: Csi_V1_GetCapacityRequest, context: ServerContext) async throws -> Csi_V1_GetCapacityResponse {
        let s = try await client.cluster.getStatus(.init())
        let free = s.capacityBytes > s.usedBytes ? s.capacityBytes - s.usedBytes : 0
        return .with { $0.availableCapacity = Int64(free / UInt64(max(1, s.replication))) }
    }

    func controllerGetCapabilities(request: Csi_V1_ControllerGetCapabilitiesRequest,
                                   context: ServerContext) async throws -> Csi_V1_ControllerGetCapabilitiesResponse {
        let offered: [Csi_V1_ControllerServiceCapability.RPC.TypeEnum] = [
            .createDeleteVolume, .createDeleteSnapshot, .listSnapshots, .cloneVolume, .expandVolume, .listVolumes, .getCapacity]
        return .with { r in r.capabilities = offered.map { t in .with { $0.rpc.type = t } } }
    }

    func controllerExpandVolume(request: Csi_V1_ControllerExpandVolumeRequest,
                                context: ServerContext) async throws -> Csi_V1_ControllerExpandVolumeResponse {
        guard !request.volumeID.isEmpty else { throw RPCError(code: .invalidArgument, message: "ControllerExpandVolume needs a volume id") }
        guard request.hasCapacityRange else { throw RPCError(code: .invalidArgument, message: "ControllerExpandVolume needs a capacity range") }
        guard let v = try await client.volume(request.volumeID) else { throw RPCError(code: .notFound, message: "no volume \(request.volumeID)") }
        guard let size = CSINames.size(required: request.capacityRange.requiredBytes, limit: request.capacityRange.limitBytes) else {
            throw RPCError(code: .outOfRange, message: "no size of whole 4 KiB sectors fits \(request.capacityRange)")
        }
        var bytes = v.sizeBytes
        if UInt64(size) > bytes {
            bytes = try await client.volumes.resizeVolume(.with { $0.name = request.volumeID; $0.sizeBytes = UInt64(size) }).volume.sizeBytes
        }
        let block: Bool
        if case .block = request.volumeCapability.accessType { block = true } else { block = false }
        return .with {
            $0.capacityBytes = Int64(bytes)
            $0.nodeExpansionRequired = !block
        }
    }
}
#endif
