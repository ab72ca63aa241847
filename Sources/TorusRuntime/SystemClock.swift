import NIOCore
import TorusCore

#if canImport(Glibc)
import Glibc
#endif

/// The production clock: monotonic time since boot, as the core's `Instant`.
public enum SystemClock {
    public static func now() -> Instant { Instant(nanoseconds: NIODeadline.now().uptimeNanoseconds) }

    public static func deadline(_ instant: Instant) -> NIODeadline { NIODeadline.uptimeNanoseconds(instant.nanoseconds) }

    /// Seconds since the Unix epoch (wall clock), for timestamps other processes read.
    public static func wallSeconds() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return ts.tv_sec
    }
}
