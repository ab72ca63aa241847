/// Wire constants and big-endian encoding for the NBD protocol. All integers on the wire are
/// big-endian ("Conventions": network byte order).
enum NBDWire {
    // MARK: Magics

    /// ASCII `NBDMAGIC` (`INIT_PASSWD`).
    static let nbdMagic: UInt64 = 0x4E42_444D_4147_4943
    /// ASCII `IHAVEOPT`: sent by the server in the greeting and by the client before every option.
    static let ihaveopt: UInt64 = 0x4948_4156_454F_5054
    /// Magic of every fixed-newstyle option reply.
    static let optionReplyMagic: UInt64 = 0x0003_E889_0455_65A9
    static let requestMagic: UInt32 = 0x2560_9513
    static let simpleReplyMagic: UInt32 = 0x6744_6698
    static let structuredReplyMagic: UInt32 = 0x668E_33EF

    // MARK: Sizes

    static let clientFlagsSize = 4
    /// IHAVEOPT (8) + option (4) + length (4).
    static let optionHeaderSize = 16
    /// magic (4) + flags (2) + type (2) + handle (8) + offset (8) + length (4).
    static let requestHeaderSize = 28
    /// "Strings": MUST be no longer than 4096 bytes.
    static let stringBytesMax = 4096

    // MARK: Handshake flags ("Handshake flags", "Client flags")

    static let flagFixedNewstyle: UInt16 = 1 << 0
    static let flagNoZeroes: UInt16 = 1 << 1
    static let clientFlagFixedNewstyle: UInt32 = 1 << 0
    static let clientFlagNoZeroes: UInt32 = 1 << 1

    // MARK: Transmission flags

    static let flagHasFlags: UInt16 = 1 << 0
    static let flagReadOnly: UInt16 = 1 << 1
    static let flagSendFlush: UInt16 = 1 << 2
    static let flagSendFUA: UInt16 = 1 << 3
    static let flagSendTrim: UInt16 = 1 << 5
    static let flagSendWriteZeroes: UInt16 = 1 << 6
    static let flagCanMultiConn: UInt16 = 1 << 8

    // MARK: Options

    static let optExportName: UInt32 = 1
    static let optAbort: UInt32 = 2
    static let optList: UInt32 = 3
    static let optStartTLS: UInt32 = 5
    static let optInfo: UInt32 = 6
    static let optGo: UInt32 = 7
    static let optStructuredReply: UInt32 = 8

    // MARK: Option replies

    static let repAck: UInt32 = 1
    static let repServer: UInt32 = 2
    static let repInfo: UInt32 = 3
    static let repErrUnsup: UInt32 = 0x8000_0001
    static let repErrPolicy: UInt32 = 0x8000_0002
    static let repErrInvalid: UInt32 = 0x8000_0003
    static let repErrTLSRequired: UInt32 = 0x8000_0005
    static let repErrUnknown: UInt32 = 0x8000_0006
    static let repErrTooBig: UInt32 = 0x8000_0009

    // MARK: NBD_INFO types

    static let infoExport: UInt16 = 0
    static let infoName: UInt16 = 1
    static let infoDescription: UInt16 = 2
    static let infoBlockSize: UInt16 = 3

    // MARK: Commands and command flags

    static let cmdRead: UInt16 = 0
    static let cmdWrite: UInt16 = 1
    static let cmdDisc: UInt16 = 2
    static let cmdFlush: UInt16 = 3
    static let cmdTrim: UInt16 = 4
    static let cmdWriteZeroes: UInt16 = 6
    static let cmdFlagFUA: UInt16 = 1 << 0
    static let cmdFlagNoHole: UInt16 = 1 << 1

    // MARK: Structured replies

    static let replyFlagDone: UInt16 = 1 << 0
    static let replyTypeNone: UInt16 = 0
    static let replyTypeOffsetData: UInt16 = 1
    static let replyTypeError: UInt16 = 0x8001

    // MARK: Block size advertised in NBD_INFO_BLOCK_SIZE

    static let blockSizeMin: UInt32 = 1
    static let blockSizePreferred: UInt32 = 4096
}

/// Appends big-endian integers to a byte array.
struct BEWriter {
    var bytes: [UInt8] = []
    init(capacity: Int = 32) { bytes.reserveCapacity(capacity) }
    mutating func u16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(truncatingIfNeeded: v)) }
    mutating func u32(_ v: UInt32) { for s in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(s))) } }
    mutating func u64(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) } }
    mutating func raw(_ b: some Collection<UInt8>) { bytes.append(contentsOf: b) }
    mutating func zeroes(_ n: Int) { bytes.append(contentsOf: repeatElement(0, count: n)) }
}

/// Bounds-checked big-endian reader: reads past the end return nil instead of trapping, so
/// malformed client data becomes an error reply, never a crash.
struct BEReader {
    let bytes: ArraySlice<UInt8>
    private(set) var position: Int
    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes; position = bytes.startIndex }
    var remaining: Int { bytes.endIndex - position }
    mutating func u16() -> UInt16? { uint(2).map { UInt16(truncatingIfNeeded: $0) } }
    mutating func u32() -> UInt32? { uint(4).map { UInt32(truncatingIfNeeded: $0) } }
    mutating func u64() -> UInt64? { uint(8) }
    mutating func raw(_ n: Int) -> ArraySlice<UInt8>? {
        guard n >= 0, remaining >= n else { return nil }
        defer { position += n }
        return bytes[position..<(position + n)]
    }
    private mutating func uint(_ n: Int) -> UInt64? {
        guard remaining >= n else { return nil }
        var v: UInt64 = 0
        for i in 0..<n { v = v << 8 | UInt64(bytes[position + i]) }
        position += n
        return v
    }
}

/// Encoders for every server-to-client message.
enum NBDEncode {
    /// Newstyle greeting: NBDMAGIC, IHAVEOPT, handshake flags.
    static func greeting() -> [UInt8] {
        var w = BEWriter(capacity: 18)
        w.u64(NBDWire.nbdMagic)
        w.u64(NBDWire.ihaveopt)
        w.u16(NBDWire.flagFixedNewstyle | NBDWire.flagNoZeroes)
        return w.bytes
    }

    /// Fixed-newstyle option reply: magic, option, reply type, length, data.
    static func optionReply(option: UInt32, type: UInt32, data: [UInt8] = []) -> [UInt8] {
        var w = BEWriter(capacity: 20 + data.count)
        w.u64(NBDWire.optionReplyMagic)
        w.u32(option)
        w.u32(type)
        w.u32(UInt32(data.count))
        w.raw(data)
        return w.bytes
    }

    /// Transmission flags for `export` ("Transmission flags").
    static func transmissionFlags(_ export: NBDExport) -> UInt16 {
        var flags = NBDWire.flagHasFlags | NBDWire.flagSendFlush | NBDWire.flagSendFUA
            | NBDWire.flagSendTrim | NBDWire.flagSendWriteZeroes
        if export.readOnly { flags |= NBDWire.flagReadOnly }
        if export.multiConn { flags |= NBDWire.flagCanMultiConn }
        return flags
    }

    /// Reply to `NBD_OPT_EXPORT_NAME` ("Newstyle negotiation"): size, transmission flags and 124
    /// reserved zero bytes unless the client negotiated `NBD_FLAG_C_NO_ZEROES`.
    static func exportNameReply(_ export: NBDExport, noZeroes: Bool) -> [UInt8] {
        var w = BEWriter(capacity: 134)
        w.u64(export.size)
        w.u16(transmissionFlags(export))
        if !noZeroes { w.zeroes(124) }
        return w.bytes
    }

    /// `NBD_REP_SERVER` data: name length, name, then the description (the "implementation-specific
    /// details ... suitable for direct display to a human being").
    static func serverEntry(_ export: NBDExport) -> [UInt8] {
        var w = BEWriter()
        let name = Array(export.name.utf8)
        w.u32(UInt32(truncatingIfNeeded: name.count))
        w.raw(name)
        w.raw(export.description.utf8)
        return w.bytes
    }

    /// `NBD_REP_INFO` data: the 16-bit info type followed by its payload.
    static func info(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        var w = BEWriter(capacity: 2 + payload.count)
        w.u16(type)
        w.raw(payload)
        return w.bytes
    }

    static func infoExport(_ export: NBDExport) -> [UInt8] {
        var w = BEWriter(capacity: 10)
        w.u64(export.size)
        w.u16(transmissionFlags(export))
        return info(NBDWire.infoExport, w.bytes)
    }

    static func infoBlockSize(maximum: Int) -> [UInt8] {
        var w = BEWriter(capacity: 12)
        w.u32(NBDWire.blockSizeMin)
        w.u32(NBDWire.blockSizePreferred)
        w.u32(UInt32(clamping: maximum))
        return info(NBDWire.infoBlockSize, w.bytes)
    }

    /// Simple reply ("Simple reply message"): magic, error, handle, then `data` (only for a
    /// successful READ).
    static func simpleReply(cookie: UInt64, error: UInt32, data: [UInt8] = []) -> [UInt8] {
        var w = BEWriter(capacity: 16 + data.count)
        w.u32(NBDWire.simpleReplyMagic)
        w.u32(error)
        w.u64(cookie)
        w.raw(data)
        return w.bytes
    }

    /// Structured reply chunk ("Structured reply chunk message").
    static func chunk(cookie: UInt64, flags: UInt16, type: UInt16, payload: [UInt8]) -> [UInt8] {
        var w = BEWriter(capacity: 20 + payload.count)
        w.u32(NBDWire.structuredReplyMagic)
        w.u16(flags)
        w.u16(type)
        w.u64(cookie)
        w.u32(UInt32(payload.count))
        w.raw(payload)
        return w.bytes
    }

    /// Final `NBD_REPLY_TYPE_OFFSET_DATA` chunk carrying a whole read. Built in one pass so the data
    /// is copied once.
    static func offsetDataChunk(cookie: UInt64, offset: UInt64, data: [UInt8]) -> [UInt8] {
        offsetDataChunkHeader(cookie: cookie, offset: offset, length: data.count) + data
    }

    /// The 28 bytes in front of the data of an `NBD_REPLY_TYPE_OFFSET_DATA` chunk.
    static func offsetDataChunkHeader(cookie: UInt64, offset: UInt64, length: Int) -> [UInt8] {
        var w = BEWriter(capacity: 28)
        w.u32(NBDWire.structuredReplyMagic)
        w.u16(NBDWire.replyFlagDone)
        w.u16(NBDWire.replyTypeOffsetData)
        w.u64(cookie)
        w.u32(UInt32(8 + length))
        w.u64(offset)
        return w.bytes
    }

    /// Final `NBD_REPLY_TYPE_ERROR` chunk: error, message length 0, no message.
    static func errorChunk(cookie: UInt64, error: UInt32) -> [UInt8] {
        var w = BEWriter(capacity: 6)
        w.u32(error)
        w.u16(0)
        return chunk(cookie: cookie, flags: NBDWire.replyFlagDone, type: NBDWire.replyTypeError, payload: w.bytes)
    }

    /// Final `NBD_REPLY_TYPE_NONE` chunk (used for a successful zero-length read).
    static func noneChunk(cookie: UInt64) -> [UInt8] {
        chunk(cookie: cookie, flags: NBDWire.replyFlagDone, type: NBDWire.replyTypeNone, payload: [])
    }
}
