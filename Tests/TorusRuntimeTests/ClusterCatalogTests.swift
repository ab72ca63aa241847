import Testing
import TorusCore
@testable import TorusRuntime

/// Ring membership and versions in the metadata store (`ClusterCatalog`), on the embedded store.
@Suite("cluster catalog: ring versions")
struct ClusterCatalogTests {
    func member(_ id: UInt32, _ address: String = "127.0.0.1:7000", zone: String = "") -> ClusterCatalog.Member {
        ClusterCatalog.Member(id: NodeID(id), address: address, zone: zone, capacityBytes: 1 << 30)
    }

    @Test("joins, drains and removals bump the version; a new address does not; drain state survives re-registering")
    func versions() throws {
        let dir = ScratchDirectory("catalog-ring")
        defer { dir.remove() }
        let meta = try EmbeddedMetadataStore(directory: dir.path, now: SystemClock.now())
        defer { meta.close() }
        try ClusterCatalog.initialize(meta, ClusterCatalog.Config(blockSize: 65536, replication: 2), force: false)
        #expect(try ClusterCatalog.ringVersion(meta) == 0)
        for id in UInt32(1)...3 { try ClusterCatalog.register(meta, member(id)) }
        #expect(try ClusterCatalog.ringVersion(meta) == 3)
        // A restart elsewhere: same placements, same version.
        try ClusterCatalog.register(meta, member(2, "127.0.0.1:7002"))
        #expect(try ClusterCatalog.ringVersion(meta) == 3)
        #expect(try ClusterCatalog.members(meta).first { $0.id == NodeID(2) }?.address == "127.0.0.1:7002")
        // A new zone moves placements.
        try ClusterCatalog.register(meta, member(2, "127.0.0.1:7002", zone: "b"))
        #expect(try ClusterCatalog.ringVersion(meta) == 4)
        try ClusterCatalog.drain(meta, NodeID(3))
        #expect(try ClusterCatalog.ringVersion(meta) == 5)
        // Draining a second node would leave one for replication 2.
        #expect(throws: RuntimeError.self) { try ClusterCatalog.drain(meta, NodeID(1)) }
        try ClusterCatalog.register(meta, member(3))
        let members = try ClusterCatalog.members(meta)
        #expect(members.first { $0.id == NodeID(3) }?.draining == true)
        let ring = ClusterCatalog.ring(members, version: try ClusterCatalog.ringVersion(meta))
        #expect(ring.version == 5 && ring.activeCount == 2 && ring.members.count == 3)
        try ClusterCatalog.remove(meta, NodeID(3))
        #expect(try ClusterCatalog.ringVersion(meta) == 6)
        #expect(try ClusterCatalog.members(meta).map(\.id) == [NodeID(1), NodeID(2)])
        #expect(throws: RuntimeError.self) { try ClusterCatalog.remove(meta, NodeID(3)) }
    }

    @Test("members registered before ring versions existed: the ring is version 0, the next change makes 1")
    func versionBeforeTheKey() throws {
        let members = [member(1), member(2)]
        #expect(ClusterCatalog.ring(members, version: 0).version == 0)
        let newer = ClusterCatalog.ring(members + [member(3)], version: 1)
        #expect(newer.version > ClusterCatalog.ring(members, version: 0).version)
    }
}
