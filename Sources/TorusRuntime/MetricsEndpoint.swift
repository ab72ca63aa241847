import CoreMetrics
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import TorusCore

/// Metrics (swift-metrics) exported in the Prometheus text format on `GET /metrics` of an
/// HTTP listener (`--metrics HOST:PORT` on `torus up`, `torus nbd serve` and `torus node`).
/// Without the listener, metrics go to swift-metrics' no-op backend and cost nothing.
///
/// What is exported (docs/runtime.md lists every name): NBD requests, bytes and errors per
/// operation; the collector's passes, deletes, repair copies and bytes, rebalancing moves,
/// bytes and deleted old copies, blocks short of copies or off their placement, the repair
/// under way (blocks left, rate, ETA) and the ring version; scrubbing (blocks verified, bad
/// copies found) and each node's used and total bytes.
public enum TorusMetrics {
    static let registry = PrometheusCollectorRegistry()
    private static let bootstrapped: Void = {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = latencyBuckets
        MetricsSystem.bootstrap(factory)
    }()

    /// Histogram buckets of the latency metrics: 100 µs to 10 s (a FLUSH takes about 1 ms).
    static let latencyBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    /// Installs the Prometheus backend (once per process; later calls do nothing).
    public static func bootstrap() { _ = bootstrapped }

    /// The text a scrape gets.
    public static func exposition() -> [UInt8] { registry.emitToBuffer() }

    /// Serves `GET /metrics` on `host:port` (bootstrapping the backend first).
    public static func serve(_ address: String, group: EventLoopGroup) -> EventLoopFuture<Channel> {
        bootstrap()
        let endpoint: HostPort
        do {
            endpoint = try HostPort(parsing: address)
        } catch {
            return group.next().makeFailedFuture(RuntimeError.badInput("--metrics: expected HOST:PORT, got '\(address)' (\(error))"))
        }
        return ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler()) }
                }
            }
            .bind(host: endpoint.host, port: endpoint.port)
    }

    // MARK: Instruments used by the runtime

    /// NBD instruments per operation, made once (on the data path); first used after
    /// `bootstrap`, which the commands call before serving.
    struct NBDInstruments: Sendable {
        let requests: CoreMetrics.Counter, bytes: CoreMetrics.Counter, errors: CoreMetrics.Counter
        let latency: CoreMetrics.Timer
        init(_ op: String) {
            latency = CoreMetrics.Timer(label: "torus_nbd_request_duration_seconds", dimensions: [("op", op)])
            requests = CoreMetrics.Counter(label: "torus_nbd_requests_total", dimensions: [("op", op)])
            bytes = CoreMetrics.Counter(label: "torus_nbd_bytes_total", dimensions: [("op", op)])
            errors = CoreMetrics.Counter(label: "torus_nbd_errors_total", dimensions: [("op", op)])
        }
    }
    static let nbdOps = ["read", "write", "flush", "trim", "write_zeroes"]
    static let nbd: [NBDInstruments] = nbdOps.map(NBDInstruments.init)

    /// `op` indexes `nbdOps`.
    static func nbdRequest(_ op: Int, bytes: Int, failed: Bool, nanoseconds: UInt64) {
        let i = nbd[op]
        i.requests.increment()
        i.latency.recordNanoseconds(Int64(clamping: nanoseconds))
        if bytes > 0 { i.bytes.increment(by: bytes) }
        if failed { i.errors.increment() }
    }

    static let peerLatency = [CoreMetrics.Timer(label: "torus_peer_request_duration_seconds", dimensions: [("op", "get")]),
                              CoreMetrics.Timer(label: "torus_peer_request_duration_seconds", dimensions: [("op", "put")])]

    /// A storage node answered a block get or put this long after it arrived.
    static func peerRequest(put: Bool, nanoseconds: UInt64) {
        peerLatency[put ? 1 : 0].recordNanoseconds(Int64(clamping: nanoseconds))
    }

    static func collectorPass(_ p: CollectorPass) {
        CoreMetrics.Counter(label: "torus_gc_passes_total", dimensions: [("complete", p.completed ? "true" : "false")]).increment()
        CoreMetrics.Counter(label: "torus_gc_deleted_blocks_total").increment(by: p.refsDeleted)
        CoreMetrics.Counter(label: "torus_repair_copies_total").increment(by: p.copiesMade)
        CoreMetrics.Counter(label: "torus_repair_bytes_total").increment(by: Int(p.bytesCopied))
        CoreMetrics.Counter(label: "torus_repair_failures_total").increment(by: p.copiesFailed)
        CoreMetrics.Counter(label: "torus_rebalance_moves_total").increment(by: p.movesMade)
        CoreMetrics.Counter(label: "torus_rebalance_bytes_total").increment(by: Int(p.bytesMoved))
        CoreMetrics.Counter(label: "torus_rebalance_trimmed_copies_total").increment(by: p.copiesTrimmed)
        guard p.completed else { return }
        CoreMetrics.Gauge(label: "torus_blocks_under_replicated").record(p.underReplicated)
        CoreMetrics.Gauge(label: "torus_blocks_unrepairable").record(p.unrepairable)
        CoreMetrics.Gauge(label: "torus_blocks_misplaced").record(p.misplaced)
        CoreMetrics.Gauge(label: "torus_gc_garbage_pending_blocks").record(p.garbagePending)
        CoreMetrics.Gauge(label: "torus_nodes_unreachable").record(p.nodesSkipped)
        CoreMetrics.Gauge(label: "torus_ring_version").record(Int64(p.ringVersion))
        CoreMetrics.Gauge(label: "torus_nodes_drained").record(p.drained.count)
    }

    static func repairProgress(blocksLeft: Int, bytesPerSecond: Double, etaSeconds: Int) {
        CoreMetrics.Gauge(label: "torus_repair_blocks_left").record(blocksLeft)
        CoreMetrics.Gauge(label: "torus_repair_bytes_per_second").record(bytesPerSecond)
        CoreMetrics.Gauge(label: "torus_repair_eta_seconds").record(etaSeconds)
    }

    static func scrub(node: NodeID, verified: Int, bad: Int) {
        let d = [("node", "\(node.raw)")]
        if verified > 0 { CoreMetrics.Counter(label: "torus_scrub_blocks_verified_total", dimensions: d).increment(by: verified) }
        if bad > 0 { CoreMetrics.Counter(label: "torus_scrub_bad_copies_total", dimensions: d).increment(by: bad) }
    }

    static func nodeUsage(node: NodeID, used: UInt64, capacity: UInt64) {
        let d = [("node", "\(node.raw)")]
        CoreMetrics.Gauge(label: "torus_node_used_bytes", dimensions: d).record(Int64(used))
        CoreMetrics.Gauge(label: "torus_node_capacity_bytes", dimensions: d).record(Int64(capacity))
    }
}

/// Answers `GET /metrics` (anything else: 404) and closes the connection.
final class MetricsHTTPHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let found = head.method == .GET && path == "/metrics"
        let body = found ? TorusMetrics.exposition() : Array("not found: try GET /metrics\n".utf8)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: found ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
        headers.add(name: "Content-Length", value: "\(body.count)")
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: found ? .ok : .notFound, headers: headers))),
                      promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: body.count)
        buffer.writeBytes(body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
