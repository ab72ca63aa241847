#if GRPC
import Dispatch
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import Synchronization
import TorusRuntime

#if canImport(Glibc)
import Glibc
#endif

/// The gRPC API (proto/torus/v1) of the process that holds the volumes' writers.
public enum APIServer {
    /// PEM files of the listener's TLS; with `clientCA`, clients must present a certificate it signed.
    public struct TLS: Sendable {
        public var certificate: String
        public var key: String
        public var clientCA: String?
        public init(certificate: String, key: String, clientCA: String?) {
            self.certificate = certificate
            self.key = key
            self.clientCA = clientCA
        }
    }

    static let log = Logger(label: "torus.api")

    /// Listens on `address` (HOST:PORT, or a Unix socket path) and serves in the background;
    /// returns the address bound once listening, or throws why it cannot.
    public static func start(_ address: String, cluster: VolumeServer, tls: TLS?) throws -> String {
        let transport = HTTP2ServerTransport.Posix(address: try socketAddress(address), transportSecurity: security(tls), config: .defaults { c in
            c.rpc.maxRequestPayloadSize = BlockAPI.requestBytesMax + (1 << 20)
            // Block data: a 64 KiB window (the default) held 1 MiB writes to a trickle of
            // WINDOW_UPDATE round trips, and 16 KiB frames cut each reply into 64.
            c.http2.targetWindowSize = 16 << 20
            c.http2.maxFrameSize = 1 << 20
        })
        let server = GRPCServer(transport: transport, services: [VolumeAPI(cluster: cluster), SnapshotAPI(cluster: cluster),
                                                                 ClusterAPI(cluster: cluster), BlockAPI(cluster: cluster)])
        Task {
            do { try await server.serve() } catch { log.error("the gRPC API stopped: \(error)") }
        }
        let bound = Mutex<Result<String, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            do {
                let a = try await transport.listeningAddress
                bound.withLock { $0 = .success(describe(a)) }
            } catch {
                bound.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        done.wait()
        return try bound.withLock { $0! }.get()
    }

    static func socketAddress(_ address: String) throws -> GRPCNIOTransportCore.SocketAddress {
        if address.hasPrefix("/") || address.hasPrefix("./") {
            try UnixSocket.removeStale(address)  // a socket left by a process that died
            return .unixDomainSocket(path: address)
        }
        let hp: HostPort
        do { hp = try HostPort(parsing: address) } catch {
            throw TorusRuntime.RuntimeError.badInput("--grpc '\(address)' is not HOST:PORT or a socket path: \(error)")
        }
        return hp.host.contains(":") ? .ipv6(host: hp.host, port: hp.port) : .ipv4(host: hp.host, port: hp.port)
    }

    static func security(_ tls: TLS?) -> HTTP2ServerTransport.Posix.TransportSecurity {
        guard let tls else { return .plaintext }
        let chain: [TLSConfig.CertificateSource] = [.file(path: tls.certificate, format: .pem)]
        let key = TLSConfig.PrivateKeySource.file(path: tls.key, format: .pem)
        guard let ca = tls.clientCA else { return .tls(certificateChain: chain, privateKey: key) }
        return .mTLS(certificateChain: chain, privateKey: key) { config in
            config.trustRoots = .certificates([.file(path: ca, format: .pem)])
            config.clientCertificateVerification = .noHostnameVerification
        }
    }

    static func describe(_ a: GRPCNIOTransportCore.SocketAddress) -> String {
        if let v4 = a.ipv4 { return "\(v4.host):\(v4.port)" }
        if let v6 = a.ipv6 { return "[\(v6.host)]:\(v6.port)" }
        if let u = a.unixDomainSocket { return u.path }
        return "\(a)"
    }
}
#endif
