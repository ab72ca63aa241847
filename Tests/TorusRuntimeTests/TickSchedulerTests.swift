import Testing
import TorusCore
@testable import TorusRuntime

/// `TickScheduler` on a fake timer: one timer armed at the earliest instant asked for, every
/// instant fired once, none lost.
@Suite("tick scheduler")
struct TickSchedulerTests {
    /// Timers that fire only when the test says so, earliest first, like an event loop's.
    final class FakeTimers: @unchecked Sendable {
        struct Timer {
            let at: Instant
            let fired: @Sendable () -> Void
            var live = true
        }
        var timers: [Timer] = []
        /// The instant of the timer firing now.
        var now = Instant.zero
        /// The instants `fire` was called at.
        var ticks: [Instant] = []
        var live: [Instant] { timers.filter(\.live).map(\.at) }

        func arm(_ at: Instant, _ fired: @escaping @Sendable () -> Void) -> () -> Void {
            let index = timers.count
            timers.append(Timer(at: at, fired: fired))
            return { self.timers[index].live = false }
        }

        /// Fires the earliest live timer; false when none is left.
        @discardableResult func fireNext() -> Bool {
            guard let index = timers.indices.filter({ timers[$0].live }).min(by: { timers[$0].at < timers[$1].at }) else {
                return false
            }
            timers[index].live = false
            now = timers[index].at
            timers[index].fired()
            return true
        }

        func scheduler() -> TickScheduler {
            TickScheduler(arm: { self.arm($0, $1) }, fire: { self.ticks.append(self.now) })
        }
    }

    static func at(_ seconds: UInt64) -> Instant { Instant(nanoseconds: seconds * 1_000_000_000) }

    @Test func anEarlierRequestReplacesTheLaterTimer() {
        let fake = FakeTimers()
        let ticks = fake.scheduler()
        ticks.request(Self.at(10))
        ticks.request(Self.at(5))
        #expect(fake.live == [Self.at(5)])
        while fake.fireNext() {}
        #expect(fake.ticks == [Self.at(5), Self.at(10)])
    }

    @Test func aLaterRequestWhileOneIsPendingIsNotLost() {
        let fake = FakeTimers()
        let ticks = fake.scheduler()
        ticks.request(Self.at(5))
        ticks.request(Self.at(10))
        ticks.request(Self.at(7))
        #expect(fake.live == [Self.at(5)])
        while fake.fireNext() {}
        #expect(fake.ticks == [Self.at(5), Self.at(7), Self.at(10)])
    }

    @Test func aRequestEqualToAPendingOneIsNotDuplicated() {
        let fake = FakeTimers()
        let ticks = fake.scheduler()
        ticks.request(Self.at(5))
        ticks.request(Self.at(9))
        ticks.request(Self.at(5))
        ticks.request(Self.at(9))
        #expect(fake.timers.count == 1)
        while fake.fireNext() {}
        #expect(fake.ticks == [Self.at(5), Self.at(9)])
    }

    @Test func aRequestMadeWhileFiringIsKept() {
        let fake = FakeTimers()
        var ticks: TickScheduler!
        ticks = TickScheduler(arm: { fake.arm($0, $1) }, fire: {
            fake.ticks.append(fake.now)
            if fake.ticks.count == 1 { ticks.request(Self.at(8)) }
        })
        ticks.request(Self.at(5))
        ticks.request(Self.at(10))
        while fake.fireNext() {}
        #expect(fake.ticks == [Self.at(5), Self.at(8), Self.at(10)])
    }

    @Test func cancelForgetsEverythingAndAStaleTimerDoesNothing() {
        let fake = FakeTimers()
        let ticks = fake.scheduler()
        ticks.request(Self.at(5))
        ticks.request(Self.at(10))
        let stale = fake.timers[0]
        ticks.cancel()
        #expect(fake.live.isEmpty)
        #expect(ticks.pending.isEmpty && ticks.armedAt == nil)
        stale.fired()  // a cancelled timer that ran anyway
        #expect(fake.ticks.isEmpty)
        ticks.request(Self.at(20))
        while fake.fireNext() {}
        #expect(fake.ticks == [Self.at(20)])
    }
}
