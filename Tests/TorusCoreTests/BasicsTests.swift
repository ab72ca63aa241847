import CTorusCRC
import Testing
@testable import TorusCore

@Suite("checksums, randomness and placement")
struct BasicsTests {
    @Test("CRC32C matches the standard check value")
    func crcCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([]) == 0)
        // Chaining gives the same result as one pass.
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        #expect(CRC32C.checksum(data[500...], continuing: CRC32C.checksum(data[..<500])) == CRC32C.checksum(data))
        // The hardware and the table implementation agree on every length and alignment.
        var random = SeededRandom(seed: 3)
        let big = (0..<5000).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        for start in 0..<9 {
            for length in [0, 1, 7, 8, 9, 63, 64, 100, 4096] {
                let slice = big[start..<(start + length)]
                let portable = slice.withUnsafeBytes { ctorus_crc32c_portable(0, $0.baseAddress, $0.count) }
                #expect(CRC32C.checksum(slice) == (length == 0 ? 0 : portable))
            }
        }
    }

    @Test("the same seed gives the same random stream; derived streams differ")
    func seededRandom() {
        var a = SeededRandom(seed: 42), b = SeededRandom(seed: 42)
        #expect((0..<10).map { _ in a.next() } == (0..<10).map { _ in b.next() })
        var c = a.derived(stream: 1), d = a.derived(stream: 2)
        #expect(c.next() != d.next())
    }

    @Test("placement gives replication distinct nodes, stable for a key")
    func placementDistinct() {
        let ring = Ring(members: (1...5).map { RingMember(node: NodeID($0)) })
        for key in UInt64(0)..<500 {
            let p = ring.placement(for: key, replication: 3)
            #expect(p.count == 3)
            #expect(Set(p).count == 3)
            #expect(p == ring.placement(for: key, replication: 3))
        }
    }

    @Test("uniform-weight order is a full sort by score; rings of any size pick without repeats")
    func placementOrderMatchesSort() {
        for size in [1, 2, 5, 63, 64, 65, 70] {
            // Node ids out of order and with gaps: the ring sorts its members by id.
            let ids = (1...size).map { UInt32($0 * 7 % 101 + 1) }
            let ring = Ring(members: ids.map { RingMember(node: NodeID($0)) })
            let sortedIDs = ids.sorted()
            for key in UInt64(0)..<200 {
                // The reference: highest score first, ties to the lower node id.
                let expected = sortedIDs.map { id in (StableHasher.mix(key, UInt64(id) &* 0x9E37_79B9) >> 11, id) }
                    .sorted { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 < $1.1 }.map { NodeID($0.1) }
                #expect(ring.ordered(for: key) == expected)
                let every = ring.everyCandidate(for: key, replication: min(3, size))
                #expect(every.count == size && Set(every).count == size)
                #expect(Array(every.prefix(min(3, size))) == ring.placement(for: key, replication: min(3, size)))
            }
        }
    }

    @Test("ByteWriter grows past its capacity; pad, patch and slices of what is written")
    func byteWriter() {
        var w = ByteWriter(capacity: 4)
        w.u8(1); w.u16(0x0302); w.u32(0x0706_0504); w.u64(0x0F0E_0D0C_0B0A_0908)
        w.raw([0x10, 0x11][...])
        w.raw(AnySequence([0x12, 0x13]).map { UInt8($0) })
        #expect(w.count == 19)
        w.pad(to: 24)
        w.patch(u32: 0xDDCC_BBAA, at: 19)
        #expect(Array(w.written(0..<3)) == [1, 2, 3])
        let bytes = w.bytes
        #expect(bytes == Array(1...19).map { UInt8($0) } + [0xAA, 0xBB, 0xCC, 0xDD, 0])
        // Reading the bytes does not end the writer: later writes go after them.
        w.u8(0xEE)
        #expect(w.bytes.count == 25 && w.bytes.last == 0xEE && bytes.count == 24)
        var r = ByteReader(w.bytes)
        #expect(r.u8() == 1 && r.u16() == 0x0302 && r.u32() == 0x0706_0504 && r.u64() == 0x0F0E_0D0C_0B0A_0908)
    }

    @Test("word-hashed keys: equal keys hash alike, sequential ids spread evenly over buckets")
    func wordHashing() {
        let a = BlockRef(volume: 1, epoch: 2, sequence: 3, index: 4)
        #expect(a._rawHashValue(seed: 99) == BlockRef(volume: 1, epoch: 2, sequence: 3, index: 4)._rawHashValue(seed: 99))
        #expect(a._rawHashValue(seed: 1) != a._rawHashValue(seed: 2))
        // 8,192 sequential ids, ids 1,024 apart (all alike in their low bits: an unmixed hash
        // would put them in one bucket) and refs differing only in sequence or index, into
        // 1,024 buckets by the low bits, as a dictionary does: about 8 each, none crowded.
        for seed in [0, 12345] {
            let sequential: [Int] = (0..<8192).map { RPCID(UInt64($0))._rawHashValue(seed: seed) }
            let strided: [Int] = (0..<8192).map { DiskOpID(UInt64($0) << 10)._rawHashValue(seed: seed) }
            let bySequence: [Int] = (0..<8192).map {
                BlockRef(volume: 1, epoch: 3, sequence: UInt64($0), index: 9)._rawHashValue(seed: seed)
            }
            let byIndex: [Int] = (0..<8192).map {
                BlockRef(volume: 1, epoch: 3, sequence: 5, index: UInt64($0))._rawHashValue(seed: seed)
            }
            for keys in [sequential, strided, bySequence, byIndex] {
                var buckets = [Int](repeating: 0, count: 1024)
                for h in keys { buckets[h & 1023] += 1 }
                #expect(buckets.max()! <= 24 && buckets.filter { $0 == 0 }.count <= 4)
            }
        }
        // And they behave as dictionary keys.
        var d: [BlockRef: Int] = [:]
        for i in 0..<50_000 { d[BlockRef(volume: 1, epoch: UInt64(i % 3), sequence: UInt64(i), index: UInt64(i % 700))] = i }
        #expect(d.count == 50_000)
        #expect((0..<50_000).allSatisfy { d[BlockRef(volume: 1, epoch: UInt64($0 % 3), sequence: UInt64($0), index: UInt64($0 % 700))] == $0 })
    }

    @Test("BlockTable behaves like a dictionary keyed by block index")
    func blockTableMatchesDictionary() {
        var table = BlockTable<[Int]>()
        var model: [UInt64: [Int]] = [:]
        var random = SeededRandom(seed: 42)
        for step in 0..<5_000 {
            let key = random.below(300) | (random.chance(0.1) ? BlockRef.mapIndexBase : 0)
            switch random.below(5) {
            case 0: table[key] = [step]; model[key] = [step]
            case 1: #expect(table.removeValue(forKey: key) == model.removeValue(forKey: key))
            case 2:
                let updated = table.update(key) { v -> Int in v.append(step); return v.count }
                #expect(updated == model[key].map { $0.count + 1 })
                model[key]?.append(step)
            case 3: table[key, default: []].append(step); model[key, default: []].append(step)
            default: #expect(table[key] == model[key])
            }
        }
        #expect(table.count == model.count && table.isEmpty == model.isEmpty)
        #expect(Dictionary(uniqueKeysWithValues: table.map { ($0.key, $0.value) }) == model)
        #expect(Set(table.keys) == Set(model.keys))
        #expect(table.values.map(\.count).reduce(0, +) == model.values.map(\.count).reduce(0, +))
        table.removeAll()
        #expect(table.isEmpty)
    }

    @Test("placement spreads replicas over failure domains first")
    func placementDomains() {
        let ring = Ring(members: [
            RingMember(node: NodeID(1), domain: "a"), RingMember(node: NodeID(2), domain: "a"),
            RingMember(node: NodeID(3), domain: "b"), RingMember(node: NodeID(4), domain: "b"),
            RingMember(node: NodeID(5), domain: "c"),
        ])
        let domain: [NodeID: String] = [NodeID(1): "a", NodeID(2): "a", NodeID(3): "b", NodeID(4): "b", NodeID(5): "c"]
        for key in UInt64(0)..<300 {
            let p = ring.placement(for: key, replication: 3)
            #expect(Set(p.map { domain[$0]! }).count == 3)
        }
    }

    @Test("weights shift load in proportion; adding a node moves only what it gains")
    func placementWeightsAndMinimalMovement() {
        let ring = Ring(members: [RingMember(node: NodeID(1), weight: 1), RingMember(node: NodeID(2), weight: 3)])
        var heavy = 0
        for key in UInt64(0)..<4000 where ring.placement(for: key, replication: 1) == [NodeID(2)] { heavy += 1 }
        #expect(heavy > 2700 && heavy < 3300, "node with weight 3 got \(heavy) of 4000")

        let four = Ring(members: (1...4).map { RingMember(node: NodeID($0)) })
        let five = Ring(members: (1...5).map { RingMember(node: NodeID($0)) })
        var moved = 0
        for key in UInt64(0)..<5000 {
            let a = four.placement(for: key, replication: 1), b = five.placement(for: key, replication: 1)
            if a != b {
                moved += 1
                #expect(b == [NodeID(5)], "a key moved between old nodes")
            }
        }
        #expect(moved > 800 && moved < 1200, "moved \(moved) of 5000, ideal 1000")
    }

    @Test("a draining node gets no placements but stays last among the read candidates; versions advance")
    func placementDraining() {
        let ring = Ring(members: (1...5).map { RingMember(node: NodeID($0)) })
        let drained = ring.draining(NodeID(3))
        #expect(drained.version == ring.version + 1 && drained.activeCount == 4)
        for key in UInt64(0)..<500 {
            let before = ring.placement(for: key, replication: 2)
            let after = drained.placement(for: key, replication: 2)
            let cands = drained.candidates(for: key, replication: 2, fallbacks: drained.fallbacks(replication: 2, max: 3))
            #expect(!after.contains(NodeID(3)) && !cands.contains(NodeID(3)))
            #expect(drained.readCandidates(for: key, replication: 2, fallbacks: 2) == cands + [NodeID(3)])
            // Only the keys that node 3 held move.
            if !before.contains(NodeID(3)) { #expect(before == after) }
        }
        let removed = drained.removing(NodeID(3))
        #expect(removed.version == drained.version + 1 && removed.members.count == 4)
        let joined = removed.joining(RingMember(node: NodeID(6)))
        #expect(joined.version == removed.version + 1 && joined.activeCount == 5)
    }

    @Test("block map pages, root and head round-trip; corruption is rejected")
    func mapCodecs() {
        let bs = 16384
        var entries: [MapEntry?] = Array(repeating: nil, count: 100)
        entries[3] = MapEntry(epoch: 2, sequence: 9, crc: 0xDEAD_BEEF)
        let page = BlockMapCodec.encodePage(volume: 7, page: 1, entries: entries[...], blockSize: bs)
        #expect(page.count == bs)
        #expect(BlockMapCodec.decodePage(page, volume: 7, page: 1) == entries)
        #expect(BlockMapCodec.decodePage(page, volume: 7, page: 2) == nil)
        let root = BlockMapCodec.encodeRoot(volume: 7, generation: 5, pages: [nil, entries[3]], blockSize: bs)
        #expect(BlockMapCodec.decodeRoot(root, volume: 7)?.pages == [nil, entries[3]])
        let head = VolumeHead(epoch: 3, generation: 5, root: entries[3])
        #expect(VolumeHead.decode(head.encoded()) == head)
        var bad = head.encoded()
        bad[5] ^= 1
        #expect(VolumeHead.decode(bad) == nil)
        #expect(VolumeHead.decode([1, 2]) == nil)
    }
}
