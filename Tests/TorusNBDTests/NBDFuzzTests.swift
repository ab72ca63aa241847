import Testing
import TorusNBD

/// Marsaglia xorshift64: deterministic, seedable, good enough to shake a parser.
struct XorShift {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed &* 0x2545_F491_4F6C_DD1D }
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    mutating func chance(_ oneIn: Int) -> Bool { below(oneIn) == 0 }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
}

@Suite("NBD randomized robustness")
struct NBDFuzzTests {
    /// "disk" cuts write payloads every 256 bytes of offset, so the fuzzing covers the cutting.
    static let exports = [NBDExport(name: "disk", size: 64 << 10, multiConn: true, payloadChunkBytes: 256),
                          NBDExport(name: "ro", size: 4096, readOnly: true)]
    static let limits: NBDLimits = {
        var l = NBDLimits()
        l.requestBytesMax = 1024
        l.optionBytesMax = 256
        l.inFlightMax = 4
        return l
    }()

    static func connection(tls: NBDTLSMode = .off) -> NBDServerConnection {
        NBDServerConnection(limits: limits, tls: tls, lookup: { name in exports.first { $0.name == name } }, list: { exports })
    }

    /// A mostly valid client stream: flags, a few options, an export choice, some requests.
    static func validStream(_ rng: inout XorShift) -> [UInt8] {
        var b = clientFlags(rng.chance(25) ? UInt32(rng.below(8)) : C.fixedNewstyle | UInt32(rng.below(2)) * C.noZeroes)
        for _ in 0..<rng.below(4) {
            switch rng.below(12) {
            case 0: b += option(C.optList)
            case 1: b += option(C.optInfo, infoRequest(rng.pick(["disk", "ro", "x"]), [C.infoName, C.infoBlockSize]))
            case 2: b += option(UInt32(rng.below(40)), rng.bytes(rng.below(300)))
            case 3: b += option(C.optStructured)
            case 4: b += option(C.optGo, infoRequest("missing"))
            case 5: b += option(C.optGo, rng.bytes(rng.below(20)))
            case 6: b += option(C.optAbort)
            case 7: b += option(C.optStartTLS, rng.chance(4) ? rng.bytes(3) : [])
            default: b += option(C.optInfo, infoRequest("disk"))
            }
        }
        let name = rng.pick(["disk", "disk", "ro", "nope"])
        b += rng.chance(3) ? option(C.optExportName, Array(name.utf8)) : option(C.optGo, infoRequest(name, [C.infoBlockSize]))
        var cookie = UInt64(rng.below(3))
        for _ in 0..<rng.below(20) {
            cookie += rng.chance(12) ? 0 : 1 + UInt64(rng.below(3)) // sometimes reused
            let offset = rng.chance(8) ? rng.next() : UInt64(rng.below(70 << 10))
            let length = rng.chance(8) ? UInt32(truncatingIfNeeded: rng.next()) : UInt32(rng.below(rng.chance(10) ? 1100 : 1000))
            let flags = rng.chance(6) ? UInt16(truncatingIfNeeded: rng.next()) : UInt16(rng.below(4))
            switch rng.below(9) {
            case 0, 1: b += request(C.read, flags: flags, cookie: cookie, offset: offset, length: length)
            case 2, 3: b += writeRequest(cookie: cookie, offset: offset, payload: rng.bytes(rng.below(rng.chance(10) ? 1100 : 1000)), flags: flags)
            case 4: b += request(C.flush, flags: flags, cookie: cookie)
            case 5: b += request(C.trim, flags: flags, cookie: cookie, offset: offset, length: length)
            case 6: b += request(C.writeZeroes, flags: flags, cookie: cookie, offset: offset, length: length)
            case 7: b += request(UInt16(rng.below(12)), flags: flags, cookie: cookie, offset: offset, length: length)
            default: b += rng.chance(3) ? request(C.disc, cookie: cookie) : request(C.flush, cookie: cookie)
            }
        }
        return b
    }

    static func mutate(_ input: [UInt8], _ rng: inout XorShift) -> [UInt8] {
        var b = input
        for _ in 0..<rng.below(3) {
            guard !b.isEmpty else { break }
            // Mostly mutate late in the stream, so that negotiation usually survives.
            let i = rng.chance(4) ? rng.below(b.count) : b.count - 1 - rng.below(max(1, b.count / 3))
            switch rng.below(6) {
            case 0: b[i] ^= UInt8(1 << rng.below(8))
            case 1: b[i] = UInt8(truncatingIfNeeded: rng.next())
            case 2: b.insert(contentsOf: rng.bytes(1 + rng.below(16)), at: i)
            case 3: b.removeSubrange(i..<min(b.count, i + 1 + rng.below(16)))
            case 4: b.removeSubrange(i...)
            default: b.insert(contentsOf: b[i..<min(b.count, i + 1 + rng.below(64))], at: rng.below(b.count))
            }
        }
        return b
    }

    /// The cookie a reply refers to (at byte 8 in both simple replies and structured chunks).
    static func replyCookie(_ action: NBDAction?) -> UInt64? {
        var reply: [UInt8]?
        switch action {
        case .send(let b): reply = b
        case .sendReply(let header, _): reply = header
        default: break
        }
        guard let bytes = reply, bytes.count >= 16 else { return nil }
        let magic = UInt32(readBE(bytes, 0, 4))
        guard magic == C.simpleMagic || magic == C.structuredMagic else { return nil }
        return readBE(bytes, 8, 8)
    }

    /// Tracks outstanding work and checks every batch of actions against the invariants.
    struct Checker {
        var outstanding: [(cookie: UInt64, command: NBDCommand)] = []
        var export: NBDExport?

        mutating func check(_ actions: [NBDAction], _ c: NBDServerConnection, wasClosed: Bool) {
            if wasClosed { #expect(actions.isEmpty) }
            for (i, action) in actions.enumerated() {
                switch action {
                case .close:
                    #expect(i == actions.count - 1, "close must be the last action")
                    #expect(c.state == .closed)
                case .enterTransmission(let e):
                    #expect(export == nil)
                    export = e
                case .execute(let cookie, let command):
                    #expect(!outstanding.contains { $0.cookie == cookie }, "duplicate in-flight cookie")
                    outstanding.append((cookie, command))
                    validate(command)
                case .send(let bytes):
                    #expect(!bytes.isEmpty)
                case .startTLS:
                    #expect(c.tlsActive && export == nil)
                case .sendReply(let header, let parts):
                    #expect(header.count >= 16 && parts.contains { !$0.isEmpty })
                }
            }
            #expect(c.bufferedBytes <= limits.bufferedBytesMax)
            #expect(c.inFlight == outstanding.count)
            #expect(c.inFlight <= limits.inFlightMax)
        }

        func validate(_ command: NBDCommand) {
            guard let export else { Issue.record("execute before an export was selected"); return }
            func inRange(_ offset: UInt64, _ length: Int) -> Bool {
                length > 0 && offset <= export.size && UInt64(length) <= export.size - offset
            }
            switch command {
            case .read(let offset, let length):
                #expect(inRange(offset, length) && length <= limits.requestBytesMax)
            case .write(let offset, let chunks, _):
                let count = chunks.reduce(0) { $0 + $1.count }
                #expect(inRange(offset, count) && count <= limits.requestBytesMax && !export.readOnly)
                // Cut exactly where the offset is a multiple of payloadChunkBytes, nowhere else.
                let cut = UInt64(export.payloadChunkBytes)
                var at = offset
                for (i, chunk) in chunks.enumerated() {
                    #expect(!chunk.isEmpty)
                    at += UInt64(chunk.count)
                    if i < chunks.count - 1 {
                        #expect(cut > 0 && at % cut == 0, "cut at \(at)")
                    } else if cut > 0 {
                        #expect(chunk.count <= Int(cut) && (at % cut == 0 || at == offset + UInt64(count)))
                    }
                }
            case .trim(let offset, let length, _), .writeZeroes(let offset, let length, _, _):
                #expect(inRange(offset, length) && !export.readOnly)
            case .flush:
                break
            }
        }

        static func result(for command: NBDCommand, _ rng: inout XorShift) -> Result<[UInt8], NBDErrno> {
            if rng.chance(5) { return .failure(rng.pick([.EIO, .ENOSPC, .EPERM, .ENOMEM, .ESHUTDOWN])) }
            if case .read(_, let length) = command {
                return .success(rng.chance(10) ? rng.bytes(rng.below(length * 2)) : rng.bytes(length))
            }
            return .success([])
        }

        /// Completes the outstanding request at `index` and checks the reply.
        mutating func complete(_ index: Int, _ c: inout NBDServerConnection, _ rng: inout XorShift) {
            let (cookie, command) = outstanding.remove(at: index)
            let live = c.state == .transmission || c.state == .disconnecting
            let wasClosed = c.state == .closed
            let actions = c.completed(cookie: cookie, result: Self.result(for: command, &rng))
            if live { #expect(replyCookie(actions.first) == cookie) }
            check(actions, c, wasClosed: wasClosed)
        }
    }

    static func input(_ seed: UInt64) -> [UInt8] {
        var rng = XorShift(seed: seed)
        switch rng.below(8) {
        case 0: return rng.bytes(rng.below(400))
        case 1: return clientFlags(C.fixedNewstyle) + rng.bytes(rng.below(400))
        case 2: return validStream(&rng)
        default: return mutate(validStream(&rng), &rng)
        }
    }

    @Test("2,000 random and mutated streams never crash, never over-buffer and end closed or consistent")
    func randomized() {
        for seed in UInt64(1)...2000 {
            let bytes = Self.input(seed)
            var rng = XorShift(seed: seed ^ 0xABCD_EF01)
            var c = Self.connection(tls: NBDTLSMode.allCases[Int(seed % 3)])
            var checker = Checker()
            checker.check(c.start(), c, wasClosed: false)
            var rest = bytes[...]
            while !rest.isEmpty {
                let n = 1 + rng.below(rng.chance(4) ? 2000 : 40)
                let wasClosed = c.state == .closed
                checker.check(c.receive(rest.prefix(n)), c, wasClosed: wasClosed)
                rest = rest.dropFirst(n)
                while !checker.outstanding.isEmpty && rng.chance(2) {
                    checker.complete(rng.below(checker.outstanding.count), &c, &rng)
                }
            }
            while !checker.outstanding.isEmpty {
                checker.complete(rng.below(checker.outstanding.count), &c, &rng)
            }
            #expect(c.inFlight == 0)
            #expect([.awaitingClientFlags, .negotiating, .transmission, .closed].contains(c.state),
                    "seed \(seed) ended in \(c.state)")
            if c.state == .closed {
                #expect(c.receive([1, 2, 3]) == [])
            }
        }
    }

    @Test("random streams give identical actions whole, one byte at a time and from raw buffers")
    func chunkingEquivalence() {
        func run(_ bytes: [UInt8], chunk: Int, raw: Bool = false) -> [NBDAction] {
            var c = Self.connection()
            var actions = c.start()
            var rest = bytes[...]
            while !rest.isEmpty {
                if raw {
                    // As the NIO handler feeds it: a pointer valid only during the call.
                    let copy = Array(rest.prefix(chunk))
                    actions += copy.withUnsafeBytes { c.receive($0) }
                } else {
                    actions += c.receive(rest.prefix(chunk))
                }
                rest = rest.dropFirst(chunk)
            }
            // Complete everything in execution order (completions may release parked requests).
            var index = 0
            while index < actions.count {
                if case .execute(let cookie, let command) = actions[index] {
                    var result = Result<[UInt8], NBDErrno>.success([])
                    if case .read(_, let length) = command { result = .success(pattern(length, seed: Int(cookie % 251))) }
                    actions += c.completed(cookie: cookie, result: result)
                }
                index += 1
            }
            return actions
        }
        for seed in UInt64(1)...600 {
            let bytes = Self.input(seed &+ 10_000)
            let whole = run(bytes, chunk: max(bytes.count, 1))
            #expect(run(bytes, chunk: 1) == whole, "seed \(seed)")
            #expect(run(bytes, chunk: 13) == whole, "seed \(seed)")
            #expect(run(bytes, chunk: 13, raw: true) == whole, "seed \(seed), from raw buffers")
            #expect(run(bytes, chunk: max(bytes.count, 1), raw: true) == whole, "seed \(seed), one raw buffer")
        }
    }
}
