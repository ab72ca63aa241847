import NIOCore
import NIOSSL

/// Mutual TLS on the peer protocol: every storage node and every volume server presents a
/// certificate of the cluster's CA and accepts only peers that do. Host names are not
/// checked: membership is the CA's signature (docs/security.md).
public struct PeerTLS: Sendable {
    /// What `torus node` listens with: requires a client certificate of the CA.
    let server: NIOSSLContext
    /// What writers and the collector connect with: presents the certificate, checks the node's.
    let client: NIOSSLContext

    /// The files a `--peer-tls DIR` holds (`torus certs issue --role peer`, or `torus init --tls`).
    public static let files = (ca: "ca-cert.pem", certificate: "peer-cert.pem", key: "peer-key.pem")

    /// Reads DIR/ca-cert.pem, DIR/peer-cert.pem and DIR/peer-key.pem.
    public static func load(directory dir: String) throws -> PeerTLS {
        let ca = "\(dir)/\(files.ca)", certificate = "\(dir)/\(files.certificate)", key = "\(dir)/\(files.key)"
        let server = try TLSFiles.serverContext(certificate: certificate, key: key, clientCA: ca, minimum: .tlsv13)
        var config = TLSConfiguration.makeClientConfiguration()
        config.minimumTLSVersion = .tlsv13
        config.certificateChain = try TLSFiles.chain(certificate).map { .certificate($0) }
        config.privateKey = .privateKey(try TLSFiles.privateKey(key))
        config.trustRoots = .certificates(try TLSFiles.chain(ca))
        config.certificateVerification = .noHostnameVerification
        let client = try TLSFiles.context(config, what: "\(certificate) and \(key)")
        return PeerTLS(server: server, client: client)
    }

    /// Puts TLS in front of a node's accepted connection.
    func secureAccepted(_ channel: Channel) throws {
        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: server), position: .first)
    }

    /// Puts TLS in front of a connection to a node.
    func secureConnection(_ channel: Channel) throws {
        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: client, serverHostname: nil), position: .first)
    }

    /// Checks that the cluster's policy (`torus init --tls` or `--insecure`) and this process's
    /// `--peer-tls` agree, and says what to do when they do not.
    public static func check(clusterRequiresTLS: Bool, given: PeerTLS?, location: String) throws {
        if clusterRequiresTLS && given == nil {
            throw RuntimeError.badInput("the cluster in \(location) requires mutual TLS between peers (torus init --tls): pass --peer-tls DIR (ca-cert.pem, peer-cert.pem, peer-key.pem; `torus certs issue --role peer` makes them)")
        }
        if !clusterRequiresTLS && given != nil {
            throw RuntimeError.badInput("the cluster in \(location) was created with --insecure (plaintext peer traffic): drop --peer-tls, or create the cluster with `torus init --tls DIR`")
        }
    }
}
