/// Handshake phase: client flags and fixed-newstyle option haggling.
extension NBDServerConnection {
    /// "Client flags": the server MUST drop the connection on an unknown flag. A client without
    /// `NBD_FLAG_C_FIXED_NEWSTYLE` is also refused (the spec lets servers honour fixed newstyle
    /// anyway; we choose not to, since only fixed newstyle is implemented).
    mutating func handleClientFlags(_ out: inout [NBDAction]) {
        let flags = UInt32(headerField(at: 0, size: 4))
        header.removeAll(keepingCapacity: true)
        let known = NBDWire.clientFlagFixedNewstyle | NBDWire.clientFlagNoZeroes
        guard flags & ~known == 0 else {
            return close("client set unknown flags 0x\(String(flags, radix: 16))", &out)
        }
        guard flags & NBDWire.clientFlagFixedNewstyle != 0 else {
            return close("client did not set NBD_FLAG_C_FIXED_NEWSTYLE", &out)
        }
        clientNoZeroes = flags & NBDWire.clientFlagNoZeroes != 0
        state = .negotiating
        reader = .optionHeader
    }

    /// Option header: `IHAVEOPT`, option, data length. A wrong magic means the stream cannot be
    /// trusted any further, so the connection is closed.
    mutating func handleOptionHeader(_ out: inout [NBDAction]) {
        let magic = headerField(at: 0, size: 8)
        let option = UInt32(headerField(at: 8, size: 4))
        let length = Int(headerField(at: 12, size: 4))
        header.removeAll(keepingCapacity: true)
        guard magic == NBDWire.ihaveopt else { return close("bad option magic", &out) }

        if tls == .require && !tlsActive {
            return handleOptionBeforeTLS(option, length: length, &out)
        }
        switch option {
        case NBDWire.optAbort:
            // "NBD_OPT_ABORT": the server MUST reply with NBD_REP_ACK and SHOULD ignore any data;
            // the data is not even read, since the connection closes right after the reply.
            out.append(.send(NBDEncode.optionReply(option: option, type: NBDWire.repAck)))
            close("client sent NBD_OPT_ABORT", &out)
        case NBDWire.optExportName:
            // This option cannot return an error, so a name that can never be valid (longer than
            // the 4096-byte string limit, or than the option limit) ends the session at once,
            // before any of it is buffered.
            guard length <= min(limits.optionBytesMax, NBDWire.stringBytesMax) else {
                return close("NBD_OPT_EXPORT_NAME name of \(length) bytes is too long", &out)
            }
            beginCollect(option: option, length: length, &out)
        case NBDWire.optList, NBDWire.optStructuredReply:
            // "The client MUST NOT send any additional data with the option, and the server SHOULD
            // reject a request that includes data with NBD_REP_ERR_INVALID." Skipped, not stored.
            if length != 0 {
                beginDiscard(length, then: .optionReply(option: option, type: NBDWire.repErrInvalid), &out)
            } else {
                handleOption(option, [], &out)
            }
        case NBDWire.optStartTLS:
            handleStartTLS(length: length, &out)
        case NBDWire.optInfo, NBDWire.optGo:
            if length > limits.optionBytesMax {
                // "NBD_REP_ERR_TOO_BIG: The request or the reply is too large to process."
                beginDiscard(length, then: .optionReply(option: option, type: NBDWire.repErrTooBig), &out)
            } else {
                beginCollect(option: option, length: length, &out)
            }
        default:
            // "Baseline": servers MUST reply NBD_REP_ERR_UNSUP to options they do not implement and
            // MUST NOT fail to parse the next message.
            beginDiscard(length, then: .optionReply(option: option, type: NBDWire.repErrUnsup), &out)
        }
    }

    /// FORCEDTLS mode before the upgrade: "If the server receives any other option, including
    /// NBD_OPT_INFO and unsupported options, it MUST reply with NBD_REP_ERR_TLS_REQD"; an
    /// `NBD_OPT_EXPORT_NAME` "cannot error", so the session ends.
    private mutating func handleOptionBeforeTLS(_ option: UInt32, length: Int, _ out: inout [NBDAction]) {
        switch option {
        case NBDWire.optAbort:
            out.append(.send(NBDEncode.optionReply(option: option, type: NBDWire.repAck)))
            // Not "client sent NBD_OPT_ABORT": a client turned away for want of TLS is worth a log line.
            close(refusedForTLS ? "client gave up without TLS, which this server requires (NBD_OPT_ABORT)"
                                : "client sent NBD_OPT_ABORT", &out)
        case NBDWire.optStartTLS:
            handleStartTLS(length: length, &out)
        case NBDWire.optExportName:
            close("NBD_OPT_EXPORT_NAME without TLS, which this server requires", &out)
        default:
            refusedForTLS = true
            beginDiscard(length, then: .optionReply(option: option, type: NBDWire.repErrTLSRequired), &out)
        }
    }

    /// "NBD_OPT_STARTTLS": no data allowed (`NBD_REP_ERR_INVALID`), refused once TLS is up
    /// (`NBD_REP_ERR_INVALID`) and in NOTLS mode (`NBD_REP_ERR_UNSUP`); otherwise `NBD_REP_ACK`,
    /// after which "all further data MUST be sent and received over TLS".
    private mutating func handleStartTLS(length: Int, _ out: inout [NBDAction]) {
        let option = NBDWire.optStartTLS
        guard tls != .off else {
            return beginDiscard(length, then: .optionReply(option: option, type: NBDWire.repErrUnsup), &out)
        }
        guard length == 0, !tlsActive else {
            return beginDiscard(length, then: .optionReply(option: option, type: NBDWire.repErrInvalid), &out)
        }
        out.append(.send(NBDEncode.optionReply(option: option, type: NBDWire.repAck)))
        out.append(.startTLS)
        tlsActive = true
        reader = .startingTLS
    }

    private mutating func beginCollect(option: UInt32, length: Int, _ out: inout [NBDAction]) {
        if length == 0 {
            handleOption(option, [], &out)
        } else {
            data.reserveCapacity(length)
            reader = .optionData(option: option, length: length)
        }
    }

    /// Acts on a complete option whose data has been collected.
    mutating func handleOption(_ option: UInt32, _ optionData: [UInt8], _ out: inout [NBDAction]) {
        reader = .optionHeader
        switch option {
        case NBDWire.optExportName:
            handleExportName(optionData, &out)
        case NBDWire.optInfo, NBDWire.optGo:
            handleInfoOrGo(option, optionData, &out)
        case NBDWire.optList:
            // "NBD_OPT_LIST": one NBD_REP_SERVER per export, then NBD_REP_ACK.
            for export in list() {
                out.append(.send(NBDEncode.optionReply(option: option, type: NBDWire.repServer,
                                                       data: NBDEncode.serverEntry(export))))
            }
            out.append(.send(NBDEncode.optionReply(option: option, type: NBDWire.repAck)))
        case NBDWire.optStructuredReply:
            // "Fixed newstyle negotiation": a client SHOULD NOT send a state-changing option more
            // than once; the server MAY fail the repeat with NBD_REP_ERR_INVALID.
            let type = structuredReplies ? NBDWire.repErrInvalid : NBDWire.repAck
            structuredReplies = true
            out.append(.send(NBDEncode.optionReply(option: option, type: type)))
        default:
            out.append(.send(NBDEncode.optionReply(option: option, type: NBDWire.repErrUnsup)))
        }
    }

    /// "NBD_OPT_EXPORT_NAME": on success reply with size, transmission flags and (unless
    /// `NBD_FLAG_C_NO_ZEROES`) 124 zero bytes; if the export does not exist the server MUST
    /// terminate the session, as this option has no way to report an error.
    private mutating func handleExportName(_ optionData: [UInt8], _ out: inout [NBDAction]) {
        guard let name = Self.validString(optionData[...]) else {
            return close("NBD_OPT_EXPORT_NAME name is not a valid string", &out)
        }
        guard let export = lookup(name) else {
            return close("NBD_OPT_EXPORT_NAME for unknown export \"\(name)\"", &out)
        }
        out.append(.send(NBDEncode.exportNameReply(export, noZeroes: clientNoZeroes)))
        enterTransmission(export, &out)
    }

    /// "NBD_OPT_INFO (6) and NBD_OPT_GO (7)". Data: 32-bit name length (MUST be no larger than
    /// the option data length - 6), name, 16-bit count of information requests, 16 bits each.
    /// Any other layout is answered `NBD_REP_ERR_INVALID`; an unknown export
    /// `NBD_REP_ERR_UNKNOWN` (without any `NBD_REP_INFO`).
    ///
    /// Replies, in this order: `NBD_INFO_EXPORT` (mandatory), `NBD_INFO_NAME` and
    /// `NBD_INFO_DESCRIPTION` when requested, `NBD_INFO_BLOCK_SIZE` always (the server "MAY send
    /// information requests back which are not explicitly requested"; sending it for both INFO and
    /// GO keeps the rule that an INFO and a following GO with the same parameters MUST give the
    /// same information), then `NBD_REP_ACK`. Unknown and duplicate information requests are
    /// ignored ("The server MUST ignore any information requests it does not understand").
    private mutating func handleInfoOrGo(_ option: UInt32, _ optionData: [UInt8], _ out: inout [NBDAction]) {
        let invalid = NBDEncode.optionReply(option: option, type: NBDWire.repErrInvalid)
        var r = BEReader(optionData[...])
        guard let nameLength = r.u32(), Int(nameLength) <= optionData.count - 6,
              let nameBytes = r.raw(Int(nameLength)),
              let requestCount = r.u16(), r.remaining == 2 * Int(requestCount)
        else { return out.append(.send(invalid)) }
        var wantsName = false, wantsDescription = false
        for _ in 0..<requestCount {
            switch r.u16() {
            case NBDWire.infoName: wantsName = true
            case NBDWire.infoDescription: wantsDescription = true
            default: break
            }
        }
        guard let name = Self.validString(nameBytes) else { return out.append(.send(invalid)) }
        guard let export = lookup(name) else {
            return out.append(.send(NBDEncode.optionReply(option: option, type: NBDWire.repErrUnknown)))
        }
        func info(_ payload: [UInt8]) -> NBDAction {
            .send(NBDEncode.optionReply(option: option, type: NBDWire.repInfo, data: payload))
        }
        out.append(info(NBDEncode.infoExport(export)))
        if wantsName { out.append(info(NBDEncode.info(NBDWire.infoName, Array(export.name.utf8)))) }
        if wantsDescription {
            out.append(info(NBDEncode.info(NBDWire.infoDescription, Array(export.description.utf8))))
        }
        out.append(info(NBDEncode.infoBlockSize(maximum: limits.requestBytesMax)))
        out.append(.send(NBDEncode.optionReply(option: option, type: NBDWire.repAck)))
        // "The reply to an NBD_OPT_GO is identical to the reply to NBD_OPT_INFO save that if the
        // reply indicates success ... the client and the server both immediately enter the
        // transmission phase." No zero padding follows.
        if option == NBDWire.optGo { enterTransmission(export, &out) }
    }

    private mutating func enterTransmission(_ export: NBDExport, _ out: inout [NBDAction]) {
        self.export = export
        state = .transmission
        reader = .requestHeader
        out.append(.enterTransmission(export))
    }

    /// "Conventions": a string is UTF-8, MUST NOT contain NUL and MUST be no longer than 4096
    /// bytes. Validated by round-tripping, which works on every deployment target.
    static func validString(_ bytes: ArraySlice<UInt8>) -> String? {
        guard bytes.count <= NBDWire.stringBytesMax, !bytes.contains(0) else { return nil }
        let string = String(decoding: bytes, as: UTF8.self)
        return string.utf8.elementsEqual(bytes) ? string : nil
    }
}
