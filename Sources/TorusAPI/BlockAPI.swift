#if GRPC
import Foundation
import GRPCCore
import NIOCore
import Synchronization
import TorusCore
import TorusRuntime

/// `torus.v1.BlockService`: reads, writes, flushes and trims through the volume's writer in
/// this process, like an NBD connection's commands.
struct BlockAPI: Torus_V1_BlockService.SimpleServiceProtocol {
    let cluster: VolumeServer
    /// Requests, and bytes, in flight on one stream before it stops reading more.
    static let streamWindow = 256
    static let streamWindowBytes = 64 << 20
    static let requestBytesMax = 32 << 20

    func read(request: Torus_V1_ReadRequest, context: ServerContext) async throws -> Torus_V1_ReadResponse {
        let (data, generation) = try await perform(request.volume, .read(offset: request.offset, length: Int(request.length)))
        return .with { $0.data = data; $0.generation = generation }
    }

    func write(request: Torus_V1_WriteRequest, context: ServerContext) async throws -> Torus_V1_WriteResponse {
        let generation = try await perform(request.volume, .write(offset: request.offset, data: [UInt8](request.data), fua: request.fua)).1
        return .with { $0.generation = generation }
    }

    func flush(request: Torus_V1_FlushRequest, context: ServerContext) async throws -> Torus_V1_FlushResponse {
        let generation = try await perform(request.volume, .flush, expect: request.expectGeneration).1
        return .with { $0.generation = generation }
    }

    func trim(request: Torus_V1_TrimRequest, context: ServerContext) async throws -> Torus_V1_TrimResponse {
        let generation = try await perform(request.volume, .trim(offset: request.offset, length: Int(request.length), fua: request.fua)).1
        return .with { $0.generation = generation }
    }

    /// Serves one request; the data read and the writer generation (1-based) that served it.
    /// Fails with ABORTED when the writer changed during the request or since `expect`.
    func perform(_ volume: String, _ request: ByteRangeAdapter.Request, expect: UInt64 = 0) async throws -> (Data, UInt64) {
        try Self.check(request)
        let directory = cluster.volumeDirectory, cluster = self.cluster
        let before = UInt64(directory.generation(volume)) + 1
        if expect != 0 && expect != before { throw Self.replaced(volume, since: expect) }
        let parts = try await cluster.call { cluster.submit(volume: volume, request) }
        let after = UInt64(directory.generation(volume)) + 1
        guard after == before else { throw Self.replaced(volume, since: before) }
        var data = Data(capacity: parts.reduce(0) { $0 + $1.count })
        for p in parts { data.append(contentsOf: p) }
        return (data, after)
    }

    static func check(_ request: ByteRangeAdapter.Request) throws {
        switch request {
        case .read(_, let length), .trim(_, let length, _), .writeZeroes(_, let length, _):
            guard length <= requestBytesMax else {
                throw RPCError(code: .invalidArgument, message: "length \(length) is over the maximum \(requestBytesMax)")
            }
        case .write(_, let chunks, _):
            guard !chunks.allSatisfy(\.isEmpty) else { throw RPCError(code: .invalidArgument, message: "a write needs data") }
        case .flush: break
        }
    }

    static func replaced(_ volume: String, since generation: UInt64) -> RPCError {
        RPCError(code: .aborted, message: "volume \(volume): the writer of generation \(generation) was replaced (fenced, or the volume "
                 + "recreated or deleted): writes not flushed under it may be lost")
    }
}
#endif
