/// Correlates a request with its reply on the peer protocol. Chosen by the sender, unique per sender.
public struct RPCID: WordHashable, Comparable, Sendable, CustomStringConvertible {
    public var raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public static func < (a: RPCID, b: RPCID) -> Bool { a.raw < b.raw }
    public var hashWord: UInt64 { raw }
    public var description: String { "#\(raw)" }
}

/// Messages between volume clients and storage nodes (the peer protocol's semantic layer;
/// the wire encoding lives with the production transport).
public enum PeerMessage: Sendable {
    /// Store an immutable block. With `durable`, the reply comes only once the block survives a
    /// crash. With `restore`, the copy restores redundancy (repair, read-repair): it may use
    /// the slots a node near full keeps back from new blocks. With `copy`, maintenance (repair,
    /// move, read repair) copies an existing version: a volume's seal does not refuse it.
    case putBlock(RPCID, BlockRef, [UInt8], durable: Bool, restore: Bool = false, copy: Bool = false)
    case putReply(RPCID, Result<Void, StoreError>)
    case getBlock(RPCID, BlockRef)
    /// `length` bytes of a block from `offset` (answered by `getReply`). The node reads and
    /// verifies the whole block against its checksum, then sends only the range: a small
    /// read does not move a whole block over the network.
    case getRange(RPCID, BlockRef, offset: Int, length: Int)
    /// The node verified the bytes against its checksum before replying.
    case getReply(RPCID, Result<[UInt8], StoreError>)
    /// Best effort, no reply: the refs are garbage.
    case deleteBlocks([BlockRef])
    /// Make every listed ref durable; the reply lists those the node holds durably.
    case syncBlocks(RPCID, [BlockRef])
    case syncReply(RPCID, present: [BlockRef])
    /// Up to `limit` refs the node holds, in ref order, after `after` (nil: from the start).
    /// For the garbage collector's inventory; answered from memory at once.
    case listBlocks(RPCID, after: BlockRef?, limit: Int)
    /// `complete`: no ref after the last one listed (at the time of the reply).
    case listReply(RPCID, refs: [BlockRef], complete: Bool)

    /// Short name for traces.
    public var kindCode: UInt64 {
        switch self {
        case .putBlock: 1
        case .putReply: 2
        case .getBlock: 3
        case .getReply: 4
        case .deleteBlocks: 5
        case .syncBlocks: 6
        case .syncReply: 7
        case .getRange: 8
        case .listBlocks: 9
        case .listReply: 10
        }
    }

    /// Payload size for network modelling.
    public var approximateBytes: Int {
        switch self {
        case .putBlock(_, _, let d, _, _, _): 64 + d.count
        case .getReply(_, .success(let d)): 64 + d.count
        case .deleteBlocks(let refs): 16 + 32 * refs.count
        case .syncBlocks(_, let refs), .syncReply(_, let refs), .listReply(_, let refs, _): 16 + 32 * refs.count
        default: 64
        }
    }
}
