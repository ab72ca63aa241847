import NIOCore
import TorusCore

/// Turns a state machine's `.timer(at:)` requests into calls of `fire`: once per instant asked
/// for, with one timer armed at the earliest. A state machine asks for each tick once, so no
/// request may be lost, neither a later one while a timer is pending nor one an earlier request
/// displaced (docs/runtime.md, "Timers"). Confined to one event loop.
final class TickScheduler: @unchecked Sendable {
    /// Arms a timer that calls `fired` at `at`; returns what cancels it.
    typealias Arm = (_ at: Instant, _ fired: @escaping @Sendable () -> Void) -> () -> Void

    private let arm: Arm
    private let fire: () -> Void
    /// Instants asked for that have not fired yet, earliest first, each once.
    private(set) var pending: [Instant] = []
    /// Where the one timer is armed (the earliest pending instant), and what cancels it.
    private(set) var armedAt: Instant?
    private var disarm: (() -> Void)?
    /// Tells the armed timer from a cancelled one that fires anyway.
    private var armings = 0

    init(arm: @escaping Arm, fire: @escaping () -> Void) {
        self.arm = arm
        self.fire = fire
    }

    /// Timers on `loop`, at the monotonic instants of `SystemClock`.
    convenience init(loop: EventLoop, fire: @escaping () -> Void) {
        self.init(arm: { at, fired in
            let task = loop.scheduleTask(deadline: SystemClock.deadline(at), fired)
            return { task.cancel() }
        }, fire: fire)
    }

    /// Asks for a call of `fire` at `at` (or as soon after as the loop gets to it).
    func request(_ at: Instant) {
        let index = pending.firstIndex { $0 >= at } ?? pending.endIndex
        if index < pending.endIndex, pending[index] == at { return }
        pending.insert(at, at: index)
        if let armedAt, armedAt <= at { return }
        rearm()
    }

    /// Forgets every request and disarms the timer.
    func cancel() {
        disarm?()
        disarm = nil
        armedAt = nil
        pending = []
    }

    private func rearm() {
        disarm?()
        disarm = nil
        armedAt = pending.first
        guard let next = armedAt else { return }
        armings += 1
        let arming = armings
        disarm = arm(next) { self.fired(arming) }
    }

    private func fired(_ arming: Int) {
        guard arming == armings, let at = armedAt else { return }
        armedAt = nil
        disarm = nil
        pending.removeAll { $0 <= at }
        fire()
        // `fire` may have asked for a tick (which armed the timer) or cancelled everything.
        if armedAt == nil, !pending.isEmpty { rearm() }
    }
}
