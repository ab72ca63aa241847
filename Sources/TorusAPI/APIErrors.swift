#if GRPC
import GRPCCore
import NIOCore
import TorusCore
import TorusRuntime

/// How a failure of the runtime or of a volume reaches a gRPC client: its status code.
func rpcError(_ error: any Error) -> RPCError {
    switch error {
    case let e as RPCError: return e
    case let e as TorusRuntime.RuntimeError:
        switch e {
        case .badInput(let m): return RPCError(code: .invalidArgument, message: m)
        case .notFound(let m): return RPCError(code: .notFound, message: m)
        case .exists(let m): return RPCError(code: .alreadyExists, message: m)
        case .refused(let m): return RPCError(code: .failedPrecondition, message: m)
        case .busy(let m): return RPCError(code: .aborted, message: m)
        case .metadata(let m): return RPCError(code: .unavailable, message: m)
        case .io(let m): return RPCError(code: .internalError, message: m)
        }
    case let e as VolumeError:
        let code: RPCError.Code
        switch e {
        case .misaligned, .outOfRange, .tooLarge: code = .invalidArgument
        case .readFailed: code = .dataLoss
        case .fenced: code = .aborted
        case .leaseNotRenewed, .metadataUnavailable: code = .unavailable
        case .readOnly: code = .permissionDenied
        case .noSpace: code = .resourceExhausted
        }
        return RPCError(code: code, message: e.description)
    default:
        return RPCError(code: .internalError, message: "\(error)")
    }
}

extension VolumeServer {
    /// Runs `body` on the server's event loop (where its state lives) and waits for its
    /// future; failures come back as `RPCError`s.
    func call<T: Sendable>(_ body: @escaping @Sendable () -> EventLoopFuture<T>) async throws -> T {
        do {
            return try await loop.flatSubmit(body).get()
        } catch {
            throw rpcError(error)
        }
    }
}
#endif
