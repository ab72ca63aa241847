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
        // A newer epoch was granted: the head's writer is fenced, the new one may commit anything of its own.
        #expect(Collector.isCollectible(ref(epoch: 3, sequence: 150), epochKey: 4, head: head))
        #expect(!Collector.isCollectible(ref(epoch: 4, sequence: 1), epochKey: 4, head: head))
        // A head without a floor (older writer): nothing of its epoch.
        #expect(!Collector.isCollectible(ref(epoch: 3, sequence: 1), epochKey: 3, head: VolumeHead(epoch: 3, generation: 1, root: nil)))
        // No head yet: only fenced epochs.
        #expect(!Collector.isCollectible(ref(epoch: 1, sequence: 1), epochKey: 1, head: nil))
        #expect(Collector.isCollectible(ref(epoch: 1, sequence: 1), epochKey: 2, head: nil))
        // An epoch newer than the key we read (granted after our read): kept.
        #expect(!Collector.isCollectible(ref(epoch: 5, sequence: 1), epochKey: 4, head: head))
    }
}
