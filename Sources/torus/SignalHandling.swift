import Dispatch
import NIOCore
import TorusRuntime

#if canImport(Glibc)
import Glibc
#endif

/// Waits for SIGINT or SIGTERM, then runs `stop` and exits with its status.
func runUntilSignalled(_ what: String, stop: @escaping @Sendable () -> Int32) -> Never {
    let queue = DispatchQueue(label: "torus.signals")
    var sources: [DispatchSourceSignal] = []
    nonisolated(unsafe) var stopping = false  // only touched on `queue`
    for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
        source.setEventHandler {
            if stopping {
                // A shutdown that cannot finish (a flush that cannot complete) must not trap
                // the operator: a second signal exits at once.
                serverLog.warning("second signal: exiting without waiting; writes not yet flushed may be lost")
                Glibc._exit(130)
            }
            stopping = true
            serverLog.info("stopping \(what) ... (signal again to exit at once)")
            DispatchQueue.global().async { Glibc.exit(stop()) }
        }
        source.resume()
        sources.append(source)
    }
    withExtendedLifetime(sources) { dispatchMain() }
}

/// Flushes every volume, releases the writers' leases, closes the NBD listener; the exit status.
func flushAndClose(_ cluster: VolumeServer, _ server: Channel) -> Int32 {
    do {
        try cluster.shutdown().wait()
        try? server.close().wait()
        serverLog.info("flushed; bye")
        return 0
    } catch {
        serverLog.error("flush failed on shutdown: \(error)")
        return 1
    }
}
