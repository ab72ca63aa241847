/// A point in time in nanoseconds since an arbitrary origin chosen by the driver.
///
/// The core never reads a clock: every event handler receives `now` from its driver
/// (virtual time in the simulator, a monotonic clock in production).
public struct Instant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: UInt64
    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }
    public static let zero = Instant(nanoseconds: 0)
    public static func < (a: Instant, b: Instant) -> Bool { a.nanoseconds < b.nanoseconds }
    public static func + (a: Instant, d: Nanoseconds) -> Instant { Instant(nanoseconds: a.nanoseconds &+ d.value) }
    /// Time from `b` to `a`, zero when `b` is later.
    public static func - (a: Instant, b: Instant) -> Nanoseconds {
        Nanoseconds(a.nanoseconds >= b.nanoseconds ? a.nanoseconds - b.nanoseconds : 0)
    }
    public var seconds: Double { Double(nanoseconds) / 1e9 }
    public var description: String {
        let s = nanoseconds / 1_000_000_000
        let us = (nanoseconds % 1_000_000_000) / 1000
        let frac = String(us)
        return "\(s).\(String(repeating: "0", count: 6 - frac.count))\(frac)s"
    }
}

/// A span of time in nanoseconds. The unit is in the name so call sites read unambiguously.
public struct Nanoseconds: Comparable, Hashable, Sendable {
    public var value: UInt64
    public init(_ value: UInt64) { self.value = value }
    public static let zero = Nanoseconds(0)
    public static func microseconds(_ n: UInt64) -> Nanoseconds { Nanoseconds(n * 1_000) }
    public static func milliseconds(_ n: UInt64) -> Nanoseconds { Nanoseconds(n * 1_000_000) }
    public static func seconds(_ n: UInt64) -> Nanoseconds { Nanoseconds(n * 1_000_000_000) }
    public static func < (a: Nanoseconds, b: Nanoseconds) -> Bool { a.value < b.value }
    public static func + (a: Nanoseconds, b: Nanoseconds) -> Nanoseconds { Nanoseconds(a.value + b.value) }
    public static func * (a: Nanoseconds, k: UInt64) -> Nanoseconds { Nanoseconds(a.value * k) }
}
