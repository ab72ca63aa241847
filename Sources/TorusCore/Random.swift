/// A small, fast, seedable random number generator (xoshiro256**).
///
/// The core and the simulator only ever use this generator, seeded explicitly, so a run is a
/// pure function of its seed. Streams for different nodes are derived with `derived(stream:)`.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    public init(seed: UInt64) {
        var sm = seed
        func splitmix(_ x: inout UInt64) -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitmix(&sm); s1 = splitmix(&sm); s2 = splitmix(&sm); s3 = splitmix(&sm)
        if s0 | s1 | s2 | s3 == 0 { s0 = 1 }
    }

    /// A new independent stream for `stream` derived from this generator's seed material,
    /// without advancing this generator.
    public func derived(stream: UInt64) -> SeededRandom {
        SeededRandom(seed: s0 ^ (stream &* 0xD6E8_FEB8_6659_FD93) ^ (s3 >> 7))
    }

    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = (s3 << 45) | (s3 >> 19)
        return result
    }

    /// Uniform in `0..<bound`; `bound` must be positive.
    public mutating func below(_ bound: UInt64) -> UInt64 {
        precondition(bound > 0, "below(0) has no valid result")
        return next(upperBound: bound)
    }

    /// True with probability `p` (0...1).
    public mutating func chance(_ p: Double) -> Bool {
        if p <= 0 { return false }
        if p >= 1 { return true }
        return Double(next() >> 11) / Double(1 << 53) < p
    }

    /// Uniform duration in `low...high`.
    public mutating func duration(_ low: Nanoseconds, _ high: Nanoseconds) -> Nanoseconds {
        if high.value <= low.value { return low }
        return Nanoseconds(low.value + below(high.value - low.value + 1))
    }
}

/// FNV-1a, 64 bit: a stable hash for trace hashing and placement (never `hashValue`, which is
/// randomly seeded per process).
public struct StableHasher: Sendable {
    public private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325
    public init() {}
    public mutating func combine(_ x: UInt64) {
        var v = x
        for _ in 0..<8 {
            value ^= v & 0xFF
            value = value &* 0x0000_0100_0000_01B3
            v >>= 8
        }
    }
    public mutating func combine(_ bytes: some Sequence<UInt8>) {
        for b in bytes {
            value ^= UInt64(b)
            value = value &* 0x0000_0100_0000_01B3
        }
    }
    public mutating func combine(_ s: String) { combine(s.utf8); combine(UInt64(0xFF)) }

    /// A well-mixed 64-bit digest of two words (used by rendezvous hashing).
    public static func mix(_ a: UInt64, _ b: UInt64) -> UInt64 {
        var z = a &+ 0x9E37_79B9_7F4A_7C15 &* (b | 1) ^ (b &* 0xC2B2_AE3D_27D4_EB4F)
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
