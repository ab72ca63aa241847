import Logging
import NIOCore
import TorusCore

/// Metadata requests of the writers and the collector, on the server's metadata threads; lease
/// keep-alives on a thread of their own, one in flight per lease, and logged when they stall.
extension VolumeServer {
    /// Applies one request on a metadata thread; the answer comes back on `loop`.
    func metaApply(_ request: MetaRequest) -> EventLoopFuture<MetaResponse> {
        let meta = self.meta
        let queued = SystemClock.now()
        var pool = metaPool
        if case .leaseKeepAlive(let id) = request {
            loop.assertInEventLoop()
            guard keepAlivesInFlight.insert(id).inserted else {
                // The writer timed out the previous one; it retries after this answer.
                return loop.makeSucceededFuture(.error(.unavailable("a keep-alive of lease \(id) is still in flight")))
            }
            pool = leasePool
        }
        let response = pool.runIfActive(eventLoop: loop) { () throws -> MetaResponse in
            let started = SystemClock.now()
            let response = try meta.apply(request, now: started)
            let done = SystemClock.now()
            if done - queued > .milliseconds(1000) {
                RuntimeLoggers.metadata.warning("""
                    slow metadata request: \((started - queued).value / 1_000_000) ms queued, \
                    \((done - started).value / 1_000_000) ms to apply and sync (\(request.kindName))
                    """)
            }
            return response
        }
        if case .leaseKeepAlive(let id) = request { trackKeepAlive(id, queued: queued, response) }
        return response
    }

    /// Logs a keep-alive sent late or answered badly, and lets the lease's next one go.
    private func trackKeepAlive(_ id: Int64, queued: Instant, _ response: EventLoopFuture<MetaResponse>) {
        let previous = lastKeepAlive[id]
        lastKeepAlive[id] = queued
        let volume = volumes.first(where: { $0.value.client.leaseID == id })?.key
        let metadata: Logger.Metadata = volume.map { ["lease": "\(id)", "volume": "\($0)"] } ?? ["lease": "\(id)"]
        if let previous, queued - previous > .seconds(5) {
            RuntimeLoggers.metadata.warning("keep-alive sent \((queued - previous).value / 1_000_000) ms after the previous one",
                                            metadata: metadata)
        }
        response.whenComplete { result in
            self.keepAlivesInFlight.remove(id)
            switch result {
            case .success(.lease(_, let ttl)) where ttl > 0: break
            // The writer retries (and is fenced once its lease expired).
            case .success(let r): RuntimeLoggers.metadata.warning("keep-alive answered \(r)", metadata: metadata)
            case .failure(let e): RuntimeLoggers.metadata.warning("keep-alive failed: \(e)", metadata: metadata)
            }
        }
    }

    /// `metaApply` with a failure turned into the `.error` response a state machine expects.
    func metaResponse(_ request: MetaRequest) -> EventLoopFuture<MetaResponse> {
        metaApply(request).recover { .error(.unavailable("\($0)")) }
    }

    /// Expires the leases whose keep-alives stopped (the embedded store's; etcd expires its own).
    func expireLeases() {
        let meta = self.meta
        _ = metaPool.runIfActive(eventLoop: loop) { try meta.expireLeases(now: SystemClock.now()) }
    }
}

extension MetaRequest {
    /// A short name for logs.
    var kindName: String {
        switch self {
        case .txn: "txn"
        case .leaseGrant: "lease grant"
        case .leaseKeepAlive: "lease keep-alive"
        case .leaseRevoke: "lease revoke"
        case .leaseTimeToLive: "lease time-to-live"
        }
    }
}
