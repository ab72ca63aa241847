import TorusCore

/// Seeded byte-level mutations of corpus inputs (the fallback the toolchain leaves us: Swift's
/// `-sanitize=fuzzer` links with gold's internal error on this machine, docs/fuzzing.md).
struct Mutator {
    var random: SeededRandom
    let maxLength: Int

    mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(random.below(UInt64(n))) }

    /// One to eight stacked mutations of `input`, sometimes spliced with `other`.
    mutating func mutate(_ input: [UInt8], other: [UInt8]) -> [UInt8] {
        var b = input
        for _ in 0...below(8) {
            switch below(10) {
            case 0 where !b.isEmpty: b[below(b.count)] ^= UInt8(1) << UInt8(below(8))
            case 1 where !b.isEmpty: b[below(b.count)] = UInt8(truncatingIfNeeded: random.next())
            case 2:
                let at = below(b.count + 1)
                b.insert(contentsOf: (0..<1 + below(16)).map { _ in UInt8(truncatingIfNeeded: random.next()) }, at: at)
            case 3 where !b.isEmpty:
                let at = below(b.count)
                b.removeSubrange(at..<min(b.count, at + 1 + below(32)))
            case 4 where !b.isEmpty:
                let at = below(b.count), n = min(b.count - at, 1 + below(64))
                b.insert(contentsOf: b[at..<at + n], at: below(b.count + 1))
            case 5 where !other.isEmpty:
                let at = below(other.count)
                b = Array(b.prefix(below(b.count + 1))) + other[at..<min(other.count, at + 1 + below(256))]
            case 6 where b.count >= 8:
                // An interesting integer, big-endian as on every wire here.
                let values: [UInt64] = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 32, UInt64.max, UInt64(Int64.max)]
                let v = values[below(values.count)], width = [1, 2, 4, 8][below(4)], at = below(b.count - width + 1)
                for k in 0..<width { b[at + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(width - 1 - k))) }
            case 7 where !b.isEmpty: b.removeLast(below(b.count) + 1)
            default:
                if !b.isEmpty { b[below(b.count)] = [0, 0xFF, 0x0A, 0x3A, 0x22, 0x7B, 0x5B][below(7)] }
            }
        }
        return Array(b.prefix(maxLength))
    }
}
