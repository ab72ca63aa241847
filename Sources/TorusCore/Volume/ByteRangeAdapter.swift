/// Serves byte-granular block requests (as NBD clients send them) on a volume that only takes
/// whole 4 KiB sectors, the way disk image servers do.
///
/// - reads cover the sectors around the range and return the requested bytes;
/// - a write that starts or ends inside a sector reads those edge sectors, merges, and writes
///   whole sectors (read-modify-write);
/// - TRIM unmaps only the whole sectors inside the range (TRIM is advisory);
/// - WRITE_ZEROES unmaps whole sectors and zeroes partial ones by read-modify-write;
/// - FUA on trim and zeroes is a flush after the operation;
/// - writes (of any kind) whose sector ranges overlap run one after another in arrival order,
///   so two read-modify-writes of one sector can never lose an update. Reads are not ordered
///   against writes: a read overlapping a write in flight may see either, as on any disk.
///
/// Deterministic and sans-I/O: requests in, `VolumeOp`s out, results in, replies out.
public struct ByteRangeAdapter: Sendable {
    public enum Request: Sendable, Equatable {
        case read(offset: UInt64, length: Int)
        /// The data is `chunks` concatenated (see `VolumeOp.write`).
        case write(offset: UInt64, chunks: [[UInt8]], fua: Bool)
        case trim(offset: UInt64, length: Int, fua: Bool)
        case writeZeroes(offset: UInt64, length: Int, fua: Bool)
        case flush

        /// A write whose data is one array.
        public static func write(offset: UInt64, data: [UInt8], fua: Bool) -> Request {
            .write(offset: offset, chunks: [data], fua: fua)
        }
    }

    public enum Output: Sendable {
        /// Submit to the volume client; report the result with `opCompleted`.
        case submit(OpID, VolumeOp)
        /// The request is done: read data as parts to concatenate (slices of cached blocks; empty
        /// for everything else) or an error.
        case complete(request: UInt64, Result<[ArraySlice<UInt8>], VolumeError>)
    }

    private enum Step: Sendable {
        case reading       // read op, or the edge reads of a read-modify-write
        case writing       // the aligned write / trim
        case flushing      // FUA after trim or zeroes
    }

    private struct Active: Sendable {
        var request: Request
        var first: UInt64      // first sector
        var end: UInt64        // one past the last sector
        var isWrite: Bool
        var step: Step = .reading
        var pendingOps = 0
        var buffer: [UInt8] = []   // sector-expanded image being merged (writes)
        var parts: [ArraySlice<UInt8>] = []  // the sector-expanded range read (reads)
        var started = false
        /// FUA already carried by the write op itself.
        var fuaDone = false
    }

    public let sectorSize: Int
    /// Grows with the volume (`VolumeClient.grow`).
    public var volumeSize: UInt64
    private var active: [UInt64: Active] = [:]
    private var order: [UInt64] = []            // arrival order of requests not yet complete
    private var opOwner: [OpID: (request: UInt64, role: Role)] = [:]
    private var nextOp: UInt64

    private enum Role: Sendable { case read, headEdge, tailEdge, write, trim, flush }

    /// `firstOpID` leaves room for other users of the same volume client's op id space.
    public init(sectorSize: Int, volumeSize: UInt64, firstOpID: UInt64 = 1) {
        precondition(sectorSize > 0 && sectorSize.nonzeroBitCount == 1, "sector size must be a power of two")
        self.sectorSize = sectorSize
        self.volumeSize = volumeSize
        nextOp = firstOpID
    }

    public var requestsInFlight: Int { active.count }

    public mutating func request(_ id: UInt64, _ request: Request) -> [Output] {
        precondition(active[id] == nil, "request \(id) submitted twice")
        let (offset, length): (UInt64, Int)
        switch request {
        case .flush:
            let op = allocate(id, .flush)
            active[id] = Active(request: request, first: 0, end: 0, isWrite: false, step: .flushing, pendingOps: 1, started: true)
            order.append(id)
            return [.submit(op, .flush)]
        case .read(let o, let l), .trim(let o, let l, _), .writeZeroes(let o, let l, _): (offset, length) = (o, l)
        case .write(let o, let c, _): (offset, length) = (o, c.byteCount)
        }
        guard length > 0 else { return [.complete(request: id, .success([]))] }
        guard offset <= volumeSize, UInt64(length) <= volumeSize - offset else {
            return [.complete(request: id, .failure(.outOfRange(offset: offset, length: length, volumeSize: volumeSize)))]
        }
        let s = UInt64(sectorSize)
        var isWrite = true
        if case .read = request { isWrite = false }
        active[id] = Active(request: request, first: offset / s, end: (offset + UInt64(length) + s - 1) / s, isWrite: isWrite)
        order.append(id)
        return startReady()
    }

    public mutating func opCompleted(_ op: OpID, _ result: Result<VolumeOpResult, VolumeError>) -> [Output] {
        guard let (id, role) = opOwner.removeValue(forKey: op), var a = active[id] else { return [] }
        a.pendingOps -= 1
        var out: [Output] = []
        switch result {
        case .failure(let e):
            finish(id, .failure(e), into: &out)
            out += startReady()
            return out
        case .success(let r):
            if case .read(let parts) = r {
                let s = Int(a.first) * sectorSize
                switch role {
                case .read: a.parts = parts
                case .headEdge: a.buffer.replaceSubrange(0..<sectorSize, with: r.readBytes!)
                case .tailEdge:
                    let at = Int(a.end - 1) * sectorSize - s
                    a.buffer.replaceSubrange(at..<(at + sectorSize), with: r.readBytes!)
                default: preconditionFailure("read data for a \(role) op")
                }
            }
        }
        active[id] = a
        guard a.pendingOps == 0 else { return out }
        advance(id, into: &out)
        out += startReady()
        return out
    }

    // MARK: - Steps

    /// Starts every waiting request that no earlier overlapping write blocks.
    private mutating func startReady() -> [Output] {
        var out: [Output] = []
        for (i, id) in order.enumerated() {
            guard let a = active[id], !a.started else { continue }
            let blocked = a.isWrite && order[..<i].contains { other in
                guard let b = active[other], b.isWrite else { return false }
                return b.first < a.end && a.first < b.end
            }
            if blocked { continue }
            active[id]!.started = true
            begin(id, into: &out)
        }
        return out
    }

    private mutating func begin(_ id: UInt64, into out: inout [Output]) {
        var a = active[id]!
        let s = UInt64(sectorSize)
        let alignedOffset = a.first * s
        let alignedLength = Int((a.end - a.first) * s)
        switch a.request {
        case .read:
            a.pendingOps = 1
            active[id] = a
            out.append(.submit(allocate(id, .read), .read(offset: alignedOffset, length: alignedLength)))
        case .write(let offset, let chunks, _):
            let length = chunks.byteCount
            // Aligned: no edges to fill in; the chunks go to the volume as they are (`submitWrite`).
            if offset != alignedOffset || length != alignedLength {
                a.buffer = Array(repeating: 0, count: alignedLength)
                a.buffer.replaceSubrange(Int(offset - alignedOffset)..<(Int(offset - alignedOffset) + length), with: chunks.joined)
            }
            beginEdges(id, &a, offset: offset, length: length, into: &out)
        case .writeZeroes(let offset, let length, _):
            a.buffer = Array(repeating: 0, count: alignedLength)
            beginEdges(id, &a, offset: offset, length: length, into: &out)
        case .trim(let offset, let length, _):
            // Only whole sectors inside the range; partial ones are left alone (TRIM is advisory).
            let lo = (offset + s - 1) / s, hi = (offset + UInt64(length)) / s
            a.step = .writing
            if lo >= hi {
                active[id] = a
                advance(id, into: &out)
                return
            }
            a.pendingOps = 1
            active[id] = a
            out.append(.submit(allocate(id, .trim), .trim(offset: lo * s, length: Int((hi - lo) * s))))
        case .flush:
            preconditionFailure("flush is not scheduled")
        }
    }

    /// Reads the partial edge sectors of a write, or goes straight to writing when aligned.
    private mutating func beginEdges(_ id: UInt64, _ a: inout Active, offset: UInt64, length: Int, into out: inout [Output]) {
        let s = UInt64(sectorSize)
        let headPartial = offset % s != 0
        let tailPartial = (offset + UInt64(length)) % s != 0
        var ops: [Output] = []
        if headPartial {
            ops.append(.submit(allocate(id, .headEdge), .read(offset: a.first * s, length: sectorSize)))
        }
        if tailPartial && !(headPartial && a.end - a.first == 1) {
            ops.append(.submit(allocate(id, .tailEdge), .read(offset: (a.end - 1) * s, length: sectorSize)))
        }
        a.pendingOps = ops.count
        if ops.isEmpty {
            a.step = .writing
            active[id] = a
            submitWrite(id, into: &out)
        } else {
            // Edge reads bring the old bytes; the new bytes go on top when they arrive.
            active[id] = a
            out += ops
        }
    }

    private mutating func advance(_ id: UInt64, into out: inout [Output]) {
        var a = active[id]!
        switch a.step {
        case .reading:
            if case .read(let offset, let length) = a.request {
                let at = Int(offset - a.first * UInt64(sectorSize))
                if at == 0 && length == Int(a.end - a.first) * sectorSize {
                    finish(id, .success(a.parts), into: &out)  // whole sectors: the parts as they are
                } else {
                    let all = VolumeOpResult.read(parts: a.parts).readBytes!
                    finish(id, .success([all[at..<(at + length)]]), into: &out)
                }
                return
            }
            // Edge sectors are in: lay the new bytes over them, then write.
            let s = a.first * UInt64(sectorSize)
            switch a.request {
            case .write(let offset, let chunks, _):
                let data = chunks.joined
                a.buffer.replaceSubrange(Int(offset - s)..<(Int(offset - s) + data.count), with: data)
            case .writeZeroes(let offset, let length, _):
                a.buffer.replaceSubrange(Int(offset - s)..<(Int(offset - s) + length), with: repeatElement(0, count: length))
            default: preconditionFailure("edge reads for \(a.request)")
            }
            a.step = .writing
            active[id] = a
            submitWrite(id, into: &out)
        case .writing:
            let fua: Bool
            switch a.request {
            case .trim(_, _, let f), .writeZeroes(_, _, let f): fua = f
            default: fua = false  // a write's FUA rides on the write itself
            }
            if fua && !a.fuaDone {
                a.step = .flushing
                a.pendingOps = 1
                active[id] = a
                out.append(.submit(allocate(id, .flush), .flush))
            } else {
                finish(id, .success([]), into: &out)
            }
        case .flushing:
            finish(id, .success([]), into: &out)
        }
    }

    private mutating func submitWrite(_ id: UInt64, into out: inout [Output]) {
        var a = active[id]!
        let offset = a.first * UInt64(sectorSize)
        a.pendingOps = 1
        switch a.request {
        case .write(let o, let chunks, let fua):
            let aligned = o == offset && chunks.byteCount == Int(a.end - a.first) * sectorSize
            let data = aligned ? chunks : [a.buffer]
            a.buffer = []
            active[id] = a
            out.append(.submit(allocate(id, .write), .write(offset: offset, chunks: data, fua: fua)))
        case .writeZeroes(let o, let l, let fua):
            let s = UInt64(sectorSize)
            if o % s == 0 && UInt64(l) % s == 0 {
                // Whole sectors: unmapping them makes them read as zeros.
                a.buffer = []
                active[id] = a
                out.append(.submit(allocate(id, .trim), .trim(offset: offset, length: l)))
            } else {
                // Partial edge sectors keep their other bytes: write the merged sectors.
                let data = a.buffer
                a.buffer = []
                a.fuaDone = fua
                active[id] = a
                out.append(.submit(allocate(id, .write), .write(offset: offset, data: data, fua: fua)))
            }
        default:
            preconditionFailure("submitWrite for \(a.request)")
        }
    }

    private mutating func finish(_ id: UInt64, _ result: Result<[ArraySlice<UInt8>], VolumeError>, into out: inout [Output]) {
        active[id] = nil
        order.removeAll { $0 == id }
        // Ops of this request still in flight are forgotten; their results are ignored.
        for (op, owner) in opOwner where owner.request == id { opOwner[op] = nil }
        out.append(.complete(request: id, result))
    }

    private mutating func allocate(_ id: UInt64, _ role: Role) -> OpID {
        let op = OpID(nextOp)
        nextOp += 1
        opOwner[op] = (id, role)
        return op
    }
}
