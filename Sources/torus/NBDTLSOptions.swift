import ArgumentParser
import TorusNBD
import TorusRuntime

/// `--tls`, `--tls-cert`, `--tls-key`, `--tls-client-ca` of the commands that serve NBD.
struct NBDTLSOptions: ParsableArguments {
    @Option(name: .customLong("tls"), help: ArgumentHelp(
        "NBD over TLS: off, allow (clients choose), or require (nothing but NBD_OPT_STARTTLS before TLS). Default: require with --tls-cert, off without.",
        discussion: "Clients connect with nbds:// URIs: e.g. nbdinfo 'nbds://127.0.0.1/vol0?tls-certificates=DIR', where DIR holds ca-cert.pem (the CA that signed --tls-cert) and, with --tls-client-ca, client-cert.pem and client-key.pem."))
    var mode: String?
    @Option(name: .customLong("tls-cert"), help: "PEM certificate of this server (its chain may follow, leaf first); its names must match the host clients connect to.")
    var certificate: String?
    @Option(name: .customLong("tls-key"), help: "PEM private key of --tls-cert (unencrypted; keep it mode 0600).")
    var key: String?
    @Option(name: .customLong("tls-client-ca"), help: "PEM CA certificate(s): clients must present a certificate one of them signed.")
    var clientCA: String?

    func validate() throws {
        if let mode, NBDTLSMode(rawValue: mode) == nil {
            throw ValidationError("--tls must be off, allow or require (not '\(mode)')")
        }
        if certificate != nil && key == nil { throw ValidationError("--tls-cert needs --tls-key") }
        if key != nil && certificate == nil { throw ValidationError("--tls-key needs --tls-cert") }
        let on = (mode.flatMap(NBDTLSMode.init(rawValue:)) ?? (certificate == nil ? .off : .require)) != .off
        if on && (certificate == nil || key == nil) {
            throw ValidationError("--tls \(mode ?? "require") needs --tls-cert and --tls-key")
        }
        if !on && (certificate != nil || key != nil || clientCA != nil) {
            throw ValidationError("--tls off takes no --tls-cert, --tls-key or --tls-client-ca")
        }
    }

    /// The server's TLS (nil when off); reads and checks the files.
    func load() throws -> NBDServerTLS? {
        let mode = mode.flatMap(NBDTLSMode.init(rawValue:)) ?? (certificate == nil ? .off : .require)
        guard mode != .off, let certificate, let key else { return nil }
        let context = try TLSFiles.serverContext(certificate: certificate, key: key, clientCA: clientCA)
        return NBDServerTLS(mode: mode, context: context)
    }
}
