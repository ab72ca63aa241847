import NIOCore

/// Inbound: bytes to `PeerFrame`s, like `ByteToMessageHandler(PeerFrameDecoder())` but without
/// its copies: NIO's handler, once a read ends inside a frame, copies every later read whole
/// into its buffer until a read ends exactly on a frame boundary (rare with 64 KiB blocks).
/// Here frames are decoded straight from each read; only the start of a frame that a read cut
/// keeps a buffer of its own (sized for that frame once its header is in), which the next reads
/// top up with exactly the bytes it lacks (docs/peer-protocol.md, "Performance").
///
/// Same contract as `PeerFrameDecoder`: frames split at any byte or many in one read; a
/// `PeerProtocolError` goes to `errorCaught` (the connection handler closes the channel) and
/// nothing more is delivered after it; a frame is never buffered past `maxPayloadLength`.
final class PeerFrameReader: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = PeerFrame

    /// The start of a frame the last read cut.
    private var partial: ByteBuffer?
    private var failed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        var input = unwrapInboundIn(data)
        do {
            if var started = partial {
                partial = nil
                guard let frame = try complete(&started, from: &input) else {
                    partial = started
                    return
                }
                context.fireChannelRead(wrapInboundOut(frame))
            }
            while let frame = try PeerCodec.decode(from: &input) {
                context.fireChannelRead(wrapInboundOut(frame))
            }
            if input.readableBytes > 0 {
                let size = try PeerCodec.frameSize(atStartOf: input) ?? PeerCodec.headerSize
                var started = context.channel.allocator.buffer(capacity: size)
                started.writeBuffer(&input)
                partial = started
            }
        } catch {
            failed = true
            partial = nil
            context.fireErrorCaught(error)
        }
    }

    /// Tops `started` up from `input` with the bytes its frame lacks (first its header, then the
    /// rest) and decodes it; nil (all of `input` taken) while the frame is still incomplete.
    private func complete(_ started: inout ByteBuffer, from input: inout ByteBuffer) throws(PeerProtocolError) -> PeerFrame? {
        while true {
            let size = try PeerCodec.frameSize(atStartOf: started)
            let target = size ?? PeerCodec.headerSize
            let take = min(target - started.readableBytes, input.readableBytes)
            if take > 0 {
                if let size { started.reserveCapacity(minimumWritableBytes: size - started.readableBytes) }
                var piece = input.readSlice(length: take)!
                started.writeBuffer(&piece)
            }
            if let frame = try PeerCodec.decode(from: &started) { return frame }
            // The header just became whole: learn the frame's size and top up again.
            if size == nil, started.readableBytes == PeerCodec.headerSize { continue }
            return nil
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        partial = nil
    }
}
