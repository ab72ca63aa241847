import NIOCore
import TorusCore

/// The production clock: monotonic time since boot, as the core's `Instant`.
public enum SystemClock {
    public static func now() -> Instant { Instant(nanoseconds: NIODeadline.now().uptimeNanoseconds) }

    public static func deadline(_ instant: Instant) -> NIODeadline { NIODeadline.uptimeNanoseconds(instant.nanoseconds) }
}
