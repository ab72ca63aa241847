import Testing
import TorusNBD

@Suite("NBD transmission phase")
struct NBDTransmissionTests {
    let h = Harness()

    /// Runs a script that starts with the GO handshake for `export`; returns the outcome with the
    /// handshake step dropped.
    func session(_ steps: [Step], export: String = "disk", structured: Bool = false,
                 sourceLocation: SourceLocation = #_sourceLocation) -> Outcome {
        var o = h.run([.receive(goHandshake(export, structured: structured))] + steps, sourceLocation: sourceLocation)
        #expect(o.steps.first?.last == .enterTransmission(export == "disk" ? disk : readOnlyDisk),
                sourceLocation: sourceLocation)
        o.steps.removeFirst()
        return o
    }

    @Test("READ, WRITE, FLUSH, TRIM and WRITE_ZEROES parse with their FUA and NO_HOLE flags")
    func parsing() {
        let payload = pattern(100)
        let o = session([
            .receive(request(C.read, cookie: 1, offset: 4096, length: 512)),
            .receive(request(C.read, flags: C.fua, cookie: 2, offset: 0, length: 1)),
            .receive(writeRequest(cookie: 3, offset: 10, payload: payload)),
            .receive(writeRequest(cookie: 4, offset: 1000, payload: payload, flags: C.fua)),
            .receive(request(C.flush, cookie: 5) + request(C.flush, flags: C.fua, cookie: 6)),
            .receive(request(C.trim, cookie: 7, offset: 8192, length: 4096)),
            .receive(request(C.trim, flags: C.fua, cookie: 8, offset: 0, length: 1 << 20)),
            .receive(request(C.writeZeroes, cookie: 9, offset: 512, length: 1024)),
            .receive(request(C.writeZeroes, flags: C.fua | C.noHole, cookie: 10, offset: 0, length: 4096)),
            .receive(request(C.writeZeroes, flags: C.noHole, cookie: 0xFFFF_FFFF_FFFF_FFFF, offset: 0, length: 1)),
        ])
        #expect(o.steps == [
            [.execute(cookie: 1, .read(offset: 4096, length: 512))],
            [.execute(cookie: 2, .read(offset: 0, length: 1))],
            [.execute(cookie: 3, .write(offset: 10, data: payload, fua: false))],
            [.execute(cookie: 4, .write(offset: 1000, data: payload, fua: true))],
            [.execute(cookie: 5, .flush), .execute(cookie: 6, .flush)],
            [.execute(cookie: 7, .trim(offset: 8192, length: 4096, fua: false))],
            [.execute(cookie: 8, .trim(offset: 0, length: 1 << 20, fua: true))],
            [.execute(cookie: 9, .writeZeroes(offset: 512, length: 1024, fua: false, mayTrim: true))],
            [.execute(cookie: 10, .writeZeroes(offset: 0, length: 4096, fua: true, mayTrim: false))],
            [.execute(cookie: 0xFFFF_FFFF_FFFF_FFFF, .writeZeroes(offset: 0, length: 1, fua: false, mayTrim: false))],
        ])
        #expect(o.inFlight == 11)
    }

    @Test("write payloads are cut at multiples of the export's payloadChunkBytes, however the bytes arrive")
    func payloadCutAtChunkBoundaries() {
        let blocky = NBDExport(name: "blocky", size: 1 << 20, payloadChunkBytes: 4096)
        let payload = pattern(3 * 4096 + 100)
        let steps: [Step] = [
            .receive(goHandshake("blocky")),
            .receive(writeRequest(cookie: 1, offset: 4096 - 50, payload: payload)),  // unaligned start
            .receive(writeRequest(cookie: 2, offset: 8192, payload: Array(payload[..<8192]))),  // two whole blocks
            .receive(writeRequest(cookie: 3, offset: 4096 + 1, payload: Array(payload[..<10]))),  // inside one block
        ]
        let expected: [NBDAction] = [
            .execute(cookie: 1, .write(offset: 4096 - 50, chunks: [Array(payload[..<50]), Array(payload[50..<4146]),
                                                                   Array(payload[4146..<8242]), Array(payload[8242..<12338]),
                                                                   Array(payload[12338...])], fua: false)),
            .execute(cookie: 2, .write(offset: 8192, chunks: [Array(payload[..<4096]), Array(payload[4096..<8192])], fua: false)),
            .execute(cookie: 3, .write(offset: 4097, chunks: [Array(payload[..<10])], fua: false)),
        ]
        for chunking in [[0], [1], [7], [4096], [28, 4096, 3]] {
            let o = Harness(exports: [blocky]).run(steps, chunks: chunking)
            #expect(Array(o.steps.dropFirst().joined()) == expected, "fed in pieces of \(chunking)")
        }
    }

    @Test("read data completed as parts is replied from the parts, not joined; parts of the wrong total get EIO")
    func readReplyFromParts() {
        var c = h.connection()
        _ = c.start()
        _ = c.receive(goHandshake("disk")[...])
        _ = c.receive((request(C.read, cookie: 1, offset: 0, length: 10) + request(C.read, cookie: 2, offset: 0, length: 10))[...])
        let a: [UInt8] = [1, 2, 3, 4], b: [UInt8] = [5, 6, 7, 8, 9, 10, 11]
        let reply = c.completed(cookie: 1, parts: .success([a[...], b[..<6]]))
        guard case .sendReply(let header, let parts)? = reply.first, reply.count == 1 else {
            Issue.record("expected one reply, got \(reply)")
            return
        }
        #expect(parts == [a[...], b[..<6]])
        #expect(header + parts.flatMap { $0 } == NBDTransmissionTests.bytes(of: simpleReply(1, data: Array(1...10))))
        #expect(c.completed(cookie: 2, parts: .success([a[...]])) == [simpleReply(2, error: NBDErrno.EIO.rawValue)])
    }

    static func bytes(of action: NBDAction) -> [UInt8] {
        switch action {
        case .send(let bytes): bytes
        case .sendReply(let header, let parts): header + parts.flatMap { $0 }
        default: []
        }
    }

    @Test("out-of-order completions produce replies in completion order with the right cookies")
    func outOfOrder() {
        let o = session([
            .receive(request(C.read, cookie: 1, offset: 0, length: 3)
                     + writeRequest(cookie: 2, offset: 0, payload: [1, 2])
                     + request(C.flush, cookie: 3)),
            .complete(3, .success([])),
            .complete(1, .success([7, 7, 7])),
            .complete(2, .success([])),
            .complete(2, .success([])), // already completed: ignored
        ])
        #expect(o.steps[1] == [simpleReply(3)])
        #expect(o.steps[2] == [simpleReply(1, data: [7, 7, 7])])
        #expect(o.steps[3] == [simpleReply(2)])
        #expect(o.steps[4] == [])
        #expect(o.inFlight == 0)
    }

    @Test("error replies carry no payload, and a read returning the wrong byte count is answered EIO")
    func errorReplies() {
        let o = session([
            .receive(request(C.read, cookie: 1, length: 8) + request(C.read, cookie: 2, length: 8)
                     + writeRequest(cookie: 3, offset: 0, payload: [1])),
            .complete(1, .failure(.EIO)),
            .complete(2, .success([1, 2, 3])),
            .complete(3, .failure(.ENOSPC)),
        ])
        #expect(o.steps[1] == [simpleReply(1, error: 5)])
        #expect(o.steps[2] == [simpleReply(2, error: 5)])
        #expect(o.steps[3] == [simpleReply(3, error: 28)])
        if case .send(let bytes) = o.steps[1].first { #expect(bytes.count == 16) }
    }

    @Test("out-of-range READ and TRIM get EINVAL, WRITE and WRITE_ZEROES ENOSPC; the connection keeps working")
    func outOfRange() {
        let size: UInt64 = 1 << 20
        let o = session([
            .receive(request(C.read, cookie: 1, offset: size - 4, length: 8)),
            .receive(writeRequest(cookie: 2, offset: size - 1, payload: pattern(300))),
            .receive(request(C.read, cookie: 3, offset: UInt64.max - 2, length: 8)), // offset + length overflows
            .receive(request(C.trim, cookie: 4, offset: size, length: 1)),
            .receive(request(C.writeZeroes, cookie: 5, offset: size + 1, length: 0)),
            .receive(writeRequest(cookie: 6, offset: UInt64.max, payload: [1, 2])),
            .receive(request(C.read, cookie: 7, offset: size - 4, length: 4)), // exactly at the end: fine
        ])
        #expect(o.steps == [
            [simpleReply(1, error: 22)],
            [simpleReply(2, error: 28)],
            [simpleReply(3, error: 22)],
            [simpleReply(4, error: 22)],
            [simpleReply(5, error: 28)],
            [simpleReply(6, error: 28)],
            [.execute(cookie: 7, .read(offset: size - 4, length: 4))],
        ])
    }

    @Test("a rejected write's payload is skipped without buffering and the error follows it")
    func writePayloadSkipped() {
        var c = h.connection()
        _ = c.start()
        _ = c.receive(goHandshake("ro")[...])
        var actions: [NBDAction] = []
        for b in writeRequest(cookie: 9, offset: 0, payload: pattern(5000)) {
            #expect(actions.isEmpty)
            actions += c.receive([b])
            #expect(c.bufferedBytes < 28)
        }
        #expect(actions == [simpleReply(9, error: 1)])
        #expect(c.receive(request(C.read, cookie: 10, length: 4)[...]) == [.execute(cookie: 10, .read(offset: 0, length: 4))])
    }

    @Test("unknown commands get EINVAL and parsing continues")
    func unknownCommand() {
        let o = session([
            .receive(request(C.cache, cookie: 1, length: 4096)),
            .receive(request(C.blockStatus, cookie: 2, length: 4096)),
            .receive(request(0xBEEF, flags: 0xFFFF, cookie: 3, offset: 12, length: 0xFFFF_FFFF)),
            .receive(request(C.flush, cookie: 4)),
        ])
        #expect(o.steps == [[simpleReply(1, error: 22)], [simpleReply(2, error: 22)], [simpleReply(3, error: 22)],
                            [.execute(cookie: 4, .flush)]])
    }

    @Test("unknown or inapplicable command flags get EINVAL; FLUSH with an offset or length gets EINVAL")
    func badFlags() {
        let o = session([
            .receive(request(C.read, flags: C.df, cookie: 1, length: 4)),
            .receive(writeRequest(cookie: 2, offset: 0, payload: [1, 2, 3], flags: C.noHole)),
            .receive(request(C.trim, flags: C.noHole, cookie: 3, length: 4)),
            .receive(request(C.writeZeroes, flags: 0x10, cookie: 4, length: 4)), // FAST_ZERO, not advertised
            .receive(request(C.flush, cookie: 5, offset: 0, length: 4)),
            .receive(request(C.flush, cookie: 6, offset: 8, length: 0)),
            .receive(request(C.read, flags: 0x8000, cookie: 7, length: 4)),
            .receive(request(C.read, cookie: 8, length: 4)),
        ])
        for i in 0..<7 { #expect(o.steps[i] == [simpleReply(UInt64(i + 1), error: 22)]) }
        #expect(o.steps[7] == [.execute(cookie: 8, .read(offset: 0, length: 4))])
    }

    @Test("writes, trims and write-zeroes to a read-only export get EPERM; reads still work")
    func readOnly() {
        let o = session([
            .receive(writeRequest(cookie: 1, offset: 0, payload: pattern(10))),
            .receive(request(C.trim, cookie: 2, length: 10)),
            .receive(request(C.writeZeroes, cookie: 3, length: 10)),
            .receive(request(C.read, cookie: 4, length: 10)),
            .receive(request(C.flush, cookie: 5)),
        ], export: "ro")
        #expect(o.steps == [[simpleReply(1, error: 1)], [simpleReply(2, error: 1)], [simpleReply(3, error: 1)],
                            [.execute(cookie: 4, .read(offset: 0, length: 10))], [.execute(cookie: 5, .flush)]])
    }

    @Test("an oversized read gets EINVAL (an error chunk with structured replies) and the connection continues")
    func oversizedRead() {
        for structured in [false, true] {
            let o = session([
                .receive(request(C.read, cookie: 1, length: (64 << 10) + 1)),
                .receive(request(C.read, cookie: 2, length: 64 << 10)),
            ], structured: structured)
            #expect(o.steps[0] == [structured ? errorChunk(1, .EINVAL) : simpleReply(1, error: 22)])
            #expect(o.steps[1] == [.execute(cookie: 2, .read(offset: 0, length: 64 << 10))])
        }
    }

    @Test("a write payload larger than requestBytesMax closes the connection; large trims pass through")
    func oversizedWrite() {
        let o = session([
            .receive(request(C.trim, cookie: 1, length: 0xFFFF_F000)),
            .receive(request(C.write, cookie: 2, length: (64 << 10) + 1)),
            .receive(request(C.read, cookie: 3, length: 1)),
        ], export: "disk")
        #expect(o.steps[0] == [simpleReply(1, error: 22)]) // beyond the 1 MiB export
        #expect(o.steps[1].count == 1 && isClose(o.steps[1].last))
        #expect(o.steps[2] == [])
        let big = Harness(exports: [NBDExport(name: "disk", size: 1 << 40)]).run([
            .receive(goHandshake() + request(C.trim, cookie: 1, length: 0xFFFF_F000)
                     + request(C.writeZeroes, cookie: 2, offset: 1 << 32, length: 0xFFFF_FFFF)),
        ])
        #expect(Array(big.steps[0].suffix(2)) == [.execute(cookie: 1, .trim(offset: 0, length: 0xFFFF_F000, fua: false)),
                                                  .execute(cookie: 2, .writeZeroes(offset: 1 << 32, length: 0xFFFF_FFFF, fua: false, mayTrim: true))])
    }

    @Test("zero-length requests are validated and answered at once without executing")
    func zeroLength() {
        let o = session([
            .receive(request(C.read, cookie: 1, offset: 1 << 20, length: 0)),
            .receive(writeRequest(cookie: 2, offset: 5, payload: [])),
            .receive(request(C.trim, cookie: 3, length: 0)),
            .receive(request(C.writeZeroes, cookie: 4, length: 0)),
            .receive(request(C.read, cookie: 5, offset: (1 << 20) + 1, length: 0)),
        ])
        #expect(o.steps == [[simpleReply(1)], [simpleReply(2)], [simpleReply(3)], [simpleReply(4)], [simpleReply(5, error: 22)]])
        let s = session([.receive(request(C.read, cookie: 1, length: 0))], structured: true)
        #expect(s.steps[0] == [chunk(1, type: 0, payload: [])])
    }

    @Test("structured replies: reads answer with one final OFFSET_DATA chunk, errors with ERROR chunks")
    func structuredReads() {
        let o = session([
            .receive(request(C.read, cookie: 1, offset: 4096, length: 4) + request(C.read, cookie: 2, length: 4)
                     + writeRequest(cookie: 3, offset: 0, payload: [1]) + request(C.flush, cookie: 4)),
            .complete(1, .success([1, 2, 3, 4])),
            .complete(2, .failure(.EIO)),
            .complete(3, .success([])),
            .complete(4, .failure(.ENOSPC)),
            .receive(request(C.read, cookie: 5, offset: 1 << 20, length: 1) + request(77, cookie: 6)),
        ], structured: true)
        #expect(o.steps[1] == [dataChunk(1, offset: 4096, data: [1, 2, 3, 4])])
        if case .send(let b) = o.steps[1].first {
            #expect(b == [0x66, 0x8E, 0x33, 0xEF, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 12,
                          0, 0, 0, 0, 0, 0, 0x10, 0, 1, 2, 3, 4])
        }
        #expect(o.steps[2] == [errorChunk(2, .EIO)])
        #expect(o.steps[3] == [simpleReply(3)])
        #expect(o.steps[4] == [errorChunk(4, .ENOSPC)])
        #expect(o.steps[5] == [errorChunk(5, .EINVAL), errorChunk(6, .EINVAL)])
    }

    @Test("DISC closes once in-flight requests finish, and nothing after it is parsed")
    func disconnect() {
        let o = session([
            .receive(request(C.read, cookie: 1, length: 4) + request(C.flush, cookie: 2)
                     + request(C.disc, cookie: 3) + request(C.read, cookie: 4, length: 4)),
            .receive(request(C.read, cookie: 5, length: 4)),
            .complete(2, .success([])),
            .complete(1, .success([0, 0, 0, 0])),
            .complete(1, .success([0, 0, 0, 0])),
        ])
        #expect(o.steps[0] == [.execute(cookie: 1, .read(offset: 0, length: 4)), .execute(cookie: 2, .flush)])
        #expect(o.steps[1] == [])
        #expect(o.steps[2] == [simpleReply(2)])
        #expect(o.steps[3].first == simpleReply(1, data: [0, 0, 0, 0]))
        #expect(o.steps[3].count == 2 && isClose(o.steps[3].last))
        #expect(o.steps[4] == [])
        #expect(o.state == .closed)
        let idle = session([.receive(request(C.disc, cookie: 1) + request(C.read, cookie: 2, length: 1))])
        #expect(idle.steps[0].count == 1 && isClose(idle.steps[0].last))
    }

    @Test("bad request magic closes only this connection")
    func badRequestMagic() {
        let o = session([
            .receive(request(C.read, cookie: 1, length: 4)),
            .receive(request(C.read, cookie: 2, length: 4, magic: 0x2560_9514)),
            .complete(1, .success([1, 2, 3, 4])),
        ])
        #expect(o.steps[1].count == 1 && isClose(o.steps[1].last))
        #expect(o.steps[2] == [])
        #expect(o.state == .closed)
        #expect(o.inFlight == 0)
    }

    @Test("a cookie still in flight closes the connection; once completed it may be reused")
    func cookieReuse() {
        let o = session([
            .receive(request(C.read, cookie: 1, length: 4)),
            .complete(1, .success([1, 1, 1, 1])),
            .receive(request(C.read, cookie: 1, length: 2)),
            .receive(request(C.flush, cookie: 1)),
        ])
        #expect(o.steps[2] == [.execute(cookie: 1, .read(offset: 0, length: 2))])
        #expect(o.steps[3].count == 1 && isClose(o.steps[3].last))
    }

    @Test("at the in-flight limit parsing pauses and resumes as requests complete")
    func inFlightLimit() {
        var limits = smallLimits()
        limits.inFlightMax = 2
        let lh = Harness(limits: limits)
        let reqs = request(C.read, cookie: 1, length: 1) + request(C.read, cookie: 2, length: 1)
            + writeRequest(cookie: 3, offset: 0, payload: [5, 6]) + request(C.read, cookie: 4, length: 1)
        let o = lh.run([
            .receive(goHandshake() + reqs),
            .complete(2, .success([2])),
            .complete(1, .success([1])),
        ])
        #expect(Array(o.steps[0].suffix(2)) == [.execute(cookie: 1, .read(offset: 0, length: 1)),
                                                 .execute(cookie: 2, .read(offset: 0, length: 1))])
        #expect(o.steps[1] == [simpleReply(2, data: [2]), .execute(cookie: 3, .write(offset: 0, data: [5, 6], fua: false))])
        #expect(o.steps[2] == [simpleReply(1, data: [1]), .execute(cookie: 4, .read(offset: 0, length: 1))])
        #expect(o.inFlight == 2)

        var c = lh.connection()
        _ = c.start()
        _ = c.receive((goHandshake() + request(C.read, cookie: 1, length: 1) + request(C.read, cookie: 2, length: 1))[...])
        #expect(!c.wantsInput)
        // A driver that ignores back-pressure is cut off once the parked bytes exceed the bound.
        var closed = false
        for _ in 0..<(limits.bufferedBytesMax / 1000 + 2) where !closed {
            closed = isClose(c.receive([UInt8](repeating: 0, count: 1000)[...]).last)
            #expect(c.bufferedBytes <= limits.bufferedBytesMax)
        }
        #expect(closed)
        #expect(c.state == .closed)
    }

    @Test("at the in-flight byte limit parsing pauses too: big reads cannot pin more than the limit and one request")
    func inFlightByteLimit() {
        var limits = smallLimits()
        limits.inFlightBytesMax = 100 << 10  // with requestBytesMax 64 KiB: two reads of 60 KiB reach it
        let lh = Harness(limits: limits)
        let big = 60 << 10
        let reqs = request(C.read, cookie: 1, length: UInt32(big)) + request(C.read, cookie: 2, length: UInt32(big))
            + request(C.read, cookie: 3, length: UInt32(big)) + request(C.flush, cookie: 4)
        let o = lh.run([
            .receive(goHandshake() + reqs),
            .complete(1, .success([UInt8](repeating: 1, count: big))),
            .complete(2, .success([UInt8](repeating: 2, count: big))),
        ])
        #expect(Array(o.steps[0].suffix(2)) == [.execute(cookie: 1, .read(offset: 0, length: big)),
                                                 .execute(cookie: 2, .read(offset: 0, length: big))])
        // Cookie 1 done: 60 KiB held, under the limit, so read 3 runs; it brings 120 KiB, so the flush waits.
        #expect(o.steps[1].last == .execute(cookie: 3, .read(offset: 0, length: big)))
        #expect(o.steps[2].last == .execute(cookie: 4, .flush))
        #expect(o.inFlight == 2)

        var c = lh.connection()
        _ = c.start()
        _ = c.receive((goHandshake() + reqs)[...])
        #expect(c.heldBytes == 2 * big && c.inFlight == 2 && !c.wantsInput)
        _ = c.completed(cookie: 2, result: .success([UInt8](repeating: 2, count: big)))
        #expect(c.heldBytes == 2 * big && c.inFlight == 2)  // read 3 took its place
        _ = c.completed(cookie: 1, result: .failure(.EIO))
        _ = c.completed(cookie: 3, result: .success([UInt8](repeating: 3, count: big)))
        #expect(c.heldBytes == 0 && c.wantsInput)
    }
}
