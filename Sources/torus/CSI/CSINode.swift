#if GRPC
import Foundation
import GRPCCore

#if canImport(Glibc)
import Glibc
#endif

/// CSI Node: stage attaches the volume as `torus attach` does (a filesystem made if the volume
/// is empty, mounted at the staging path; or the bare device for block access), publish
/// bind-mounts it into the pod's path. Every call is idempotent; host work runs one at a time.
struct CSINode: Csi_V1_Node.SimpleServiceProtocol {
    let nodeID: String
    let zone: String?
    let nbd: String
    let client: TorusClient?
    static let topologyKey = "topology.torus.dev/zone"

    func nodeStageVolume(request: Csi_V1_NodeStageVolumeRequest, context: ServerContext) async throws -> Csi_V1_NodeStageVolumeResponse {
        try require(request.volumeID, "volume id", request.stagingTargetPath, "staging target path")
        guard request.hasVolumeCapability else { throw RPCError(code: .invalidArgument, message: "NodeStageVolume needs a volume capability") }
        try CSICapabilities.check([request.volumeCapability])
        try await mustExist(request.volumeID)
        let id = request.volumeID, stage = request.stagingTargetPath, cap = request.volumeCapability, nbd = self.nbd
        try await HostWork.run {
            if let a = Attachment.all().first(where: { $0.stage == stage }) {
                guard a.volume == id else { throw RPCError(code: .failedPrecondition, message: "\(stage) stages volume \(a.volume)") }
                guard a.via == .fuse && !AttachGrowth.helperRuns(a) else { return }
                // Its torus-fuse died (the plugin's container restarted): release it, attach anew.
                CSILog.log.warning("\(id): \(a.helper) of \(a.device) is gone; attaching again")
                _ = try Detacher.detach(a, force: true)
            }
            let readOnly = cap.accessMode.mode == .singleNodeReaderOnly
            if let other = Attachment.all().first(where: { $0.volume == id && (!$0.readOnly || !readOnly) }) {
                throw RPCError(code: .failedPrecondition, message: "\(id) is attached at \(other.device) for \(other.stage.isEmpty ? "torus attach" : other.stage)")
            }
            var fs: String?, mount: String?
            if case .mount(let m) = cap.accessType {
                fs = m.fsType.isEmpty ? "ext4" : m.fsType
                try FileManager.default.createDirectory(atPath: stage, withIntermediateDirectories: true)
                mount = stage
            }
            var attacher = Attacher(volume: id, uri: "nbd://\(nbd)/\(id)", readOnly: readOnly, fs: fs, mount: mount, via: try Attach.chooseVia("auto"))
            attacher.stage = stage
            _ = try attacher.attach()
        }
        return .init()
    }

    func nodeUnstageVolume(request: Csi_V1_NodeUnstageVolumeRequest, context: ServerContext) async throws -> Csi_V1_NodeUnstageVolumeResponse {
        try require(request.volumeID, "volume id", request.stagingTargetPath, "staging target path")
        let id = request.volumeID, stage = request.stagingTargetPath
        try await HostWork.run {
            guard let a = Attachment.all().first(where: { $0.stage == stage && $0.volume == id }) else { return }
            _ = try Detacher.detach(a, force: false)
        }
        return .init()
    }

    func nodePublishVolume(request: Csi_V1_NodePublishVolumeRequest, context: ServerContext) async throws -> Csi_V1_NodePublishVolumeResponse {
        try require(request.volumeID, "volume id", request.targetPath, "target path")
        try require(request.stagingTargetPath, "staging target path", "-", "-")
        guard request.hasVolumeCapability else { throw RPCError(code: .invalidArgument, message: "NodePublishVolume needs a volume capability") }
        try CSICapabilities.check([request.volumeCapability])
        try await mustExist(request.volumeID)
        let id = request.volumeID, stage = request.stagingTargetPath, target = request.targetPath, readOnly = request.readonly
        try await HostWork.run {
            guard let a = Attachment.all().first(where: { $0.stage == stage && $0.volume == id }) else {
                throw RPCError(code: .failedPrecondition, message: "\(id) is not staged at \(stage)")
            }
            if MountTable.isMountPoint(target) {
                guard !readOnly || MountTable.isReadOnly(target) else {
                    throw RPCError(code: .alreadyExists, message: "\(target) is published read-write, not read-only")
                }
                return
            }
            let block = a.mount.isEmpty
            let parent = (target as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: block ? parent : target, withIntermediateDirectories: true)
            if block && !FileManager.default.fileExists(atPath: target) { _ = FileManager.default.createFile(atPath: target, contents: nil) }
            try HostTools.run("mount", ["--bind", block ? a.device : stage, target])
            if readOnly {
                do { try HostTools.run("mount", ["-o", "remount,bind,ro", target]) } catch {
                    _ = try? HostTools.status("umount", [target])  // never leave it writable
                    throw error
                }
            }
        }
        return .init()
    }

    func nodeUnpublishVolume(request: Csi_V1_NodeUnpublishVolumeRequest, context: ServerContext) async throws -> Csi_V1_NodeUnpublishVolumeResponse {
        try require(request.volumeID, "volume id", request.targetPath, "target path")
        let target = request.targetPath
        try await HostWork.run {
            while MountTable.isMountPoint(target) { try HostTools.run("umount", [target]) }
            // Never a recursive delete: an empty directory, or the file a block volume was bound to.
            if rmdir(target) != 0 && errno == ENOTDIR { unlink(target) }
            if FileManager.default.fileExists(atPath: target) {
                throw RPCError(code: .internalError, message: "\(target) is not a mount point any more but could not be removed: \(String(cString: strerror(errno)))")
            }
        }
        return .init()
    }

    func nodeGetCapabilities(request: Csi_V1_NodeGetCapabilitiesRequest, context: ServerContext) async throws -> Csi_V1_NodeGetCapabilitiesResponse {
        let offered: [Csi_V1_NodeServiceCapability.RPC.TypeEnum] = [.stageUnstageVolume, .getVolumeStats, .expandVolume]
        return .with { r in r.capabilities = offered.map { t in .with { $0.rpc.type = t } } }
    }

    func nodeGetInfo(request: Csi_V1_NodeGetInfoRequest, context: ServerContext) async throws -> Csi_V1_NodeGetInfoResponse {
        .with { r in
            r.nodeID = nodeID
            if let zone { r.accessibleTopology.segments = [Self.topologyKey: zone] }
        }
    }

    func require(_ a: String, _ aName: String, _ b: String, _ bName: String) throws {
        if a.isEmpty { throw RPCError(code: .invalidArgument, message: "the request needs a \(aName)") }
        if b.isEmpty { throw RPCError(code: .invalidArgument, message: "the request needs a \(bName)") }
    }

    func mustExist(_ volume: String) async throws {
        guard let client else { return }
        guard try await client.volume(volume) != nil else { throw RPCError(code: .notFound, message: "no volume \(volume)") }
    }
}

/// Host work of the node plugin (attach, mount, mkfs: blocking tools) on one serial queue:
/// never two at once, and off Swift's few cooperative threads.
enum HostWork {
    static let queue = DispatchQueue(label: "torus.csi.host")

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in
            queue.async {
                do { c.resume(returning: try body()) } catch let e as RPCError { c.resume(throwing: e) } catch {
                    c.resume(throwing: RPCError(code: .internalError, message: "\(error)"))
                }
            }
        }
    }
}

/// Mount points, from /proc/self/mountinfo (works for files too, unlike mountpoint(1)).
enum MountTable {
    static func isMountPoint(_ path: String) -> Bool { entry(path) != nil }

    /// Mounted read-only (the per-mount options, field 6).
    static func isReadOnly(_ path: String) -> Bool {
        entry(path).map { $0[5].split(separator: ",").contains("ro") } ?? false
    }

    /// The mountinfo fields of the mount at `path` (symlinks resolved), the last one if stacked.
    static func entry(_ path: String) -> [Substring]? {
        guard let data = FileManager.default.contents(atPath: "/proc/self/mountinfo") else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        let want = (path as NSString).resolvingSymlinksInPath
        return text.split(separator: "\n").map { $0.split(separator: " ") }.last { fields in
            fields.count > 5 && unescape(String(fields[4])) == want
        }
    }

    /// mountinfo writes space, tab, newline and backslash as \\ooo octal.
    static func unescape(_ s: String) -> String {
        var out = "", chars = Array(s), i = 0
        while i < chars.count {
            if chars[i] == "\\", i + 3 < chars.count, let v = UInt8(String(chars[(i + 1)...(i + 3)]), radix: 8) {
                out.append(Character(UnicodeScalar(v)))
                i += 4
            } else {
                out.append(chars[i])
                i += 1
            }
        }
        return out
    }
}
#endif
