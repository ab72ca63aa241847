/// Transmission phase: request parsing, validation and replies.
///
/// Validation order for each request (the spec fixes no precedence): command flags (`EINVAL`),
/// read-only export (`EPERM`), length limit, range against the export size. Range errors follow
/// "Error values": `ENOSPC` for WRITE and WRITE_ZEROES past the end, `EINVAL` for READ and TRIM.
/// A rejected request gets an error reply and the connection stays usable; a rejected WRITE's
/// payload is skipped without being stored, and the error is sent once it has been skipped.
///
/// Zero-length READ, WRITE, TRIM and WRITE_ZEROES ("the behavior of a server on such a request is
/// unspecified although the server SHOULD NOT disconnect") are validated like any other request
/// and then answered with success at once, without an `.execute`.
extension NBDServerConnection {
    /// One request header: command flags, type, handle (cookie), offset, length.
    struct RequestHeader {
        var flags: UInt16
        var type: UInt16
        var cookie: UInt64
        var offset: UInt64
        var length: Int

        var fua: Bool { flags & NBDWire.cmdFlagFUA != 0 }

        /// "Command flags": FUA is valid on every command once NBD_FLAG_SEND_FUA is advertised, and
        /// the server MUST accept it (ignoring it where nothing is written). NO_HOLE is valid only on
        /// WRITE_ZEROES. DF, REQ_ONE and FAST_ZERO are never advertised, so like unknown bits they
        /// get EINVAL ("Error values").
        func flagsAllowed(_ allowed: UInt16) -> Bool { flags & ~allowed == 0 }

        func inRange(_ export: NBDExport) -> Bool { offset <= export.size && UInt64(length) <= export.size - offset }
    }

    /// Request header: magic, command flags, type, handle (cookie), offset, length.
    mutating func handleRequestHeader(_ out: inout [NBDAction]) {
        let magic = UInt32(headerField(at: 0, size: 4))
        let request = RequestHeader(flags: UInt16(headerField(at: 4, size: 2)), type: UInt16(headerField(at: 6, size: 2)),
                                    cookie: headerField(at: 8, size: 8), offset: headerField(at: 16, size: 8),
                                    length: Int(headerField(at: 24, size: 4)))
        header.removeAll(keepingCapacity: true)

        // Without a valid magic the request boundaries are lost; nothing after can be trusted.
        guard magic == NBDWire.requestMagic else { return close("bad request magic", &out) }
        guard let export else { return close("request before an export was selected", &out) }

        if request.type == NBDWire.cmdDisc { return handleDisconnect(&out) }

        // "Transmission": clients SHOULD use a handle distinct from all pending transactions. A
        // reused in-flight handle would make the two replies (and, for reads, their payload
        // lengths) indistinguishable to the client, and `completed(cookie:)` ambiguous here, so
        // the connection is closed rather than risk misattributing data.
        guard pending[request.cookie] == nil else {
            return close("client reused cookie \(request.cookie) while it was still in flight", &out)
        }

        switch request.type {
        case NBDWire.cmdWrite: handleWrite(request, export, &out)
        case NBDWire.cmdRead: handleRead(request, export, &out)
        case NBDWire.cmdFlush: handleFlush(request, &out)
        case NBDWire.cmdTrim, NBDWire.cmdWriteZeroes: handleTrimOrWriteZeroes(request, export, &out)
        default:
            // "Error values": the server SHOULD return EINVAL for an unknown command. Unknown
            // commands have no payload (only NBD_CMD_WRITE does), so parsing continues.
            replyError(cookie: request.cookie, .EINVAL, &out)
        }
    }

    /// "NBD_CMD_DISC": handle all outstanding requests, then close; there is no reply.
    /// Flags, offset and length are not checked: the client is leaving either way.
    private mutating func handleDisconnect(_ out: inout [NBDAction]) {
        reader = .ignore
        if pending.isEmpty {
            close("client disconnected (NBD_CMD_DISC)", &out)
        } else {
            state = .disconnecting
        }
    }

    private mutating func handleWrite(_ r: RequestHeader, _ export: NBDExport, _ out: inout [NBDAction]) {
        // "Block size constraints": either side MAY hard-disconnect when a WRITE payload is
        // large enough to be a denial of service; anything up to 2^25 bytes SHOULD be accepted.
        // Beyond `requestBytesMax` the payload is not skipped: the connection is closed.
        guard r.length <= limits.requestBytesMax else {
            return close("NBD_CMD_WRITE of \(r.length) bytes exceeds \(limits.requestBytesMax)", &out)
        }
        let error: NBDErrno? =
            !r.flagsAllowed(NBDWire.cmdFlagFUA) ? .EINVAL
            : export.readOnly ? .EPERM
            : !r.inRange(export) ? .ENOSPC
            : nil
        if let error {
            beginDiscard(r.length, then: .errorReply(cookie: r.cookie, error), &out)
        } else if r.length == 0 {
            replySuccess(cookie: r.cookie, request: Pending(isRead: false, offset: r.offset, length: 0), parts: [], &out)
        } else {
            data.reserveCapacity(r.length)
            reader = .writePayload(cookie: r.cookie, offset: r.offset, length: r.length, fua: r.fua)
        }
    }

    private mutating func handleRead(_ r: RequestHeader, _ export: NBDExport, _ out: inout [NBDAction]) {
        // "Block size constraints": the server SHOULD report EINVAL for a request larger than the
        // advertised maximum block size. (EOVERFLOW is reserved for NBD_CMD_FLAG_DF, which is
        // not advertised: "The server SHOULD NOT return NBD_EOVERFLOW except as documented".)
        let request = Pending(isRead: true, offset: r.offset, length: r.length)
        let error: NBDErrno? =
            !r.flagsAllowed(NBDWire.cmdFlagFUA) ? .EINVAL
            : r.length > limits.requestBytesMax ? .EINVAL
            : !r.inRange(export) ? .EINVAL
            : nil
        if let error {
            replyError(cookie: r.cookie, error, &out)
        } else if r.length == 0 {
            replySuccess(cookie: r.cookie, request: request, parts: [], &out)
        } else {
            execute(cookie: r.cookie, .read(offset: r.offset, length: r.length), request, &out)
        }
    }

    private mutating func handleFlush(_ r: RequestHeader, _ out: inout [NBDAction]) {
        // "NBD_CMD_FLUSH": length and offset are reserved and MUST be zero.
        guard r.flagsAllowed(NBDWire.cmdFlagFUA), r.offset == 0, r.length == 0 else {
            return replyError(cookie: r.cookie, .EINVAL, &out)
        }
        execute(cookie: r.cookie, .flush, Pending(isRead: false, offset: 0, length: 0), &out)
    }

    private mutating func handleTrimOrWriteZeroes(_ r: RequestHeader, _ export: NBDExport, _ out: inout [NBDAction]) {
        // These carry no payload, so `requestBytesMax` (a buffering limit) does not apply;
        // lengths up to 2^32 - 1 are passed on, as the Linux client issues discards that large.
        let isTrim = r.type == NBDWire.cmdTrim
        let allowed = isTrim ? NBDWire.cmdFlagFUA : NBDWire.cmdFlagFUA | NBDWire.cmdFlagNoHole
        let error: NBDErrno? =
            !r.flagsAllowed(allowed) ? .EINVAL
            : export.readOnly ? .EPERM
            : !r.inRange(export) ? (isTrim ? .EINVAL : .ENOSPC)
            : nil
        let request = Pending(isRead: false, offset: r.offset, length: r.length)
        if let error {
            replyError(cookie: r.cookie, error, &out)
        } else if r.length == 0 {
            replySuccess(cookie: r.cookie, request: request, parts: [], &out)
        } else if isTrim {
            execute(cookie: r.cookie, .trim(offset: r.offset, length: r.length, fua: r.fua), request, &out)
        } else {
            let mayTrim = r.flags & NBDWire.cmdFlagNoHole == 0
            execute(cookie: r.cookie, .writeZeroes(offset: r.offset, length: r.length, fua: r.fua, mayTrim: mayTrim),
                    request, &out)
        }
    }

    mutating func execute(cookie: UInt64, _ command: NBDCommand, _ request: Pending, _ out: inout [NBDAction]) {
        var request = request
        // What the request pins until it completes: a read's reply, a write's payload.
        switch command {
        case .read(_, let length): request.heldBytes = length
        case .write: request.heldBytes = request.length
        default: request.heldBytes = 0
        }
        heldBytes += request.heldBytes
        pending[cookie] = request
        out.append(.execute(cookie: cookie, command))
    }

    /// Success reply. With structured replies a READ gets one final `NBD_REPLY_TYPE_OFFSET_DATA`
    /// chunk (or `NBD_REPLY_TYPE_NONE` when empty, since a data chunk must describe at least one
    /// byte); everything else gets a simple reply, which "MAY be used as a reply to any request
    /// other than NBD_CMD_READ, but only if the reply has no data payload".
    mutating func replySuccess(cookie: UInt64, request: Pending, parts: [ArraySlice<UInt8>], _ out: inout [NBDAction]) {
        // Header and data stay apart (`sendReply`): concatenating them would copy the data once more.
        let count = parts.reduce(0) { $0 + $1.count }
        if request.isRead && structuredReplies {
            out.append(count == 0
                ? .send(NBDEncode.noneChunk(cookie: cookie))
                : .sendReply(header: NBDEncode.offsetDataChunkHeader(cookie: cookie, offset: request.offset, length: count),
                             parts: parts))
        } else if count == 0 {
            out.append(.send(NBDEncode.simpleReply(cookie: cookie, error: 0)))
        } else {
            out.append(.sendReply(header: NBDEncode.simpleReply(cookie: cookie, error: 0), parts: parts))
        }
    }

    /// Error reply, never with a data payload. With structured replies negotiated every error is a
    /// final `NBD_REPLY_TYPE_ERROR` chunk: READ MUST NOT use a simple reply "even for the case of an
    /// early NBD_EINVAL", and for other commands the server "SHOULD prefer sending errors via a
    /// structured reply".
    mutating func replyError(cookie: UInt64, _ errno: NBDErrno, _ out: inout [NBDAction]) {
        out.append(.send(structuredReplies
            ? NBDEncode.errorChunk(cookie: cookie, error: errno.rawValue)
            : NBDEncode.simpleReply(cookie: cookie, error: errno.rawValue)))
    }
}
