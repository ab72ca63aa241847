#if GRPC
import ArgumentParser
import Dispatch
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import Synchronization
import TorusRuntime

enum CSILog {
    static let log = Logger(label: "torus.csi")
}

/// Failures relayed from the Torus API keep their code and message but not the upstream
/// call's metadata (its trailers would clash with this call's); each is logged.
struct CSIErrors: ServerInterceptor {
    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        do {
            var response = try await next(request, context)
            if case .failure(let e) = response.accepted { response.accepted = .failure(clean(e, context)) }
            return response
        } catch let e as RPCError {
            throw clean(e, context)
        }
    }

    func clean(_ e: RPCError, _ context: ServerContext) -> RPCError {
        CSILog.log.notice("\(context.descriptor.method) failed: \(e.code): \(e.message)")
        return RPCError(code: e.code, message: e.message)
    }
}

/// The CSI driver's gRPC server on its Unix socket, until SIGINT or SIGTERM.
enum CSIServer {
    static func serve(_ options: CSI) throws {
        let client = try options.api.map { try TorusClient(address: $0) }
        // The node plugin's Probe does not depend on the API: a liveness restart of the plugin
        // would end every torus-fuse it started, while attached devices work without the API.
        var services: [any RegistrableRPCService] = [CSIIdentity(name: options.driverName, controller: options.mode != "node",
                                                                 client: options.mode == "node" ? nil : client)]
        if options.mode != "node", let client { services.append(CSIController(client: client)) }
        if options.mode != "controller" {
            let host = ProcessInfo.processInfo.hostName
            services.append(CSINode(nodeID: options.nodeID ?? host, zone: options.zone, nbd: options.nbd, client: client))
        }
        let path = options.socketPath
        try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        do { try UnixSocket.removeStale(path) } catch {
            CSILog.log.error("\(error)")
            throw ExitCode(1)
        }
        let transport = HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: path), transportSecurity: .plaintext)
        let server = GRPCServer(transport: transport, services: services, interceptors: [CSIErrors()])
        Task {
            do { try await server.serve() } catch { CSILog.log.error("the CSI server stopped: \(error)") }
        }
        let bound = Mutex<(any Error)?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            do { _ = try await transport.listeningAddress } catch { bound.withLock { $0 = error } }
            done.signal()
        }
        done.wait()
        if let e = bound.withLock({ $0 }) {
            CSILog.log.error("cannot listen on \(path): \(e)")
            throw ExitCode(1)
        }
        CSILog.log.info("CSI driver \(options.driverName) (\(options.mode)) on unix://\(path)\(options.api.map { ", Torus API at \($0)" } ?? "")")
        runUntilSignalled("the CSI driver") {
            unlink(path)
            return 0
        }
    }
}
#endif
