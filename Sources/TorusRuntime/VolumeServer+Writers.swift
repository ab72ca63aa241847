import Logging
import NIOCore
import TorusCore

/// The volume writers at work: requests in, the `VolumeClient`'s outputs carried out (messages
/// to nodes, metadata requests, timers, completed requests, phase changes).
extension VolumeServer {
    /// One volume's writer and what drives it. Confined to the server's event loop.
    final class VolumeHost: PeerLinkOwner, @unchecked Sendable {
        var client: VolumeClient
        var adapter: ByteRangeAdapter
        var pending: [UInt64: EventLoopPromise<[ArraySlice<UInt8>]>] = [:]
        var nextRequest: UInt64 = 1
        /// Snapshot ops, numbered apart from the adapter's.
        var snapshotOps: [OpID: EventLoopPromise<Void>] = [:]
        var nextSnapshotOp: UInt64 = 1 << 62
        /// The ticks the writer asked for; each calls `tick` (the server's `writerTicked`).
        private(set) lazy var ticks = TickScheduler(loop: loop) { [weak self] in
            if let self { self.tick(self) }
        }
        private let loop: EventLoop
        private let tick: @Sendable (VolumeHost) -> Void
        var ready: EventLoopPromise<Void>?
        /// Connections to the storage nodes, and those written to since the last flush.
        var links: [NodeID: PeerLink] = [:]
        var linksToFlush: [PeerLink] = []
        /// Bumped when a fenced writer is replaced: replies and timers of an older writer are dropped.
        var generation = 0
        /// The size a resize asked the writer for (it grows once no flush is in flight).
        var growingTo: UInt64 = 0
        let logMetadata: Logger.Metadata
        /// Where node messages go: the server's `clientReceived` for this volume.
        let deliver: @Sendable (NodeID, PeerLink, PeerMessage) -> Void
        var peerID: NodeID { client.clientID }
        init(client: VolumeClient, adapter: ByteRangeAdapter, loop: EventLoop, tick: @escaping @Sendable (VolumeHost) -> Void,
             deliver: @escaping @Sendable (NodeID, PeerLink, PeerMessage) -> Void) {
            self.client = client
            self.adapter = adapter
            self.loop = loop
            self.tick = tick
            logMetadata = ["volume": "\(client.info.name)"]
            self.deliver = deliver
        }
        func received(from node: NodeID, via link: PeerLink, _ msg: PeerMessage) { deliver(node, link, msg) }
    }

    /// Serves one byte-granular request on a volume; fails with `VolumeError` or `RuntimeError`.
    /// Read data comes as parts to concatenate (see `ByteRangeAdapter.Output.complete`).
    public func submit(volume: String, _ request: ByteRangeAdapter.Request) -> EventLoopFuture<[ArraySlice<UInt8>]> {
        loop.assertInEventLoop()
        guard let host = volumes[volume] else {
            return loop.makeFailedFuture(RuntimeError.notFound("no volume named '\(volume)'"))
        }
        let id = host.nextRequest
        host.nextRequest += 1
        let promise = loop.makePromise(of: [ArraySlice<UInt8>].self)
        host.pending[id] = promise
        performAdapter(volume, host.adapter.request(id, request))
        return promise.futureResult
    }

    /// Flushes every volume (used on shutdown).
    public func flushAll() -> EventLoopFuture<Void> {
        loop.flatSubmit {
            EventLoopFuture.andAllSucceed(self.volumes.keys.sorted().map { self.submit(volume: $0, .flush).map { _ in } }, on: self.loop)
        }
    }

    func performAdapter(_ volume: String, _ outputs: [ByteRangeAdapter.Output]) {
        guard let host = volumes[volume] else { return }
        for o in outputs {
            switch o {
            case .submit(let op, let vop):
                handleClient(volume, host.client.submit(op, vop, now: SystemClock.now()))
            case .complete(let id, let result):
                guard let p = host.pending.removeValue(forKey: id) else { continue }
                switch result {
                case .success(let data): p.succeed(data)
                case .failure(let e): p.fail(e)
                }
            }
        }
    }

    func handleClient(_ volume: String, _ outputs: [ClientOutput]) {
        guard let host = volumes[volume] else { return }
        var replaceWriter = false
        defer {
            flushLinks(host)
            if host.client.info.sizeBytes > host.adapter.volumeSize { grew(volume, host) }
            if replaceWriter { replaceFencedWriter(volume, host) }
        }
        let generation = host.generation
        for o in outputs {
            switch o {
            case .send(let to, let msg):
                clientSend(host, to: to, msg)
            case .metadata(let id, let req):
                metaResponse(req).whenSuccess { response in
                    guard host.generation == generation else { return }  // for a replaced writer
                    self.handleClient(volume, host.client.metadataReply(id, response, now: SystemClock.now()))
                }
            case .timer(let at):
                host.ticks.request(at)
            case .complete(let op, let result):
                if let p = host.snapshotOps.removeValue(forKey: op) {
                    switch result {
                    case .success: p.succeed(())
                    case .failure(let e): p.fail(e)
                    }
                    continue
                }
                performAdapter(volume, host.adapter.opCompleted(op, result))
            case .phaseChanged(let phase):
                let wasOpen = host.ready == nil
                if phase == .ready, let p = host.ready {
                    host.ready = nil
                    p.succeed(())
                } else if phase == .fenced, let p = host.ready {
                    host.ready = nil
                    p.fail(RuntimeError.metadata("volume \(volume) could not be opened: writer fenced"))
                }
                if phase == .fenced && wasOpen && volumes[volume] === host { replaceWriter = true }
                logPhase(phase, volume, host, replaced: replaceWriter)
            }
        }
    }

    /// A writer's new phase: a fenced writer that is replaced is a warning, one that is not
    /// (it was fenced while opening) an error.
    private func logPhase(_ phase: VolumeClient.Phase, _ volume: String, _ host: VolumeHost, replaced: Bool) {
        let metadata: Logger.Metadata = ["volume": "\(volume)"]
        guard phase == .fenced else {
            RuntimeLoggers.volume.info("writer \(phase)", metadata: metadata)
            return
        }
        let line: Logger.Message = "writer fenced: \(host.client.fenceReason)"
        if replaced { RuntimeLoggers.volume.warning(line, metadata: metadata) } else { RuntimeLoggers.volume.error(line, metadata: metadata) }
    }

    /// The writer took a new size: requests up to it are accepted, new NBD connections see it.
    func grew(_ volume: String, _ host: VolumeHost) {
        let info = host.client.info
        host.adapter.volumeSize = info.sizeBytes
        directory.set(export(info))
        RuntimeLoggers.volume.info("now \(info.sizeBytes) bytes", metadata: ["volume": "\(volume)"])
    }

    /// A tick the writer asked for is due. An idle writer whose tick is lost stops renewing its
    /// lease, hence `TickScheduler`.
    func writerTicked(_ volume: String, _ host: VolumeHost) {
        guard volumes[volume] === host else { return }
        handleClient(volume, host.client.tick(now: SystemClock.now()))
    }

    /// A writer's message arrived from a node (on the cluster loop).
    func clientReceived(_ volume: String, from node: NodeID, via link: PeerLink, _ msg: PeerMessage) {
        loop.assertInEventLoop()
        // Only the current connection counts: an older one may carry replies to a replaced writer.
        guard let v = volumes[volume], v.links[node] === link else { return }
        handleClient(volume, v.client.receive(from: node, msg, now: SystemClock.now()))
    }
}
