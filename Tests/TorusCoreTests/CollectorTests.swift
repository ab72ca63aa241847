import Testing
@testable import TorusCore

@Suite("garbage collector horizon")
struct CollectorTests {
    func ref(epoch: UInt64, sequence: UInt64) -> BlockRef {
        BlockRef(volume: 1, epoch: epoch, sequence: sequence, index: 7)
    }

    @Test("a head's floor round-trips; a head without one decodes with floor 0")
    func headFloor() {
        let root = MapEntry(epoch: 3, sequence: 40, crc: 0xABCD)
        let h = VolumeHead(epoch: 3, generation: 9, root: root, floor: 41)
        #expect(VolumeHead.decode(h.encoded()) == h)
        let old = VolumeHead(epoch: 3, generation: 9, root: root)
        #expect(old.encoded().count == h.encoded().count - 8, "floor 0 is not written: the old layout")
        #expect(VolumeHead.decode(old.encoded())?.floor == 0)
        let empty = VolumeHead(epoch: 2, generation: 0, root: nil, floor: 5)
        #expect(VolumeHead.decode(empty.encoded()) == empty)
    }

    @Test("unreachable refs: fenced epochs and the head's epoch below its floor are garbage, nothing else")
    func collectible() {
        let head = VolumeHead(epoch: 3, generation: 9, root: nil, floor: 100)
        // An older, fenced epoch.
        #expect(Collector.isCollectible(ref(epoch: 2, sequence: 500), epochKey: 3, head: head))
        // The head's epoch, below and at or above its floor.
        #expect(Collector.isCollectible(ref(epoch: 3, sequence: 99), epochKey: 3, head: head))
        #expect(!Collector.isCollectible(ref(epoch: 3, sequence: 100), epochKey: 3, head: head))
        // A newer epoch was granted: the head's writer is fenced, but its log may still name what
        // it wrote from its floor on until the new writer's recovery checkpoint; below the floor
        // it is garbage, and the new writer may commit anything of its own.
        #expect(!Collector.isCollectible(ref(epoch: 3, sequence: 150), epochKey: 4, head: head))
        #expect(Collector.isCollectible(ref(epoch: 3, sequence: 50), epochKey: 4, head: head))
        #expect(!Collector.isCollectible(ref(epoch: 4, sequence: 1), epochKey: 4, head: head))
        // An epoch between the head's and the key's: fenced before its first checkpoint.
        #expect(Collector.isCollectible(ref(epoch: 4, sequence: 1), epochKey: 5, head: head))
        // A head without a floor (older writer): nothing of its epoch.
        #expect(!Collector.isCollectible(ref(epoch: 3, sequence: 1), epochKey: 3, head: VolumeHead(epoch: 3, generation: 1, root: nil)))
        // No head yet: only fenced epochs.
        #expect(!Collector.isCollectible(ref(epoch: 1, sequence: 1), epochKey: 1, head: nil))
        #expect(Collector.isCollectible(ref(epoch: 1, sequence: 1), epochKey: 2, head: nil))
        // An epoch newer than the key we read (granted after our read): kept.
        #expect(!Collector.isCollectible(ref(epoch: 5, sequence: 1), epochKey: 4, head: head))
    }

    @Test("the commit log: the head's segment and newer ones are live, older records garbage, seals kept")
    func collectibleLog() {
        let seg = LogSegment(epoch: 3, start: 40, nodes: [NodeID(1), NodeID(2)])
        let head = VolumeHead(epoch: 3, generation: 9, root: nil, floor: 100, log: seg)
        func log(_ e: UInt64, _ p: UInt64) -> BlockRef { BlockRef(volume: 7, epoch: e, sequence: p, index: BlockRef.logIndex) }
        #expect(Collector.isCollectible(log(3, 39), epochKey: 3, head: head), "below the checkpoint")
        #expect(!Collector.isCollectible(log(3, 40), epochKey: 3, head: head), "the segment's header")
        #expect(!Collector.isCollectible(log(3, 41), epochKey: 5, head: head), "a record a new writer must replay")
        #expect(Collector.isCollectible(log(2, 900), epochKey: 3, head: head), "an older epoch's segment")
        #expect(!Collector.isCollectible(log(4, 1), epochKey: 4, head: head), "a header whose checkpoint is under way")
        #expect(Collector.isCollectible(log(4, 1), epochKey: 5, head: head), "a fenced writer's header: its checkpoint can never land")
        let rolledBack = VolumeHead(epoch: 10, generation: 3, root: nil)
        #expect(Collector.isCollectible(log(11, 1), epochKey: 13, head: rolledBack), "after a rollback (no log): a fenced epoch's segment")
        #expect(!Collector.isCollectible(log(13, 1), epochKey: 13, head: rolledBack), "the current writer's first checkpoint")
        let seal = BlockRef(volume: 7, epoch: 1, sequence: 0, index: BlockRef.sealIndex)
        #expect(!Collector.isCollectible(seal, epochKey: 9, head: head), "seals fence zombies")
        #expect(VolumeHead.decode(head.encoded()) == head)
        let record = LogRecord(volume: 7, epoch: 3, position: 41, generation: 10, floor: 120,
                               changes: [.init(index: 5, entry: MapEntry(epoch: 3, sequence: 130, crc: 9)), .init(index: 6, entry: nil)])
        let bytes = record.encoded(blockSize: 4096)
        #expect(bytes.count == 4096)
        #expect(LogRecord.decode(bytes, volume: 7, epoch: 3, position: 41) == record)
        #expect(LogRecord.decode(bytes, volume: 7, epoch: 3, position: 42) == nil, "a record found at another position")
        var rotten = bytes
        rotten[60] ^= 1
        #expect(LogRecord.decode(rotten, volume: 7, epoch: 3, position: 41) == nil)
    }
}
