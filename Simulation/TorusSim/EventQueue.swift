import TorusCore

/// A min-heap of events ordered by (virtual time, insertion order): two events at the same
/// instant run in the order they were scheduled, so a run is a pure function of its seed.
///
/// The heap holds small (time, sequence, slot) keys; payloads stay put in a slot array with
/// a free list, so sifting never moves the (large) events themselves.
struct EventQueue<Payload> {
    private struct Key {
        var time: UInt64
        var seq: UInt64
        var slot: Int32
        @inline(__always) func precedes(_ o: Key) -> Bool { time != o.time ? time < o.time : seq < o.seq }
    }
    private var heap: [Key] = []
    private var payloads: [Payload?] = []
    private var freeSlots: [Int32] = []
    private var nextSeq: UInt64 = 0

    var count: Int { heap.count }
    var isEmpty: Bool { heap.isEmpty }

    mutating func push(_ time: Instant, _ payload: consuming Payload) {
        let slot: Int32
        if let s = freeSlots.popLast() {
            slot = s
            payloads[Int(s)] = payload
        } else {
            slot = Int32(payloads.count)
            payloads.append(payload)
        }
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

    mutating func pop() -> (Instant, Payload)? {
        guard let top = heap.first else { return nil }
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
        let payload = payloads[Int(top.slot)].take()!
        freeSlots.append(top.slot)
        return (Instant(nanoseconds: top.time), payload)
    }
}
