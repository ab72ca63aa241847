import ArgumentParser
import TorusRuntime

#if canImport(Glibc)
import Glibc
#endif

@main
struct TorusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "torus",
        abstract: "Distributed block storage: pooled node disks, replicated volumes, served over NBD.",
        version: torusVersion,
        subcommands: [Up.self, Volume.self, Snapshot.self, Attach.self, Detach.self, Init.self, Node.self, NBD.self, Peer.self, Status.self, GC.self, Certs.self,
                      CSI.self]
    )

    static func main() {
        if CommandLine.arguments.dropFirst().first == "up" { reexecWithFastMemcpy() }
        keepBigBuffersOnTheHeap()
        main(nil)
    }
}

/// The release (`torus --version`, the CSI driver's vendor version).
let torusVersion = "0.2.0"

/// How `https://` etcd endpoints get their TLS files (shown in every --metadata help).
let etcdTLSHelp = "For https:// endpoints set TORUS_ETCD_CA (CA bundle), and TORUS_ETCD_CERT and TORUS_ETCD_KEY (client certificate and key) when etcd checks client certificates."

/// Prints a line and flushes at once, so progress shows up immediately also in log files.
func say(_ line: String) {
    print(line)
    fflush(nil)
}

/// Runs `body` on the etcd at `url`; any error is printed as one line and exits with status 1.
func onEtcd(_ url: String, _ body: (EtcdMetadataService) throws -> Void) throws {
    do {
        try body(try EtcdMetadataService(url: url))
    } catch {
        say("torus: \(error)")
        throw ExitCode(1)
    }
}
