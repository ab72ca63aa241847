import ArgumentParser
import Foundation
import TorusRuntime

struct Certs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a cluster CA and the TLS certificates of NBD servers, NBD clients and peers.",
        discussion: """
            Files use the layout libnbd and qemu read: a directory with ca-cert.pem and \
            <role>-cert.pem / <role>-key.pem, so a client directory is a valid \
            tls-certificates=DIR of an nbds:// URI. Keys are P-256 ECDSA, written mode 0600.

            Example:
              torus certs ca --dir ca
              torus certs issue --ca ca --role server --host localhost --host 127.0.0.1 --out server
              torus certs issue --ca ca --role client --name alice --out alice
              torus up --tls-cert server/server-cert.pem --tls-key server/server-key.pem --tls-client-ca ca/ca-cert.pem
              nbdinfo 'nbds://127.0.0.1/vol0?tls-certificates=alice'
            """,
        subcommands: [Authority.self, Issue.self])

    struct Authority: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ca", abstract: "Create a certificate authority: DIR/ca-cert.pem and DIR/ca-key.pem (keep the key secret).")
        @Option(help: "Directory to create the CA in (created if missing).") var dir: String
        @Option(help: "The CA's common name.") var name = "torus cluster CA"
        @Option(help: "Days the CA is valid.") var days = 3650
        @Flag(help: "Replace files that exist.") var force = false

        func validate() throws {
            guard (1...36500).contains(days) else { throw ValidationError("--days must be between 1 and 36500") }
            guard !name.isEmpty else { throw ValidationError("--name must not be empty") }
        }

        func run() throws {
            let (certificate, key) = try CertificateIssuer.makeAuthority(name: name, days: days)
            try PEMFiles.write([("ca-cert.pem", certificate, false), ("ca-key.pem", key, true)], in: dir, force: force)
            print("created \(dir)/ca-cert.pem and \(dir)/ca-key.pem (\(name), valid \(days) days)")
        }
    }

    struct Issue: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a certificate signed by a CA: OUT/<role>-cert.pem, OUT/<role>-key.pem and a copy of ca-cert.pem.")
        @Option(help: "Directory of the CA (from `torus certs ca`).") var ca: String
        @Option(help: "What the certificate is for: server (an NBD server), client (an NBD client), peer (storage nodes and volume servers, both ends of mutual TLS).")
        var role: String
        @Option(help: "Directory to write to (created if missing).") var out: String
        @Option(help: "Common name (default: the first --host, or the role).") var name: String?
        @Option(name: .customLong("host"), help: "DNS name or IP address clients connect to (repeatable); servers and peers need one.")
        var hosts: [String] = []
        @Option(help: "Days the certificate is valid.") var days = 825
        @Flag(help: "Replace files that exist.") var force = false

        func validate() throws {
            guard let r = CertificateIssuer.Role(rawValue: role) else {
                throw ValidationError("--role must be server, client or peer (not '\(role)')")
            }
            if r == .server && hosts.isEmpty { throw ValidationError("--role server needs at least one --host (the name or address clients connect to)") }
            guard (1...36500).contains(days) else { throw ValidationError("--days must be between 1 and 36500") }
            for host in hosts { _ = try CertificateIssuer.generalName(host) }
        }

        func run() throws {
            let role = CertificateIssuer.Role(rawValue: role)!
            let caCertificate = try PEMFiles.read("\(ca)/ca-cert.pem"), caKey = try PEMFiles.read("\(ca)/ca-key.pem")
            let (certificate, key) = try CertificateIssuer.issue(
                role: role, name: name ?? hosts.first ?? role.rawValue, hosts: hosts, days: days,
                caCertificate: caCertificate, caKey: caKey)
            try PEMFiles.write([("\(role)-cert.pem", certificate, false), ("\(role)-key.pem", key, true),
                                ("ca-cert.pem", caCertificate, false)], in: out, force: force)
            print("created \(out)/\(role)-cert.pem, \(out)/\(role)-key.pem and \(out)/ca-cert.pem")
        }
    }
}

/// Reading and writing the PEM files of `torus certs`.
enum PEMFiles {
    static func read(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RuntimeError.badInput("cannot read \(path) (is --ca the directory of `torus certs ca`?)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Writes every file or none: existing files are refused (unless `force`) before any is written.
    static func write(_ files: [(name: String, text: String, secret: Bool)], in dir: String, force: Bool) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let existing = files.map { "\(dir)/\($0.name)" }.filter { FileManager.default.fileExists(atPath: $0) }
        if !force, !existing.isEmpty, existing != ["\(dir)/ca-cert.pem"] {
            throw RuntimeError.badInput("\(existing.joined(separator: ", ")) already exist(s); use --force to replace")
        }
        for file in files {
            let path = "\(dir)/\(file.name)"
            guard FileManager.default.createFile(atPath: path, contents: Data(file.text.utf8),
                                                 attributes: [.posixPermissions: file.secret ? 0o600 : 0o644]) else {
                throw RuntimeError.badInput("cannot write \(path)")
            }
        }
    }
}

extension Init {
    /// `torus init --tls DIR`: a CA and a peer certificate in DIR unless it holds them already;
    /// either way they must load.
    static func preparePeerTLS(_ dir: String) throws {
        let have = [PeerTLS.files.ca, PeerTLS.files.certificate, PeerTLS.files.key]
            .filter { FileManager.default.fileExists(atPath: "\(dir)/\($0)") }
        if have.isEmpty {
            let ca = try CertificateIssuer.makeAuthority(name: "torus cluster CA", days: 3650)
            let peer = try CertificateIssuer.issue(role: .peer, name: "torus peer", hosts: [], days: 3650,
                                                   caCertificate: ca.certificate, caKey: ca.key)
            try PEMFiles.write([("ca-cert.pem", ca.certificate, false), ("ca-key.pem", ca.key, true),
                                ("peer-cert.pem", peer.certificate, false), ("peer-key.pem", peer.key, true)], in: dir, force: false)
            say("torus: created a cluster CA and a peer certificate in \(dir)")
        } else if have.count < 3 {
            throw RuntimeError.badInput("\(dir) holds \(have.joined(separator: ", ")) but not all of ca-cert.pem, peer-cert.pem, peer-key.pem")
        }
        _ = try PeerTLS.load(directory: dir)
    }
}
