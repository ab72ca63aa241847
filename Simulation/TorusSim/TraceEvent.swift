import TorusCore

/// The kinds of hashed trace event. The raw values go into the trace hash (`code << 56 ^ a`),
/// so they never change: a new kind takes a new number. `a` and `b` are the event's two
/// arguments (see `Simulation.describe`).
enum TraceEvent: UInt64 {
    /// a: sender << 20 | receiver, b: the message's kind code.
    case messageDelivered = 1
    /// a: node index, b: disk op id.
    case diskOpDone = 2
    /// a: request id.
    case metadataRequest = 3
    /// a: request id, b: the asker (writer or collector id).
    case metadataReply = 4
    /// a: writer id.
    case writerTick = 5
    case leaseTick = 6
    /// a: workload slot, b: volume index.
    case workloadOp = 7
    case faultTimer = 8
    case heal = 9
    case endOfLoad = 10
    case finalStep = 11
    /// a: 1 ready, 2 fenced.
    case writerPhase = 12
    /// a: index in the schedule.
    case scheduledFault = 13
    case endOfSafety = 14
    /// a: volume index.
    case pausedWriterResumes = 15
    /// a: node index.
    case nodeCrash = 20
    /// a: 1 in the final phase, 0 as a fault.
    case powerLoss = 21
    /// a: node id, b: mode (0 both ways, 1 node->writer cut, 2 writer->node cut).
    case partition = 22
    case metadataOutage = 23
    /// a: 1 right after sending a commit.
    case writerCrash = 24
    /// a: the paused writer's id.
    case writerPaused = 25
    /// a: node id.
    case clog = 26
    /// a: the latency bound in ns.
    case metadataSlow = 27
    /// a: lease id.
    case leaseExpiry = 28
    /// a: the writer's clock offset in ns (bit pattern of an Int64).
    case clockJump = 29
    /// a: node index, b: the slow-down factor.
    case slowDisk = 30
    /// a: node index, b: sector.
    case bitRot = 31
    /// a: node index, b: sector.
    case latentError = 32
    /// a: node index, b: the offset aimed at.
    case misdirectedWrite = 33
    /// a: nodes clogged, b: over how many ns.
    case swizzleClog = 35
    /// a: node id, b: 1 when its replies are lost.
    case oneWayPartition = 36
    /// a: the paused writer's id.
    case pausedWriterFenced = 37
    /// a: 1 pause, 0 crash.
    case writerFaultArmed = 38
    /// a: node index.
    case wipeNode = 39
    /// a: 1 lossy, 2 slow.
    case networkFault = 40
    /// a: refs deleted, b: refs listed.
    case collectorPass = 41
    case collectorTick = 42
    /// a: node index.
    case loseNode = 43
    /// a: node index.
    case scrub = 44
    /// a: node index.
    case joinNode = 45
    /// a: node index.
    case drainNode = 46
    /// a: node index.
    case nodeRemoved = 47
    /// a: volume index.
    case ringUpdate = 48
    /// a: volume index.
    case deleteVolume = 49
    /// a: the writer's id.
    case writerMetadataPartition = 50
    /// a: the cut-off writer's id.
    case successorTakesOver = 51
}

/// The trace: hashed events, notes for readers, and the readable lines of both.
extension Simulation {
    func traceEvent(_ event: TraceEvent, _ a: UInt64 = 0, _ b: UInt64 = 0) {
        trace.combine(now.nanoseconds)
        trace.combine(event.rawValue << 56 ^ a)
        trace.combine(b)
        if let sink = traceSink { sink("\(now)  \(Self.describe(event, a, b))") }
    }

    /// A trace line that is not part of the hash (details for readers).
    func traceNote(_ text: @autoclosure () -> String) {
        if let sink = traceSink { sink("\(now)  \(text())") }
    }

    /// The refs and outcomes a message carries (trace detail for readers).
    static func detail(_ msg: PeerMessage) -> String {
        switch msg {
        case .putBlock(let rpc, let ref, _, let durable, let restore, let copy): return "put \(rpc) \(ref)\(restore ? " restore" : "")\(durable ? " durable" : "")\(copy ? " copy" : "")"
        case .putReply(let rpc, let r): return "put reply \(rpc) \(r)"
        case .getBlock(let rpc, let ref): return "get \(rpc) \(ref)"
        case .getRange(let rpc, let ref, let o, let l): return "get \(rpc) \(ref) bytes \(o)+\(l)"
        case .getReply(let rpc, let r):
            switch r {
            case .success(let d): return "get reply \(rpc) \(d.count) bytes"
            case .failure(let e): return "get reply \(rpc) \(e)"
            }
        case .deleteBlocks(let refs): return "delete \(refs.map(\.description).joined(separator: " "))"
        case .syncBlocks(let rpc, let refs): return "sync \(rpc) \(refs.count) refs"
        case .syncReply(let rpc, let refs): return "sync reply \(rpc) \(refs.count) refs"
        case .listBlocks(let rpc, let after, let limit): return "list \(rpc) after \(after.map(\.description) ?? "start") limit \(limit)"
        case .listReply(let rpc, let refs, let complete): return "list reply \(rpc) \(refs.count) refs\(complete ? " (complete)" : "")"
        }
    }

    /// Trace names: `metadata`, `nodeN`, `writerK` (volume 0's K-th writer), `volV-writerK`.
    static func name(_ raw: UInt64) -> String {
        if raw == UInt64(collectorID.raw) { return "collector" }
        guard raw >= 1000 else { return raw == 0 ? "metadata" : "node\(raw)" }
        let v = (raw - 1000) / 1000, k = (raw - 1000) % 1000 + 1
        return v == 0 ? "writer\(k)" : "vol\(v)-writer\(k)"
    }

    static let messageNames = ["", "putBlock", "putReply", "getBlock", "getReply", "deleteBlocks", "syncBlocks", "syncReply", "getRange",
                               "listBlocks", "listReply"]

    /// One readable trace line from a hashed trace event.
    static func describe(_ event: TraceEvent, _ a: UInt64, _ b: UInt64) -> String {
        switch event {
        case .messageDelivered: return "\(name(a >> 20)) -> \(name(a & 0xFFFFF))  \(b < 11 ? messageNames[Int(b)] : "message \(b)")"
        case .diskOpDone: return "node\(a + 1)  disk op \(b) done"
        case .metadataRequest: return "metadata  request \(a) arrives"
        case .metadataReply: return "\(name(b))  metadata reply \(a)"
        case .writerTick: return "\(name(a))  tick"
        case .leaseTick: return "metadata  lease tick"
        case .workloadOp: return "workload  slot \(a) issues an op"
        case .faultTimer: return "fault timer"
        case .heal: return "heal"
        case .endOfLoad: return "end of load: final phase (heal, power loss, read back)"
        case .finalStep: return "final phase step"
        case .writerPhase: return "writer  phase \(a == 1 ? "ready" : "fenced")"
        case .scheduledFault: return "scheduled fault #\(a)"
        case .endOfSafety: return "end of the safety phase: liveness phase (healed, no faults)"
        case .pausedWriterResumes: return "paused writer resumes"
        case .nodeCrash: return "FAULT node\(a + 1) crashes"
        case .powerLoss: return a == 1 ? "final phase: power loss on every node and the writer; all restart" : "FAULT power loss on every node"
        case .partition: return "FAULT partition writer / node\(a) (\(["both ways", "node->writer cut", "writer->node cut"][Int(b % 3)]))"
        case .metadataOutage: return "FAULT metadata store unavailable"
        case .writerCrash: return "FAULT writer crashes\(a == 1 ? " right after sending a commit" : "")"
        case .writerPaused: return "FAULT \(name(a)) paused with its commit in flight; a successor takes over"
        case .clog: return "FAULT clog node\(a)"
        case .metadataSlow: return "FAULT metadata store slow (up to \(a / 1_000_000) ms)"
        case .leaseExpiry: return "FAULT the store expires the writer's lease \(a)"
        case .clockJump: return "FAULT writer clock offset now \(Int64(bitPattern: a) / 1_000_000) ms"
        case .slowDisk: return "FAULT node\(a + 1) disk \(b)x slower"
        case .bitRot: return "FAULT bit rot on node\(a + 1), sector \(b)"
        case .latentError: return "FAULT latent sector error on node\(a + 1), sector \(b)"
        case .misdirectedWrite: return "FAULT misdirected write on node\(a + 1) (aimed at \(b))"
        case .swizzleClog: return "FAULT swizzle-clog of \(a) nodes over \(b / 1_000_000) ms"
        case .oneWayPartition: return "FAULT one-way partition at node\(a) (\(b == 1 ? "its replies lost" : "requests lost"))"
        case .pausedWriterFenced: return "paused writer \(name(a)) is fenced"
        case .writerFaultArmed: return "FAULT armed: writer \(a == 1 ? "pause at its next commit" : a == 2 ? "freeze before its next log append" : "crash at its next commit")"
        case .wipeNode: return "FAULT node\(a + 1) loses its disk (it restarts empty)"
        case .networkFault: return "FAULT network \(a == 1 ? "lossy (20% drops, 10% duplicates)" : "slow (hops up to 50 ms)")"
        case .collectorPass: return "collector  pass done: \(a) refs deleted of \(b) listed"
        case .collectorTick: return "collector  tick"
        case .loseNode: return "FAULT node\(a + 1) is lost for good (never comes back)"
        case .scrub: return "node\(a + 1)  scrubs a block"
        case .joinNode: return "FAULT node\(a + 1) joins the ring (empty)"
        case .drainNode: return "FAULT node\(a + 1) is drained (no new placements; its blocks move away)"
        case .nodeRemoved: return "node\(a + 1) drained: removed from the ring, it leaves"
        case .ringUpdate: return "vol\(a) writer learns the ring in force"
        case .deleteVolume: return "FAULT volume \(a) is deleted (its writer stops, its keys go)"
        case .writerMetadataPartition: return "FAULT \(name(a)) cut off from the metadata store (not from the nodes)"
        case .successorTakesOver: return "\(name(a)) lease may have expired: a successor takes over while it keeps running"
        }
    }
}
