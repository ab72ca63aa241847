import Testing
@testable import TorusCore

/// Drives one storage node with a disk that completes every request at once.
private struct NodeHarness {
    let config = BlockStoreConfig(geometry: DiskGeometry(sectorSize: 4096, capacityBytes: 16 << 20), blockSize: 16384,
                                  journalRegionSectors: 64)
    var sectors: [UInt64: [UInt8]] = [:]
    var node: StorageNode
    var sent: [(NodeID, PeerMessage)] = []
    var syncs = 0

    init() {
        let r = BlockStore.journalRegions(config: config)
        node = StorageNode(id: NodeID(1), store: BlockStore.recover(
            config: config, regionA: Array(repeating: 0, count: r.a.length), regionB: Array(repeating: 0, count: r.b.length),
            readSlot: { _ in nil }))
        perform(node.start())
    }

    mutating func restart() {
        let r = BlockStore.journalRegions(config: config)
        node = StorageNode(id: NodeID(1), store: BlockStore.recover(config: config, regionA: read(r.a.offset, r.a.length),
                                                                      regionB: read(r.b.offset, r.b.length),
                                                                      readSlot: { read(config.slotOffset($0), config.blockSize) }))
        perform(node.start())
    }

    func read(_ offset: UInt64, _ length: Int) -> [UInt8] {
        var out: [UInt8] = []
        for s in (offset / 4096)..<((offset + UInt64(length)) / 4096) { out += sectors[s] ?? Array(repeating: 0, count: 4096) }
        return out
    }

    mutating func perform(_ outputs: [StorageNode.Output]) {
        for o in outputs {
            switch o {
            case .send(let to, let m): sent.append((to, m))
            case .disk(let id, let req):
                let c: DiskCompletion
                switch req {
                case .read(let off, let len): c = .read(.success(read(off, len)))
                case .write(let off, let bytes):
                    for k in 0..<(bytes.count / 4096) { sectors[off / 4096 + UInt64(k)] = Array(bytes[(k * 4096)..<((k + 1) * 4096)]) }
                    c = .written(.success(()))
                case .sync:
                    syncs += 1
                    c = .synced(.success(()))
                }
                perform(node.diskCompleted(id, c))
            }
        }
    }

    mutating func request(_ m: PeerMessage) -> [PeerMessage] {
        sent.removeAll()
        perform(node.receive(from: NodeID(100), m))
        #expect(sent.allSatisfy { $0.0 == NodeID(100) }, "a reply went to the wrong peer")
        return sent.map(\.1)
    }
}

private func block(_ seed: UInt8) -> [UInt8] { (0..<16384).map { UInt8(truncatingIfNeeded: $0) ^ seed } }
private let refA = BlockRef(volume: 1, epoch: 1, sequence: 1, index: 0)
private let refB = BlockRef(volume: 1, epoch: 1, sequence: 2, index: 1)

@Suite("storage node")
struct StorageNodeTests {
    @Test("a durable put is acknowledged only after a disk sync, and survives a restart")
    func durablePut() {
        var h = NodeHarness()
        let before = h.syncs
        let replies = h.request(.putBlock(RPCID(7), refA, block(1), durable: true))
        guard case .putReply(RPCID(7), .success) = replies.first else {
            Issue.record("expected a put reply for rpc 7, got \(replies)")
            return
        }
        #expect(h.syncs >= before + 1, "data and journal must be synced (one sync covers both) before the reply")
        h.restart()
        guard case .getReply(RPCID(8), .success(let data)) = h.request(.getBlock(RPCID(8), refA)).first else {
            Issue.record("get after restart failed")
            return
        }
        #expect(data == block(1))
    }

    @Test("a seal refuses the volume's older writers' records and blocks, not maintenance copies, and survives a restart")
    func sealRefusesOlderWriters() {
        var h = NodeHarness()
        let seal = BlockRef(volume: 1, epoch: 2, sequence: 0, index: BlockRef.sealIndex)
        guard case .putReply(RPCID(1), .success) = h.request(.putBlock(RPCID(1), seal, block(0), durable: true, restore: true)).first else {
            Issue.record("the seal was not stored")
            return
        }
        h.restart()
        let record = BlockRef(volume: 1, epoch: 1, sequence: 5, index: BlockRef.logIndex)
        let newer = BlockRef(volume: 1, epoch: 2, sequence: 3, index: 2)
        let otherVolume = BlockRef(volume: 2, epoch: 1, sequence: 1, index: 0)
        func status(_ rpc: UInt64, _ ref: BlockRef, restore: Bool = false, copy: Bool = false) -> StoreError?? {
            guard case .putReply(_, let result) = h.request(.putBlock(RPCID(rpc), ref, block(3), durable: true, restore: restore, copy: copy)).first else { return nil }
            if case .failure(let e) = result { return .some(e) }
            return .some(nil)
        }
        #expect(status(2, refA) == .some(.sealed(epoch: 2)), "an old writer's block")
        #expect(status(3, record) == .some(.sealed(epoch: 2)), "an old writer's record")
        #expect(status(4, refB, copy: true) == .some(nil), "a repair or move copies an old version")
        #expect(status(5, record, restore: true) == .some(nil), "a recovery rewrites a record it read")
        #expect(status(6, newer) == .some(nil), "the sealing writer's own block")
        #expect(status(7, otherVolume) == .some(nil), "another volume")
    }

    @Test("get of an unknown ref says not found; sync reports exactly the refs held")
    func getAndSync() {
        var h = NodeHarness()
        _ = h.request(.putBlock(RPCID(1), refA, block(2), durable: false))
        guard case .getReply(_, .failure(.notFound(refB))) = h.request(.getBlock(RPCID(2), refB)).first else {
            Issue.record("expected notFound for an unknown ref")
            return
        }
        guard case .syncReply(RPCID(3), let present) = h.request(.syncBlocks(RPCID(3), [refA, refB])).first else {
            Issue.record("expected a sync reply")
            return
        }
        #expect(present == [refA])
    }

    @Test("a range get returns exactly its bytes; ranges outside the block and corrupt blocks are refused")
    func rangeGet() {
        var h = NodeHarness()
        _ = h.request(.putBlock(RPCID(1), refA, block(5), durable: true))
        guard case .getReply(RPCID(2), .success(let part)) = h.request(.getRange(RPCID(2), refA, offset: 4096, length: 100)).first else {
            Issue.record("range get failed")
            return
        }
        #expect(part == Array(block(5)[4096..<4196]))
        guard case .getReply(_, .success(let last)) = h.request(.getRange(RPCID(3), refA, offset: 16384 - 4096, length: 4096)).first else {
            Issue.record("range get of the last sector failed")
            return
        }
        #expect(last == Array(block(5)[(16384 - 4096)...]))
        for (offset, length) in [(16384 - 4095, 4096), (-1, 10), (0, 0), (0, 16385)] {
            guard case .getReply(_, .failure(.wrongSize)) = h.request(.getRange(RPCID(4), refA, offset: offset, length: length)).first else {
                Issue.record("range \(offset)+\(length) was not refused")
                return
            }
        }
        guard case .getReply(_, .failure(.notFound(refB))) = h.request(.getRange(RPCID(5), refB, offset: 0, length: 4096)).first else {
            Issue.record("expected notFound for an unknown ref")
            return
        }
        // The range reads taught the node refA's sector checksums: a range now reads only its
        // own sectors, each verified. Rot in the first sector spoils only ranges that touch it.
        let slotSector = h.config.slotAreaOffset / 4096
        for s in h.sectors.keys.sorted() where s >= slotSector { h.sectors[s]![17] ^= 0x40 }
        h.sectors[slotSector + 1]![17] ^= 0x40  // heal all but the first sector of the slot
        h.sectors[slotSector + 2]![17] ^= 0x40
        h.sectors[slotSector + 3]![17] ^= 0x40
        guard case .getReply(_, .success(let third)) = h.request(.getRange(RPCID(6), refA, offset: 8192, length: 4096)).first else {
            Issue.record("a range of intact sectors with known checksums must be served")
            return
        }
        #expect(third == Array(block(5)[8192..<12288]))
        guard case .getReply(_, .failure(.corrupt(refA))) = h.request(.getRange(RPCID(7), refA, offset: 4000, length: 200)).first else {
            Issue.record("a range touching the rotten sector must be refused")
            return
        }
        // A block never read before is read and verified whole: rot anywhere refuses any range.
        _ = h.request(.putBlock(RPCID(8), refB, block(6), durable: true))
        let first = Array(block(6)[0..<4096])
        for s in h.sectors.keys.sorted() where s >= slotSector && h.sectors[s] == first { h.sectors[s]![17] ^= 0x40 }
        guard case .getReply(_, .failure(.corrupt(refB))) = h.request(.getRange(RPCID(9), refB, offset: 8192, length: 4096)).first else {
            Issue.record("a range of a block with unknown sector checksums must verify the whole block")
            return
        }
    }

    @Test("a corrupted copy is reported as corrupt, never returned")
    func corruptCopy() {
        var h = NodeHarness()
        _ = h.request(.putBlock(RPCID(1), refA, block(3), durable: true))
        let slotSector = h.config.slotAreaOffset / 4096
        for s in h.sectors.keys.sorted() where s >= slotSector { h.sectors[s]![17] ^= 0x40 }
        guard case .getReply(_, .failure(.corrupt(refA))) = h.request(.getBlock(RPCID(2), refA)).first else {
            Issue.record("expected corrupt")
            return
        }
    }

    @Test("deleted refs are gone, also after a restart once a sync covered the delete")
    func deleteThenRestart() {
        var h = NodeHarness()
        _ = h.request(.putBlock(RPCID(1), refA, block(4), durable: true))
        _ = h.request(.putBlock(RPCID(2), refB, block(5), durable: true))
        _ = h.request(.deleteBlocks([refA]))
        _ = h.request(.syncBlocks(RPCID(3), []))
        h.restart()
        guard case .syncReply(_, let present) = h.request(.syncBlocks(RPCID(4), [refA, refB])).first else {
            Issue.record("expected a sync reply")
            return
        }
        #expect(present == [refB])
    }
}
