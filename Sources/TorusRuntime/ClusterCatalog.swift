import TorusCore

/// The cluster-wide keys of a multi-process cluster, read and written synchronously on a
/// `MetadataService` (call from a thread pool or a command line): the cluster config and id,
/// node ids, the ring's members and version (`Ring.versionKey`), node liveness and usage. What
/// each key holds and who writes it: docs/metadata.md.
public enum ClusterCatalog {
    public static let configKey = "/torus/cluster/config"
    public static let nextNodeIDKey = "/torus/next-node-id"
    public static let ringPrefix = "/torus/ring/"
    public static let alivePrefix = "/torus/nodes/"

    public struct Config: Equatable, Sendable {
        public var blockSize: Int
        public var replication: Int
        /// Nodes and volume servers speak mutual TLS (`torus init --tls`); false: `--insecure`.
        public var peerTLS: Bool
        public init(blockSize: Int, replication: Int, peerTLS: Bool = false) {
            self.blockSize = blockSize
            self.replication = replication
            self.peerTLS = peerTLS
        }
    }

    public struct Member: Equatable, Sendable {
        public var id: NodeID
        public var address: String
        public var zone: String
        public var capacityBytes: UInt64
        /// Being drained: no new placements (`torus peer drain`).
        public var draining: Bool
        public init(id: NodeID, address: String, zone: String, capacityBytes: UInt64, draining: Bool = false) {
            self.id = id
            self.address = address
            self.zone = zone
            self.capacityBytes = capacityBytes
            self.draining = draining
        }

        var encoded: [UInt8] {
            Array(("address=\(address)\nzone=\(zone)\ncapacity=\(capacityBytes)\n" + (draining ? "state=draining\n" : "")).utf8)
        }

        /// Whether `other` places blocks differently (the address does not matter).
        func placesLike(_ other: Member) -> Bool {
            zone == other.zone && capacityBytes == other.capacityBytes && draining == other.draining
        }
    }

    // MARK: Config

    /// Writes the cluster config and identity; refuses an existing cluster unless `force`.
    public static func initialize(_ meta: any MetadataService, _ config: Config, force: Bool) throws {
        let text = "block-size=\(config.blockSize)\nreplication=\(config.replication)\npeer-tls=\(config.peerTLS ? "required" : "off")\n"
        let compares = force ? [] : [MetaCompare(key: configKey, result: .equal, target: .createRevision(0))]
        let r = try meta.apply(.txn(MetaTxn(compares: compares, success: [.put(key: configKey, value: Array(text.utf8), lease: 0)])),
                               now: SystemClock.now())
        guard case .txn(let t) = r else { throw RuntimeError.metadata("\(meta.location): writing \(configKey): \(r)") }
        guard t.succeeded else {
            throw RuntimeError.badInput("\(meta.location) already holds a cluster (\(configKey) exists); use --force to overwrite its config")
        }
        _ = try VolumeServer.loadClusterID(meta)
    }

    /// Whether `torus init` has run on this store.
    public static func exists(_ meta: any MetadataService) throws -> Bool {
        try !VolumeServer.readKey(meta, configKey).isEmpty
    }

    public static func config(_ meta: any MetadataService) throws -> Config {
        guard let kv = try VolumeServer.readKey(meta, configKey).first else {
            throw RuntimeError.badInput("\(meta.location) holds no cluster: run `torus init --metadata ...` first")
        }
        let fields = parse(kv.value)
        guard let bs = fields["block-size"].flatMap({ Int($0) }), let r = fields["replication"].flatMap({ Int($0) }),
              bs >= 4096, bs.nonzeroBitCount == 1, r >= 1 else {
            throw RuntimeError.metadata("\(meta.location): \(configKey) is malformed")
        }
        // Clusters made before peer TLS have no such line: plaintext.
        return Config(blockSize: bs, replication: r, peerTLS: fields["peer-tls"] == "required")
    }

    // MARK: Nodes

    public struct Usage: Equatable, Sendable {
        public var usedBytes: UInt64
        public var capacityBytes: UInt64
        public init(usedBytes: UInt64, capacityBytes: UInt64) {
            self.usedBytes = usedBytes
            self.capacityBytes = capacityBytes
        }
        func encoded() -> [UInt8] { Array("used=\(usedBytes)\ncapacity=\(capacityBytes)\n".utf8) }
    }

    public static func usageKey(_ id: NodeID) -> String { alivePrefix + "\(id.raw)/usage" }

    /// What `torus status` shows: ring members with liveness and usage, and the volumes.
    public struct Status: Sendable {
        public var config: Config
        public var members: [Member]
        public var alive: Set<NodeID>
        public var usage: [NodeID: Usage]
        public var volumes: [VolumeInfo]
        /// Volumes whose writer lock is held (a server has them open for writing).
        public var openForWriting: Set<String>
        /// The fields of `/torus/maintenance/status` (the collector's last pass and repair).
        public var maintenance: [String: String] = [:]
    }

    public static func status(_ meta: any MetadataService) throws -> Status {
        let config = try config(meta)
        let members = try members(meta)
        let r = try meta.apply(.txn(MetaTxn(success: [.range(key: alivePrefix, prefix: true),
                                                      .range(key: VolumeInfo.volumesPrefix, prefix: true),
                                                      .range(key: VolumeServer.maintenanceKey, prefix: false)])), now: SystemClock.now())
        if case .error(let e) = r { throw RuntimeError.metadata("\(meta.location): reading the cluster status: \(e)") }
        guard case .txn(let t) = r, t.results.count == 3, case .range(let nodes) = t.results[0], case .range(let vols) = t.results[1],
              case .range(let maintenance) = t.results[2] else {
            throw RuntimeError.metadata("\(meta.location): unexpected reply reading the cluster status: \(r)")
        }
        var alive: Set<NodeID> = []
        var usage: [NodeID: Usage] = [:]
        for kv in nodes {
            let rest = kv.key.dropFirst(alivePrefix.count)
            guard let slash = rest.firstIndex(of: "/"), let raw = UInt32(rest[..<slash]) else { continue }
            switch rest[rest.index(after: slash)...] {
            case "alive": alive.insert(NodeID(raw))
            case "usage":
                let f = parse(kv.value)
                if let u = f["used"].flatMap({ UInt64($0) }), let c = f["capacity"].flatMap({ UInt64($0) }) {
                    usage[NodeID(raw)] = Usage(usedBytes: u, capacityBytes: c)
                }
            default: break
            }
        }
        let volumes = vols.filter { VolumeInfo.splitKey($0.key)?.field == "info" }.compactMap { VolumeInfo.decode($0.value) }.sorted { $0.name < $1.name }
        let locked = Set(vols.compactMap { kv in VolumeInfo.splitKey(kv.key).flatMap { $0.field == "lock" ? $0.volume : nil } })
        return Status(config: config, members: members, alive: alive, usage: usage, volumes: volumes, openForWriting: locked,
                      maintenance: maintenance.first.map { parse($0.value) } ?? [:])
    }

    /// A new node id (compare-and-swap on the counter).
    public static func allocateNodeID(_ meta: any MetadataService) throws -> NodeID {
        for _ in 0..<20 {
            let kvs = try VolumeServer.readKey(meta, nextNodeIDKey)
            let last = kvs.first.flatMap { MetaValue.u64($0.value) } ?? 0
            let next = last + 1
            let txn = MetaTxn(compares: [MetaCompare(key: nextNodeIDKey, result: .equal, target: .modRevision(kvs.first?.modRevision ?? 0))],
                              success: [.put(key: nextNodeIDKey, value: MetaValue.u64(next), lease: 0)])
            if case .txn(let t) = try meta.apply(.txn(txn), now: SystemClock.now()), t.succeeded { return NodeID(UInt32(next)) }
        }
        throw RuntimeError.metadata("\(meta.location): could not allocate a node id (too much contention)")
    }

    /// Adds or updates a ring member (a node being drained stays so). A new member, or a new
    /// zone or capacity, is a new ring version.
    public static func register(_ meta: any MetadataService, _ m: Member) throws {
        try changeRing(meta, "registering node \(m.id)") { members in
            var m = m
            let old = members.first { $0.id == m.id }
            m.draining = old?.draining ?? false
            return (put: m, remove: nil, bump: old.map { !$0.placesLike(m) } ?? true)
        }
    }

    /// The ring version in force (0: none recorded yet).
    public static func ringVersion(_ meta: any MetadataService) throws -> UInt64 {
        try VolumeServer.readKey(meta, Ring.versionKey).first.flatMap { MetaValue.u64($0.value) } ?? 0
    }

    /// Marks a node draining: no new placements; the collector moves its blocks away.
    /// Refused when the nodes left could not hold `replication` copies.
    public static func drain(_ meta: any MetadataService, _ id: NodeID) throws {
        let replication = try config(meta).replication
        try changeRing(meta, "draining node \(id)") { members in
            guard var m = members.first(where: { $0.id == id }) else { throw RuntimeError.badInput("no node \(id) in the ring") }
            guard !m.draining else { throw RuntimeError.badInput("node \(id) is already draining") }
            let left = members.filter { !$0.draining && $0.id != id }.count
            guard left >= replication else {
                throw RuntimeError.badInput("draining node \(id) would leave \(left) node(s) for replication \(replication); add nodes first")
            }
            m.draining = true
            return (put: m, remove: nil, bump: true)
        }
    }

    /// Removes a node from the ring (`torus peer remove`).
    public static func remove(_ meta: any MetadataService, _ id: NodeID) throws {
        let replication = try config(meta).replication
        try changeRing(meta, "removing node \(id)") { members in
            guard members.contains(where: { $0.id == id }) else { throw RuntimeError.badInput("no node \(id) in the ring") }
            let left = members.filter { !$0.draining && $0.id != id }.count
            guard left >= replication else {
                throw RuntimeError.badInput("removing node \(id) would leave \(left) node(s) for replication \(replication); add nodes first")
            }
            return (put: nil, remove: id, bump: true)
        }
    }

    /// One ring change as a transaction guarded by the version key's revision (retried when
    /// another change got in first), bumping the version when placements move.
    static func changeRing(_ meta: any MetadataService, _ what: String,
                           _ change: ([Member]) throws -> (put: Member?, remove: NodeID?, bump: Bool)) throws {
        for _ in 0..<20 {
            let members = try members(meta)
            let kv = try VolumeServer.readKey(meta, Ring.versionKey).first
            let version = kv.flatMap { MetaValue.u64($0.value) } ?? 0
            let c = try change(members)
            var ops: [MetaOp] = []
            if let m = c.put { ops.append(.put(key: ringPrefix + "\(m.id.raw)", value: m.encoded, lease: 0)) }
            if let id = c.remove { ops.append(.delete(key: ringPrefix + "\(id.raw)", prefix: false)) }
            if c.bump || kv == nil { ops.append(.put(key: Ring.versionKey, value: MetaValue.u64(version + 1), lease: 0)) }
            let txn = MetaTxn(compares: [MetaCompare(key: Ring.versionKey, result: .equal, target: .modRevision(kv?.modRevision ?? 0))],
                              success: ops)
            let r = try meta.apply(.txn(txn), now: SystemClock.now())
            guard case .txn(let t) = r else { throw RuntimeError.metadata("\(meta.location): \(what): \(r)") }
            if t.succeeded { return }
        }
        throw RuntimeError.metadata("\(meta.location): \(what): too much contention on \(Ring.versionKey)")
    }

    /// Every ring member, by id.
    public static func members(_ meta: any MetadataService) throws -> [Member] {
        let r = try meta.apply(.txn(MetaTxn(success: [.range(key: ringPrefix, prefix: true)])), now: SystemClock.now())
        guard case .txn(let t) = r, case .range(let kvs) = t.results.first else {
            throw RuntimeError.metadata("\(meta.location): listing \(ringPrefix): \(r)")
        }
        return kvs.compactMap { kv -> Member? in
            guard let id = UInt32(kv.key.dropFirst(ringPrefix.count)) else { return nil }
            let f = parse(kv.value)
            guard let address = f["address"] else { return nil }
            return Member(id: NodeID(id), address: address, zone: f["zone"] ?? "", capacityBytes: f["capacity"].flatMap { UInt64($0) } ?? 0,
                          draining: f["state"] == "draining")
        }.sorted { $0.id < $1.id }
    }

    /// Ids of the nodes whose liveness key exists (their lease is being kept alive).
    public static func alive(_ meta: any MetadataService) throws -> Set<NodeID> {
        let r = try meta.apply(.txn(MetaTxn(success: [.range(key: alivePrefix, prefix: true)])), now: SystemClock.now())
        guard case .txn(let t) = r, case .range(let kvs) = t.results.first else {
            throw RuntimeError.metadata("\(meta.location): listing \(alivePrefix): \(r)")
        }
        return Set(kvs.compactMap { kv in
            kv.key.hasSuffix("/alive") ? UInt32(kv.key.dropFirst(alivePrefix.count).dropLast("/alive".count)).map { NodeID($0) } : nil
        })
    }

    /// The placement ring of the members (capacity-weighted, zones as failure domains), at
    /// `version` (0 for a cluster whose members registered before ring versions existed: the
    /// first change then makes version 1, which servers adopt as newer).
    public static func ring(_ members: [Member], version: UInt64) -> Ring {
        Ring(version: version, members: members.map {
            RingMember(node: $0.id, weight: max(1, Double($0.capacityBytes) / Double(1 << 30)), domain: $0.zone, draining: $0.draining)
        })
    }

    static func parse(_ value: [UInt8]) -> [String: String] {
        var fields: [String: String] = [:]
        for line in String(decoding: value, as: UTF8.self).split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            fields[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        return fields
    }

    // MARK: Volumes

    public static func listVolumes(_ meta: any MetadataService) throws -> [VolumeInfo] {
        let r = try meta.apply(.txn(MetaTxn(success: [.range(key: VolumeInfo.volumesPrefix, prefix: true)])), now: SystemClock.now())
        if case .error(let e) = r { throw RuntimeError.metadata("\(meta.location): listing volumes: \(e)") }
        guard case .txn(let t) = r, case .range(let kvs) = t.results.first else {
            throw RuntimeError.metadata("\(meta.location): unexpected reply listing volumes: \(r)")
        }
        return kvs.filter { VolumeInfo.splitKey($0.key)?.field == "info" }.compactMap { VolumeInfo.decode($0.value) }
    }

    /// Creates a volume; with `ifMissing`, an existing volume of that name is returned instead.
    public static func createVolume(_ meta: any MetadataService, name: String, sizeBytes: UInt64, blockSize: Int,
                                    replication: Int, ifMissing: Bool) throws -> VolumeInfo {
        guard VolumeServer.validName(name) else {
            throw RuntimeError.badInput("volume name '\(name)' must be 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.', not starting with '-'")
        }
        guard sizeBytes > 0, sizeBytes % 4096 == 0 else {
            throw RuntimeError.badInput("volume size \(sizeBytes) must be a positive multiple of 4096 bytes")
        }
        let counter = "/torus/next-volume-id"
        let r = try meta.apply(.txn(MetaTxn(success: [.range(key: counter, prefix: false),
                                                      .range(key: VolumeInfo.infoKey(name), prefix: false)])), now: SystemClock.now())
        if case .error(let e) = r { throw RuntimeError.metadata("\(meta.location): reading volume \(name): \(e)") }
        guard case .txn(let t) = r, t.results.count == 2, case .range(let c) = t.results[0], case .range(let existing) = t.results[1] else {
            throw RuntimeError.metadata("\(meta.location): unexpected reply: \(r)")
        }
        if let kv = existing.first, let info = VolumeInfo.decode(kv.value) {
            if ifMissing { return info }
            throw RuntimeError.exists("volume '\(name)' already exists")
        }
        let id = (c.first.flatMap { MetaValue.u64($0.value) } ?? 0) + 1
        let info = VolumeInfo(name: name, id: id, sizeBytes: sizeBytes, blockSize: blockSize, replication: replication)
        guard info.pageCount <= BlockMapCodec.entriesPerPage(blockSize: info.blockSize) else {
            throw RuntimeError.badInput("volume size \(sizeBytes) is too large for block size \(info.blockSize)")
        }
        let txn = MetaTxn(
            compares: [MetaCompare(key: counter, result: .equal, target: .modRevision(c.first?.modRevision ?? 0)),
                       MetaCompare(key: VolumeInfo.infoKey(name), result: .equal, target: .createRevision(0))],
            success: [.put(key: counter, value: MetaValue.u64(id), lease: 0),
                      .put(key: VolumeInfo.infoKey(name), value: info.encoded(), lease: 0)])
        guard case .txn(let done) = try meta.apply(.txn(txn), now: SystemClock.now()), done.succeeded else {
            throw RuntimeError.metadata("volume '\(name)' was created concurrently; try again")
        }
        return info
    }

    /// Grows a volume (compare-and-swap on its info key); returns the old and new description.
    /// Shrinking is refused: it would silently drop the data past the new end.
    public static func resizeVolume(_ meta: any MetadataService, name: String, sizeBytes: UInt64) throws -> (old: VolumeInfo, new: VolumeInfo) {
        guard sizeBytes > 0, sizeBytes % 4096 == 0 else {
            throw RuntimeError.badInput("volume size \(sizeBytes) must be a positive multiple of 4096 bytes")
        }
        for _ in 0..<20 {
            guard let kv = try VolumeServer.readKey(meta, VolumeInfo.infoKey(name)).first else {
                throw RuntimeError.notFound("no volume named '\(name)'")
            }
            guard let old = VolumeInfo.decode(kv.value) else { throw RuntimeError.metadata("\(meta.location): \(kv.key) is corrupt") }
            if sizeBytes < old.sizeBytes {
                throw RuntimeError.refused("volume '\(name)' is \(old.sizeBytes) bytes; shrinking it to \(sizeBytes) would drop the data past the new end, "
                    + "so it is not supported (create a smaller volume and copy what you need)")
            }
            var new = old
            new.sizeBytes = sizeBytes
            if sizeBytes == old.sizeBytes { return (old, new) }
            guard new.pageCount <= BlockMapCodec.entriesPerPage(blockSize: new.blockSize) else {
                throw RuntimeError.badInput("volume size \(sizeBytes) is too large for block size \(new.blockSize)")
            }
            let txn = MetaTxn(compares: [MetaCompare(key: kv.key, result: .equal, target: .modRevision(kv.modRevision))],
                              success: [.put(key: kv.key, value: new.encoded(), lease: 0)])
            let r = try meta.apply(.txn(txn), now: SystemClock.now())
            if case .error(let e) = r { throw RuntimeError.metadata("\(meta.location): resizing volume \(name): \(e)") }
            if case .txn(let t) = r, t.succeeded { return (old, new) }
        }
        throw RuntimeError.metadata("\(meta.location): volume '\(name)' kept changing; try again")
    }

    /// Deletes a volume's metadata (its blocks stay on the nodes until garbage collection).
    public static func deleteVolume(_ meta: any MetadataService, name: String) throws {
        let volumes = try listVolumes(meta)
        if let v = volumes.first(where: { $0.name == name }) {
            let clones = volumes.filter { $0.origin == v.id }.map(\.name).sorted()
            guard clones.isEmpty else {
                throw RuntimeError.refused("volume '\(name)' has clones that share its blocks (\(clones.joined(separator: ", "))): delete them first")
            }
        }
        let r = try meta.apply(.txn(MetaTxn(success: [.delete(key: "/torus/volumes/\(name)/", prefix: true)])), now: SystemClock.now())
        if case .error(let e) = r { throw RuntimeError.metadata("\(meta.location): deleting volume \(name): \(e)") }
    }
}
