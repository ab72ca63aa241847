import ArgumentParser
import TorusRuntime
#if GRPC
import TorusAPI
#endif

/// `--grpc`: the gRPC API of `torus up` and `torus nbd serve` (built with the GRPC trait).
struct APIOptions: ParsableArguments {
    @Option(name: .customLong("grpc"), help: ArgumentHelp(
        "Serve the gRPC API (proto/torus/v1) on HOST:PORT or a Unix socket path: volumes, snapshots, cluster status, block I/O.",
        discussion: "With --tls-cert the API takes TLS only, with the same certificate (and, with --tls-client-ca, clients must present a certificate). Needs a torus built with `swift build --traits GRPC`."))
    var address: String?

    func validate() throws {
        #if !GRPC
        if address != nil {
            throw ValidationError("this torus was built without the gRPC API: build it with `swift build -c release --traits GRPC`")
        }
        #endif
    }

    /// Starts the API (when asked) once the volumes are served; exits with a clear line if it cannot listen.
    func serve(_ cluster: VolumeServer, tls: NBDTLSOptions) throws {
        #if GRPC
        guard let address else { return }
        let apiTLS = tls.certificate.flatMap { cert in tls.key.map { APIServer.TLS(certificate: cert, key: $0, clientCA: tls.clientCA) } }
        do {
            let bound = try APIServer.start(address, cluster: cluster, tls: apiTLS)
            serverLog.info("serving the gRPC API on \(bound)\(apiTLS == nil ? "" : " (TLS)")")
        } catch {
            serverLog.error("cannot serve the gRPC API on \(address): \(error)")
            throw ExitCode(1)
        }
        #endif
    }
}
