/// Requests, replies and errors of `BlockStore`.

/// Names one request to the store; chosen by the caller and echoed in its reply.
public struct StoreRequestID: WordHashable, Comparable, Sendable, CustomStringConvertible {
    public var raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public static func < (a: StoreRequestID, b: StoreRequestID) -> Bool { a.raw < b.raw }
    public var hashWord: UInt64 { raw }
    public var description: String { "req\(raw)" }
}

public enum StoreRequest: Sendable {
    /// Store `bytes` (exactly `blockSize` of them) under `ref`. With `durable`, the reply comes
    /// only once the ref is durable (its journal record synced); without, once the data write
    /// completed. Idempotent: a present ref with the same bytes succeeds at once. Only with
    /// `restore` (a copy restoring redundancy) may it use the `reserveSlots`.
    case put(StoreRequestID, BlockRef, [UInt8], durable: Bool, restore: Bool = false)
    /// Read a block; the bytes are verified against the CRC32C recorded at put.
    case get(StoreRequestID, BlockRef)
    /// Read `range` of a block (answered by a `.get` reply of just those bytes). Verified
    /// against the block's sector checksums when the store knows them; otherwise the whole
    /// block is read and verified, and its sector checksums are learned (`SectorChecksums`).
    case getRange(StoreRequestID, BlockRef, Range<Int>)
    /// Remove refs from the index now; no reply. Durable with a later sync cycle; the slots
    /// are reused only after that.
    case delete([BlockRef])
    /// After a full sync cycle, reply with which of `refs` are present and durable.
    case sync(StoreRequestID, [BlockRef])
}

public enum StoreError: Error, Hashable, Sendable {
    /// The ref is not in the index.
    case notFound(BlockRef)
    /// The slot's bytes do not match the ref's checksum (the ref is dropped so it can be
    /// repaired), or a put brought different bytes for a present ref.
    case corrupt(BlockRef)
    /// Every slot is in use or waiting for a delete to become durable.
    case noSpace
    /// The disk failed the operation, or the store is over its outstanding-request limit.
    /// Retrying may succeed.
    case ioError
    /// A put's bytes are not exactly one block.
    case wrongSize(expected: Int, got: Int)
    /// A log record (or segment header) from an epoch below the volume's seal on this node:
    /// a newer writer took the volume.
    case sealed(epoch: UInt64)
}

public enum StoreReply: Hashable, Sendable {
    case put(StoreRequestID, Result<Void, StoreError>)
    case get(StoreRequestID, Result<[UInt8], StoreError>)
    /// The requested refs that are present and durable, sorted, without duplicates.
    case sync(StoreRequestID, present: [BlockRef])

    public var id: StoreRequestID {
        switch self {
        case let .put(id, _), let .get(id, _), let .sync(id, _): id
        }
    }

    public static func == (a: StoreReply, b: StoreReply) -> Bool {
        switch (a, b) {
        case let (.put(i, .success), .put(j, .success)): i == j
        case let (.put(i, .failure(x)), .put(j, .failure(y))): i == j && x == y
        case let (.get(i, x), .get(j, y)): i == j && x == y
        case let (.sync(i, x), .sync(j, y)): i == j && x == y
        default: false
        }
    }

    public func hash(into h: inout Hasher) {
        switch self {
        case let .put(id, result):
            h.combine(0); h.combine(id)
            switch result {
            case .success: h.combine(true)
            case let .failure(e): h.combine(false); h.combine(e)
            }
        case let .get(id, result): h.combine(1); h.combine(id); h.combine(result)
        case let .sync(id, present): h.combine(2); h.combine(id); h.combine(present)
        }
    }
}

public enum StoreOutput: Sendable {
    /// Perform this disk request and report its completion with `diskCompleted`.
    case disk(DiskOpID, DiskRequest)
    case reply(StoreReply)
}
