import Testing
import TorusCore
@testable import TorusSim

/// The simulator's event queue: earliest time first, ties in push order, payloads intact,
/// across growth past the initial capacity and slot reuse.
@Suite("event queue")
struct EventQueueTests {
    /// A payload with a reference inside, so a lost or doubled release would show.
    final class Box { let id: Int; init(_ id: Int) { self.id = id } }

    @Test("pops by (time, push order) across growth and slot reuse, payloads intact")
    func order() {
        let q = EventQueue<(Int, Box)>()
        var random = SeededRandom(seed: 7)
        var expected: [(time: UInt64, id: Int)] = []
        var popped: [(time: UInt64, id: Int)] = []
        var next = 0
        var now: UInt64 = 0
        // Waves of pushes (up to 3,000 queued: the queue starts with 256 slots) with pops in
        // between, so freed slots are reused while the heap grows.
        for wave in 0..<6 {
            for _ in 0..<(wave % 2 == 0 ? 3_000 : 400) {
                let t = now + random.below(50)  // many equal times: ties must keep push order
                q.push(Instant(nanoseconds: t), (next, Box(next)))
                expected.append((t, next))
                next += 1
            }
            for _ in 0..<(q.count / 2) {
                let (at, (id, box)) = q.pop()
                #expect(box.id == id)
                popped.append((at.nanoseconds, id))
                now = at.nanoseconds
            }
        }
        while !q.isEmpty {
            let (at, (id, box)) = q.pop()
            #expect(box.id == id)
            popped.append((at.nanoseconds, id))
        }
        #expect(popped.count == expected.count)
        // Each pop is the earliest queued event, ties by push order: a sorted merge of what
        // was queued at the time. Checked as: times never go back, and within one time the
        // ids (push order) rise.
        var ordered = true
        for i in 1..<popped.count {
            let a = popped[i - 1], b = popped[i]
            if b.time < a.time || (b.time == a.time && b.id < a.id) { ordered = false }
        }
        #expect(ordered, "events came out of (time, push order)")
        #expect(Set(popped.map(\.id)).count == expected.count, "every event came out once")
    }

    @Test("events left in the queue are released when it goes away")
    func releasesLeftovers() {
        weak var probe: Box?
        do {
            let q = EventQueue<Box>()
            for i in 0..<600 {
                let b = Box(i)
                if i == 599 { probe = b }
                q.push(Instant(nanoseconds: UInt64(i)), b)
            }
            _ = q.pop()
            #expect(probe != nil)
        }
        #expect(probe == nil, "a queued payload outlived its queue")
    }
}
