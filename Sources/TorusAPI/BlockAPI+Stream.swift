#if GRPC
import Foundation
import GRPCCore
import TorusCore
import TorusRuntime

/// The bidirectional stream: many requests in flight, answered as they complete.
extension BlockAPI {
    func stream(request: RPCAsyncSequence<Torus_V1_BlockRequest, any Error>, response: RPCWriter<Torus_V1_BlockResponse>,
                context: ServerContext) async throws {
        let (answers, out) = AsyncStream<(Torus_V1_BlockResponse, Int)>.makeStream()
        // A credit per answer written to the client: requests stop being read while too many,
        // or too many bytes, are in flight or waiting to be written (a slow reader of replies
        // holds the window shut instead of filling this process's memory).
        let (credits, credit) = AsyncStream<Int>.makeStream()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { out.finish() }
                try await withThrowingDiscardingTaskGroup { work in
                    var window = credits.makeAsyncIterator()
                    var inFlight = 0, bytes = 0
                    var first: [String: UInt64] = [:]
                    for try await r in request {
                        let cost = r.cost
                        while inFlight > 0 && (inFlight >= Self.streamWindow || bytes + cost > Self.streamWindowBytes) {
                            guard let freed = await window.next() else { return }
                            inFlight -= 1
                            bytes -= freed
                        }
                        let volume = r.volume
                        if first[volume] == nil { first[volume] = UInt64(cluster.volumeDirectory.generation(volume)) + 1 }
                        let expect = first[volume]!
                        inFlight += 1
                        bytes += cost
                        work.addTask { out.yield((await self.answer(r, expect: expect), cost)) }
                    }
                }
            }
            group.addTask {
                defer { credit.finish() }
                for await (a, cost) in answers {
                    try await response.write(a)
                    credit.yield(cost)
                    // A writer replaced under the stream: its writes may be gone, so the stream ends.
                    if a.code == Int32(RPCError.Code.aborted.rawValue) { throw RPCError(code: .aborted, message: a.message) }
                }
            }
            try await group.waitForAll()
        }
    }

    /// One request of a stream, answered with its id; every request is held to the generation
    /// its volume had when the stream first used it.
    func answer(_ r: Torus_V1_BlockRequest, expect: UInt64) async -> Torus_V1_BlockResponse {
        var a = Torus_V1_BlockResponse()
        a.id = r.id
        do {
            switch r.op {
            case .read(let q): (a.data, a.generation) = try await perform(q.volume, .read(offset: q.offset, length: Int(q.length)), expect: expect)
            case .write(let q):
                a.generation = try await perform(q.volume, .write(offset: q.offset, data: [UInt8](q.data), fua: q.fua), expect: expect).1
            case .flush(let q): a.generation = try await perform(q.volume, .flush, expect: expect).1
            case .trim(let q): a.generation = try await perform(q.volume, .trim(offset: q.offset, length: Int(q.length), fua: q.fua), expect: expect).1
            case nil: throw RPCError(code: .invalidArgument, message: "request \(r.id) has no operation")
            }
        } catch {
            let e = rpcError(error)
            a.code = Int32(e.code.rawValue)
            a.message = e.message
        }
        return a
    }
}

extension Torus_V1_BlockRequest {
    /// Bytes the request holds or asks for (a flush or trim counts a little).
    var cost: Int {
        switch op {
        case .read(let q): Int(q.length)
        case .write(let q): q.data.count
        default: 4096
        }
    }

    /// The volume the request names.
    var volume: String {
        switch op {
        case .read(let q): q.volume
        case .write(let q): q.volume
        case .flush(let q): q.volume
        case .trim(let q): q.volume
        case nil: ""
        }
    }
}
#endif
