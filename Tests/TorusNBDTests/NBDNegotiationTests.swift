import Testing
import TorusNBD

@Suite("NBD handshake and option haggling")
struct NBDNegotiationTests {
    let h = Harness()

    @Test("the greeting is NBDMAGIC, IHAVEOPT and FIXED_NEWSTYLE|NO_ZEROES, sent once")
    func greetingBytes() {
        var c = h.connection()
        #expect(c.state == .idle)
        #expect(!c.wantsInput)
        #expect(c.start() == [.send(greeting())])
        #expect(greeting() == [0x4E, 0x42, 0x44, 0x4D, 0x41, 0x47, 0x49, 0x43,
                               0x49, 0x48, 0x41, 0x56, 0x45, 0x4F, 0x50, 0x54, 0x00, 0x03])
        #expect(c.state == .awaitingClientFlags)
        #expect(c.wantsInput)
        #expect(c.start() == [])
    }

    @Test("data before start() closes the connection")
    func dataBeforeStart() {
        var c = h.connection()
        let actions = c.receive([0, 0, 0, 1])
        #expect(actions.count == 1 && isClose(actions.last))
        #expect(c.state == .closed)
    }

    @Test("full handshake: an unknown option gets ERR_UNSUP, then GO with info requests enters transmission")
    func fullHandshakeWithGo() {
        let unknownData: [UInt8] = [1, 2, 3, 4, 5]
        let o = h.run([
            .receive(clientFlags(C.fixedNewstyle | C.noZeroes)),
            .receive(option(0x1234, unknownData)),
            .receive(option(C.optStartTLS)),
            .receive(option(C.optGo, infoRequest("disk", [C.infoName, C.infoDescription, C.infoBlockSize, 999, C.infoName]))),
            .receive(request(C.read, cookie: 7, offset: 512, length: 4)),
            .complete(7, .success([9, 8, 7, 6])),
        ])
        #expect(o.start == [.send(greeting())])
        #expect(o.steps[0] == [])
        #expect(o.steps[1] == [optReply(0x1234, C.errUnsup)])
        #expect(o.steps[2] == [optReply(C.optStartTLS, C.errUnsup)])
        #expect(o.steps[3] == [
            infoExportReply(C.optGo, size: 1 << 20, flags: diskFlags),
            infoStringReply(C.optGo, C.infoName, "disk"),
            infoStringReply(C.optGo, C.infoDescription, "test disk"),
            infoBlockSizeReply(C.optGo, max: 64 << 10),
            optReply(C.optGo, C.repAck),
            .enterTransmission(disk),
        ])
        #expect(o.steps[4] == [.execute(cookie: 7, .read(offset: 512, length: 4))])
        #expect(o.steps[5] == [simpleReply(7, data: [9, 8, 7, 6])])
        #expect(o.state == .transmission)
    }

    @Test("the default limits advertise block sizes 1 / 4096 / 32 MiB")
    func defaultBlockSize() {
        let o = Harness(limits: NBDLimits()).run([.receive(goHandshake())])
        #expect(o.steps[0] == goReplies(max: 32 << 20))
    }

    @Test("LIST sends one SERVER reply per export with name and description, then ACK; data makes it ERR_INVALID")
    func list() {
        var entry = BE(); entry.u32(4); entry.raw(Array("disk".utf8)); entry.raw(Array("test disk".utf8))
        var entry2 = BE(); entry2.u32(2); entry2.raw(Array("ro".utf8)); entry2.raw(Array("read only".utf8))
        let o = h.run([
            .receive(clientFlags(C.fixedNewstyle)),
            .receive(option(C.optList)),
            .receive(option(C.optList, [0, 0, 0, 0])),
            .receive(option(C.optList)),
        ])
        let listing = [optReply(C.optList, C.repServer, entry.bytes), optReply(C.optList, C.repServer, entry2.bytes),
                       optReply(C.optList, C.repAck)]
        #expect(o.steps[1] == listing)
        #expect(o.steps[2] == [optReply(C.optList, C.errInvalid)])
        #expect(o.steps[3] == listing)
        #expect(o.state == .negotiating)
    }

    @Test("INFO answers without entering transmission; a following GO gives the same information")
    func infoThenGo() {
        let o = h.run([
            .receive(clientFlags(C.fixedNewstyle)),
            .receive(option(C.optInfo, infoRequest("ro"))),
            .receive(option(C.optGo, infoRequest("ro"))),
        ])
        let info = [infoExportReply(C.optInfo, size: 64 << 10, flags: roFlags), infoBlockSizeReply(C.optInfo, max: 64 << 10),
                    optReply(C.optInfo, C.repAck)]
        #expect(o.steps[1] == info)
        #expect(o.steps[2] == goReplies(readOnlyDisk, flags: roFlags))
        #expect(o.state == .transmission)
    }

    @Test("EXPORT_NAME replies with size, flags and 124 zero bytes unless NO_ZEROES was negotiated")
    func exportName() {
        for noZeroes in [false, true] {
            let o = h.run([
                .receive(clientFlags(C.fixedNewstyle | (noZeroes ? C.noZeroes : 0))),
                .receive(option(C.optExportName, Array("disk".utf8)) + request(C.flush, cookie: 1)),
            ])
            var w = BE(); w.u64(1 << 20); w.u16(diskFlags)
            if !noZeroes { w.raw([UInt8](repeating: 0, count: 124)) }
            #expect(o.steps[1] == [.send(w.bytes), .enterTransmission(disk), .execute(cookie: 1, .flush)])
            #expect(w.bytes.count == (noZeroes ? 10 : 134))
        }
    }

    @Test("EXPORT_NAME for an unknown, invalid or over-long name closes the connection")
    func exportNameUnknown() {
        for name in [Array("nope".utf8), [0x64, 0x00, 0x6B], [0xFF, 0xFE]] {
            let o = h.run([.receive(clientFlags(C.fixedNewstyle)), .receive(option(C.optExportName, name))])
            #expect(o.steps[1].count == 1 && isClose(o.steps[1].last))
            #expect(o.state == .closed)
        }
        // Too long to ever be valid: closed at the header, nothing buffered.
        var c = h.connection()
        _ = c.start()
        _ = c.receive(clientFlags(C.fixedNewstyle)[...])
        let header = Array(option(C.optExportName, [UInt8](repeating: 0x61, count: 1025)).prefix(16))
        let actions = c.receive(header[...])
        #expect(actions.count == 1 && isClose(actions.last))
        #expect(c.bufferedBytes == 0)
    }

    @Test("ABORT is acknowledged and the connection closes, ignoring its data and anything after")
    func abort() {
        let o = h.run([
            .receive(clientFlags(C.fixedNewstyle)),
            .receive(option(C.optAbort, [1, 2, 3]) + option(C.optList)),
            .receive(option(C.optList)),
        ])
        #expect(o.steps[1].first == optReply(C.optAbort, C.repAck))
        #expect(o.steps[1].count == 2 && isClose(o.steps[1].last))
        #expect(o.steps[2] == [])
        #expect(o.state == .closed)
    }

    @Test("GO and INFO for an unknown export get ERR_UNKNOWN and negotiation continues")
    func goUnknown() {
        let o = h.run([
            .receive(clientFlags(C.fixedNewstyle | C.noZeroes)),
            .receive(option(C.optGo, infoRequest("missing", [C.infoBlockSize]))),
            .receive(option(C.optInfo, infoRequest("missing"))),
            .receive(option(C.optGo, infoRequest("disk"))),
        ])
        #expect(o.steps[1] == [optReply(C.optGo, C.errUnknown)])
        #expect(o.steps[2] == [optReply(C.optInfo, C.errUnknown)])
        #expect(o.steps[3] == goReplies())
    }

    @Test("malformed INFO/GO data gets ERR_INVALID and negotiation continues")
    func malformedInfo() {
        var longName = infoRequest("disk")
        longName[3] = 200 // name length beyond the data
        let malformed: [[UInt8]] = [
            [],                                    // shorter than 6 bytes
            [0, 0, 0, 0, 0],
            longName,
            Array(infoRequest("disk", [C.infoName]).dropLast(1)),   // request list cut short
            infoRequest("disk") + [0],             // trailing byte
            infoRequest("d\u{0}sk"),               // NUL in the name
            [0, 0, 0, 2, 0xC3, 0x28, 0, 0],        // invalid UTF-8
        ]
        var steps: [Step] = [.receive(clientFlags(C.fixedNewstyle))]
        for data in malformed { steps.append(.receive(option(C.optGo, data))) }
        steps.append(.receive(option(C.optGo, infoRequest("disk"))))
        let o = h.run(steps)
        for i in 1...malformed.count { #expect(o.steps[i] == [optReply(C.optGo, C.errInvalid)]) }
        #expect(o.steps.last?.last == .enterTransmission(disk))
    }

    @Test("bad option magic closes the connection")
    func badOptionMagic() {
        let o = h.run([.receive(clientFlags(C.fixedNewstyle)), .receive(option(C.optList, magic: 0x4948_4156_454F_5055))])
        #expect(o.steps[1].count == 1 && isClose(o.steps[1].last))
        #expect(o.state == .closed)
    }

    @Test("client flags without FIXED_NEWSTYLE, or with unknown bits, close the connection")
    func badClientFlags() {
        for flags: UInt32 in [0, C.noZeroes, C.fixedNewstyle | 4, 0x8000_0001] {
            let o = h.run([.receive(clientFlags(flags) + option(C.optList))])
            #expect(o.steps[0].count == 1 && isClose(o.steps[0].last))
            #expect(o.state == .closed)
        }
    }

    @Test("an oversized option is refused with ERR_TOO_BIG without buffering it, and the next option parses")
    func oversizedOption() {
        var c = h.connection()
        _ = c.start()
        _ = c.receive(clientFlags(C.fixedNewstyle)[...])
        let big = option(C.optGo, [UInt8](repeating: 0xAB, count: 1025))
        var actions: [NBDAction] = []
        for b in big {
            actions += c.receive([b])
            #expect(c.bufferedBytes <= 16)
        }
        #expect(actions == [optReply(C.optGo, C.errTooBig)])
        // An unknown option is skipped without buffering too.
        for b in option(77, [UInt8](repeating: 1, count: 900)) {
            actions += c.receive([b])
            #expect(c.bufferedBytes <= 16)
        }
        #expect(actions.last == optReply(77, C.errUnsup))
        #expect(c.receive(option(C.optGo, infoRequest("disk"))[...]).last == .enterTransmission(disk))
        // And the same through the chunking harness.
        let o = h.run([.receive(clientFlags(C.fixedNewstyle)), .receive(big)])
        #expect(o.steps[1] == [optReply(C.optGo, C.errTooBig)])
    }

    @Test("structured replies are acknowledged once; a repeat or data gets ERR_INVALID")
    func structuredNegotiation() {
        let o = h.run([
            .receive(clientFlags(C.fixedNewstyle)),
            .receive(option(C.optStructured, [1])),
            .receive(option(C.optStructured)),
            .receive(option(C.optStructured)),
        ])
        #expect(o.steps[1] == [optReply(C.optStructured, C.errInvalid)])
        #expect(o.steps[2] == [optReply(C.optStructured, C.repAck)])
        #expect(o.steps[3] == [optReply(C.optStructured, C.errInvalid)])
        #expect(o.structured)
    }

    @Test("options and requests pipelined in one chunk are all handled in order")
    func pipelined() {
        let bytes = goHandshake(structured: true) + request(C.read, cookie: 1, length: 8) + request(C.flush, cookie: 2)
        let o = h.run([.receive(bytes)])
        #expect(o.steps[0] == goReplies(structured: true)
            + [.execute(cookie: 1, .read(offset: 0, length: 8)), .execute(cookie: 2, .flush)])
        #expect(o.inFlight == 2)
    }
}
