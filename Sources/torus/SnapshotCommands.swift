import ArgumentParser
import Foundation
import TorusCore
import TorusRuntime

struct Snapshot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Take, list, delete and roll back to snapshots (of a running `torus up`, or in etcd with --metadata).",
        discussion: """
            A snapshot is a committed state of a volume that is kept: it holds every write \
            completed before `snapshot create` was asked (the writer flushes, then keeps that \
            commit). Taking one copies no block, whatever the volume's size. Snapshots are \
            served read-only over NBD as VOL@SNAP (nbd://HOST/vol0@monday) and can be cloned \
            into new volumes (`torus volume clone`). On an etcd cluster, create and rollback \
            are carried out by the `torus nbd serve` that writes the volume. More: docs/snapshots.md.
            """,
        subcommands: [Create.self, List.self, Delete.self, Rollback.self]
    )

    /// VOLUME SNAPSHOT, the arguments of create, delete and rollback.
    struct Names: ParsableArguments {
        @Argument(help: "The volume.") var volume: String
        @Argument(help: "The snapshot's name (a-z, A-Z, 0-9, '-', '_', '.').") var name: String
        func validate() throws {
            try checkVolumeName(volume)
            try checkSnapshotName(name)
        }
    }

    /// How long a request on etcd waits for the volume's server.
    struct Wait: ParsableArguments {
        @Option(help: "With --metadata: seconds to wait for the server that writes the volume to answer.") var timeout = 60
        func validate() throws { guard timeout > 0 else { throw ValidationError("--timeout must be at least 1 second") } }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Take a snapshot of a volume (it may be in use).")
        @OptionGroup var names: Names
        @OptionGroup var wait: Wait
        @OptionGroup var target: Volume.Target
        var volume: String { names.volume }
        var name: String { names.name }
        func run() throws {
            try SnapshotRequests.run(target, admin: "snapshot-create \(volume) \(name)") { meta in
                if try SnapshotCatalog.list(meta, volume: volume).contains(where: { $0.name == name }) {
                    throw RuntimeError.badInput("snapshot \(volume)@\(name) already exists")
                }
                return try SnapshotRequests.ask(meta, volume: volume, "snapshot \(name)", timeoutSeconds: wait.timeout)
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the snapshots of one volume, or of every volume, oldest first.")
        @Argument(help: "The volume (default: every volume).") var volume: String?
        @OptionGroup var target: Volume.Target
        func validate() throws { if let volume { try checkVolumeName(volume) } }
        func run() throws {
            try SnapshotRequests.run(target, admin: "snapshot-list" + (volume.map { " \($0)" } ?? "")) { meta in
                if let volume, !(try ClusterCatalog.listVolumes(meta).contains { $0.name == volume }) {
                    throw RuntimeError.badInput("no volume named '\(volume)'")
                }
                return try SnapshotCatalog.list(meta, volume: volume).map(SnapshotRequests.describe)
            }
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a snapshot (the garbage collector reclaims the blocks only it kept on a later pass).")
        @OptionGroup var names: Names
        @OptionGroup var target: Volume.Target
        var volume: String { names.volume }
        var name: String { names.name }
        func run() throws {
            try SnapshotRequests.run(target, admin: "snapshot-delete \(volume) \(name)") { meta in
                try SnapshotCatalog.delete(meta, volume: volume, name: name)
                return []
            }
        }
    }

    struct Rollback: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a volume hold a snapshot's state again.",
            discussion: """
                Everything written after the snapshot is dropped. Refused while NBD clients are \
                connected to the volume; --force disconnects them first (their writes not yet \
                flushed are lost, as on a power cut). The snapshot itself stays.
                """)
        @OptionGroup var names: Names
        @Flag(help: "Disconnect the volume's NBD clients and roll back anyway.") var force = false
        @OptionGroup var wait: Wait
        @OptionGroup var target: Volume.Target
        var volume: String { names.volume }
        var name: String { names.name }
        func run() throws {
            try SnapshotRequests.run(target, admin: "snapshot-rollback \(volume) \(name)" + (force ? " force" : "")) { meta in
                _ = try SnapshotCatalog.find(meta, volume: volume, name: name)
                return try SnapshotRequests.ask(meta, volume: volume, "rollback \(name)" + (force ? " force" : ""), timeoutSeconds: wait.timeout)
            }
        }
    }
}

func checkSnapshotName(_ name: String) throws {
    guard SnapshotRecord.validName(name) else {
        let shown = name.count > 80 ? String(name.prefix(80)) + "..." : name
        throw ValidationError("snapshot name '\(shown)' must be 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.', not starting with '-' or '.'")
    }
}

/// Splits VOL@SNAP.
func splitSnapshotRef(_ text: String) throws -> (volume: String, snapshot: String) {
    let parts = text.split(separator: "@", omittingEmptySubsequences: false)
    guard parts.count == 2 else { throw ValidationError("expected VOLUME@SNAPSHOT, got '\(text)'") }
    try checkVolumeName(String(parts[0]))
    try checkSnapshotName(String(parts[1]))
    return (String(parts[0]), String(parts[1]))
}

/// Snapshot requests: to a running `torus up` over its admin socket, or to an etcd cluster,
/// where create and rollback are asked of the volume's server through a request key.
enum SnapshotRequests {
    static func run(_ target: Volume.Target, admin line: String, onEtcd: (EtcdMetadataService) throws -> [String]) throws {
        guard let url = target.metadata else { return try Volume.run(line, target) }
        do {
            for l in try onEtcd(try EtcdMetadataService(url: url)) { say(l) }
        } catch {
            say("torus: \(error)")
            throw ExitCode(1)
        }
    }

    static func describe(_ e: SnapshotCatalog.Entry) -> String { describeSnapshot(e) }

    /// Puts a request under the volume's key and waits for the server's answer ("ok" and
    /// lines, or "error: ..."); the request is deleted either way.
    static func ask(_ meta: EtcdMetadataService, volume: String, _ request: String, timeoutSeconds: Int = 60) throws -> [String] {
        guard try ClusterCatalog.listVolumes(meta).contains(where: { $0.name == volume }) else {
            throw RuntimeError.badInput("no volume named '\(volume)'")
        }
        let key = VolumeInfo.volumesPrefix + volume + "/requests/" + String(UInt64.random(in: 1...UInt64.max), radix: 16)
        let put = try meta.apply(.txn(MetaTxn(compares: [.absent(key)], success: [.put(key: key, value: Array(request.utf8), lease: 0)])),
                                 now: SystemClock.now())
        guard case .txn(let t) = put, t.succeeded else { throw RuntimeError.metadata("\(meta.location): writing \(key): \(put)") }
        defer { _ = try? meta.apply(.txn(MetaTxn(success: [.delete(key: key, prefix: false)])), now: SystemClock.now()) }
        let deadline = Date().addingTimeInterval(TimeInterval(timeoutSeconds))
        while Date() < deadline {
            usleep(100_000)
            let r = try meta.apply(.txn(MetaTxn(success: [.range(key: key, prefix: false)])), now: SystemClock.now())
            guard case .txn(let got) = r, case .range(let kvs)? = got.results.first, let kv = kvs.first else { continue }
            let text = String(decoding: kv.value, as: UTF8.self)
            if text.hasPrefix("error: ") { throw RuntimeError.badInput(String(text.dropFirst("error: ".count))) }
            if text == "ok" || text.hasPrefix("ok\n") { return text.split(separator: "\n").dropFirst().map(String.init) }
        }
        throw RuntimeError.badInput("no server answered within \(timeoutSeconds) s: '\(request)' is carried out by the `torus nbd serve` that writes '\(volume)'; is one running for this cluster?")
    }
}
