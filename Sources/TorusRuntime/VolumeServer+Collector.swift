import Logging
import NIOCore
import TorusCore

#if canImport(Glibc)
import Glibc
#endif

/// The garbage collector of `torus up` and `torus nbd serve`: a `Collector` on the server's
/// loop, talking to the nodes like a writer does (in memory to a node of this process unless
/// --peer-over-tcp, over TCP otherwise) and to the metadata store through the same pools.
extension VolumeServer {
    final class CollectorHost: PeerLinkOwner, @unchecked Sendable {
        var collector: Collector
        var links: [NodeID: PeerLink] = [:]
        var linksToFlush: [PeerLink] = []
        let logMetadata: Logger.Metadata = ["client": "gc"]
        var peerID: NodeID { collector.id }
        /// The ticks the collector asked for; each calls `tick` (the server's `collectorTicked`).
        private(set) lazy var ticks = TickScheduler(loop: loop) { [weak self] in
            if let self { self.tick(self) }
        }
        private let loop: EventLoop
        private let tick: @Sendable (CollectorHost) -> Void
        /// Waiting for the pass under way (an admin `gc` request).
        var waiters: [EventLoopPromise<CollectorPass>] = []
        var last: CollectorPass?
        var passStarted: Instant?
        var lastPublished: Instant = .zero
        /// Totals since this process started.
        var copiedTotal = 0
        var bytesCopiedTotal: UInt64 = 0
        var movedTotal = 0
        var bytesMovedTotal: UInt64 = 0
        let deliver: @Sendable (NodeID, PeerMessage) -> Void
        init(collector: Collector, loop: EventLoop, tick: @escaping @Sendable (CollectorHost) -> Void,
             deliver: @escaping @Sendable (NodeID, PeerMessage) -> Void) {
            self.collector = collector
            self.loop = loop
            self.tick = tick
            self.deliver = deliver
        }
        func received(from node: NodeID, via link: PeerLink, _ msg: PeerMessage) {
            guard links[node] === link else { return }
            deliver(node, msg)
        }
    }

    /// Starts the collector (on the cluster loop); passes every `config.gcInterval`.
    func startCollector() {
        loop.assertInEventLoop()
        guard let interval = config.gcInterval, !config.readOnly else { return }
        var cfg = CollectorConfig()
        cfg.passInterval = interval
        cfg.firstPassDelay = min(interval, .seconds(10))
        cfg.grace = config.gcGrace
        cfg.repairGrace = config.repairGrace
        cfg.repairBytesPerSecond = config.repairBytesPerSecond
        cfg.ringSettle = config.ringSettle
        var rng = SystemRandomNumberGenerator()
        let id = NodeID(UInt32.random(in: 1_000_000...UInt32.max - 1, using: &rng))
        let host = CollectorHost(collector: Collector(id: id, ring: ring, config: cfg), loop: loop,
                                 tick: { self.collectorTicked($0) }) { node, msg in
            self.collectorReceived(from: node, msg)
        }
        collectorHost = host
        let settings = "gc: a pass every \(interval.value / 1_000_000) ms: garbage older than \(cfg.grace.value / 1_000_000) ms is deleted; "
            + "blocks short of copies are copied (a node silent for \(cfg.repairGrace.value / 1_000_000_000) s counts as lost; "
            + (cfg.repairBytesPerSecond == 0 ? "unthrottled)" : "at most \(cfg.repairBytesPerSecond >> 20) MiB/s)")
        RuntimeLoggers.gc.info("\(settings)")
        handleCollector(host.collector.start(now: SystemClock.now()))
    }

    func collectorReceived(from node: NodeID, _ msg: PeerMessage) {
        loop.assertInEventLoop()
        guard let host = collectorHost else { return }
        handleCollector(host.collector.receive(from: node, msg, now: SystemClock.now()))
    }

    /// A tick the collector asked for is due; a lost one would stop its passes for good.
    func collectorTicked(_ host: CollectorHost) {
        guard collectorHost === host else { return }
        handleCollector(host.collector.tick(now: SystemClock.now()))
    }

    func handleCollector(_ outputs: [CollectorOutput]) {
        guard let host = collectorHost else { return }
        defer {
            flushLinks(host)
            if host.collector.repairProgress != nil, SystemClock.now() - host.lastPublished >= .seconds(2) { publishMaintenance(host) }
        }
        for o in outputs {
            switch o {
            case .send(let to, let msg):
                if host.passStarted == nil, case .listBlocks = msg { host.passStarted = SystemClock.now() }
                clientSend(host, to: to, msg)
            case .trim(let to, let refs):
                clientSend(host, to: to, .deleteBlocks(refs))
            case .metadata(let id, let req):
                metaResponse(req).whenSuccess { response in
                    guard self.collectorHost === host else { return }
                    self.handleCollector(host.collector.metadataReply(id, response, now: SystemClock.now()))
                }
            case .timer(let at):
                host.ticks.request(at)
            case .passCompleted(let p):
                let ms = host.passStarted.map { (SystemClock.now() - $0).value / 1_000_000 } ?? 0
                host.passStarted = nil
                host.last = p
                host.copiedTotal += p.copiesMade
                host.bytesCopiedTotal += p.bytesCopied
                TorusMetrics.collectorPass(p)
                host.movedTotal += p.movesMade
                host.bytesMovedTotal += p.bytesMoved
                publishMaintenance(host)
                logPass(p, ms: ms)
                let waiters = host.waiters
                host.waiters = []
                for w in waiters { w.succeed(p) }
            }
        }
    }

    /// Logs a pass that gave up (a warning: the next pass tries again) or that found something
    /// to do; a pass that found nothing logs nothing.
    private func logPass(_ p: CollectorPass, ms: UInt64) {
        if !p.completed {
            RuntimeLoggers.gc.warning("gc: pass gave up after \(ms) ms: the metadata store did not answer; nothing deleted")
        } else if p.refsDeleted > 0 || p.garbagePending > 0 || p.nodesSkipped > 0 || p.volumesSkipped > 0
                    || p.underReplicated > 0 || p.misplaced > 0 || p.copiesTrimmed > 0 {
            let line = "gc: pass took \(ms) ms: \(p.refsListed) blocks listed, \(p.refsDeleted) deleted, "
                + "\(p.garbagePending) garbage waiting out the grace period"
                + (p.underReplicated > 0 ? ", \(p.underReplicated) short of copies: \(p.copiesMade) copied (\(p.bytesCopied) bytes "
                    + "in \(p.repairTime.value / 1_000_000) ms), "
                    + "\(p.copiesFailed) failed, \(p.unrepairable) with no copy left" : "")
                + (p.misplaced > 0 || p.copiesTrimmed > 0 ? ", rebalancing (ring version \(p.ringVersion)): \(p.misplaced) off their placement, "
                    + "\(p.movesMade) moved (\(p.bytesMoved) bytes), \(p.copiesTrimmed) old copies deleted" : "")
                + (p.drained.isEmpty ? "" : ", drained (may be removed): " + p.drained.map { "\($0)" }.joined(separator: " "))
                + (p.nodesSkipped > 0 ? ", \(p.nodesSkipped) node(s) unreachable (left alone)" : "")
                + (p.volumesSkipped > 0 ? ", \(p.volumesSkipped) volume map(s) unreadable (left alone)" : "")
            RuntimeLoggers.gc.info("\(line)")
        }
    }

    /// Writes the maintenance state to `/torus/maintenance/status` (docs/metadata.md) for
    /// `torus status`: the last pass, and the repair under way with its rate and ETA.
    func publishMaintenance(_ host: CollectorHost) {
        let now = SystemClock.now()
        host.lastPublished = now
        var lines = ["time=\(SystemClock.wallSeconds())", "copied-total=\(host.copiedTotal)", "bytes-copied-total=\(host.bytesCopiedTotal)",
                     "moved-total=\(host.movedTotal)", "bytes-moved-total=\(host.bytesMovedTotal)"]
        if host.collector.repairProgress == nil { TorusMetrics.repairProgress(blocksLeft: 0, bytesPerSecond: 0, etaSeconds: 0) }
        if let p = host.last {
            lines += ["last-pass-complete=\(p.completed)", "short=\(p.underReplicated)", "unrepairable=\(p.unrepairable)",
                      "nodes-skipped=\(p.nodesSkipped)", "nodes-resting=\(p.nodesResting)", "volumes-skipped=\(p.volumesSkipped)",
                      "deleted=\(p.refsDeleted)", "ring-version=\(p.ringVersion)", "misplaced=\(p.misplaced)",
                      "trimmed=\(p.copiesTrimmed)", "drained=" + p.drained.map { "\($0.raw)" }.joined(separator: ",")]
        }
        if let r = host.collector.repairProgress {
            let seconds = max(0.001, Double((now - r.startedAt).value) / 1e9)
            let rate = Double(r.bytesCopied) / seconds
            let left = r.total - r.copied - r.failed
            let perCopy = r.copied > 0 ? Double(r.bytesCopied) / Double(r.copied) : 0
            let eta = rate > 0 ? Int((Double(left) * perCopy / rate).rounded(.up)) : -1
            TorusMetrics.repairProgress(blocksLeft: left, bytesPerSecond: rate, etaSeconds: eta)
            lines += ["repairing=true", "repair-total=\(r.total)", "repair-copied=\(r.copied)", "repair-failed=\(r.failed)",
                      "repair-bytes=\(r.bytesCopied)", "repair-rate=\(UInt64(rate))", "repair-eta=\(eta)"]
            RuntimeLoggers.gc.info("gc: repair: \(r.copied) of \(r.total) blocks copied (\(r.bytesCopied >> 20) MiB) at \(UInt64(rate) >> 20) MiB/s\(eta >= 0 ? ", about \(eta) s left" : "")")
        }
        let value = Array((lines.joined(separator: "\n") + "\n").utf8)
        _ = metaApply(.txn(MetaTxn(success: [.put(key: Self.maintenanceKey, value: value, lease: 0)])))
    }

    static let maintenanceKey = "/torus/maintenance/status"

    /// Runs a pass now (or joins the one under way) and reports it (`torus gc`).
    public func collectNow() -> EventLoopFuture<CollectorPass> {
        loop.flatSubmit {
            guard let host = self.collectorHost else {
                return self.loop.makeFailedFuture(RuntimeError.badInput("the garbage collector is off (--gc-interval 0)"))
            }
            let p = self.loop.makePromise(of: CollectorPass.self)
            host.waiters.append(p)
            self.handleCollector(host.collector.requestPass(now: SystemClock.now()))
            return p.futureResult
        }
    }

    func stopCollector() {
        guard let host = collectorHost else { return }
        host.ticks.cancel()
        closeLinks(host)
        collectorHost = nil
        for w in host.waiters { w.fail(RuntimeError.badInput("shutting down")) }
        host.waiters = []
    }

    /// Blocks in use and capacity per node (`torus gc` prints them before and after).
    public func usage() -> EventLoopFuture<[(NodeID, ClusterCatalog.Usage)]> {
        let servers = nodes.keys.sorted().map { ($0, nodes[$0]!) }
        let futures = servers.map { id, server in
            server.loop.submit { (id, server.usage()) }
        }
        return EventLoopFuture.whenAllSucceed(futures, on: loop)
    }
}
