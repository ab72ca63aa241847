/// Public value types of the sans-I/O NBD server: exports, limits, commands, errors and the
/// actions the connection state machine asks its driver to perform.
///
/// Protocol reference: `doc/proto.md` of github.com/NetworkBlockDevice/nbd (section names cited
/// throughout are from that document).

/// One export (a named block device) that a client may select during the handshake.
public struct NBDExport: Hashable, Sendable {
    /// Name as used by `NBD_OPT_EXPORT_NAME`, `NBD_OPT_INFO` and `NBD_OPT_GO`. The empty name is the
    /// "default" export (see "Option types", `NBD_OPT_EXPORT_NAME`); the `lookup` closure decides
    /// what it maps to.
    public var name: String
    /// Size of the export in bytes. Requests are validated against it.
    public var size: UInt64
    /// Sets `NBD_FLAG_READ_ONLY`; WRITE, TRIM and WRITE_ZEROES then fail with `EPERM`.
    public var readOnly: Bool
    /// Sets `NBD_FLAG_CAN_MULTI_CONN`: the caller promises that FLUSH and FUA effects are visible
    /// across all connections to this export when their replies are sent.
    public var multiConn: Bool
    /// Human-readable description, sent in `NBD_REP_SERVER` (after the name) and in
    /// `NBD_INFO_DESCRIPTION`.
    public var description: String
    /// WRITE payloads are cut where the export offset is a multiple of this (a power of two;
    /// 0: never), so a payload covering whole blocks of the storage behind the export arrives as
    /// one array per block, which that storage can keep without copying.
    public var payloadChunkBytes: Int

    public init(name: String, size: UInt64, readOnly: Bool = false, multiConn: Bool = false, description: String = "",
                payloadChunkBytes: Int = 0) {
        precondition(payloadChunkBytes >= 0 && payloadChunkBytes.nonzeroBitCount <= 1, "payloadChunkBytes must be 0 or a power of two")
        self.name = name
        self.size = size
        self.readOnly = readOnly
        self.multiConn = multiConn
        self.description = description
        self.payloadChunkBytes = payloadChunkBytes
    }
}

/// Resource limits for one connection. Everything this layer buffers is bounded by these values
/// (see `bufferedBytesMax`).
public struct NBDLimits: Hashable, Sendable {
    /// Largest READ or WRITE length accepted, and the maximum block size advertised in
    /// `NBD_INFO_BLOCK_SIZE`. Should be at least 4096 (the advertised preferred block size; see
    /// "Block size constraints"). The default is the spec's interoperable 2^25 bytes.
    public var requestBytesMax = 32 << 20
    /// Largest option payload buffered during negotiation; longer options are refused with
    /// `NBD_REP_ERR_TOO_BIG` after being skipped without buffering.
    public var optionBytesMax = 64 << 10
    /// Requests executing at once. At the limit the connection stops parsing (see
    /// `NBDServerConnection.wantsInput`).
    public var inFlightMax = 256
    /// Bytes of READ and WRITE requests executing at once (replies to produce, payloads held).
    /// At the limit the connection stops parsing, so a connection pins at most this plus one
    /// request: without it, 256 reads of 32 MiB would be 8 GiB.
    public var inFlightBytesMax = 128 << 20

    public init() {}

    /// Upper bound on `NBDServerConnection.bufferedBytes`: one maximal WRITE request (header and
    /// payload) or one maximal option (header and data), whichever is larger.
    public var bufferedBytesMax: Int {
        max(requestBytesMax + NBDWire.requestHeaderSize, optionBytesMax + NBDWire.optionHeaderSize)
    }
}

/// A validated transmission-phase request for the caller to perform. Offsets and lengths have
/// already been checked against the export size; alignment and serialisation of overlapping
/// requests are the caller's business.
public enum NBDCommand: Hashable, Sendable {
    /// `NBD_CMD_READ`. Complete with exactly `length` bytes of data.
    case read(offset: UInt64, length: Int)
    /// `NBD_CMD_WRITE`. With `fua` (`NBD_CMD_FLAG_FUA`), complete only once the data is durable.
    /// The payload is `chunks` concatenated, cut at multiples of the export's
    /// `payloadChunkBytes` (one chunk when that is 0).
    case write(offset: UInt64, chunks: [[UInt8]], fua: Bool)
    /// A write whose payload is one array.
    public static func write(offset: UInt64, data: [UInt8], fua: Bool) -> NBDCommand {
        .write(offset: offset, chunks: [data], fua: fua)
    }
    /// `NBD_CMD_FLUSH`: make every write already replied to durable before completing.
    case flush
    /// `NBD_CMD_TRIM`: a hint that the range is no longer needed.
    case trim(offset: UInt64, length: Int, fua: Bool)
    /// `NBD_CMD_WRITE_ZEROES`. `mayTrim` is false when the client set `NBD_CMD_FLAG_NO_HOLE`
    /// (the range must stay fully provisioned).
    case writeZeroes(offset: UInt64, length: Int, fua: Bool, mayTrim: Bool)
}

/// Error values allowed on the wire ("Error values").
public enum NBDErrno: UInt32, Error, Sendable {
    case EPERM = 1, EIO = 5, ENOMEM = 12, EINVAL = 22, ENOSPC = 28, EOVERFLOW = 75, ENOTSUP = 95, ESHUTDOWN = 108
}

/// Something the driver must do, in order.
public enum NBDAction: Sendable, Equatable {
    /// Bytes to write to the socket, in order. Each `send` is one complete protocol message
    /// (greeting, option reply, export-name reply, simple reply or structured reply chunk).
    case send([UInt8])
    /// A read reply: `header` then the data, `parts` concatenated, one protocol message. Kept
    /// apart so the driver can write the data without first concatenating it behind the header
    /// (a copy of every read).
    case sendReply(header: [UInt8], parts: [ArraySlice<UInt8>])

    /// A read reply whose data is one array.
    public static func sendReply(header: [UInt8], data: [UInt8]) -> NBDAction {
        .sendReply(header: header, parts: [data[...]])
    }
    /// Perform the command, then call `completed(cookie:result:)` exactly once.
    case execute(cookie: UInt64, NBDCommand)
    /// Negotiation finished for this export; requests for it follow.
    case enterTransmission(NBDExport)
    /// `NBD_OPT_STARTTLS` was acknowledged: send everything before this action in clear, then
    /// run the TLS handshake as the server. Every later byte, both ways, goes through TLS.
    case startTLS
    /// Close the connection after sending everything that came before. Always the last action.
    case close(reason: String)
}

/// Whether a connection offers TLS ("TLS support" in the spec).
public enum NBDTLSMode: String, Sendable, CaseIterable {
    /// NOTLS mode: `NBD_OPT_STARTTLS` is answered `NBD_REP_ERR_UNSUP`.
    case off
    /// SELECTIVETLS mode with no TLS-only export: a client may upgrade, or go on in clear.
    case allow
    /// FORCEDTLS mode: before the upgrade, every option but `NBD_OPT_STARTTLS` and
    /// `NBD_OPT_ABORT` is refused with `NBD_REP_ERR_TLS_REQD`; `NBD_OPT_EXPORT_NAME` (which
    /// cannot be refused) ends the session.
    case require
}

/// Where a connection is in its life.
public enum NBDServerState: Sendable, Equatable {
    /// `start()` has not been called.
    case idle
    /// Greeting sent; waiting for the 32-bit client flags.
    case awaitingClientFlags
    /// Option haggling (fixed newstyle).
    case negotiating
    /// Transmission phase: requests are parsed and executed.
    case transmission
    /// `NBD_CMD_DISC` received; waiting for in-flight requests before closing.
    case disconnecting
    /// The connection is over; every further call returns no actions.
    case closed
}
