import ArgumentParser
import Foundation
import Logging
import TorusRuntime

/// `torus csi`: the Container Storage Interface driver (Kubernetes), with the GRPC trait.
struct CSI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "csi", abstract: "Run the CSI driver (Kubernetes): volumes and snapshots for pods.",
        discussion: """
            Controller mode creates, grows and deletes volumes and snapshots through the gRPC API \
            of `torus nbd serve --grpc` (--api). Node mode attaches volumes on this host as \
            `torus attach` does (kernel NBD, else torus-fuse + a loop device; root, /dev/fuse) \
            from the NBD server (--nbd), makes a filesystem on an empty volume, and bind-mounts it \
            into pods. Needs a torus built with `swift build --traits GRPC`. More: docs/kubernetes.md.
            """)

    @Option(help: "Where the CSI sidecars and kubelet call: unix:///PATH or a socket path.") var endpoint = "unix:///csi/csi.sock"
    @Option(help: "controller, node, or all (both, for tests).") var mode = "all"
    @Option(help: "The Torus gRPC API: HOST:PORT (or a socket path) of `torus nbd serve --grpc`. Required for controller mode.") var api: String?
    @Option(help: "Node mode: the NBD server (HOST:PORT of `torus nbd serve --listen`).") var nbd = "127.0.0.1:10809"
    @Option(name: .customLong("node-id"), help: "Node mode: this node's name, as Kubernetes knows it (default: the host name).") var nodeID: String?
    @Option(help: "Node mode: the zone reported as topology (topology.torus.dev/zone).") var zone: String?
    @Option(name: .customLong("driver-name"), help: "The driver's name in the CSIDriver object and StorageClasses.") var driverName = "csi.torus.dev"
    @OptionGroup(title: "Logging") var logging: LoggingOptions

    var socketPath: String { endpoint.hasPrefix("unix://") ? String(endpoint.dropFirst("unix://".count)) : endpoint }

    func validate() throws {
        #if !GRPC
        throw ValidationError("this torus was built without gRPC, which CSI needs: build it with `swift build -c release --traits GRPC`")
        #else
        guard ["controller", "node", "all"].contains(mode) else { throw ValidationError("--mode must be controller, node or all, not '\(mode)'") }
        guard socketPath.hasPrefix("/") else { throw ValidationError("--endpoint must be unix:///ABSOLUTE/PATH, not '\(endpoint)'") }
        if mode != "node" && api == nil { throw ValidationError("--mode \(mode) needs --api HOST:PORT (the Torus gRPC API)") }
        if let api, !api.hasPrefix("/") { do { _ = try HostPort(parsing: api) } catch { throw ValidationError("--api '\(api)': \(error)") } }
        do { _ = try HostPort(parsing: nbd) } catch { throw ValidationError("--nbd '\(nbd)': \(error)") }
        #endif
    }

    func run() throws {
        logging.bootstrap()
        #if GRPC
        try CSIServer.serve(self)
        #endif
    }
}
