import Logging
import NIOCore
import NIOPosix
import NIOSSL
import TorusCore
import TorusNBD

/// One NBD connection: bytes go through `NBDServerConnection`; commands go to the cluster's
/// volume writer; replies go back in completion order.
///
/// Back-pressure: the NBD protocol puts no limit on requests in flight, so the handler stops
/// reading the socket (it holds NIO's `read`) while the connection has `inFlightMax` requests
/// executing or the replies waiting to be written are over the channel's high-water mark,
/// and reads again once both drain. A client that sends without reading its replies costs
/// bounded memory: its requests wait in the kernel's socket buffers, then in its own.
final class NBDConnectionHandler: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var connection: NBDServerConnection
    private let cluster: VolumeServer
    private var export: NBDExport?
    /// The volume's writer generation when this connection attached (see `replaceFencedWriter`).
    private var generation = 0
    private var closed = false
    /// A flush of this channel is queued on its event loop (see `flushSoon`).
    private var flushQueued = false
    /// The client's address, for log lines.
    private var client: Logger.MetadataValue = "-"
    /// NIO asked for a read that back-pressure holds back (see the type's notes).
    private var readHeld = false
    /// What `NBD_OPT_STARTTLS` starts (nil: TLS is off).
    private let tls: NBDServerTLS?

    init(cluster: VolumeServer, tls: NBDServerTLS?) {
        self.cluster = cluster
        self.tls = tls
        let directory = cluster.volumeDirectory
        connection = NBDServerConnection(tls: tls?.mode ?? .off, lookup: { directory.lookup($0) }, list: { directory.all() })
    }

    func channelActive(context: ChannelHandlerContext) {
        client = LogMetadata.address(context.remoteAddress)
        RuntimeLoggers.nbd.debug("connection opened", metadata: logMetadata)
        perform(connection.start(), context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard !closed else { return }
        // Parsed in place: what the connection keeps (headers, payloads) it copies.
        let actions = buffer.withUnsafeReadableBytes { connection.receive($0) }
        perform(actions, context: context)
    }

    /// NIO asks for the next read after each one: pass it on only while input is welcome.
    func read(context: ChannelHandlerContext) {
        if acceptsInput(context) { context.read() } else { readHeld = true }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        resumeReading(context)
        context.fireChannelWritabilityChanged()
    }

    private func acceptsInput(_ context: ChannelHandlerContext) -> Bool {
        closed || (connection.wantsInput && context.channel.isWritable)
    }

    /// Reads again if a read was held and both the requests and the replies have drained.
    private func resumeReading(_ context: ChannelHandlerContext) {
        guard readHeld, acceptsInput(context) else { return }
        readHeld = false
        context.read()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let e = export { cluster.volumeDirectory.detach(e.name) }
        if !closed { RuntimeLoggers.nbd.debug("connection closed by the client", metadata: logMetadata) }
        closed = true
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if case .uncleanShutdown = error as? NIOSSLError {
            // The client closed its socket without TLS's close_notify: as plain as an EOF.
            RuntimeLoggers.nbd.debug("client closed the TLS session without close_notify", metadata: logMetadata)
        } else if case .handshakeFailed = error as? NIOSSLError {
            RuntimeLoggers.nbd.notice("closing the connection: TLS handshake failed: \(TLSFiles.handshakeFailure(error))", metadata: logMetadata)
        } else if !closed {
            RuntimeLoggers.nbd.warning("closing the connection: \(error)", metadata: logMetadata)
        }
        closed = true
        context.close(promise: nil)
    }

    private func perform(_ actions: [NBDAction], context: ChannelHandlerContext) {
        var wrote = false
        for action in actions {
            switch action {
            case .send(let bytes):
                var out = context.channel.allocator.buffer(capacity: bytes.count)
                out.writeBytes(bytes)
                context.write(wrapOutboundOut(out), promise: nil)
                wrote = true
            case .sendReply(let header, let parts):
                // The header and short parts are copied into buffers of their own; long parts
                // (slices of cached blocks) are lent to NIO as they are (`BorrowedBytes`). All
                // of it leaves in one writev.
                var head = context.channel.allocator.buffer(capacity: header.count)
                head.writeBytes(header)
                context.write(wrapOutboundOut(head), promise: nil)
                var copied: ByteBuffer?
                // Room for the short parts only (a 1 MiB read with one short part copies that part).
                let shortBytes = parts.reduce(0) { $1.count < BorrowedBytes.minimumLent ? $0 + $1.count : $0 }
                for part in parts where !part.isEmpty {
                    if part.count >= BorrowedBytes.minimumLent {
                        if let c = copied { context.write(wrapOutboundOut(c), promise: nil); copied = nil }
                        context.write(wrapOutboundOut(BorrowedBytes.wrap(part)), promise: nil)
                    } else {
                        // Data starts its own buffer, so the copy is not shifted by the header's
                        // length (see the memcpy note in docs/platform.md).
                        if copied == nil { copied = context.channel.allocator.buffer(capacity: shortBytes) }
                        copied!.writeBytes(part)
                    }
                }
                if let c = copied { context.write(wrapOutboundOut(c), promise: nil) }
                wrote = true
            case .enterTransmission(let e):
                export = e
                generation = cluster.volumeDirectory.generation(e.name)
                cluster.volumeDirectory.attach(e.name)
                RuntimeLoggers.nbd.debug("client attached", metadata: logMetadata)
            case .execute(let cookie, let command):
                execute(cookie, command, context: context)
            case .startTLS:
                // The acknowledgement leaves in clear; everything after it goes through TLS.
                if wrote { context.flush() }
                wrote = false
                startTLS(context)
            case .close(let reason):
                logClose(reason)
                if wrote { context.flush() }
                wrote = false
                closed = true
                context.close(promise: nil)
            }
        }
        defer { resumeReading(context) }
        guard wrote else { return }
        // With nothing else in flight no other reply can join this one: send it now (QD1
        // latency); otherwise wait for the end of this turn of the loop.
        if connection.inFlight == 0 { context.flush() } else { flushSoon(context) }
    }

    private func startTLS(_ context: ChannelHandlerContext) {
        guard let tls else { return }  // the connection offers STARTTLS only with `tls`
        do {
            try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context), position: .first)
            RuntimeLoggers.nbd.debug("starting TLS", metadata: logMetadata)
        } catch {
            RuntimeLoggers.nbd.warning("closing the connection: cannot start TLS: \(error)", metadata: logMetadata)
            closed = true
            context.close(promise: nil)
        }
    }

    /// `address=` of the client, `volume=` of its export once it chose one.
    private var logMetadata: Logger.Metadata {
        var metadata: Logger.Metadata = ["address": client]
        if let export { metadata["volume"] = "\(export.name)" }
        return metadata
    }

    /// Why the protocol closes the connection: a client that said goodbye (NBD_CMD_DISC, or
    /// NBD_OPT_ABORT after listing exports) at debug, a protocol violation at notice (the
    /// client's doing, nothing to fix here). The reasons are `NBDServerConnection`'s texts.
    private func logClose(_ reason: String) {
        if reason.hasPrefix("client disconnected") || reason.hasPrefix("client sent NBD_OPT_ABORT") {
            RuntimeLoggers.nbd.debug("connection closed: \(reason)", metadata: logMetadata)
        } else {
            RuntimeLoggers.nbd.notice("closing the connection: \(reason)", metadata: logMetadata)
        }
    }

    /// Replies finished in one turn of the event loop (a batch of completions handed over by
    /// the writer, several commands in one read) leave in one `writev` instead of one each
    /// (docs/runtime.md, "What runs where", NBD).
    private func flushSoon(_ context: ChannelHandlerContext) {
        guard !flushQueued else { return }
        flushQueued = true
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            self.flushQueued = false
            guard !self.closed else { return }
            ctx.value.flush()
        }
    }

    private func execute(_ cookie: UInt64, _ command: NBDCommand, context: ChannelHandlerContext) {
        guard let export else {
            perform(connection.completed(cookie: cookie, result: .failure(.EIO)), context: context)
            return
        }
        let request: ByteRangeAdapter.Request
        // For metrics: the operation (`TorusMetrics.nbdOps`) and the bytes it moves.
        let op: Int, bytes: Int
        switch command {
        case .read(let o, let l): (request, op, bytes) = (.read(offset: o, length: l), 0, Int(l))
        case .write(let o, let c, let fua):
            (request, op, bytes) = (.write(offset: o, chunks: c, fua: fua), 1, c.byteCount)
        case .flush: (request, op, bytes) = (.flush, 2, 0)
        case .trim(let o, let l, let fua): (request, op, bytes) = (.trim(offset: o, length: l, fua: fua), 3, 0)
        case .writeZeroes(let o, let l, let fua, _): (request, op, bytes) = (.writeZeroes(offset: o, length: l, fua: fua), 4, 0)
        }
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        let handlerLoop = context.eventLoop
        let started = NIODeadline.now()
        let run: @Sendable () -> Void = {
            self.cluster.submit(volume: export.name, request).hop(to: handlerLoop).whenComplete { result in
                guard !self.closed else { return }
                if self.cluster.volumeDirectory.generation(export.name) != self.generation {
                    // The writer this connection used was fenced and replaced: unflushed writes
                    // may be gone, so the client must see the connection fail.
                    let deleted = self.cluster.volumeDirectory.lookup(export.name) == nil
                    RuntimeLoggers.nbd.warning("""
                        closing the connection: \(deleted ? "the volume was deleted" : "the volume's writer was replaced (fenced, or the volume recreated)"); \
                        writes not flushed may be lost
                        """, metadata: self.logMetadata)
                    self.closed = true
                    ctx.value.close(promise: nil)
                    return
                }
                let mapped: Result<[ArraySlice<UInt8>], NBDErrno>
                switch result {
                case .success(let data): mapped = .success(data)
                case .failure(let e as VolumeError):
                    switch e {
                    case .outOfRange: mapped = .failure(.EINVAL)
                    case .misaligned, .tooLarge: mapped = .failure(.EINVAL)
                    case .noSpace: mapped = .failure(.ENOSPC)
                    default: mapped = .failure(.EIO)
                    }
                case .failure: mapped = .failure(.EIO)
                }
                let took = UInt64((NIODeadline.now() - started).nanoseconds)
                if case .failure = mapped {
                    TorusMetrics.nbdRequest(op, bytes: 0, failed: true, nanoseconds: took)
                } else {
                    TorusMetrics.nbdRequest(op, bytes: bytes, failed: false, nanoseconds: took)
                }
                self.perform(self.connection.completed(cookie: cookie, parts: mapped), context: ctx.value)
            }
        }
        // `torus up` accepts NBD connections on the cluster loop: no thread hop per command.
        if cluster.loop.inEventLoop { run() } else { cluster.loop.execute(run) }
    }
}

/// TLS for NBD clients (`NBD_OPT_STARTTLS`): the mode and the server's certificate.
public struct NBDServerTLS: Sendable {
    public var mode: NBDTLSMode
    public var context: NIOSSLContext

    public init(mode: NBDTLSMode, context: NIOSSLContext) {
        self.mode = mode
        self.context = context
    }
}

/// The NBD listener: TCP (`host:port`) or a Unix socket path.
public enum NBDServer {
    public static func bind(_ address: String, cluster: VolumeServer, group: EventLoopGroup,
                            tls: NBDServerTLS? = nil) -> EventLoopFuture<Channel> {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NBDConnectionHandler(cluster: cluster, tls: tls))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // Back-pressure stops reading above the high mark (see NBDConnectionHandler): room for
            // the replies of a full queue of small reads (NIO's default, 64 KiB, is 16 of 4 KiB).
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 4 << 20))
            // Reads of up to 1 MiB (NIO's default stops at 64 KiB): a 1 MiB write payload takes
            // one read call instead of sixteen.
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 64 << 10, maximum: 1 << 20))
        if address.hasPrefix("/") || address.hasPrefix("./") {
            return bootstrap.bind(unixDomainSocketPath: address, cleanupExistingSocketFile: true)
        }
        do {
            let endpoint = try HostPort(parsing: address)
            return bootstrap.bind(host: endpoint.host, port: endpoint.port)
        } catch {
            return group.next().makeFailedFuture(RuntimeError.badInput("--nbd '\(address)' must be HOST:PORT or a Unix socket path (\(error))"))
        }
    }
}
