import Testing
import TorusNBD

/// Client-side encoders and expected-reply builders, written independently of the library's
/// encoders so the tests check the wire format rather than echo it.
enum C {
    static let nbdMagic: UInt64 = 0x4E42_444D_4147_4943
    static let ihaveopt: UInt64 = 0x4948_4156_454F_5054
    static let optReplyMagic: UInt64 = 0x3_E889_0455_65A9
    static let requestMagic: UInt32 = 0x2560_9513
    static let simpleMagic: UInt32 = 0x6744_6698
    static let structuredMagic: UInt32 = 0x668E_33EF

    static let fixedNewstyle: UInt32 = 1, noZeroes: UInt32 = 2

    static let optExportName: UInt32 = 1, optAbort: UInt32 = 2, optList: UInt32 = 3, optStartTLS: UInt32 = 5
    static let optInfo: UInt32 = 6, optGo: UInt32 = 7, optStructured: UInt32 = 8

    static let repAck: UInt32 = 1, repServer: UInt32 = 2, repInfo: UInt32 = 3
    static let errUnsup: UInt32 = 0x8000_0001, errInvalid: UInt32 = 0x8000_0003
    static let errUnknown: UInt32 = 0x8000_0006, errTooBig: UInt32 = 0x8000_0009
    static let errTLSRequired: UInt32 = 0x8000_0005

    static let infoExport: UInt16 = 0, infoName: UInt16 = 1, infoDescription: UInt16 = 2, infoBlockSize: UInt16 = 3

    static let read: UInt16 = 0, write: UInt16 = 1, disc: UInt16 = 2, flush: UInt16 = 3
    static let trim: UInt16 = 4, cache: UInt16 = 5, writeZeroes: UInt16 = 6, blockStatus: UInt16 = 7
    static let fua: UInt16 = 1, noHole: UInt16 = 2, df: UInt16 = 4

    /// HAS_FLAGS | SEND_FLUSH | SEND_FUA | SEND_TRIM | SEND_WRITE_ZEROES
    static let baseFlags: UInt16 = 0x0001 | 0x0004 | 0x0008 | 0x0020 | 0x0040
    static let readOnlyFlag: UInt16 = 0x0002, multiConnFlag: UInt16 = 0x0100
}

/// Big-endian byte builder.
struct BE {
    var bytes: [UInt8] = []
    @discardableResult mutating func u16(_ v: UInt16) -> Self { bytes += [UInt8(v >> 8), UInt8(v & 0xFF)]; return self }
    @discardableResult mutating func u32(_ v: UInt32) -> Self { u16(UInt16(v >> 16)); return u16(UInt16(v & 0xFFFF)) }
    @discardableResult mutating func u64(_ v: UInt64) -> Self { u32(UInt32(v >> 32)); return u32(UInt32(v & 0xFFFF_FFFF)) }
    @discardableResult mutating func raw(_ b: [UInt8]) -> Self { bytes += b; return self }
}

func be32(_ v: UInt32) -> [UInt8] { var w = BE(); w.u32(v); return w.bytes }

func readBE(_ bytes: [UInt8], _ at: Int, _ size: Int) -> UInt64 {
    (at..<(at + size)).reduce(0) { $0 << 8 | UInt64(bytes[$1]) }
}

// MARK: Client messages

func clientFlags(_ flags: UInt32) -> [UInt8] { be32(flags) }

func option(_ option: UInt32, _ data: [UInt8] = [], magic: UInt64 = C.ihaveopt) -> [UInt8] {
    var w = BE()
    w.u64(magic); w.u32(option); w.u32(UInt32(data.count)); w.raw(data)
    return w.bytes
}

/// NBD_OPT_INFO / NBD_OPT_GO data.
func infoRequest(_ name: String, _ requests: [UInt16] = []) -> [UInt8] {
    var w = BE()
    let n = Array(name.utf8)
    w.u32(UInt32(n.count)); w.raw(n); w.u16(UInt16(requests.count))
    for r in requests { w.u16(r) }
    return w.bytes
}

func request(_ type: UInt16, flags: UInt16 = 0, cookie: UInt64, offset: UInt64 = 0, length: UInt32 = 0,
             payload: [UInt8] = [], magic: UInt32 = C.requestMagic) -> [UInt8] {
    var w = BE()
    w.u32(magic); w.u16(flags); w.u16(type); w.u64(cookie); w.u64(offset); w.u32(length); w.raw(payload)
    return w.bytes
}

func writeRequest(cookie: UInt64, offset: UInt64, payload: [UInt8], flags: UInt16 = 0) -> [UInt8] {
    request(C.write, flags: flags, cookie: cookie, offset: offset, length: UInt32(payload.count), payload: payload)
}

// MARK: Expected server messages

func greeting() -> [UInt8] { var w = BE(); w.u64(C.nbdMagic); w.u64(C.ihaveopt); w.u16(3); return w.bytes }

func optReply(_ option: UInt32, _ type: UInt32, _ data: [UInt8] = []) -> NBDAction {
    var w = BE()
    w.u64(C.optReplyMagic); w.u32(option); w.u32(type); w.u32(UInt32(data.count)); w.raw(data)
    return .send(w.bytes)
}

func infoExportReply(_ option: UInt32, size: UInt64, flags: UInt16) -> NBDAction {
    var w = BE(); w.u16(C.infoExport); w.u64(size); w.u16(flags)
    return optReply(option, C.repInfo, w.bytes)
}

func infoStringReply(_ option: UInt32, _ type: UInt16, _ s: String) -> NBDAction {
    var w = BE(); w.u16(type); w.raw(Array(s.utf8))
    return optReply(option, C.repInfo, w.bytes)
}

func infoBlockSizeReply(_ option: UInt32, max: UInt32) -> NBDAction {
    var w = BE(); w.u16(C.infoBlockSize); w.u32(1); w.u32(4096); w.u32(max)
    return optReply(option, C.repInfo, w.bytes)
}

func simpleReply(_ cookie: UInt64, error: UInt32 = 0, data: [UInt8] = []) -> NBDAction {
    var w = BE(); w.u32(C.simpleMagic); w.u32(error); w.u64(cookie); w.raw(data)
    return .send(w.bytes)
}

func chunk(_ cookie: UInt64, type: UInt16, flags: UInt16 = 1, payload: [UInt8]) -> NBDAction {
    var w = BE()
    w.u32(C.structuredMagic); w.u16(flags); w.u16(type); w.u64(cookie); w.u32(UInt32(payload.count)); w.raw(payload)
    return .send(w.bytes)
}

func dataChunk(_ cookie: UInt64, offset: UInt64, data: [UInt8]) -> NBDAction {
    var w = BE(); w.u64(offset); w.raw(data)
    return chunk(cookie, type: 1, payload: w.bytes)
}

func errorChunk(_ cookie: UInt64, _ errno: NBDErrno) -> NBDAction {
    var w = BE(); w.u32(errno.rawValue); w.u16(0)
    return chunk(cookie, type: 0x8001, payload: w.bytes)
}

func pattern(_ count: Int, seed: Int = 1) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed) } }

// MARK: Harness

enum Step {
    case receive([UInt8])
    case complete(UInt64, Result<[UInt8], NBDErrno>)
}

/// Everything observable after running a script.
struct Outcome: Equatable {
    var start: [NBDAction]
    /// Actions per step (all receives of one step concatenated).
    var steps: [[NBDAction]]
    var state: NBDServerState
    var inFlight: Int
    var bufferedBytes: Int
    var structured: Bool
    var all: [NBDAction] { start + steps.flatMap { $0 } }
}

let disk = NBDExport(name: "disk", size: 1 << 20, multiConn: true, description: "test disk")
let readOnlyDisk = NBDExport(name: "ro", size: 64 << 10, readOnly: true, description: "read only")
let diskFlags = C.baseFlags | C.multiConnFlag
let roFlags = C.baseFlags | C.readOnlyFlag

func smallLimits() -> NBDLimits {
    var l = NBDLimits()
    l.requestBytesMax = 64 << 10
    l.optionBytesMax = 1024
    l.inFlightMax = 16
    return l
}

struct Harness {
    var exports: [NBDExport] = [disk, readOnlyDisk]
    var limits: NBDLimits = smallLimits()
    var tls: NBDTLSMode = .off

    func connection() -> NBDServerConnection {
        let exports = self.exports
        return NBDServerConnection(limits: limits, tls: tls, lookup: { name in exports.first { $0.name == name } },
                                   list: { exports })
    }

    /// Runs `steps` feeding each receive step with the given chunk sizes (cycled; 0 = whole step).
    func run(_ steps: [Step], chunks: [Int]) -> Outcome {
        var c = connection()
        let start = c.start()
        var perStep: [[NBDAction]] = []
        var chunkIndex = 0
        for step in steps {
            var actions: [NBDAction] = []
            switch step {
            case .receive(let bytes):
                var rest = bytes[...]
                repeat {
                    let size = chunks[chunkIndex % chunks.count]
                    chunkIndex += 1
                    let n = size == 0 ? rest.count : min(size, rest.count)
                    actions += c.receive(rest.prefix(n))
                    rest = rest.dropFirst(n)
                } while !rest.isEmpty
            case .complete(let cookie, let result):
                actions += c.completed(cookie: cookie, result: result)
            }
            // A reply's header and data are one message: compare them as one send.
            perStep.append(actions.map { a in
                if case .sendReply(let header, let parts) = a { return .send(header + parts.flatMap { $0 }) }
                return a
            })
        }
        return Outcome(start: start, steps: perStep, state: c.state, inFlight: c.inFlight,
                       bufferedBytes: c.bufferedBytes, structured: c.structuredReplies)
    }

    /// Runs the script whole, one byte at a time and in uneven chunks, expects identical
    /// outcomes, and returns the whole-chunk one.
    func run(_ steps: [Step], sourceLocation: SourceLocation = #_sourceLocation) -> Outcome {
        let whole = run(steps, chunks: [0])
        let bytewise = run(steps, chunks: [1])
        let uneven = run(steps, chunks: [3, 1, 7, 2, 29, 5])
        #expect(bytewise == whole, "one byte at a time differs", sourceLocation: sourceLocation)
        #expect(uneven == whole, "uneven chunks differ", sourceLocation: sourceLocation)
        return whole
    }
}

/// Client flags plus GO for `name` (optionally after structured-reply negotiation).
func goHandshake(_ name: String = "disk", structured: Bool = false, flags: UInt32 = C.fixedNewstyle | C.noZeroes) -> [UInt8] {
    clientFlags(flags) + (structured ? option(C.optStructured) : []) + option(C.optGo, infoRequest(name))
}

/// The actions the GO handshake above produces.
func goReplies(_ export: NBDExport = disk, flags: UInt16 = diskFlags, structured: Bool = false, max: UInt32 = 64 << 10) -> [NBDAction] {
    (structured ? [optReply(C.optStructured, C.repAck)] : [])
        + [infoExportReply(C.optGo, size: export.size, flags: flags), infoBlockSizeReply(C.optGo, max: max),
           optReply(C.optGo, C.repAck), .enterTransmission(export)]
}

func isClose(_ action: NBDAction?) -> Bool {
    if case .close = action { return true }
    return false
}
