import NIOCore

// The codec in a NIO pipeline.

/// Inbound: bytes to `PeerFrame`s. Use as `ByteToMessageHandler(PeerFrameDecoder())`.
///
/// Handles frames split across reads at any byte and many frames in one read. A
/// `PeerProtocolError` goes to `errorCaught`; the connection handler must then close the
/// channel (the decoder accepts nothing more after an error).
public struct PeerFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = PeerFrame

    public init() {}

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try PeerCodec.decode(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }
}

/// Outbound: `PeerFrame`s to bytes, one exactly sized buffer per frame (so a 64 MiB block
/// does not leave a 64 MiB buffer behind), except that a block of 16 KiB or more is lent to
/// NIO instead of copied (`PeerCodec.encodeVectored`). An unencodable frame fails its write
/// promise and is reported to `errorCaught`; nothing is written for it.
public final class PeerFrameEncoder: ChannelOutboundHandler, Sendable {
    public typealias OutboundIn = PeerFrame
    public typealias OutboundOut = ByteBuffer

    public init() {}

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = Self.unwrapOutboundIn(data)
        do {
            if let parts = try PeerCodec.encodeVectored(frame, allocator: context.channel.allocator) {
                context.write(Self.wrapOutboundOut(parts.head), promise: nil)
                context.write(Self.wrapOutboundOut(parts.bulk), promise: nil)
                context.write(Self.wrapOutboundOut(parts.trailer), promise: promise)
                return
            }
            var out = context.channel.allocator.buffer(capacity: try PeerCodec.encodedSize(of: frame))
            try PeerCodec.encode(frame, into: &out)
            context.write(Self.wrapOutboundOut(out), promise: promise)
        } catch {
            promise?.fail(error)
            context.fireErrorCaught(error)
        }
    }
}

extension PeerCodec {
    /// Socket reads of up to 1 MiB on peer connections (NIO's default stops at 64 KiB, less
    /// than one 64 KiB block's frame): a read takes many frames at once (docs/peer-protocol.md,
    /// "Performance").
    static var receiveAllocator: AdaptiveRecvByteBufferAllocator {
        AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 256 << 10, maximum: 1 << 20)
    }
}
