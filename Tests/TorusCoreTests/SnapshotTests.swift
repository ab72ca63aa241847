import Testing
@testable import TorusCore

@Suite("snapshots and clones: map entries with origins, heads with marks, records")
struct SnapshotTests {
    @Test("a page names its own blocks and its origin's; a clone reading it sees absolute origins")
    func pageOrigins() {
        let own = MapEntry(epoch: 2, sequence: 9, crc: 1)
        let foreign = MapEntry(epoch: 1, sequence: 4, crc: 2, origin: 3)
        let page = BlockMapCodec.encodePage(volume: 5, page: 0, entries: [own, nil, foreign][...], blockSize: 4096)
        #expect(BlockMapCodec.decodePage(page, volume: 5, page: 0) == [own, nil, foreign])
        #expect(BlockMapCodec.decodePage(page, volume: 5, page: 0, reader: 5) == [own, nil, foreign])
        // Volume 9, a clone of 5, reads 5's page: 5's own blocks are foreign to it.
        let seen = BlockMapCodec.decodePage(page, volume: 5, page: 0, reader: 9)!
        #expect(seen[0]?.origin == 5 && seen[2]?.origin == 3)
        #expect(seen[0]?.ref(volume: 9, index: 0) == BlockRef(volume: 5, epoch: 2, sequence: 9, index: 0))
        #expect(seen[2]?.ref(volume: 9, index: 2) == BlockRef(volume: 3, epoch: 1, sequence: 4, index: 2))
        // Volume 3 reading a page that names its own block through an origin: it is its own again.
        #expect(BlockMapCodec.decodePage(page, volume: 5, page: 0, reader: 3)?[2]?.origin == 0)
        let root = BlockMapCodec.encodeRoot(volume: 5, generation: 4, pages: [foreign, own], blockSize: 4096)
        #expect(BlockMapCodec.decodeRoot(root, volume: 5, reader: 9)?.pages.map { $0?.origin } == [3, 5])
        // The flag word's foreign bit alone names no volume: refused.
        var bad = page
        bad[BlockMapCodec.headerSize + 20 ..< BlockMapCodec.headerSize + 24] = [0, 0, 0, 0x80]
        #expect(BlockMapCodec.decodePage(bad, volume: 5, page: 0) == nil)
        #expect(MemoryLayout<MapEntry>.stride == 24, "a map holds one entry per block: keep them small")
    }

    @Test("heads carry a clone's origin root and a snapshot mark; old heads decode without them")
    func headFlags() {
        let seg = LogSegment(epoch: 4, start: 10, nodes: [NodeID(1), NodeID(2)])
        let h = VolumeHead(epoch: 4, generation: 7, root: MapEntry(epoch: 3, sequence: 8, crc: 9, origin: 2), floor: 11, log: seg,
                           keepBelow: SnapshotMark(epoch: 4, sequence: 12))
        #expect(VolumeHead.decode(h.encoded()) == h)
        let plain = VolumeHead(epoch: 1, generation: 1, root: MapEntry(epoch: 1, sequence: 2, crc: 3), floor: 4)
        #expect(plain.encoded()[20] == 1, "a head without origin or mark keeps the old layout")
        #expect(VolumeHead.decode(plain.encoded()) == plain)
        var unknown = plain.encoded()
        unknown[20] = 8
        #expect(VolumeHead.decode(unknown) == nil, "an unknown flag (or a corrupt byte) is refused")
    }

    @Test("a snapshot mark: blocks written before it may be in a snapshot, later ones not")
    func mark() {
        let m = SnapshotMark(epoch: 3, sequence: 50)
        #expect(m.precedes(BlockRef(volume: 1, epoch: 3, sequence: 49, index: 0)))
        #expect(m.precedes(BlockRef(volume: 1, epoch: 2, sequence: 900, index: 0)))
        #expect(!m.precedes(BlockRef(volume: 1, epoch: 3, sequence: 50, index: 0)))
        #expect(!m.precedes(BlockRef(volume: 1, epoch: 4, sequence: 1, index: 0)))
    }

    @Test("snapshot records, clone origins in volume info, and snapshot names")
    func records() {
        let r = SnapshotRecord(volumeID: 7, root: MapEntry(epoch: 2, sequence: 3, crc: 4, origin: 1), generation: 5, sizeBytes: 1 << 30)
        #expect(SnapshotRecord.decode(r.encoded()) == r)
        var rotten = r.encoded()
        rotten[9] ^= 1
        #expect(SnapshotRecord.decode(rotten) == nil)
        let clone = VolumeInfo(name: "c", id: 8, sizeBytes: 4096, blockSize: 4096, replication: 2, origin: 7)
        #expect(VolumeInfo.decode(clone.encoded()) == clone)
        let plain = VolumeInfo(name: "v", id: 7, sizeBytes: 4096, blockSize: 4096, replication: 2)
        #expect(VolumeInfo.decode(plain.encoded())?.origin == 0)
        #expect(SnapshotRecord.validName("monday-2026.12.07_a"))
        for bad in ["", "-x", ".x", "a/b", "a@b", "a b", String(repeating: "x", count: 65)] { #expect(!SnapshotRecord.validName(bad)) }
    }

    @Test("volume keys split into name and field, whatever a snapshot is called")
    func keys() {
        #expect(VolumeInfo.splitKey("/torus/volumes/v1/info")?.volume == "v1")
        #expect(VolumeInfo.splitKey("/torus/volumes/v1/snapshots/info")?.field == "snapshots/info")
        #expect(VolumeInfo.splitKey("/torus/volumes//info") == nil)
        #expect(VolumeInfo.splitKey("/torus/ring/1") == nil)
        #expect(VolumeInfo.snapshotKey("v1", "s") == "/torus/volumes/v1/snapshots/s")
    }
}
