/// Sans-I/O NBD server protocol state machine for one client connection: bytes in, actions
/// out. Fixed newstyle negotiation only. TLS as the spec's "TLS support" sets out, per `tls`:
/// the machine acknowledges `NBD_OPT_STARTTLS` and asks the driver (`.startTLS`) to run the
/// handshake; the bytes it is fed afterwards are the decrypted stream.
///
/// Driving it: call `start()` when the connection is accepted and send the greeting; feed every
/// received byte to `receive(_:)`, in order, in chunks of any size; perform actions in the order
/// returned, and report each `.execute` with `completed(cookie:result:)`, in any order; after
/// `.close`, close the socket once everything before it has been written.
///
/// Back-pressure: while `wantsInput` is false, stop reading from the socket. Bytes fed anyway
/// are parked (not parsed) up to `NBDLimits.bufferedBytesMax`, beyond which the connection is
/// closed; parsing resumes inside `completed(cookie:result:)`, which can therefore also return
/// `.execute` actions. `bufferedBytes` never exceeds that limit: over-long option data, unknown
/// options and the payload of a rejected WRITE are skipped without being stored.
public struct NBDServerConnection: Sendable {
    public let limits: NBDLimits
    let lookup: @Sendable (String) -> NBDExport?
    let list: @Sendable () -> [NBDExport]
    /// Whether and how `NBD_OPT_STARTTLS` is offered.
    public let tls: NBDTLSMode

    /// Phase of the connection (for tests and diagnostics).
    public internal(set) var state: NBDServerState = .idle
    /// The export selected by `NBD_OPT_EXPORT_NAME` or `NBD_OPT_GO`, once in transmission.
    public internal(set) var export: NBDExport?
    /// Whether `NBD_OPT_STRUCTURED_REPLY` was negotiated.
    public internal(set) var structuredReplies = false
    /// Whether the session was upgraded with `NBD_OPT_STARTTLS`.
    public internal(set) var tlsActive = false
    /// Whether an option was refused with `NBD_REP_ERR_TLS_REQD`.
    var refusedForTLS = false
    /// Whether the client set `NBD_FLAG_C_NO_ZEROES`.
    public internal(set) var clientNoZeroes = false
    /// Why the connection closed, once `state == .closed`.
    public internal(set) var closeReason: String?

    var reader: Reader = .idle
    /// Partial fixed-size header (client flags, option header or request header).
    var header: [UInt8] = []
    /// Option data or WRITE payload being collected.
    var data: [UInt8] = []
    /// Earlier chunks of the WRITE payload being collected (`NBDExport.payloadChunkBytes`).
    var chunks: [[UInt8]] = []
    /// Payload bytes in `chunks`.
    var chunkedBytes = 0
    /// Bytes received while parsing is paused at the in-flight limit.
    var backlog = ArraySlice<UInt8>()
    /// Requests handed out with `.execute` and not yet completed, by cookie (lookups only; never
    /// iterated, so it cannot influence output order).
    var pending: [UInt64: Pending] = [:]
    /// Bytes of the READs and WRITEs in `pending` (see `NBDLimits.inFlightBytesMax`).
    public internal(set) var heldBytes = 0

    public init(
        limits: NBDLimits = NBDLimits(),
        tls: NBDTLSMode = .off,
        lookup: @escaping @Sendable (String) -> NBDExport?,
        list: @escaping @Sendable () -> [NBDExport]
    ) {
        self.limits = limits
        self.tls = tls
        self.lookup = lookup
        self.list = list
    }

    /// Requests executing (handed out and not yet completed).
    public var inFlight: Int { pending.count }

    /// Bytes currently held by the parser (partial header, option data or write payload, parked
    /// input). Always `<= limits.bufferedBytesMax`.
    public var bufferedBytes: Int { header.count + chunkedBytes + data.count + backlog.count }

    /// Whether the driver should keep reading from the socket. False before `start()`, while
    /// `inFlight` is at `limits.inFlightMax` or `heldBytes` at `limits.inFlightBytesMax` (back-pressure), after `NBD_CMD_DISC` and once closed.
    public var wantsInput: Bool {
        switch state {
        case .awaitingClientFlags, .negotiating: true
        case .transmission: !pausedAtInFlightLimit
        case .idle, .disconnecting, .closed: false
        }
    }

    // MARK: Entry points

    /// Sends the newstyle greeting: `NBDMAGIC`, `IHAVEOPT`, handshake flags
    /// (`NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES`). Only the first call has an effect.
    public mutating func start() -> [NBDAction] {
        guard state == .idle else { return [] }
        state = .awaitingClientFlags
        reader = .clientFlags
        return [.send(NBDEncode.greeting())]
    }

    /// Consumes bytes from the client. Any chunking gives the same actions overall.
    public mutating func receive(_ bytes: ArraySlice<UInt8>) -> [NBDAction] {
        receive(generic: bytes)
    }

    /// The same, reading straight from the driver's buffer (valid only during the call), so
    /// write payloads are copied once, into the request's own array.
    public mutating func receive(_ bytes: UnsafeRawBufferPointer) -> [NBDAction] {
        receive(generic: bytes[...])
    }

    mutating func receive<Input: RandomAccessCollection<UInt8>>(generic bytes: Input) -> [NBDAction]
    where Input.SubSequence == Input {
        var out: [NBDAction] = []
        switch state {
        case .idle:
            close("received data before the greeting was sent", &out)
        case .awaitingClientFlags, .negotiating, .transmission:
            consume(bytes, owned: false, into: &out)
            // The driver starts TLS when it performs `.startTLS`, before it feeds more bytes.
            if case .startingTLS = reader { reader = .optionHeader }
        case .disconnecting, .closed:
            // "NBD_CMD_DISC": the client MUST NOT send anything after it; ignore whatever comes.
            break
        }
        return out
    }

    /// Reports that the request `cookie` finished. For a read, `.success` carries exactly the
    /// requested number of bytes (any other count is answered `EIO`, since a simple reply cannot
    /// be truncated); for every other command the data is ignored. Unknown cookies are ignored.
    public mutating func completed(cookie: UInt64, result: Result<[UInt8], NBDErrno>) -> [NBDAction] {
        completed(cookie: cookie, parts: result.map { [$0[...]] })
    }

    /// The same, with read data as parts to concatenate (written to the socket without first
    /// being joined).
    public mutating func completed(cookie: UInt64, parts result: Result<[ArraySlice<UInt8>], NBDErrno>) -> [NBDAction] {
        guard let request = pending.removeValue(forKey: cookie) else { return [] }
        heldBytes -= request.heldBytes
        var out: [NBDAction] = []
        guard state == .transmission || state == .disconnecting else { return out }
        switch result {
        case .success(let parts):
            if request.isRead && parts.reduce(0, { $0 + $1.count }) != request.length {
                replyError(cookie: cookie, .EIO, &out)
            } else {
                replySuccess(cookie: cookie, request: request, parts: request.isRead ? parts : [], &out)
            }
        case .failure(let errno):
            replyError(cookie: cookie, errno, &out)
        }
        if state == .disconnecting {
            // "NBD_CMD_DISC": the server MUST handle all outstanding requests, then close.
            if pending.isEmpty { close("client disconnected (NBD_CMD_DISC)", &out) }
        } else if !backlog.isEmpty {
            let parked = backlog
            backlog = []
            consume(parked, owned: true, into: &out)
        }
        return out
    }

    // MARK: Parser

    /// What the parser expects next.
    enum Reader {
        case idle
        case clientFlags
        case optionHeader
        /// Collecting `length` bytes of option data into `data`.
        case optionData(option: UInt32, length: Int)
        case requestHeader
        /// Collecting a WRITE payload into `data`.
        case writePayload(cookie: UInt64, offset: UInt64, length: Int, fua: Bool)
        /// Skipping bytes without storing them, then acting.
        case discard(remaining: Int, then: AfterDiscard)
        /// `NBD_OPT_STARTTLS` acknowledged: nothing may follow in clear.
        case startingTLS
        /// Closed or disconnecting: drop everything.
        case ignore
    }

    enum AfterDiscard {
        case optionReply(option: UInt32, type: UInt32)
        case errorReply(cookie: UInt64, NBDErrno)
    }

    struct Pending {
        var isRead: Bool
        var offset: UInt64
        var length: Int
        /// Read or write bytes counted in `heldBytes` (set by `execute`).
        var heldBytes = 0
    }

    var pausedAtInFlightLimit: Bool {
        state == .transmission && header.isEmpty
            && (pending.count >= limits.inFlightMax || heldBytes >= limits.inFlightBytesMax)
            && { if case .requestHeader = reader { true } else { false } }()
    }

    /// Parses as much of `input` as possible. `owned` means `input` is a slice of this
    /// connection's own parked storage, which may be kept without copying.
    mutating func consume<Input: RandomAccessCollection<UInt8>>(_ input: Input, owned: Bool, into out: inout [NBDAction])
    where Input.SubSequence == Input {
        var input = input
        while !input.isEmpty {
            switch reader {
            case .idle, .ignore:
                return
            case .startingTLS:
                // "The client MUST NOT send any option until it has received a final reply":
                // cleartext bytes behind the STARTTLS option cannot be a TLS handshake.
                return close("client sent data in clear after NBD_OPT_STARTTLS", &out)
            case .clientFlags:
                guard fill(NBDWire.clientFlagsSize, from: &input) else { return }
                handleClientFlags(&out)
            case .optionHeader:
                guard fill(NBDWire.optionHeaderSize, from: &input) else { return }
                handleOptionHeader(&out)
            case .requestHeader:
                if pausedAtInFlightLimit {
                    park(input, owned: owned, &out)
                    return
                }
                guard fill(NBDWire.requestHeaderSize, from: &input) else { return }
                handleRequestHeader(&out)
            case .optionData(let option, let length):
                guard collect(length, from: &input) else { return }
                let optionData = data
                data = []
                handleOption(option, optionData, &out)
            case .writePayload(let cookie, let offset, let length, let fua):
                guard collectPayload(offset: offset, length: length, from: &input) else { return }
                chunks.append(data)
                let payload = chunks
                data = []
                chunks = []
                chunkedBytes = 0
                reader = .requestHeader
                execute(cookie: cookie, .write(offset: offset, chunks: payload, fua: fua),
                        Pending(isRead: false, offset: offset, length: length), &out)
            case .discard(let remaining, let then):
                let n = min(remaining, input.count)
                input = input.dropFirst(n)
                if n < remaining {
                    reader = .discard(remaining: remaining - n, then: then)
                } else {
                    finishDiscard(then, &out)
                }
            }
        }
    }

    /// Moves bytes into `header` until it holds `size`; true when complete.
    private mutating func fill<Input: RandomAccessCollection<UInt8>>(_ size: Int, from input: inout Input) -> Bool
    where Input.SubSequence == Input {
        let n = min(size - header.count, input.count)
        header.append(contentsOf: input.prefix(n))
        input = input.dropFirst(n)
        return header.count == size
    }

    /// Moves bytes into `data` until it holds `length`; true when complete.
    private mutating func collect<Input: RandomAccessCollection<UInt8>>(_ length: Int, from input: inout Input) -> Bool
    where Input.SubSequence == Input {
        if data.isEmpty {
            if input.count >= length {
                // All of it at hand (the usual case): one copy of exactly the right size.
                data = Array(input.prefix(length))
                input = input.dropFirst(length)
                return true
            }
            data.reserveCapacity(length)  // arriving in pieces: no regrowing copies
        }
        let n = min(length - data.count, input.count)
        data.append(contentsOf: input.prefix(n))
        input = input.dropFirst(n)
        return data.count == length
    }

    /// Collects a WRITE payload of `length` bytes for export offset `offset`: whole chunks go to
    /// `chunks`, the one being filled is `data`. True when all of it is in (the last chunk still
    /// in `data`).
    private mutating func collectPayload<Input: RandomAccessCollection<UInt8>>(offset: UInt64, length: Int, from input: inout Input) -> Bool
    where Input.SubSequence == Input {
        let chunk = export?.payloadChunkBytes ?? 0
        guard chunk > 0 else { return collect(length, from: &input) }
        while true {
            // The chunk being filled ends at the next multiple of `chunk`, or at the payload's end.
            let start = offset + UInt64(chunkedBytes)
            let toBoundary = chunk - Int(start % UInt64(chunk))
            let size = min(toBoundary, length - chunkedBytes)
            guard collect(size, from: &input) else { return false }
            if chunkedBytes + size == length { return true }
            chunks.append(data)
            chunkedBytes += size
            data = []
            if input.isEmpty { return false }
        }
    }

    private mutating func park<Input: RandomAccessCollection<UInt8>>(_ input: Input, owned: Bool, _ out: inout [NBDAction]) {
        if owned && backlog.isEmpty, let mine = input as? ArraySlice<UInt8> {
            backlog = mine
        } else {
            backlog.append(contentsOf: input)
        }
        if backlog.count > limits.bufferedBytesMax {
            close("client exceeded \(limits.inFlightMax) requests or \(limits.inFlightBytesMax) bytes in flight and the driver kept reading", &out)
        }
    }

    /// Skips `length` bytes, then performs `then` (immediately when `length` is 0).
    mutating func beginDiscard(_ length: Int, then: AfterDiscard, _ out: inout [NBDAction]) {
        if length == 0 {
            finishDiscard(then, &out)
        } else {
            reader = .discard(remaining: length, then: then)
        }
    }

    private mutating func finishDiscard(_ then: AfterDiscard, _ out: inout [NBDAction]) {
        switch then {
        case .optionReply(let option, let type):
            reader = .optionHeader
            out.append(.send(NBDEncode.optionReply(option: option, type: type)))
        case .errorReply(let cookie, let errno):
            reader = .requestHeader
            replyError(cookie: cookie, errno, &out)
        }
    }

    /// Big-endian unsigned integer of `size` bytes at `at` in the complete fixed-size header.
    func headerField(at: Int, size: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in at..<(at + size) { v = v << 8 | UInt64(header[i]) }
        return v
    }

    /// Emits `.close` (always the last action) and drops all buffered input.
    mutating func close(_ reason: String, _ out: inout [NBDAction]) {
        state = .closed
        closeReason = reason
        reader = .ignore
        header = []
        data = []
        chunks = []
        chunkedBytes = 0
        backlog = []
        out.append(.close(reason: reason))
    }
}
