/// A binary min-heap. Ties pop in an order fixed by the comparison alone, so callers that need
/// determinism give elements a total order (e.g. with the block index as the last key).
public struct MinHeap<Element: Comparable>: Sendable where Element: Sendable {
    public private(set) var elements: [Element] = []

    public init() {}

    public var count: Int { elements.count }
    public var isEmpty: Bool { elements.isEmpty }
    public var min: Element? { elements.first }

    public mutating func push(_ e: Element) {
        elements.append(e)
        var i = elements.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard elements[i] < elements[parent] else { break }
            elements.swapAt(i, parent)
            i = parent
        }
    }

    @discardableResult
    public mutating func pop() -> Element? {
        guard !elements.isEmpty else { return nil }
        let top = elements[0]
        let last = elements.removeLast()
        if !elements.isEmpty {
            elements[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < elements.count && elements[l] < elements[m] { m = l }
                if r < elements.count && elements[r] < elements[m] { m = r }
                if m == i { break }
                elements.swapAt(i, m)
                i = m
            }
        }
        return top
    }

    /// Replaces the contents (O(n log n)); used to drop stale entries of lazily cleaned heaps.
    public mutating func rebuild(_ items: [Element]) {
        elements = items.sorted()
    }
}
