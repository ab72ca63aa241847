import Testing
import TorusNBD

/// `NBD_OPT_STARTTLS` in the three modes of the spec's "TLS support" section.
@Suite("NBD STARTTLS")
struct NBDTLSTests {
    @Test("allow: STARTTLS is acknowledged and asks for the handshake; options go on after it")
    func allowUpgrades() {
        var h = Harness()
        h.tls = .allow
        let o = h.run([
            .receive(clientFlags(C.fixedNewstyle | C.noZeroes)),
            .receive(option(C.optStartTLS)),
            .receive(option(C.optStartTLS)),
            .receive(option(C.optGo, infoRequest("disk"))),
        ])
        #expect(o.steps[1] == [optReply(C.optStartTLS, C.repAck), .startTLS])
        // "If the server receives NBD_OPT_STARTTLS when TLS has already been negotiated, it
        // MUST reply with NBD_REP_ERR_INVALID."
        #expect(o.steps[2] == [optReply(C.optStartTLS, C.errInvalid)])
        #expect(o.steps[3] == goReplies())
        #expect(o.state == .transmission)
    }

    @Test("allow: a client may stay in clear")
    func allowWithoutUpgrade() {
        var h = Harness()
        h.tls = .allow
        let o = h.run([.receive(goHandshake())])
        #expect(o.steps[0] == goReplies())
    }

    @Test("require: every option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD until the upgrade")
    func requireRefusesOptions() {
        var h = Harness()
        h.tls = .require
        let o = h.run([
            .receive(clientFlags(C.fixedNewstyle)),
            .receive(option(C.optList)),
            .receive(option(C.optInfo, infoRequest("disk"))),
            .receive(option(C.optGo, infoRequest("disk"))),
            .receive(option(C.optStructured)),
            .receive(option(0x1234, [1, 2, 3])),
            .receive(option(C.optStartTLS, [7])),
            .receive(option(C.optStartTLS)),
            .receive(option(C.optList)),
            .receive(option(C.optGo, infoRequest("disk"))),
        ])
        for (step, opt) in [(1, C.optList), (2, C.optInfo), (3, C.optGo), (4, C.optStructured), (5, UInt32(0x1234))] {
            #expect(o.steps[step] == [optReply(opt, C.errTLSRequired)], "step \(step)")
        }
        // STARTTLS with data: NBD_REP_ERR_INVALID, and still in clear.
        #expect(o.steps[6] == [optReply(C.optStartTLS, C.errInvalid)])
        #expect(o.steps[7] == [optReply(C.optStartTLS, C.repAck), .startTLS])
        #expect(o.steps[8].last == optReply(C.optList, C.repAck))
        #expect(o.steps[9] == goReplies())
        #expect(o.state == .transmission)
    }

    @Test("require: NBD_OPT_EXPORT_NAME before the upgrade ends the session; ABORT is acknowledged")
    func requireExportNameAndAbort() {
        var h = Harness()
        h.tls = .require
        let name = h.run([.receive(clientFlags(C.fixedNewstyle)), .receive(option(C.optExportName, Array("disk".utf8)))])
        #expect(name.steps[1].count == 1 && isClose(name.steps[1].last))
        #expect(name.state == .closed)
        let abort = h.run([.receive(clientFlags(C.fixedNewstyle)), .receive(option(C.optAbort))])
        #expect(abort.steps[1].first == optReply(C.optAbort, C.repAck))
        #expect(isClose(abort.steps[1].last))
    }

    @Test("bytes in clear right behind STARTTLS close the connection")
    func cleartextAfterStartTLS() {
        var h = Harness()
        h.tls = .require
        var c = h.connection()
        _ = c.start()
        _ = c.receive(clientFlags(C.fixedNewstyle)[...])
        let actions = c.receive((option(C.optStartTLS) + option(C.optList))[...])
        #expect(actions.prefix(2) == [optReply(C.optStartTLS, C.repAck), .startTLS])
        #expect(actions.count == 3 && isClose(actions.last))
        #expect(c.state == .closed)
    }

    @Test("off: STARTTLS is unsupported (NOTLS mode), and nothing is ever TLS_REQD")
    func offIsUnsupported() {
        let o = Harness().run([.receive(clientFlags(C.fixedNewstyle)), .receive(option(C.optStartTLS)),
                               .receive(option(C.optList))])
        #expect(o.steps[1] == [optReply(C.optStartTLS, C.errUnsup)])
        #expect(o.steps[2].last == optReply(C.optList, C.repAck))
    }
}
