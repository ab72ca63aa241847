import TorusCore

/// A min-heap of events ordered by (virtual time, insertion order): two events at the same
/// instant run in the order they were scheduled, so a run is a pure function of its seed.
///
/// The heap holds small (time, sequence, slot) keys; payloads stay put in a slot buffer with
/// a free list, so sifting never moves the (large) events themselves. The slot buffer is raw
/// memory rather than an array of optionals: storing into or taking out of an optional
/// multi-payload enum went through the runtime's generic value witnesses (about 3% of a run),
/// while initializing and moving out of raw memory is a plain copy. A class, so the payloads
/// still in the queue are released exactly once, when it goes away.
final class EventQueue<Payload> {
    /// (time, sequence) as one 128-bit number: one branch-free compare instead of two
    /// data-dependent branches (popping was about 2% of a run, mostly mispredicted branches).
    private struct Key {
        var order: UInt128
        var slot: Int32
        init(time: UInt64, seq: UInt64, slot: Int32) {
            order = UInt128(time) << 64 | UInt128(seq)
            self.slot = slot
        }
        var time: UInt64 { UInt64(truncatingIfNeeded: order >> 64) }
        @inline(__always) func precedes(_ o: Key) -> Bool { order < o.order }
    }
    private var heap: [Key] = []
    /// Slots `0..<slotsUsed` have been handed out; a slot is initialized iff a key in `heap`
    /// names it (the others are in `freeSlots`).
    private var payloads: UnsafeMutablePointer<Payload>
    private var capacity = 256
    private var slotsUsed = 0
    private var freeSlots: [Int32] = []
    private var nextSeq: UInt64 = 0

    init() {
        payloads = .allocate(capacity: capacity)
    }

    deinit {
        for k in heap { (payloads + Int(k.slot)).deinitialize(count: 1) }
        payloads.deallocate()
    }

    var count: Int { heap.count }
    var isEmpty: Bool { heap.isEmpty }

    func push(_ time: Instant, _ payload: consuming Payload) {
        let slot: Int32
        if let s = freeSlots.popLast() {
            slot = s
        } else {
            if slotsUsed == capacity { grow() }
            precondition(slotsUsed < Int(Int32.max), "event queue full")
            slot = Int32(slotsUsed)
            slotsUsed += 1
        }
        (payloads + Int(slot)).initialize(to: payload)
        heap.append(Key(time: time.nanoseconds, seq: nextSeq, slot: slot))
        nextSeq += 1
        var i = heap.count - 1
        let item = heap[i]
        while i > 0 {
            let parent = (i - 1) / 2
            guard item.precedes(heap[parent]) else { break }
            heap[i] = heap[parent]
            i = parent
        }
        heap[i] = item
    }

    /// Takes the earliest event out. The queue must not be empty. (Not an optional: an
    /// optional event is destroyed through the runtime's generic witnesses.)
    func pop() -> (Instant, Payload) {
        precondition(!heap.isEmpty, "pop from an empty event queue")
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            var i = 0
            let n = heap.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = l
                if l >= n { break }
                if r < n && heap[r].precedes(heap[l]) { m = r }
                guard heap[m].precedes(last) else { break }
                heap[i] = heap[m]
                i = m
            }
            heap[i] = last
        }
        let payload = (payloads + Int(top.slot)).move()
        freeSlots.append(top.slot)
        return (Instant(nanoseconds: top.time), payload)
    }

    private func grow() {
        let bigger = UnsafeMutablePointer<Payload>.allocate(capacity: capacity * 2)
        // Live and free slots alike keep their numbers; only live ones are initialized, so
        // each is moved on its own.
        for k in heap { (bigger + Int(k.slot)).moveInitialize(from: payloads + Int(k.slot), count: 1) }
        payloads.deallocate()
        payloads = bigger
        capacity *= 2
    }
}

/// The run's trace hash, over three words per event. One multiply and one shift per word:
/// the byte-wise FNV-1a of `StableHasher` (which the metadata digest keeps) took eight
/// dependent multiplies per word, about 1.6% of a run. Order-sensitive; it only has to tell
/// two runs apart, not resist an adversary.
struct TraceHasher {
    private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    @inline(__always) mutating func combine(_ x: UInt64) {
        let h = (value ^ x) &* 0x9E37_79B9_7F4A_7C15
        value = h ^ (h >> 29)
    }
}
