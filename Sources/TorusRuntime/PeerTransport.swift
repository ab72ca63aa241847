import Logging
import NIOCore
import NIOPosix
import TorusCore

// The TCP transport of the peer protocol (docs/peer-protocol.md): every `torus node` listens
// on a port, and every writer or collector opens one connection per node it talks to (in
// `torus up` only with --peer-over-tcp; its writers otherwise reach its nodes in memory). Frames are `PeerFrame`s (PeerCodec.swift). A connection that fails or closes
// drops what it carried: the writer's RPC timeouts retry every request on a new connection
// (requests are idempotent, block refs are immutable).

/// The node side of one peer connection. Lives on the node's event loop.
final class PeerServerHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = PeerFrame
    typealias OutboundOut = PeerFrame

    let server: StorageNodeServer
    private var context: ChannelHandlerContext?
    var channel: Channel? { context?.channel }
    /// The client that said HELLO on this connection.
    private(set) var peer: NodeID?
    /// Requests not answered yet: replies carry the ref on the wire; when each arrived and
    /// whether it is a put, for the latency histograms.
    private var pendingRefs: [RPCID: (ref: BlockRef, arrived: UInt64, put: Bool)] = [:]
    var needsFlush = false
    private var flushQueued = false

    init(server: StorageNodeServer) {
        self.server = server
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .hello(let node, let clusterID, let maxVersion):
            guard peer == nil, clusterID == server.clusterID, maxVersion >= PeerCodec.version else {
                server.logger.warning("refused a peer connection (cluster \(clusterID), version \(maxVersion))",
                                      metadata: ["peer": "\(node)", "address": LogMetadata.address(context.remoteAddress)])
                context.close(promise: nil)
                return
            }
            peer = node
            server.peers[node] = self
            context.writeAndFlush(wrapOutboundOut(.helloAck(node: server.id, version: PeerCodec.version)), promise: nil)
        case .message(let msg, _):
            guard let peer else {
                context.close(promise: nil)  // requests before HELLO
                return
            }
            switch msg {
            case .putBlock(let rpc, let ref, _, _, _, _):
                pendingRefs[rpc] = (ref, NIODeadline.now().uptimeNanoseconds, true)
            case .getBlock(let rpc, let ref), .getRange(let rpc, let ref, _, _):
                pendingRefs[rpc] = (ref, NIODeadline.now().uptimeNanoseconds, false)
            default: break
            }
            server.received(from: peer, msg)
        case .helloAck:
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let peer, server.peers[peer] === self { server.peers[peer] = nil }
        pendingRefs.removeAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // The writer at the other end retries its requests on a new connection.
        server.logger.warning("closing a peer connection: \(TLSFiles.describeConnectionError(error))", metadata: peerMetadata(context))
        context.close(promise: nil)
    }

    /// Queues a reply or a request of the node (flushed by `flush()`).
    func send(_ msg: PeerMessage) {
        guard let context else { return }
        var replyRef: BlockRef?
        switch msg {
        case .putReply(let rpc, _), .getReply(let rpc, _):
            guard let p = pendingRefs.removeValue(forKey: rpc) else { return }  // not asked here
            replyRef = p.ref
            TorusMetrics.peerRequest(put: p.put, nanoseconds: NIODeadline.now().uptimeNanoseconds &- p.arrived)
        default: break
        }
        context.write(wrapOutboundOut(.message(msg, replyRef: replyRef)), promise: nil)
        needsFlush = true
    }

    /// Flushes what `send` queued at the end of this turn of the loop, so that every reply of
    /// one read (or of a batch of disk completions) leaves in one `writev` (docs/peer-protocol.md,
    /// "Performance"). The task runs before the loop waits again: a lone reply is not delayed.
    func flush() {
        guard needsFlush, !flushQueued, let context else { return }
        flushQueued = true
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            self.flushQueued = false
            guard self.needsFlush, self.context != nil else { return }
            self.needsFlush = false
            ctx.value.flush()
        }
    }

    private func peerMetadata(_ context: ChannelHandlerContext) -> Logger.Metadata {
        var metadata: Logger.Metadata = ["address": LogMetadata.address(context.remoteAddress)]
        if let peer { metadata["peer"] = "\(peer)" }
        return metadata
    }
}

/// The writer side of one connection to a storage node. Lives on the cluster's (writers') loop.
/// Something in the cluster process that talks to storage nodes as a client (a volume's
/// writer, the garbage collector): its connections, and where their messages go. Confined
/// to the cluster loop.
protocol PeerLinkOwner: AnyObject, Sendable {
    var links: [NodeID: PeerLink] { get set }
    var linksToFlush: [PeerLink] { get set }
    /// The id nodes know this client by (replies are routed by it).
    var peerID: NodeID { get }
    /// On its log lines: `volume=NAME` for a volume's writer, `client=gc` for the collector.
    var logMetadata: Logger.Metadata { get }
    /// A message from `node` on `link` (on the cluster loop).
    func received(from node: NodeID, via link: PeerLink, _ msg: PeerMessage)
}

final class PeerLink: @unchecked Sendable {
    let node: NodeID
    var channel: Channel?
    var connecting = false
    /// Frames sent while the connection is being set up.
    var queued: [PeerFrame] = []
    /// Written to since the last flush (the link is in its owner's `linksToFlush`).
    var needsFlush = false
    /// A flush is queued on the loop (`flushSoon`).
    var flushQueued = false
    /// In-process path: the node runs in this process; messages go straight to its loop.
    let local: StorageNodeServer?
    /// Messages of the current writer step for `local`, handed over in one batch by `flushLinks`.
    var localBatch: [PeerMessage] = []
    /// The node has this link registered as the writer's reply path.
    var localRegistered = false

    init(node: NodeID, local: StorageNodeServer? = nil) {
        self.node = node
        self.local = local
    }
}

/// The node side of an in-process link: replies go to the writer's loop without a socket.
/// Created by the writer, registered on (and then confined to) the node's loop.
final class LocalPeer: @unchecked Sendable {
    let deliver: @Sendable ([PeerMessage]) -> Void
    var batch: [PeerMessage] = []

    init(deliver: @escaping @Sendable ([PeerMessage]) -> Void) { self.deliver = deliver }

    func flush() {
        guard !batch.isEmpty else { return }
        let messages = batch
        batch = []
        deliver(messages)
    }
}

/// Receives a node's frames for one volume writer.
final class PeerClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = PeerFrame

    let owner: any PeerLinkOwner
    let node: NodeID
    let link: PeerLink

    init(owner: any PeerLinkOwner, node: NodeID, link: PeerLink) {
        self.owner = owner
        self.node = node
        self.link = link
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .helloAck(let id, _):
            if id != node {
                // The ring's address for the node is wrong: retrying reaches the same port.
                RuntimeLoggers.peer.error("the node's port answered as node \(id); closing",
                                          metadata: linkMetadata(context.remoteAddress))
                context.close(promise: nil)
            }
        case .message(let msg, _):
            owner.received(from: node, via: link, msg)
        case .hello:
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if link.channel === context.channel { link.channel = nil }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        RuntimeLoggers.peer.warning("closing the connection to the node: \(TLSFiles.describeConnectionError(error))",
                                    metadata: linkMetadata(context.remoteAddress))
        context.close(promise: nil)
    }

    private func linkMetadata(_ address: SocketAddress?) -> Logger.Metadata {
        owner.logMetadata.merging(["peer": "\(node)", "address": LogMetadata.address(address)]) { $1 }
    }
}

extension VolumeServer {
    /// Sends a writer's message to a node, connecting first if needed. On the cluster loop.
    func clientSend(_ volume: any PeerLinkOwner, to node: NodeID, _ msg: PeerMessage) {
        loop.assertInEventLoop()
        let link: PeerLink
        if let l = volume.links[node] {
            link = l
        } else {
            link = PeerLink(node: node, local: config.peerOverTCP ? nil : nodes[node])
            volume.links[node] = link
        }
        if link.local != nil {
            if link.localBatch.isEmpty { volume.linksToFlush.append(link) }
            link.localBatch.append(msg)
            return
        }
        let frame = PeerFrame.message(msg)
        if let channel = link.channel {
            channel.write(frame, promise: nil)
            if !link.needsFlush {
                link.needsFlush = true
                volume.linksToFlush.append(link)
            }
            return
        }
        link.queued.append(frame)
        guard !link.connecting, let address = nodeAddresses[node] else { return }
        link.connecting = true
        let tls = config.peerTLS
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: PeerCodec.receiveAllocator)
            .connectTimeout(.seconds(2))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        PeerFrameReader(), PeerFrameEncoder(),
                        PeerClientHandler(owner: volume, node: node, link: link))
                    try tls?.secureConnection(channel)
                }
            }
            .connect(host: address.host, port: address.port)
            .whenComplete { result in
                link.connecting = false
                switch result {
                case .success(let channel):
                    link.channel = channel
                    channel.write(PeerFrame.hello(node: volume.peerID, cluster: self.clusterID,
                                                  maxVersion: PeerCodec.version), promise: nil)
                    for f in link.queued { channel.write(f, promise: nil) }
                    link.queued.removeAll()
                    channel.flush()
                case .failure(let error):
                    // The writer's RPC timeouts retry; the next send tries to connect again.
                    RuntimeLoggers.peer.warning("cannot reach the node: \(error)", metadata: volume.logMetadata.merging(
                        ["peer": "\(node)", "address": "\(address.host):\(address.port)"]) { $1 })
                    link.queued.removeAll()
                }
            }
    }

    /// Flushes the connections a writer step wrote to.
    func flushLinks(_ volume: any PeerLinkOwner) {
        for link in volume.linksToFlush {
            if let server = link.local {
                handOver(link, to: server, from: volume)
                continue
            }
            flushSoon(link)
        }
        volume.linksToFlush.removeAll()
    }

    /// Flushes a TCP link at the end of this turn of the loop: the requests of every writer step
    /// in one batch of socket events (many NBD commands in one read, many node replies) leave in
    /// one `writev` (docs/peer-protocol.md, "Performance"); the task runs before the loop waits.
    private func flushSoon(_ link: PeerLink) {
        guard !link.flushQueued else { return }
        link.flushQueued = true
        loop.execute {
            link.flushQueued = false
            link.needsFlush = false
            link.channel?.flush()
        }
    }

    /// The in-process path: one hop to the node's loop per writer step and link, and one
    /// back per node step. The messages are the writer's own values (no encoding, no copy);
    /// block data keeps its end-to-end checksum, which the node verifies as on the wire.
    private func handOver(_ link: PeerLink, to server: StorageNodeServer, from volume: any PeerLinkOwner) {
        let messages = link.localBatch
        link.localBatch = []
        guard !messages.isEmpty else { return }
        let client = volume.peerID
        var newPeer: LocalPeer?
        if !link.localRegistered {
            link.localRegistered = true
            let node = link.node, loop = self.loop
            newPeer = LocalPeer { replies in
                loop.execute {
                    for m in replies { volume.received(from: node, via: link, m) }
                }
            }
        }
        let peer = newPeer
        server.loop.execute {
            if let peer { server.localPeers[client] = peer }
            for m in messages { server.received(from: client, m) }
        }
    }

    func closeLinks(_ volume: any PeerLinkOwner) {
        let client = volume.peerID
        for link in volume.links.values {
            link.channel?.close(promise: nil)
            if let server = link.local, link.localRegistered {
                server.loop.execute { server.localPeers[client] = nil }
            }
        }
        volume.links.removeAll()
    }
}
