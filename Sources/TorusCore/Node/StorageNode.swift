/// A storage node: serves put / get / delete / sync of immutable blocks for its peers on top of
/// its local `BlockStore`. Deterministic and sans-I/O: messages and disk completions in,
/// messages and disk requests out.
public struct StorageNode: Sendable {
    public enum Output: Sendable {
        case send(to: NodeID, PeerMessage)
        case disk(DiskOpID, DiskRequest)
    }

    public let id: NodeID
    public private(set) var store: BlockStore
    /// Which peer request each store request answers.
    private var waiting: [StoreRequestID: (peer: NodeID, rpc: RPCID, range: Range<Int>?)] = [:]
    private var nextStoreRequest: UInt64 = 1

    /// Rebuilds the node from what its disk holds (the two journal regions).
    public init(id: NodeID, store: BlockStore) {
        self.id = id
        self.store = store
    }

    /// Disk requests the node must issue right after boot (journal compaction after recovery).
    public mutating func start() -> [Output] {
        translate(store.start())
    }

    public mutating func receive(from peer: NodeID, _ message: PeerMessage) -> [Output] {
        switch message {
        case .putBlock(let rpc, let ref, let data, let durable):
            let sid = allocate(peer, rpc)
            return translate(store.handle(.put(sid, ref, data, durable: durable)))
        case .getBlock(let rpc, let ref):
            let sid = allocate(peer, rpc)
            return translate(store.handle(.get(sid, ref)))
        case .getRange(let rpc, let ref, let offset, let length):
            let size = store.config.blockSize
            guard offset >= 0, length > 0, offset <= size - length else {
                return [.send(to: peer, .getReply(rpc, .failure(.wrongSize(expected: size, got: offset + length))))]
            }
            let sid = allocate(peer, rpc, range: offset..<(offset + length))
            return translate(store.handle(.get(sid, ref)))
        case .deleteBlocks(let refs):
            return translate(store.handle(.delete(refs)))
        case .syncBlocks(let rpc, let refs):
            let sid = allocate(peer, rpc)
            return translate(store.handle(.sync(sid, refs)))
        case .listBlocks(let rpc, let after, let limit):
            let (refs, complete) = store.listRefs(after: after, limit: limit)
            return [.send(to: peer, .listReply(rpc, refs: refs, complete: complete))]
        case .putReply, .getReply, .syncReply, .listReply:
            // Nodes never send requests to each other yet; a stray reply is ignored.
            return []
        }
    }

    public mutating func diskCompleted(_ id: DiskOpID, _ completion: DiskCompletion) -> [Output] {
        translate(store.diskCompleted(id, completion))
    }

    public func checkInvariants() {
        store.checkInvariants()
    }

    private mutating func allocate(_ peer: NodeID, _ rpc: RPCID, range: Range<Int>? = nil) -> StoreRequestID {
        let sid = StoreRequestID(nextStoreRequest)
        nextStoreRequest += 1
        waiting[sid] = (peer, rpc, range)
        return sid
    }

    private mutating func translate(_ outputs: [StoreOutput]) -> [Output] {
        var result: [Output] = []
        result.reserveCapacity(outputs.count)
        for o in outputs {
            switch o {
            case .disk(let id, let req):
                result.append(.disk(id, req))
            case .reply(let reply):
                let sid: StoreRequestID
                let message: (RPCID) -> PeerMessage
                switch reply {
                case .put(let s, let r): sid = s; message = { .putReply($0, r) }
                case .get(let s, let r):
                    sid = s
                    // A range request gets only its bytes (the store verified the whole block).
                    let range = waiting[s]?.range
                    let sliced = range.map { range in r.map { Array($0[range]) } } ?? r
                    message = { .getReply($0, sliced) }
                case .sync(let s, let present): sid = s; message = { .syncReply($0, present: present) }
                }
                guard let w = waiting.removeValue(forKey: sid) else {
                    preconditionFailure("store replied to unknown request \(sid.raw) on \(id)")
                }
                result.append(.send(to: w.peer, message(w.rpc)))
            }
        }
        return result
    }
}
