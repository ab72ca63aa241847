import NIOCore
import TorusCore
import TorusNBD
import TorusRuntime
import TorusScenario

/// What the fuzzer feeds: each target takes any bytes and must neither trap nor hold more than
/// its limits; a broken invariant is a `preconditionFailure`, i.e. a crash the run reports.
enum FuzzTarget: String, CaseIterable {
    case nbd, peer, scenario, metadata

    /// Runs one input; true if the parser accepted it (a command executed, a frame or value
    /// decoded, a scenario loaded), to show how deep the mutations reach.
    func run(_ input: [UInt8]) -> Bool {
        switch self {
        case .nbd: Self.nbd(input)
        case .peer: Self.peer(input)
        case .scenario: (try? Scenario.parse(String(decoding: input, as: UTF8.self), path: "fuzz.yaml")) != nil
        case .metadata: Self.metadata(input)
        }
    }

    /// The NBD server state machine: the input is a client's byte stream, delivered in pieces
    /// whose sizes the bytes themselves pick; every command completes (reads with data).
    static func nbd(_ input: [UInt8]) -> Bool {
        var limits = NBDLimits()
        limits.requestBytesMax = 1 << 20
        let export = NBDExport(name: "vol", size: 64 << 20, multiConn: true, payloadChunkBytes: 64 << 10)
        let readOnly = NBDExport(name: "ro", size: 1 << 20, readOnly: true)
        // The first byte picks the TLS mode, so STARTTLS and the TLS_REQD refusals are fuzzed too
        // (the machine sees the stream after the handshake as it would decrypted).
        let tls = NBDTLSMode.allCases[Int(input.first ?? 0) % NBDTLSMode.allCases.count]
        var c = NBDServerConnection(limits: limits, tls: tls, lookup: { name in [export, readOnly].first { $0.name == name } },
                                    list: { [export, readOnly] })
        var actions = c.start()
        var at = 0, steps = 0, commands = 0
        while true {
            var executed: [(UInt64, NBDCommand)] = []
            for a in actions {
                switch a {
                case .execute(let cookie, let command): executed.append((cookie, command))
                case .close: return commands > 0
                default: break
                }
            }
            precondition(c.bufferedBytes <= limits.bufferedBytesMax, "NBD parser holds \(c.bufferedBytes) bytes")
            actions = []
            commands += executed.count
            for (cookie, command) in executed {
                let result: Result<[UInt8], NBDErrno>
                if case .read(_, let length) = command { result = cookie % 7 == 3 ? .failure(.EIO) : .success([UInt8](repeating: 0, count: length)) } else { result = .success([]) }
                actions += c.completed(cookie: cookie, result: result)
            }
            steps += 1
            precondition(steps < 1_000_000, "NBD connection did not settle")
            if !actions.isEmpty { continue }
            guard at < input.count else { return commands > 0 }
            let size = 1 + Int(input[at]) % 200
            actions = c.receive(input[at..<min(input.count, at + size)])
            at += size
        }
    }

    /// The peer protocol: frames decoded from the bytes must encode and decode to themselves.
    static func peer(_ input: [UInt8]) -> Bool {
        // Every other input gets its checksums mended, so mutations reach the payload decoder.
        var buffer = ByteBuffer(bytes: (input.last ?? 0) & 1 == 1 ? mendingChecksums(input) : input)
        var frames = 0
        do {
            while let frame = try PeerCodec.decode(from: &buffer) {
                var again = ByteBuffer()
                try PeerCodec.encode(frame, into: &again)
                let decoded = try PeerCodec.decode(from: &again)
                precondition(decoded == frame, "frame changed on re-encoding: \(frame)")
                frames += 1
            }
        } catch {}
        return frames > 0
    }

    /// Rewrites each frame's header and payload CRC-32C (24-byte header: magic, version, type,
    /// flags, little-endian payload length at 8, request id, then the CRC of the first 20 bytes).
    static func mendingChecksums(_ input: [UInt8]) -> [UInt8] {
        var b = input, at = 0
        func put(_ crc: UInt32, _ i: Int) { for k in 0..<4 { b[i + k] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(k))) } }
        while at + PeerCodec.headerSize <= b.count {
            put(CRC32C.checksum(b[at..<at + 20]), at + 20)
            let length = (0..<4).reduce(0) { $0 | Int(b[at + 8 + $1]) << (8 * $1) }
            let end = at + PeerCodec.headerSize + length
            guard end + PeerCodec.trailerSize <= b.count else { break }
            put(CRC32C.checksum(b[at + PeerCodec.headerSize..<end]), end)
            at = end + PeerCodec.trailerSize
        }
        return b
    }

    /// Values read from the metadata store and etcd's JSON replies: the first byte picks the decoder.
    static func metadata(_ input: [UInt8]) -> Bool {
        guard let kind = input.first else { return false }
        let body = Array(input.dropFirst())
        let txn = MetaTxn(compares: [MetaCompare(key: "/torus/volumes/v/epoch", result: .equal, target: .version(0))],
                          success: [.range(key: "/torus/volumes/", prefix: true), .put(key: "k", value: [1], lease: 0),
                                    .delete(key: "d", prefix: false)],
                          failure: [.range(key: "/torus/volumes/v/head", prefix: false)])
        switch kind % 10 {
        case 0: return VolumeInfo.decode(body) != nil
        case 1: return VolumeHead.decode(body) != nil
        case 2: return LogRecord.decode(body, volume: 1, epoch: 1, position: 1) != nil
        case 3: return BlockMapCodec.decodePage(body, volume: 1, page: 0) != nil
        case 4: return BlockMapCodec.decodeRoot(body, volume: 1) != nil
        case 5: return etcdReplyDecodes(.txn(txn), status: 200, body: body)
        case 6: return etcdReplyDecodes(.leaseGrant(ttlSeconds: 10, id: 0), status: 200, body: body)
        case 7: return etcdReplyDecodes(.leaseKeepAlive(id: 7), status: 200, body: body)
        case 8: return etcdReplyDecodes(.leaseTimeToLive(id: 7), status: 200, body: body)
        default: return etcdReplyDecodes(.txn(txn), status: 400 + Int(body.first ?? 0) % 200, body: body)
        }
    }
}
