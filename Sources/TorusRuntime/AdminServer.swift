import Glibc
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TorusCore

/// A local control channel for a running `torus up`: a Unix socket in the data directory
/// speaking one request line, answered by result lines and a final `ok` or `error: ...`.
///
///     create NAME SIZE_BYTES | list | info NAME | resize NAME SIZE_BYTES | delete NAME | usage | gc
public enum AdminServer {
    public static func socketPath(dataDir: String) -> String { dataDir + "/admin.sock" }

    /// Binds the socket and makes it owner-only (mode 0600): anyone who can connect can create
    /// and delete volumes.
    public static func bind(dataDir: String, cluster: VolumeServer, group: EventLoopGroup) -> EventLoopFuture<Channel> {
        let path = socketPath(dataDir: dataDir)
        return ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(cluster: cluster))
                }
            }
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
            .flatMapThrowing { channel in
                guard chmod(path, 0o600) == 0 else {
                    let error = FileDiskError(path: path, operation: "chmod 0600", errno: errno)
                    channel.close(promise: nil)
                    throw error
                }
                return channel
            }
    }
}

@Sendable public func describeSnapshot(_ e: SnapshotCatalog.Entry) -> String {
    "\(e.volume)@\(e.name) size=\(e.record.sizeBytes) generation=\(e.record.generation) revision=\(e.revision)"
}

@Sendable public func describe(_ v: VolumeInfo) -> String {
    "\(v.name) size=\(v.sizeBytes) block-size=\(v.blockSize) replication=\(v.replication) id=\(v.id)"
        + (v.origin != 0 ? " clone-of=\(v.origin)" : "")
}

final class AdminHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var pending: [UInt8] = []
    private let cluster: VolumeServer
    static let lineBytesMax = 4096

    init(cluster: VolumeServer) { self.cluster = cluster }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        pending += buffer.readBytes(length: buffer.readableBytes) ?? []
        guard let nl = pending.firstIndex(of: UInt8(ascii: "\n")) else {
            if pending.count > Self.lineBytesMax { reply(["error: request line too long"], context: context) }
            return
        }
        let line = String(decoding: pending[..<nl], as: UTF8.self)
        pending.removeAll()
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        cluster.loop.flatSubmit { self.handle(line) }.hop(to: loop).whenComplete { result in
            Self.logRequest(line, result)
            switch result {
            case .success(let lines): self.reply(lines + ["ok"], context: ctx.value)
            case .failure(let e): self.reply(["error: \(e)"], context: ctx.value)
            }
        }
    }

    private func handle(_ line: String) -> EventLoopFuture<[String]> {
        let words = line.split(separator: " ").map(String.init)
        switch (words.first ?? "", words.count) {
        case ("list", 1):
            return cluster.listVolumes().map { $0.sorted { $0.name < $1.name }.map(describe) }
        case ("info", 2):
            return cluster.listVolumes().flatMapThrowing { vols in
                guard let v = vols.first(where: { $0.name == words[1] }) else {
                    throw RuntimeError.notFound("no volume named '\(words[1])'")
                }
                return [describe(v)]
            }.flatMap { lines in
                self.cluster.listSnapshots(volume: words[1]).map { lines + self.cluster.describeSnapshots($0) }
            }
        case ("snapshot-create", 3):
            return cluster.createSnapshot(volume: words[1], name: words[2]).map { [describeSnapshot($0)] }
        case ("snapshot-list", 1), ("snapshot-list", 2):
            return cluster.listSnapshots(volume: words.count == 2 ? words[1] : nil).map { self.cluster.describeSnapshots($0) }
        case ("snapshot-delete", 3):
            return cluster.deleteSnapshot(volume: words[1], name: words[2]).map { [] }
        case ("snapshot-rollback", 3), ("snapshot-rollback", 4):
            return cluster.rollback(volume: words[1], to: words[2], force: words.count == 4 && words[3] == "force").map { [] }
        case ("clone", 4):
            return cluster.cloneVolume(volume: words[1], snapshot: words[2], as: words[3]).map { [describe($0)] }
        case ("create", 3):
            guard let size = UInt64(words[2]) else {
                return cluster.loop.makeFailedFuture(RuntimeError.badInput("size '\(words[2])' is not a byte count"))
            }
            return cluster.createVolume(name: words[1], sizeBytes: size).flatMap { info in
                self.cluster.openVolume(info).map { [describe(info)] }
            }
        case ("delete", 2):
            return cluster.deleteVolume(name: words[1]).map { [] }
        case ("usage", 1):
            return cluster.usage().map { $0.map { "node \($0.raw) used=\($1.usedBytes) capacity=\($1.capacityBytes)" } }
        case ("gc", 1):
            return cluster.collectNow().map { p in
                ["pass completed=\(p.completed) listed=\(p.refsListed) deleted=\(p.refsDeleted) waiting=\(p.garbagePending) "
                    + "nodes-skipped=\(p.nodesSkipped) volumes-skipped=\(p.volumesSkipped)"]
            }
        case ("resize", 3):
            guard let size = UInt64(words[2]) else {
                return cluster.loop.makeFailedFuture(RuntimeError.badInput("size '\(words[2])' is not a byte count"))
            }
            return cluster.resizeVolume(name: words[1], sizeBytes: size).map { [describe($0)] }
        default:
            return cluster.loop.makeFailedFuture(RuntimeError.badInput("unknown request '\(line)'"))
        }
    }

    /// Requests that change something (create, resize, delete, gc) at info, or at notice when
    /// they failed (the caller is told why); reads are not logged.
    private static func logRequest(_ line: String, _ result: Result<[String], Error>) {
        let words = line.split(separator: " ")
        guard let verb = words.first, ["create", "resize", "delete", "gc", "snapshot-create", "snapshot-delete", "snapshot-rollback", "clone"].contains(verb) else { return }
        var metadata: Logger.Metadata = [:]
        if verb != "gc", words.count > 1 { metadata["volume"] = "\(words[1])" }
        switch result {
        case .success: RuntimeLoggers.admin.info("admin request: \(line)", metadata: metadata)
        case .failure(let e): RuntimeLoggers.admin.notice("admin request failed: \(line): \(e)", metadata: metadata)
        }
    }

    private func reply(_ lines: [String], context: ChannelHandlerContext) {
        var out = context.channel.allocator.buffer(capacity: 256)
        for l in lines { out.writeString(l + "\n") }
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in ctx.value.close(promise: nil) }
    }
}

/// The client side, for `torus volume ...`.
public enum AdminClient {
    public static func request(_ line: String, dataDir: String) throws -> [String] {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let collected = NIOLockedLines()
        let done = group.next().makePromise(of: Void.self)
        let path = AdminServer.socketPath(dataDir: dataDir)
        let channel: Channel
        do {
            channel = try ClientBootstrap(group: group)
                .connectTimeout(.seconds(5))
                .channelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try ch.pipeline.syncOperations.addHandler(AdminClientHandler(lines: collected, done: done))
                    }
                }
                .connect(unixDomainSocketPath: path).wait()
        } catch {
            done.fail(error)
            throw RuntimeError.io("cannot reach a running `torus up` at \(path) (\(error)); is it running with --data-dir \(dataDir)?")
        }
        var out = channel.allocator.buffer(capacity: line.utf8.count + 1)
        out.writeString(line + "\n")
        try channel.writeAndFlush(out).wait()
        try done.futureResult.wait()
        return collected.lines
    }
}

final class NIOLockedLines: @unchecked Sendable {
    private let lock = NIOLock()
    private var storage: [String] = []
    func append(_ s: String) { lock.withLock { storage.append(s) } }
    var lines: [String] { lock.withLock { storage } }
}

final class AdminClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private let lines: NIOLockedLines
    private let done: EventLoopPromise<Void>
    private var text = ""

    init(lines: NIOLockedLines, done: EventLoopPromise<Void>) {
        self.lines = lines
        self.done = done
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        text += b.readString(length: b.readableBytes) ?? ""
    }

    func channelInactive(context: ChannelHandlerContext) {
        for l in text.split(separator: "\n") { lines.append(String(l)) }
        done.succeed(())
    }
}
