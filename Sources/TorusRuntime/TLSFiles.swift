import NIOSSL

#if canImport(Glibc)
import Glibc
#endif

/// TLS contexts from PEM files, with errors that name the file at fault.
public enum TLSFiles {
    /// A server context: `certificate` (a PEM chain, leaf first) and its `key`. With
    /// `clientCA`, every client must present a certificate that CA signed.
    public static func serverContext(certificate: String, key: String, clientCA: String?,
                                     minimum: TLSVersion = .tlsv12) throws -> NIOSSLContext {
        var config = TLSConfiguration.makeServerConfiguration(
            certificateChain: try chain(certificate).map { .certificate($0) }, privateKey: .privateKey(try privateKey(key)))
        // The NBD spec: "SHOULD NOT" offer versions older than 1.2 by default.
        config.minimumTLSVersion = minimum
        if let clientCA {
            config.certificateVerification = .noHostnameVerification
            config.trustRoots = .certificates(try chain(clientCA))
        }
        return try context(config, what: "\(certificate) and \(key)")
    }

    static func chain(_ path: String) throws -> [NIOSSLCertificate] {
        try mustRead(path, "certificate(s)")
        let certificates: [NIOSSLCertificate]
        do { certificates = try NIOSSLCertificate.fromPEMFile(path) } catch {
            throw RuntimeError.badInput("cannot read the certificate(s) in \(path): \(describe(error))")
        }
        guard !certificates.isEmpty else { throw RuntimeError.badInput("\(path) holds no PEM certificate") }
        return certificates
    }

    static func privateKey(_ path: String) throws -> NIOSSLPrivateKey {
        try mustRead(path, "private key")
        do { return try NIOSSLPrivateKey(file: path, format: .pem) } catch {
            throw RuntimeError.badInput("cannot read the private key in \(path): \(describe(error))")
        }
    }

    /// NIOSSL says "not a PEM file" for a file that is missing or unreadable: say which.
    static func mustRead(_ path: String, _ what: String) throws {
        guard access(path, R_OK) == 0 else {
            let reason = errno == ENOENT ? "no such file" : "not readable (\(String(cString: strerror(errno))))"
            throw RuntimeError.badInput("cannot read the \(what) in \(path): \(reason)")
        }
    }

    static func context(_ config: TLSConfiguration, what: String) throws -> NIOSSLContext {
        do { return try NIOSSLContext(configuration: config) } catch {
            throw RuntimeError.badInput("cannot use \(what) for TLS (does the key match the certificate?): \(describe(error))")
        }
    }

    /// Why a TLS handshake failed, in words: BoringSSL's reason (`CERTIFICATE_VERIFY_FAILED`)
    /// without its error stack, explained where it is a common one.
    public static func handshakeFailure(_ error: Error) -> String {
        let text = "\(error)"
        let marker = "OPENSSL_internal:"
        guard let part = text.split(separator: marker, maxSplits: 1, omittingEmptySubsequences: false).dropFirst().first,
              text.contains(marker) else { return text }
        let reason = part.prefix { $0 != " " && $0 != "]" }
        switch reason {
        case "PEER_DID_NOT_RETURN_A_CERTIFICATE": return "the peer presented no certificate (\(reason))"
        case "CERTIFICATE_VERIFY_FAILED": return "the peer's certificate is not signed by a trusted CA, or has expired (\(reason))"
        case "WRONG_VERSION_NUMBER", "HTTP_REQUEST": return "the peer does not speak TLS (\(reason))"
        default: return String(reason)
        }
    }

    /// A connection's error for a log line: TLS handshake failures in words.
    public static func describeConnectionError(_ error: Error) -> String {
        if case .handshakeFailed = error as? NIOSSLError { return "TLS handshake failed: \(handshakeFailure(error))" }
        return "\(error)"
    }

    /// NIOSSL's errors without BoringSSL's stack dumps where a short word says it.
    static func describe(_ error: Error) -> String {
        switch error as? NIOSSLError {
        case .noSuchFilesystemObject: "no such file"
        case .failedToLoadCertificate: "not a PEM certificate"
        case .failedToLoadPrivateKey: "not a PEM private key (or it is encrypted)"
        default: "\(error)"
        }
    }
}
