#if GRPC
import Foundation
import GRPCCore
import TorusAPI
import SwiftProtobuf

/// CSI snapshots: ids are "VOL@SNAP"; a CSI name is unique across volumes.
extension CSIController {
    func createSnapshot(request: Csi_V1_CreateSnapshotRequest, context: ServerContext) async throws -> Csi_V1_CreateSnapshotResponse {
        guard !request.name.isEmpty else { throw RPCError(code: .invalidArgument, message: "CreateSnapshot needs a name") }
        guard !request.sourceVolumeID.isEmpty else { throw RPCError(code: .invalidArgument, message: "CreateSnapshot needs a source volume id") }
        let name = CSINames.snapshot(forName: request.name)
        if let same = try await client.allSnapshots().first(where: { $0.name == name }) {
            guard same.volume == request.sourceVolumeID else {
                throw RPCError(code: .alreadyExists, message: "snapshot \(request.name) exists, of volume \(same.volume)")
            }
            return .with { $0.snapshot = Self.csi(same) }
        }
        let s = try await client.snapshots.createSnapshot(.with { $0.volume = request.sourceVolumeID; $0.name = name }).snapshot
        return .with { $0.snapshot = Self.csi(s) }
    }

    func deleteSnapshot(request: Csi_V1_DeleteSnapshotRequest, context: ServerContext) async throws -> Csi_V1_DeleteSnapshotResponse {
        guard !request.snapshotID.isEmpty else { throw RPCError(code: .invalidArgument, message: "DeleteSnapshot needs a snapshot id") }
        guard let (volume, snapshot) = CSINames.split(snapshotID: request.snapshotID) else { return .init() }
        do {
            _ = try await client.snapshots.deleteSnapshot(.with { $0.volume = volume; $0.name = snapshot })
        } catch let e as RPCError where e.code == .notFound {
            // Gone already (or its volume is): deleting is idempotent.
        }
        return .init()
    }

    func listSnapshots(request: Csi_V1_ListSnapshotsRequest, context: ServerContext) async throws -> Csi_V1_ListSnapshotsResponse {
        var all: [Torus_V1_Snapshot]
        if !request.snapshotID.isEmpty {
            guard let (volume, snapshot) = CSINames.split(snapshotID: request.snapshotID),
                  try await client.volume(volume) != nil else { return .init() }
            all = try await client.allSnapshots(volume: volume).filter { $0.name == snapshot }
        } else if !request.sourceVolumeID.isEmpty {
            guard try await client.volume(request.sourceVolumeID) != nil else { return .init() }
            all = try await client.allSnapshots(volume: request.sourceVolumeID)
        } else {
            all = try await client.allSnapshots()
        }
        all.sort { ($0.volume, $0.name) < ($1.volume, $1.name) }
        let page = try CSIPaging.page(all.count, maxEntries: request.maxEntries, token: request.startingToken)
        return .with { r in
            r.entries = all[page.range].map { s in .with { $0.snapshot = Self.csi(s) } }
            r.nextToken = page.next
        }
    }

    static func csi(_ s: Torus_V1_Snapshot) -> Csi_V1_Snapshot {
        .with {
            $0.snapshotID = "\(s.volume)@\(s.name)"
            $0.sourceVolumeID = s.volume
            $0.sizeBytes = Int64(s.sizeBytes)
            $0.readyToUse = true  // a snapshot is complete when CreateSnapshot returns
            // Torus records no time; the commit generation orders snapshots instead.
            $0.creationTime = Google_Protobuf_Timestamp(seconds: 0, nanos: 0)
        }
    }
}

/// Which volume capabilities the driver serves: one node at a time (the volume's writer is
/// one process; a filesystem on it can be mounted on one host), mount (ext4, xfs) or block.
enum CSICapabilities {
    static let singleNode: Set<Csi_V1_VolumeCapability.AccessMode.Mode> = [.singleNodeWriter, .singleNodeReaderOnly, .singleNodeSingleWriter, .singleNodeMultiWriter]

    static func check(_ caps: [Csi_V1_VolumeCapability]) throws {
        guard !caps.isEmpty else { throw RPCError(code: .invalidArgument, message: "no volume capabilities given") }
        for c in caps {
            guard c.hasAccessMode, singleNode.contains(c.accessMode.mode) else {
                throw RPCError(code: .invalidArgument, message: "access mode \(c.accessMode.mode) is not offered: volumes attach on one node at a time")
            }
            switch c.accessType {
            case .mount(let m):
                guard ["", "ext4", "xfs"].contains(m.fsType) else {
                    throw RPCError(code: .invalidArgument, message: "filesystem \(m.fsType) is not offered (ext4 or xfs)")
                }
            case .block: break
            case nil: throw RPCError(code: .invalidArgument, message: "a volume capability needs an access type (mount or block)")
            }
        }
    }
}

/// List pagination: the token is the index of the next entry.
enum CSIPaging {
    static func page(_ count: Int, maxEntries: Int32, token: String) throws -> (range: Range<Int>, next: String) {
        guard maxEntries >= 0 else { throw RPCError(code: .invalidArgument, message: "max_entries must not be negative") }
        var start = 0
        if !token.isEmpty {
            guard let n = Int(token), n >= 0, n <= count else { throw RPCError(code: .aborted, message: "starting token '\(token)' is not valid") }
            start = n
        }
        let end = maxEntries == 0 ? count : min(count, start + Int(maxEntries))
        return (start..<end, end < count ? String(end) : "")
    }
}
#endif
