/// The output buffer of a step function (`VolumeClient`, `StorageNode`), reused across steps.
///
/// A step appends its outputs and hands the buffer out (`handOut`); the caller iterates the
/// array it got and lets it go. The next step clears the buffer first (`begin`): by then the
/// caller holds no copy, so the clear keeps the storage instead of allocating new storage on
/// every step. (Clearing right after handing out would allocate: the caller's copy still
/// shares the storage then.) If a caller does keep the array, the clear copies on write and
/// nothing changes but the allocation.
struct StepOutputs<Element: Sendable>: Sendable {
    private var elements: [Element] = []
    private var handedOut = false

    /// Drops the outputs the last step handed out.
    @inline(__always) mutating func begin() {
        if handedOut {
            elements.clearKeepingCapacity()
            handedOut = false
        }
    }

    @inline(__always) mutating func append(_ e: Element) { elements.append(e) }

    /// The step's outputs; they stay in the buffer until the next `begin`.
    @inline(__always) mutating func handOut() -> [Element] {
        handedOut = true
        return elements
    }
}

extension Array {
    /// `removeAll(keepingCapacity: true)`, cheaper for the few elements a step leaves: that
    /// goes through the general `replaceSubrange` (cost: docs/storage-core.md, "Cost notes").
    @inline(__always) mutating func clearKeepingCapacity() {
        if count <= 4 {
            while !isEmpty { removeLast() }
        } else {
            removeAll(keepingCapacity: true)
        }
    }
}
