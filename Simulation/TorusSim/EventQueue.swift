import TorusCore

/// A min-heap of events ordered by (virtual time, insertion order): two events at the same
/// instant run in the order they were scheduled, so a run is a pure function of its seed.
///
/// The heap holds small (time, sequence, slot) keys; payloads stay put in a slot buffer with
/// a free list, so sifting never moves the (large) events themselves. The slot buffer is raw
/// memory rather than an array of optionals, whose multi-payload enum went through the
/// runtime's generic value witnesses (docs/simulation.md, "Speed"). A class, so the payloads
/// still in the queue are released exactly once, when it goes away.
final class EventQueue<Payload> {
    /// (time, sequence) as one 128-bit number: one branch-free compare instead of two
    /// data-dependent branches, which mispredicted.
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
    /// The heap (`count` keys), the payload slots and the free slot list share one capacity:
    /// keys + free slots = slots handed out <= capacity. Raw buffers rather than arrays: no
    /// uniqueness check on every push and pop.
    private var keys: UnsafeMutablePointer<Key>
    private(set) var count = 0
    /// Slots `0..<slotsUsed` have been handed out; a slot is initialized iff a key in the heap
    /// names it (the others are in the free list).
    private var payloads: UnsafeMutablePointer<Payload>
    private var freeSlots: UnsafeMutablePointer<Int32>
    private var freeCount = 0
    private var capacity = 256
    private var slotsUsed = 0
    private var nextSeq: UInt64 = 0

    init() {
        keys = .allocate(capacity: capacity)
        payloads = .allocate(capacity: capacity)
        freeSlots = .allocate(capacity: capacity)
    }

    deinit {
        for i in 0..<count { (payloads + Int(keys[i].slot)).deinitialize(count: 1) }
        keys.deallocate()  // keys and free slots are trivial: nothing to deinitialize
        payloads.deallocate()
        freeSlots.deallocate()
    }

    var isEmpty: Bool { count == 0 }

    func push(_ time: Instant, _ payload: consuming Payload) {
        let slot: Int32
        if freeCount > 0 {
            freeCount -= 1
            slot = freeSlots[freeCount]
        } else {
            if slotsUsed == capacity { grow() }
            precondition(slotsUsed < Int(Int32.max), "event queue full")
            slot = Int32(slotsUsed)
            slotsUsed += 1
        }
        precondition(count < capacity, "event queue: more keys than slots")
        (payloads + Int(slot)).initialize(to: payload)
        let item = Key(time: time.nanoseconds, seq: nextSeq, slot: slot)
        nextSeq += 1
        var i = count
        count += 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard item.precedes(keys[parent]) else { break }
            keys[i] = keys[parent]
            i = parent
        }
        keys[i] = item
    }

    /// Takes the earliest event out. The queue must not be empty. (Not an optional: an
    /// optional event is destroyed through the runtime's generic witnesses.)
    func pop() -> (Instant, Payload) {
        precondition(count > 0, "pop from an empty event queue")
        let top = keys[0]
        count -= 1
        let n = count
        if n > 0 {
            let last = keys[n]
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = l
                if l >= n { break }
                if r < n && keys[r].precedes(keys[l]) { m = r }
                guard keys[m].precedes(last) else { break }
                keys[i] = keys[m]
                i = m
            }
            keys[i] = last
        }
        let payload = (payloads + Int(top.slot)).move()
        freeSlots[freeCount] = top.slot
        freeCount += 1
        return (Instant(nanoseconds: top.time), payload)
    }

    private func grow() {
        let bigger = capacity * 2
        let newPayloads = UnsafeMutablePointer<Payload>.allocate(capacity: bigger)
        // Live and free slots alike keep their numbers; only live ones are initialized, so
        // each is moved on its own.
        for i in 0..<count {
            let s = Int(keys[i].slot)
            (newPayloads + s).moveInitialize(from: payloads + s, count: 1)
        }
        payloads.deallocate()
        payloads = newPayloads
        let newKeys = UnsafeMutablePointer<Key>.allocate(capacity: bigger)
        newKeys.initialize(from: keys, count: count)
        keys.deallocate()
        keys = newKeys
        let newFree = UnsafeMutablePointer<Int32>.allocate(capacity: bigger)
        newFree.initialize(from: freeSlots, count: freeCount)
        freeSlots.deallocate()
        freeSlots = newFree
        capacity = bigger
    }
}

/// The run's trace hash, over three words per event. One multiply and one shift per word
/// (the byte-wise FNV-1a of `StableHasher`, which the metadata digest keeps, takes eight
/// dependent multiplies). Order-sensitive; it only has to tell two runs apart, not resist an
/// adversary.
struct TraceHasher {
    private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    @inline(__always) mutating func combine(_ x: UInt64) {
        let h = (value ^ x) &* 0x9E37_79B9_7F4A_7C15
        value = h ^ (h >> 29)
    }
}
