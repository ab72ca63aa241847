import Crypto
import Foundation
import SwiftASN1
import X509

/// A cluster certificate authority and the certificates it signs (P-256 ECDSA keys), written
/// as PEM files in the layout libnbd and qemu read: `ca-cert.pem`, `<role>-cert.pem`,
/// `<role>-key.pem`.
enum CertificateIssuer {
    /// What a certificate is for: which extended key usages it carries.
    enum Role: String, CaseIterable {
        /// An NBD server (TLS server only).
        case server
        /// An NBD client (TLS client only).
        case client
        /// A storage node, `torus nbd serve` or `torus up` on the peer protocol: both ends of mutual TLS.
        case peer

        var usages: [ExtendedKeyUsage.Usage] {
            switch self {
            case .server: [.serverAuth]
            case .client: [.clientAuth]
            case .peer: [.serverAuth, .clientAuth]
            }
        }
    }

    /// A new self-signed CA: (certificate PEM, private key PEM).
    static func makeAuthority(name: String, days: Int) throws -> (certificate: String, key: String) {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let subject = try DistinguishedName { CommonName(name) }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(Double(days) * 86400),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: key.publicKey)
            },
            issuerPrivateKey: key)
        return (try certificate.serializeAsPEM().pemString, try key.serializeAsPEM().pemString)
    }

    /// A certificate for `role` named `name`, valid for `hosts` (DNS names or IP addresses),
    /// signed by the CA in `caCertificate` / `caKey` (PEM).
    static func issue(role: Role, name: String, hosts: [String], days: Int,
                      caCertificate: String, caKey: String) throws -> (certificate: String, key: String) {
        let ca = try Certificate(pemEncoded: caCertificate)
        let signer = try Certificate.PrivateKey(pemEncoded: caKey)
        guard signer.publicKey == ca.publicKey else { throw IssueError("the CA key does not belong to the CA certificate") }
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let names = try hosts.map(generalName)
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(Double(days) * 86400),
            issuer: ca.subject, subject: try DistinguishedName { CommonName(name) }, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage(role.usages)
                SubjectKeyIdentifier(hash: key.publicKey)
                AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: ca.publicKey).keyIdentifier)
                if !names.isEmpty { SubjectAlternativeNames(names) }
            },
            issuerPrivateKey: signer)
        return (try certificate.serializeAsPEM().pemString, try key.serializeAsPEM().pemString)
    }

    /// `127.0.0.1` or `::1` as an IP address name, anything else as a DNS name.
    static func generalName(_ host: String) throws -> GeneralName {
        if let v4 = ipv4(host) { return .ipAddress(ASN1OctetString(contentBytes: v4[...])) }
        if host.contains(":") {
            guard let v6 = ipv6(host) else { throw IssueError("'\(host)' is not a valid IPv6 address") }
            return .ipAddress(ASN1OctetString(contentBytes: v6[...]))
        }
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "*" }) else {
            throw IssueError("'\(host)' is neither a host name nor an IP address")
        }
        return .dnsName(host)
    }

    static func ipv4(_ s: String) -> [UInt8]? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        let bytes = parts.compactMap { UInt8($0) }
        return bytes.count == 4 ? bytes : nil
    }

    static func ipv6(_ s: String) -> [UInt8]? {
        var address = in6_addr()
        guard inet_pton(AF_INET6, s, &address) == 1 else { return nil }
        return withUnsafeBytes(of: &address) { Array($0) }
    }

    struct IssueError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
