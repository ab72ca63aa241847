import TorusCore

/// A min-heap of events ordered by (virtual time, insertion order): two events at the same
/// instant run in the order they were scheduled, so a run is a pure function of its seed.
struct EventQueue<Payload> {
    private struct Item {
        var time: Instant
        var seq: UInt64
        var payload: Payload
        @inline(__always) func precedes(_ o: Item) -> Bool {
            time.nanoseconds != o.time.nanoseconds ? time.nanoseconds < o.time.nanoseconds : seq < o.seq
        }
    }
    private var heap: [Item] = []
    private var nextSeq: UInt64 = 0

    var count: Int { heap.count }
    var isEmpty: Bool { heap.isEmpty }

    mutating func push(_ time: Instant, _ payload: Payload) {
        heap.append(Item(time: time, seq: nextSeq, payload: payload))
        nextSeq += 1
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].precedes(heap[parent]) else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> (Instant, Payload)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var i = 0
        let n = heap.count
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < n && heap[l].precedes(heap[m]) { m = l }
            if r < n && heap[r].precedes(heap[m]) { m = r }
            if m == i { break }
            heap.swapAt(i, m)
            i = m
        }
        return (top.time, top.payload)
    }
}
