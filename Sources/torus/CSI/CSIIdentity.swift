#if GRPC
import GRPCCore
import SwiftProtobuf

/// CSI Identity: the driver's name and version, what it offers, and whether it is ready.
struct CSIIdentity: Csi_V1_Identity.SimpleServiceProtocol {
    let name: String
    let controller: Bool
    let client: TorusClient?

    func getPluginInfo(request: Csi_V1_GetPluginInfoRequest, context: ServerContext) async throws -> Csi_V1_GetPluginInfoResponse {
        .with {
            $0.name = name
            $0.vendorVersion = torusVersion
        }
    }

    func getPluginCapabilities(request: Csi_V1_GetPluginCapabilitiesRequest, context: ServerContext) async throws -> Csi_V1_GetPluginCapabilitiesResponse {
        var caps: [Csi_V1_PluginCapability] = [.with { $0.volumeExpansion.type = .online }]
        if controller { caps.append(.with { $0.service.type = .controllerService }) }
        return .with { $0.capabilities = caps }
    }

    /// Ready once the Torus API answers (the node plugin without one is ready at once).
    func probe(request: Csi_V1_ProbeRequest, context: ServerContext) async throws -> Csi_V1_ProbeResponse {
        var ready = true
        if let client {
            do { _ = try await client.cluster.getStatus(.init()) } catch { ready = false }
        }
        return .with { $0.ready = Google_Protobuf_BoolValue(ready) }
    }
}
#endif
