#if GRPC
import Crypto
import Foundation
import TorusRuntime

/// How CSI names and ids map to Torus names. A CSI name the volume rules accept is kept;
/// any other (too long, other characters) becomes "csi-" and 40 hex digits of its SHA-256,
/// so the same name always finds the same volume (idempotent create).
enum CSINames {
    static func volume(forName name: String) -> String {
        VolumeServer.validName(name) ? name : "csi-" + digest(name)
    }

    /// Snapshot names follow the same rules, without a leading '.'.
    static func snapshot(forName name: String) -> String {
        VolumeServer.validName(name) && !name.hasPrefix(".") ? name : "csi-" + digest(name)
    }

    /// A snapshot's CSI id is "VOL@SNAP"; nil for anything else.
    static func split(snapshotID id: String) -> (volume: String, snapshot: String)? {
        let parts = id.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
        return (String(parts[0]), String(parts[1]))
    }

    static func digest(_ s: String) -> String {
        SHA256.hash(data: Data(s.utf8)).prefix(20).map { String(format: "%02x", $0) }.joined()
    }

    /// Sizes are whole 4 KiB sectors; a request of 0 bytes gets 1 GiB.
    static let defaultBytes: Int64 = 1 << 30
    static let maxBytes: Int64 = 1 << 60
    static func size(required: Int64, limit: Int64) -> Int64? {
        guard required >= 0, limit >= 0, required <= maxBytes, limit == 0 || limit >= required else { return nil }
        let want = required > 0 ? required : (limit > 0 ? min(limit, defaultBytes) : defaultBytes)
        let up = (want + 4095) / 4096 * 4096
        if limit == 0 || up <= limit { return up }
        let down = min(limit, maxBytes) / 4096 * 4096  // the largest whole-sector size under the limit
        return down >= max(required, 4096) ? down : nil
    }
}
#endif
