import ArgumentParser
import TorusRuntime

struct Volume: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list, inspect, grow and delete volumes (of a running `torus up`, or in etcd with --metadata).",
        subcommands: [Create.self, List.self, Info.self, Resize.self, Clone.self, Delete.self]
    )

    struct Target: ParsableArguments {
        @Option(name: .customLong("data-dir"), help: "The --data-dir of the running `torus up`.") var dataDir = "./torus-data"
        @Option(help: ArgumentHelp("Work on the cluster in etcd (etcd://HOST:PORT or https://HOST:PORT) instead of a running `torus up`.", discussion: etcdTLSHelp))
        var metadata: String?
        @OptionGroup var etcdUser: EtcdUserOption
    }

    static func run(_ line: String, _ target: Target) throws {
        if let url = target.metadata {
            try runOnMetadata(line, url)
            return
        }
        let lines: [String]
        do {
            lines = try AdminClient.request(line, dataDir: target.dataDir)
        } catch {
            say("torus: \(error)")
            throw ExitCode(1)
        }
        for l in lines where l != "ok" { say(l) }
        if lines.last != "ok" { throw ExitCode(1) }
    }

    /// The same requests straight against etcd (a `torus nbd serve` picks new volumes up).
    static func runOnMetadata(_ line: String, _ url: String) throws {
        let words = line.split(separator: " ").map(String.init)
        guard let verb = words.first, verb == "list" || words.count >= 2 else {
            say("torus: bad request '\(line)'")
            throw ExitCode(1)
        }
        do {
            let meta = try EtcdMetadataService(url: url)
            switch verb {
            case "list":
                for v in try ClusterCatalog.listVolumes(meta).sorted(by: { $0.name < $1.name }) { say(describe(v)) }
            case "info":
                guard let v = try ClusterCatalog.listVolumes(meta).first(where: { $0.name == words[1] }) else {
                    throw RuntimeError.badInput("no volume named '\(words[1])'")
                }
                say(describe(v))
                // The server that writes the volume knows the snapshots' exclusive bytes.
                let snaps = try SnapshotCatalog.list(meta, volume: v.name)
                if !snaps.isEmpty {
                    do {
                        for l in try SnapshotRequests.ask(meta, volume: v.name, "space", timeoutSeconds: 10) { say(l) }
                    } catch {
                        for s in snaps { say(SnapshotRequests.describe(s) + " exclusive=unknown") }
                        say("torus: exclusive bytes unknown: \(error)")
                    }
                }
            case "clone":
                guard words.count == 4 else { throw RuntimeError.badInput("bad request '\(line)'") }
                say(describe(try SnapshotCatalog.clone(meta, volume: words[1], snapshot: words[2], as: words[3])))
            case "create":
                let shape = try ClusterCatalog.config(meta)
                guard words.count == 3, let size = UInt64(words[2]) else { throw RuntimeError.badInput("bad request '\(line)'") }
                say(describe(try ClusterCatalog.createVolume(meta, name: words[1], sizeBytes: size, blockSize: shape.blockSize,
                                                             replication: shape.replication, ifMissing: false)))
            case "delete":
                guard try ClusterCatalog.listVolumes(meta).contains(where: { $0.name == words[1] }) else {
                    throw RuntimeError.badInput("no volume named '\(words[1])'")
                }
                try ClusterCatalog.deleteVolume(meta, name: words[1])
            case "resize":
                guard words.count == 3, let size = UInt64(words[2]) else { throw RuntimeError.badInput("bad request '\(line)'") }
                let (old, new) = try ClusterCatalog.resizeVolume(meta, name: words[1], sizeBytes: size)
                say(describe(new) + (old.sizeBytes == new.sizeBytes ? " (unchanged)" : " (was \(old.sizeBytes))"))
            default:
                throw RuntimeError.badInput("unknown request '\(line)'")
            }
        } catch {
            say("torus: \(error)")
            throw ExitCode(1)
        }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a volume and start serving it over NBD.")
        @Argument(help: "Volume name (a-z, A-Z, 0-9, '-', '_', '.').") var name: String
        @Argument(help: "Size, e.g. 10GiB.") var size: String
        @OptionGroup var target: Target
        func validate() throws { try checkVolumeName(name) }
        func run() throws { try Volume.run("create \(name) \(try parseSize(size, what: "size"))", target) }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List volumes.")
        @OptionGroup var target: Target
        func run() throws { try Volume.run("list", target) }
    }

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one volume.")
        @Argument var name: String
        @OptionGroup var target: Target
        func validate() throws { try checkVolumeName(name) }
        func run() throws { try Volume.run("info \(name)", target) }
    }

    struct Resize: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Grow a volume (shrinking is refused: it would drop data).",
            discussion: """
                The servers exporting the volume pick the new size up at once (they watch the \
                metadata store). NBD clients learn an export's size when they connect, so \
                reconnect them to use the new space. Devices `torus attach` made on this host \
                grow online, with the filesystems it mounted (`torus attach --grow` on others).
                """)
        @Argument var name: String
        @Argument(help: "New size, e.g. 20GiB (not smaller than the current size).") var size: String
        @OptionGroup var target: Target
        func validate() throws { try checkVolumeName(name) }
        func run() throws {
            let bytes = try parseSize(size, what: "size")
            try Volume.run("resize \(name) \(bytes)", target)
            let lines = AttachGrowth.growAll(volume: name, to: bytes)
            for l in lines { say(l) }
            if lines.contains(where: { $0.hasPrefix("torus:") }) { throw ExitCode(1) }
        }
    }

    struct Clone: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new writable volume from a snapshot (VOL@SNAP), sharing its blocks until they are written.",
            discussion: """
                Cloning copies no block, whatever the size. The source volume cannot be deleted                 while the clone exists (the clone's map names its blocks); the snapshot can.
                """)
        @Argument(help: "The snapshot, as VOLUME@SNAPSHOT.") var source: String
        @Argument(help: "The new volume's name.") var name: String
        @OptionGroup var target: Target
        func validate() throws {
            _ = try splitSnapshotRef(source)
            try checkVolumeName(name)
        }
        func run() throws {
            let (volume, snapshot) = try splitSnapshotRef(source)
            try Volume.run("clone \(volume) \(snapshot) \(name)", target)
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a volume and its snapshots (the garbage collector reclaims their blocks on a later pass).",
            discussion: "Refused while clones of the volume exist: they share its blocks.")
        @Argument var name: String
        @OptionGroup var target: Target
        func validate() throws { try checkVolumeName(name) }
        func run() throws { try Volume.run("delete \(name)", target) }
    }
}
