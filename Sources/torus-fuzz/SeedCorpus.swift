import Foundation
import NIOCore
import TorusCore
import TorusRuntime

/// `--write-corpus DIR`: encodes representative peer frames and metadata values with the
/// product's own encoders (what a node or etcd really holds), one file each.
enum SeedCorpus {
    static func write(_ target: FuzzTarget, to dir: String) throws -> Int {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let inputs: [(String, [UInt8])]
        switch target {
        case .peer: inputs = try peerFrames()
        case .metadata: inputs = metadataValues()
        case .nbd, .scenario:
            throw FuzzFailure("\(target.rawValue) corpora are real captures (docs/fuzzing.md), not generated")
        }
        for (name, bytes) in inputs { try Data(bytes).write(to: URL(fileURLWithPath: dir + "/" + name)) }
        return inputs.count
    }

    static func peerFrames() throws -> [(String, [UInt8])] {
        let ref = BlockRef(volume: 3, epoch: 2, sequence: 41, index: 7)
        let seal = BlockRef(volume: 3, epoch: 2, sequence: 0, index: BlockRef.sealIndex)
        let data = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let frames: [(String, PeerFrame)] = [
            ("hello", .hello(node: NodeID(1001), cluster: PeerClusterID(Array(repeating: 0xAB, count: 16))!, maxVersion: PeerCodec.version)),
            ("hello-ack", .helloAck(node: NodeID(2), version: PeerCodec.version)),
            ("put", .message(.putBlock(RPCID(5), ref, data, durable: false))),
            ("put-durable-copy", .message(.putBlock(RPCID(6), ref, data, durable: true, restore: true, copy: true))),
            ("put-seal", .message(.putBlock(RPCID(7), seal, data, durable: true))),
            ("put-ok", .message(.putReply(RPCID(5), .success(())), replyRef: ref)),
            ("put-sealed", .message(.putReply(RPCID(5), .failure(.sealed(epoch: 3))), replyRef: ref)),
            ("put-nospace", .message(.putReply(RPCID(5), .failure(.noSpace)), replyRef: ref)),
            ("get", .message(.getBlock(RPCID(8), ref))),
            ("get-range", .message(.getRange(RPCID(9), ref, offset: 4096, length: 4096))),
            ("get-reply", .message(.getReply(RPCID(8), .success(data)), replyRef: ref)),
            ("get-corrupt", .message(.getReply(RPCID(8), .failure(.corrupt(ref))), replyRef: ref)),
            ("get-notfound", .message(.getReply(RPCID(8), .failure(.notFound(ref))), replyRef: ref)),
            ("delete", .message(.deleteBlocks([ref, seal]))),
            ("sync", .message(.syncBlocks(RPCID(10), [ref, seal]))),
            ("sync-reply", .message(.syncReply(RPCID(10), present: [ref]))),
            ("list", .message(.listBlocks(RPCID(11), after: ref, limit: 256))),
            ("list-first", .message(.listBlocks(RPCID(12), after: nil, limit: 1))),
            ("list-reply", .message(.listReply(RPCID(11), refs: [ref, seal], complete: false))),
        ]
        var all: [UInt8] = []
        var out: [(String, [UInt8])] = try frames.map { name, frame in
            var buffer = ByteBuffer()
            try PeerCodec.encode(frame, into: &buffer)
            let bytes = Array(buffer.readableBytesView)
            all += bytes
            return (name, bytes)
        }
        out.append(("stream", all))  // many frames in one read
        return out
    }

    static func metadataValues() -> [(String, [UInt8])] {
        let entry = MapEntry(epoch: 2, sequence: 9, crc: 0xDEAD_BEEF)
        let record = LogRecord(volume: 1, epoch: 1, position: 1, generation: 4, floor: 3,
                               changes: [.init(index: 0, entry: entry), .init(index: 5, entry: nil)])
        let entries: [MapEntry?] = [entry, nil, MapEntry(epoch: 1, sequence: 1, crc: 1)]
        return [
            ("0-volume-info", [0] + VolumeInfo(name: "vol0", id: 1, sizeBytes: 1 << 30, blockSize: 64 << 10, replication: 2).encoded()),
            ("1-volume-head", [1] + VolumeHead(epoch: 2, generation: 7, root: entry, floor: 12).encoded()),
            ("2-log-record", [2] + record.encoded(blockSize: 4096)),
            ("3-map-page", [3] + BlockMapCodec.encodePage(volume: 1, page: 0, entries: entries[...], blockSize: 4096)),
            ("4-map-root", [4] + BlockMapCodec.encodeRoot(volume: 1, generation: 7, pages: entries, blockSize: 4096)),
        ]
    }
}
