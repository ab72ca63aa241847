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
    /// Per volume, the highest epoch a seal named: writers' puts (records, blocks) of older
    /// epochs are refused. Rebuilt from the seal blocks the store holds (they are durable puts).
    public private(set) var seals: [UInt64: UInt64] = [:]
    /// Injected bug (simulator canary `node-ignores-seal`): puts of sealed epochs are accepted.
    public var ignoresSeals = false
    /// Injected bug (canary `node-ignores-data-seal`): only records are refused, not blocks.
    public var ignoresDataSeals = false
    /// Injected bug (simulator canary `store-trusts-sectors`): see `BlockStore.trustsSectorReads`.
    public var trustsSectorReads: Bool {
        get { store.trustsSectorReads }
        set { store.trustsSectorReads = newValue }
    }
    /// Which peer request each store request answers.
    private var waiting: [StoreRequestID: (peer: NodeID, rpc: RPCID)] = [:]
    /// Seal puts in flight: once one is durable, the volume's older seals are deleted.
    private var sealPuts: [StoreRequestID: BlockRef] = [:]
    private var supersededSeals: [BlockRef] = []
    private var nextStoreRequest: UInt64 = 1
    /// Buffers reused across steps (one allocation each per node, not two per step): the
    /// store's outputs of the step under way, and the node's outputs (see `StepOutputs`).
    private var storeOut: [StoreOutput] = []
    private var out = StepOutputs<Output>()

    // Scrubbing: the refs of the current round still to verify (a sorted batch), where the
    // round is, and the verification in flight.
    private var scrubBatch: [BlockRef] = []
    private var scrubCursor: BlockRef?
    private var scrubInFlight: StoreRequestID?
    public private(set) var scrubStats = ScrubStats()
    public struct ScrubStats: Sendable, Equatable {
        /// Blocks read back and found matching their checksum.
        public var verified = 0
        /// Copies found corrupt or unreadable (the store dropped them; repair copies them back).
        public var bad = 0
        /// Full passes over every stored block.
        public var rounds = 0
        public init() {}
    }

    /// Rebuilds the node from what its disk holds (the two journal regions).
    public init(id: NodeID, store: BlockStore) {
        self.id = id
        self.store = store
        for r in store.index.keys where r.index == BlockRef.sealIndex { seals[r.volume] = max(seals[r.volume] ?? 0, r.epoch) }
    }

    /// Disk requests the node must issue right after boot (journal compaction after recovery).
    public mutating func start() -> [Output] {
        step { $0.start(into: &$1) }
    }

    public mutating func receive(from peer: NodeID, _ message: PeerMessage) -> [Output] {
        switch message {
        case .putBlock(let rpc, let ref, let data, let durable, let restore, let copy):
            // A sealed volume's older writers are refused: their records and their blocks (a
            // FLUSH is acknowledged once both are durable). A restoring put of a record is a
            // recovery copying what it read; a copy is maintenance moving an existing version.
            if ref.index != BlockRef.sealIndex, let sealed = seals[ref.volume], ref.epoch < sealed, !restore, !copy,
               !(ignoresSeals || (ignoresDataSeals && ref.index != BlockRef.logIndex)) {
                return [.send(to: peer, .putReply(rpc, .failure(.sealed(epoch: sealed))))]
            }
            // A seal holds from the moment it arrives; its reply waits until it is durable.
            let sid = allocate(peer, rpc)
            if ref.index == BlockRef.sealIndex {
                seals[ref.volume] = max(seals[ref.volume] ?? 0, ref.epoch)
                sealPuts[sid] = ref
            }
            return step { $0.handle(.put(sid, ref, data, durable: durable, restore: restore), into: &$1) }
        case .getBlock(let rpc, let ref):
            let sid = allocate(peer, rpc)
            return step { $0.handle(.get(sid, ref), into: &$1) }
        case .getRange(let rpc, let ref, let offset, let length):
            let size = store.config.blockSize
            guard offset >= 0, length > 0, offset <= size - length else {
                return [.send(to: peer, .getReply(rpc, .failure(.wrongSize(expected: size, got: offset + length))))]
            }
            let sid = allocate(peer, rpc)
            return step { $0.handle(.getRange(sid, ref, offset..<(offset + length)), into: &$1) }
        case .deleteBlocks(let refs):
            return step { $0.handle(.delete(refs), into: &$1) }
        case .syncBlocks(let rpc, let refs):
            let sid = allocate(peer, rpc)
            return step { $0.handle(.sync(sid, refs), into: &$1) }
        case .listBlocks(let rpc, let after, let limit):
            let (refs, complete) = store.listRefs(after: after, limit: limit)
            return [.send(to: peer, .listReply(rpc, refs: refs, complete: complete))]
        case .putReply, .getReply, .syncReply, .listReply:
            // Nodes never send requests to each other yet; a stray reply is ignored.
            return []
        }
    }

    /// Verifies the next stored block against its checksum (one at a time; the driver calls
    /// this at its scrub rate). A bad copy is dropped, as on any read, and counted; the
    /// collector's repair then copies the block back from a good replica.
    public mutating func scrubNext() -> [Output] {
        guard scrubInFlight == nil else { return [] }
        if scrubBatch.isEmpty {
            let (refs, _) = store.listRefs(after: scrubCursor, limit: 256)
            if refs.isEmpty {
                if scrubCursor != nil { scrubStats.rounds += 1 }
                scrubCursor = nil
                return []
            }
            scrubBatch = refs.reversed()
        }
        let ref = scrubBatch.removeLast()
        scrubCursor = ref
        guard store.hasRef(ref) else { return [] }  // deleted since the batch was listed
        let sid = allocate(id, RPCID(0))
        scrubInFlight = sid
        return step { $0.handle(.get(sid, ref), into: &$1) }
    }

    /// Requests that arrived together (one read from the network) share one store cycle: hold
    /// cycles, hand them over, then release.
    public mutating func holdCycles() { store.holdCycles() }

    public mutating func releaseCycles() -> [Output] {
        step { $0.releaseCycles(into: &$1) }
    }

    public mutating func diskCompleted(_ id: DiskOpID, _ completion: DiskCompletion) -> [Output] {
        step { $0.diskCompleted(id, completion, into: &$1) }
    }

    public func checkInvariants() {
        store.checkInvariants()
    }

    private mutating func allocate(_ peer: NodeID, _ rpc: RPCID) -> StoreRequestID {
        let sid = StoreRequestID(nextStoreRequest)
        nextStoreRequest += 1
        waiting[sid] = (peer, rpc)
        return sid
    }

    /// Runs one store step into the reused buffers and returns the node's outputs.
    private mutating func step(_ body: (inout BlockStore, inout [StoreOutput]) -> Void) -> [Output] {
        out.begin()
        var storeOutputs = storeOut
        storeOut = []  // (taken, so appending to it copies nothing)
        body(&store, &storeOutputs)
        translate(storeOutputs)
        storeOutputs.clearKeepingCapacity()
        if !supersededSeals.isEmpty {
            // Only once the newer seal is durable: a node must never be left with none.
            store.handle(.delete(supersededSeals), into: &storeOutputs)
            supersededSeals.removeAll()
            translate(storeOutputs)
            storeOutputs.clearKeepingCapacity()
        }
        storeOut = storeOutputs
        return out.handOut()
    }

    private mutating func translate(_ outputs: [StoreOutput]) {
        for o in outputs {
            switch o {
            case .disk(let id, let req):
                out.append(.disk(id, req))
            case .reply(let reply):
                let sid: StoreRequestID
                switch reply {
                case .put(let s, _), .get(let s, _), .sync(let s, _): sid = s
                }
                guard let w = waiting.removeValue(forKey: sid) else {
                    preconditionFailure("store replied to unknown request \(sid.raw) on \(id)")
                }
                if sid == scrubInFlight {
                    scrubInFlight = nil
                    switch reply {
                    case .get(_, .success): scrubStats.verified += 1
                    // A bad copy is dropped from the index; a ref deleted meanwhile, or a read
                    // refused because the store was busy, is not a bad copy.
                    case .get(_, .failure(.corrupt)), .get(_, .failure(.ioError)):
                        if let ref = scrubCursor, !store.hasRef(ref) { scrubStats.bad += 1 }
                    default: break
                    }
                    continue
                }
                if let seal = sealPuts.removeValue(forKey: sid), case .put(_, .success) = reply {
                    supersededSeals += store.index.keys.filter {
                        $0.index == BlockRef.sealIndex && $0.volume == seal.volume && $0.epoch < seal.epoch
                    }.sorted()
                }
                let message: PeerMessage
                switch reply {
                case .put(_, let r): message = .putReply(w.rpc, r)
                case .get(_, let r): message = .getReply(w.rpc, r)
                case .sync(_, let present): message = .syncReply(w.rpc, present: present)
                }
                out.append(.send(to: w.peer, message))
            }
        }
    }
}
