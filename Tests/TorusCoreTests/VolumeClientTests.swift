import Testing
@testable import TorusCore

/// A tiny synchronous driver: messages delivered in FIFO order, disks that complete at once
/// and never crash, a metadata state machine, time advanced in ticks when idle.
final class InstantCluster {
    enum Item {
        case message(from: NodeID, to: NodeID, PeerMessage)
        case meta(client: NodeID, MetaRequestID, MetaRequest)
    }
    let config: BlockStoreConfig
    var disks: [NodeID: [UInt64: [UInt8]]] = [:]
    var nodes: [NodeID: StorageNode] = [:]
    var clients: [NodeID: VolumeClient] = [:]
    var meta = MetadataStateMachine()
    var now = Instant.zero
    var queue: [Item] = []
    var results: [OpID: Result<VolumeOpResult, VolumeError>] = [:]
    var nextOp: UInt64 = 1
    let ring: Ring
    var info: VolumeInfo
    /// When false, messages to and from this node are dropped.
    var reachable: Set<NodeID> = []

    init(nodes n: Int = 3, replication: Int = 2, volumeBytes: UInt64 = 1 << 20, blockSize: Int = 16384) {
        config = BlockStoreConfig(geometry: DiskGeometry(sectorSize: 4096, capacityBytes: 64 << 20), blockSize: blockSize,
                                  journalRegionSectors: 256)
        ring = Ring(members: (1...n).map { RingMember(node: NodeID(UInt32($0))) })
        info = VolumeInfo(name: "v", id: 1, sizeBytes: volumeBytes, blockSize: blockSize, replication: replication)
        for i in 1...n {
            let id = NodeID(UInt32(i))
            disks[id] = [:]
            boot(id)
        }
    }

    func boot(_ id: NodeID) {
        let r = BlockStore.journalRegions(config: config)
        let store = BlockStore.recover(config: config, regionA: read(id, r.a.offset, r.a.length), regionB: read(id, r.b.offset, r.b.length),
                                       readSlot: { read(id, config.slotOffset($0), config.blockSize) })
        nodes[id] = StorageNode(id: id, store: store)
        reachable.insert(id)
        perform(id, nodes[id]!.start())
    }

    func read(_ id: NodeID, _ offset: UInt64, _ length: Int) -> [UInt8] {
        var out: [UInt8] = []
        var s = offset / 4096
        while s < (offset + UInt64(length)) / 4096 {
            out += disks[id]![s] ?? Array(repeating: 0, count: 4096)
            s += 1
        }
        return out
    }

    func perform(_ id: NodeID, _ outputs: [StorageNode.Output]) {
        for o in outputs {
            switch o {
            case .send(let to, let m): queue.append(.message(from: id, to: to, m))
            case .disk(let op, let req):
                let completion: DiskCompletion
                switch req {
                case .read(let off, let len): completion = .read(.success(read(id, off, len)))
                case .write(let off, let bytes):
                    var k = 0
                    while k < bytes.count {
                        disks[id]![(off + UInt64(k)) / 4096] = Array(bytes[k..<(k + 4096)])
                        k += 4096
                    }
                    completion = .written(.success(()))
                case .sync: completion = .synced(.success(()))
                }
                perform(id, nodes[id]!.diskCompleted(op, completion))
            }
        }
    }

    func addClient(_ id: NodeID, config: VolumeClientConfig = VolumeClientConfig()) {
        clients[id] = VolumeClient(info: info, ring: ring, clientID: id, config: config, seed: UInt64(id.raw))
        reachable.insert(id)
        handle(id, clients[id]!.start(now: now))
    }

    func handle(_ id: NodeID, _ outputs: [ClientOutput]) {
        for o in outputs {
            switch o {
            case .send(let to, let m): queue.append(.message(from: id, to: to, m))
            case .metadata(let rid, let req): queue.append(.meta(client: id, rid, req))
            case .complete(let op, let r): results[op] = r
            case .timer, .phaseChanged: break
            }
        }
    }

    @discardableResult
    func submit(_ client: NodeID, _ op: VolumeOp) -> OpID {
        let id = OpID(nextOp)
        nextOp += 1
        handle(client, clients[client]!.submit(id, op, now: now))
        return id
    }

    /// Runs until `done` holds or `seconds` of virtual time pass.
    func run(seconds: UInt64 = 30, until done: () -> Bool) {
        let deadline = now + .seconds(seconds)
        while !done() && now < deadline {
            if queue.isEmpty {
                now = now + .milliseconds(10)
                _ = meta.expireLeases(now: now)
                for id in clients.keys.sorted() { handle(id, clients[id]!.tick(now: now)) }
                continue
            }
            let item = queue.removeFirst()
            switch item {
            case .message(let from, let to, let m):
                guard reachable.contains(from), reachable.contains(to) else { continue }
                if let _ = nodes[to] { perform(to, nodes[to]!.receive(from: from, m)) }
                else if clients[to] != nil { handle(to, clients[to]!.receive(from: from, m, now: now)) }
            case .meta(let c, let rid, let req):
                guard reachable.contains(c) else { continue }
                let (resp, _) = meta.apply(req, now: now)
                handle(c, clients[c]!.metadataReply(rid, resp, now: now))
            }
        }
    }

    func wait(_ op: OpID) -> Result<VolumeOpResult, VolumeError>? {
        run { results[op] != nil }
        return results[op]
    }
}

func pattern(_ seed: UInt8, _ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31) ^ seed } }

@Suite("volume client")
struct VolumeClientTests {
    let c1 = NodeID(100), c2 = NodeID(200)

    @Test("misaligned, out-of-range and oversized requests get typed errors")
    func badRequests() {
        let cl = InstantCluster()
        cl.addClient(c1)
        let a = cl.submit(c1, .read(offset: 100, length: 4096))
        let b = cl.submit(c1, .write(offset: 1 << 20, data: pattern(1, 4096), fua: false))
        let c = cl.submit(c1, .read(offset: 0, length: 0))
        #expect(cl.results[a] == .failure(.misaligned(offset: 100, length: 4096, sectorSize: 4096)))
        #expect(cl.results[b] == .failure(.outOfRange(offset: 1 << 20, length: 4096, volumeSize: 1 << 20)))
        #expect(cl.results[c] == .failure(.misaligned(offset: 0, length: 0, sectorSize: 4096)))
    }

    @Test("unwritten sectors read as zeros; a write reads back across block boundaries")
    func roundTrip() {
        let cl = InstantCluster()
        cl.addClient(c1)
        #expect(cl.wait(cl.submit(c1, .read(offset: 0, length: 8192))) == .success(.read(Array(repeating: 0, count: 8192))))
        let data = pattern(9, 40960)  // 10 sectors from sector 3: spans three 16 KiB blocks
        #expect(cl.wait(cl.submit(c1, .write(offset: 12288, data: data, fua: false))) == .success(.done))
        #expect(cl.wait(cl.submit(c1, .read(offset: 12288, length: 40960))) == .success(.read(data)))
        #expect(cl.wait(cl.submit(c1, .trim(offset: 16384, length: 16384))) == .success(.done))
        var expected = data
        expected.replaceSubrange(4096..<20480, with: Array(repeating: 0, count: 16384))
        #expect(cl.wait(cl.submit(c1, .read(offset: 12288, length: 40960))) == .success(.read(expected)))
    }

    @Test("a write in chunks reads back like one array; a chunk that is exactly a block is cached without a copy")
    func chunkedWrites() {
        let cl = InstantCluster()
        cl.addClient(c1)
        let data = pattern(5, 57344)  // from offset 8192 (16 KiB blocks): half of block 0, blocks 1-2, half of 3
        let chunks = [Array(data[0..<4096]), Array(data[4096..<8192]),
                      Array(data[8192..<24576]),   // exactly block 1
                      Array(data[24576..<45056]),  // block 2 and part of block 3
                      Array(data[45056...])]
        #expect(cl.wait(cl.submit(c1, .write(offset: 8192, chunks: chunks, fua: false))) == .success(.done))
        #expect(cl.wait(cl.submit(c1, .read(offset: 8192, length: 57344))) == .success(.read(data)))
        let cached = cl.clients[c1]!.cache[1]!.data
        #expect(cached.withUnsafeBufferPointer { $0.baseAddress } == chunks[2].withUnsafeBufferPointer { $0.baseAddress })
        // A read of cached blocks answers with slices of them, not copies.
        guard case .success(.read(let parts))? = cl.wait(cl.submit(c1, .read(offset: 16384, length: 20480))) else {
            Issue.record("read failed")
            return
        }
        #expect(parts.count == 2 && parts[0].count == 16384 && parts[1].count == 4096)
        #expect(parts[0].withUnsafeBufferPointer { $0.baseAddress } == chunks[2].withUnsafeBufferPointer { $0.baseAddress })
        #expect(cl.wait(cl.submit(c1, .flush)) == .success(.done))
        #expect(chunks[2] == Array(data[8192..<24576]), "the caller's chunk is never written to")
    }

    @Test("a flush commits the head; a new writer after the lock is released sees the flushed data")
    func flushThenReopen() {
        let cl = InstantCluster()
        cl.addClient(c1)
        let data = pattern(3, 65536)
        _ = cl.wait(cl.submit(c1, .write(offset: 0, data: data, fua: false)))
        #expect(cl.wait(cl.submit(c1, .flush)) == .success(.done))
        #expect(cl.meta.get(VolumeInfo.headKey("v")) != nil)
        // The first writer dies; its lease expires; a second writer opens and reads.
        cl.reachable.remove(c1)
        cl.clients[c1] = nil
        cl.addClient(c2)
        #expect(cl.wait(cl.submit(c2, .read(offset: 0, length: 65536))) == .success(.read(data)))
        #expect(cl.clients[c2]!.epoch == 2)
    }

    @Test("small reads that miss the cache fetch only their range; sequential reads fetch whole blocks")
    func rangeReads() {
        let cl = InstantCluster()
        cl.addClient(c1)
        let data = pattern(4, 65536)
        _ = cl.wait(cl.submit(c1, .write(offset: 0, data: data, fua: true)))
        cl.reachable.remove(c1)
        cl.clients[c1] = nil
        cl.addClient(c2)  // a new writer: nothing cached
        cl.run { cl.clients[c2]!.phase == .ready }
        let base = cl.clients[c2]!.stats.blockFetches  // the map's root and pages
        #expect(cl.wait(cl.submit(c2, .read(offset: 20480, length: 4096))) == .success(.read(Array(data[20480..<24576]))))
        #expect(cl.wait(cl.submit(c2, .read(offset: 40960, length: 8192))) == .success(.read(Array(data[40960..<49152]))))
        #expect(cl.clients[c2]!.stats.rangeFetches == 2)
        #expect(cl.clients[c2]!.stats.blockFetches == base)
        // Sequential from there: whole blocks, which then serve the reads that follow.
        #expect(cl.wait(cl.submit(c2, .read(offset: 49152, length: 4096))) == .success(.read(Array(data[49152..<53248]))))
        #expect(cl.clients[c2]!.stats.blockFetches == base + 1)
        #expect(cl.wait(cl.submit(c2, .read(offset: 53248, length: 4096))) == .success(.read(Array(data[53248..<57344]))))
        #expect(cl.clients[c2]!.stats.blockFetches == base + 1)
        #expect(cl.clients[c2]!.stats.rangeFetches == 2)
        // A small write into an uncached block still fetches the whole block.
        let small = pattern(5, 4096)
        #expect(cl.wait(cl.submit(c2, .write(offset: 4096, data: small, fua: false))) == .success(.done))
        var expected = Array(data[0..<16384])
        expected.replaceSubrange(4096..<8192, with: small)
        #expect(cl.wait(cl.submit(c2, .read(offset: 0, length: 16384))) == .success(.read(expected)))
    }

    @Test("a volume grows under a live writer, also with a flush in flight; a new writer sees the old root padded")
    func growth() {
        let cl = InstantCluster()  // 1 MiB of 16 KiB blocks: one map page
        cl.addClient(c1)
        let head = pattern(6, 65536)
        _ = cl.wait(cl.submit(c1, .write(offset: 0, data: head, fua: false)))
        #expect(cl.wait(cl.submit(c1, .flush)) == .success(.done))
        // Grow while a flush is in flight: it takes effect once the flush is done.
        _ = cl.submit(c1, .write(offset: 65536, data: pattern(7, 16384), fua: false))
        let flush = cl.submit(c1, .flush)
        var bigger = cl.info
        bigger.sizeBytes = 32 << 20  // 2048 blocks: four map pages
        cl.handle(c1, cl.clients[c1]!.grow(to: bigger, now: cl.now))
        #expect(cl.wait(flush) == .success(.done))
        cl.run { cl.clients[c1]!.info.sizeBytes == bigger.sizeBytes }
        #expect(cl.clients[c1]!.info.sizeBytes == 32 << 20)
        let tail = pattern(8, 16384)
        #expect(cl.wait(cl.submit(c1, .write(offset: (30 << 20), data: tail, fua: false))) == .success(.done))
        #expect(cl.wait(cl.submit(c1, .read(offset: 20 << 20, length: 4096))) == .success(.read(Array(repeating: 0, count: 4096))))
        // A writer with the new size opening a head written before the growth pads the root.
        let reopen = NodeID(300)
        cl.info = bigger
        cl.reachable.remove(c1)
        cl.clients[c1] = nil
        cl.addClient(reopen)
        #expect(cl.wait(cl.submit(reopen, .read(offset: 0, length: 65536))) == .success(.read(head)))
        #expect(cl.wait(cl.submit(reopen, .read(offset: 65536, length: 16384))) == .success(.read(pattern(7, 16384))))
        #expect(cl.wait(cl.submit(reopen, .read(offset: 30 << 20, length: 16384))) == .success(.read(Array(repeating: 0, count: 16384))),
                "the tail was never flushed")
        #expect(cl.wait(cl.submit(reopen, .write(offset: (32 << 20) - 4096, data: pattern(9, 4096), fua: true))) == .success(.done))
        cl.reachable.remove(reopen)
        cl.clients[reopen] = nil
        cl.addClient(c2)
        #expect(cl.wait(cl.submit(c2, .read(offset: (32 << 20) - 4096, length: 4096))) == .success(.read(pattern(9, 4096))))
    }

    @Test("read-only clients open next to the writer, refuse writes, and follow its commits (also of deleted versions)")
    func readOnlyClients() {
        let cl = InstantCluster()
        cl.addClient(c1)
        let a = pattern(1, 32768)  // blocks 0 and 1
        _ = cl.wait(cl.submit(c1, .write(offset: 0, data: a, fua: false)))
        #expect(cl.wait(cl.submit(c1, .flush)) == .success(.done))
        var ro = VolumeClientConfig()
        ro.readOnly = true
        var quiet = ro
        quiet.readOnlyRefresh = .seconds(60)  // re-reads the head only when a fetch fails
        let r1 = NodeID(301), r2 = NodeID(302)
        cl.addClient(r1, config: quiet)
        cl.addClient(r2, config: ro)
        #expect(cl.wait(cl.submit(r1, .read(offset: 0, length: 16384))) == .success(.read(Array(a[0..<16384]))))
        #expect(cl.wait(cl.submit(r2, .read(offset: 0, length: 32768))) == .success(.read(a)))
        #expect(cl.wait(cl.submit(r1, .write(offset: 0, data: pattern(2, 4096), fua: false))) == .failure(.readOnly(volume: "v")))
        #expect(cl.wait(cl.submit(r1, .trim(offset: 0, length: 4096))) == .failure(.readOnly(volume: "v")))
        #expect(cl.wait(cl.submit(r1, .flush)) == .success(.done))
        #expect(cl.clients[c1]!.phase == .ready && cl.clients[r1]!.leaseID == 0, "readers take no lease and leave the writer alone")
        // The writer replaces both blocks and commits by a log append, then commits once more:
        // a reader follows a record once the next one is on every node too (a recovery may drop
        // the last record of a one-round FLUSH), at its next refresh.
        let b = pattern(3, 32768)
        _ = cl.wait(cl.submit(c1, .write(offset: 0, data: b, fua: true)))
        let start = cl.now
        cl.run(seconds: 2) { cl.now >= start + .milliseconds(1500) }
        #expect(cl.clients[r2]!.stats.followedRecords == 0, "the last record is not followed")
        #expect(cl.wait(cl.submit(r2, .read(offset: 0, length: 32768))) == .success(.read(a)))
        _ = cl.wait(cl.submit(c1, .write(offset: 32768, data: pattern(6, 4096), fua: true)))
        let next = cl.now
        cl.run(seconds: 2) { cl.now >= next + .milliseconds(1500) }
        #expect(cl.clients[r2]!.stats.followedRecords >= 1)
        #expect(cl.wait(cl.submit(r2, .read(offset: 0, length: 32768))) == .success(.read(b)))
        // Idle past the checkpoint interval, the writer checkpoints, which deletes the versions
        // it replaces. r1 never cached block 1 and never refreshed: its fetch of the deleted
        // version fails, the head is re-read, the new version is read.
        let checkpointsBefore = cl.clients[c1]!.stats.commits - cl.clients[c1]!.stats.logCommits
        let idle = cl.now
        cl.run(seconds: 6) { cl.now >= idle + .milliseconds(5500) }
        #expect(cl.clients[c1]!.stats.commits - cl.clients[c1]!.stats.logCommits == checkpointsBefore + 1, "an idle writer checkpoints")
        let refreshesBefore = cl.clients[r1]!.stats.refreshes
        #expect(cl.wait(cl.submit(r1, .read(offset: 16384, length: 16384))) == .success(.read(Array(b[16384..<32768]))))
        #expect(cl.clients[r1]!.stats.readRetries > 0 && cl.clients[r1]!.stats.refreshes == refreshesBefore + 1,
                "the deleted version was asked for first, then the map followed")
        // Unflushed writes never show.
        _ = cl.wait(cl.submit(c1, .write(offset: 0, data: pattern(4, 16384), fua: false)))
        let later = cl.now
        cl.run(seconds: 3) { cl.now >= later + .seconds(2) }
        #expect(cl.wait(cl.submit(r2, .read(offset: 0, length: 16384))) == .success(.read(Array(b[0..<16384]))))
    }

    @Test("a writer that lost its lock can never make its writes visible")
    func fencing() {
        let cl = InstantCluster()
        cl.addClient(c1)
        let before = pattern(1, 16384)
        _ = cl.wait(cl.submit(c1, .write(offset: 0, data: before, fua: true)))
        // Take the lock away from the first writer (as if its lease expired while it was paused).
        let lease = cl.meta.get(VolumeInfo.lockKey("v"))!.lease
        _ = cl.meta.apply(.leaseRevoke(id: lease), now: cl.now)
        cl.addClient(c2)
        cl.run { cl.clients[c2]!.phase == .ready }
        // The old writer keeps going: its flush must fail.
        _ = cl.wait(cl.submit(c1, .write(offset: 0, data: pattern(2, 16384), fua: false)))
        let flush = cl.wait(cl.submit(c1, .flush))
        guard case .failure(.fenced) = flush else {
            Issue.record("stale writer's flush returned \(String(describing: flush))")
            return
        }
        #expect(cl.wait(cl.submit(c2, .read(offset: 0, length: 16384))) == .success(.read(before)))
    }

    /// Deferred syncing, quick write-back, no syncs until something asks for one.
    static func deferredSyncing() -> VolumeClientConfig {
        var cfg = VolumeClientConfig()
        cfg.writebackDelay = .milliseconds(10)
        cfg.durableWriteback = false
        cfg.syncDelay = .seconds(600)
        return cfg
    }

    @Test("a replica that lost unsynced copies in a crash gets them written again; the flush commits only durable copies")
    func lostUnsyncedCopies() {
        let cl = InstantCluster(nodes: 3, replication: 2)
        cl.addClient(c1, config: Self.deferredSyncing())
        let data = pattern(9, 16384 * 6)
        _ = cl.wait(cl.submit(c1, .write(offset: 0, data: data, fua: false)))
        cl.run { cl.clients[c1]!.unsynced.count == 6 }
        #expect(cl.clients[c1]!.unsynced.count == 6, "written back, not yet synced")
        // Node 1 crashes and restarts: its unjournaled puts are gone.
        let lost = cl.clients[c1]!.unsynced.values.filter { $0.contains(NodeID(1)) }.count
        #expect(lost > 0)
        cl.boot(NodeID(1))
        #expect(cl.wait(cl.submit(c1, .flush)) == .success(.done))
        let c = cl.clients[c1]!
        #expect(c.stats.lostCopies >= lost && c.unsynced.isEmpty)
        for ref in c.committedRefs {
            let holders = cl.nodes.values.filter { $0.store.durableRefs.contains(ref) }.count
            #expect(holders >= 2, "\(ref) is durable on \(holders) nodes")
        }
        // Every node loses power: the flushed data survives.
        for n in 1...3 { cl.boot(NodeID(UInt32(n))) }
        cl.reachable.remove(c1)
        cl.clients[c1] = nil
        let lease = cl.meta.get(VolumeInfo.lockKey("v"))!.lease
        _ = cl.meta.apply(.leaseRevoke(id: lease), now: cl.now)
        cl.addClient(c2)
        #expect(cl.wait(cl.submit(c2, .read(offset: 0, length: data.count))) == .success(.read(data)))
    }

    @Test("with deferred syncing, write-backs while the unsynced blocks are over their mark are durable puts")
    func durableUnderSyncPressure() {
        let cl = InstantCluster(nodes: 3, replication: 2)
        var cfg = Self.deferredSyncing()
        cfg.unsyncedBytesHigh = 0  // always over the mark
        cl.addClient(c1, config: cfg)
        let data = pattern(4, 16384 * 6)
        _ = cl.wait(cl.submit(c1, .write(offset: 0, data: data, fua: false)))
        cl.run { cl.clients[c1]!.stats.writebacks >= 6 && cl.clients[c1]!.writebacks.isEmpty }
        let c = cl.clients[c1]!
        #expect(c.stats.pressureDurableWritebacks == 6)
        #expect(c.unsynced.isEmpty, "durable puts leave nothing to sync")
        // Each block is durable on both its replicas before any flush.
        let written = (0..<6).compactMap { block in c.entries[block]?.ref(volume: c.info.id, index: UInt64(block)) }
        #expect(written.count == 6)
        for ref in written {
            #expect(cl.nodes.values.filter { $0.store.durableRefs.contains(ref) }.count == 2, "\(ref)")
        }
    }

    @Test("reads go around a replica that does not answer")
    func readAroundDeadReplica() {
        let cl = InstantCluster(nodes: 3, replication: 2)
        cl.addClient(c1)
        let data = pattern(5, 16384 * 4)
        _ = cl.wait(cl.submit(c1, .write(offset: 0, data: data, fua: true)))
        cl.reachable.remove(NodeID(1))
        // A fresh writer has an empty cache, so it must fetch every block.
        cl.clients[c1] = nil
        let lease = cl.meta.get(VolumeInfo.lockKey("v"))!.lease
        _ = cl.meta.apply(.leaseRevoke(id: lease), now: cl.now)
        cl.addClient(c2)
        #expect(cl.wait(cl.submit(c2, .read(offset: 0, length: data.count))) == .success(.read(data)))
    }

    @Test("a read of a block with no verified copy fails with an error, not wrong data")
    func corruptEverywhere() {
        let cl = InstantCluster(nodes: 2, replication: 2)
        var cfg = VolumeClientConfig()
        cfg.readRoundsMax = 2
        cl.addClient(c1, config: cfg)
        _ = cl.wait(cl.submit(c1, .write(offset: 0, data: pattern(7, 16384), fua: true)))
        cl.clients[c1] = nil
        let lease = cl.meta.get(VolumeInfo.lockKey("v"))!.lease
        _ = cl.meta.apply(.leaseRevoke(id: lease), now: cl.now)
        cl.addClient(c2, config: cfg)
        cl.run { cl.clients[c2]!.phase == .ready }
        #expect(cl.clients[c2]!.phase == .ready)
        // Now flip a byte in every slot of every disk (outside the journal regions).
        let b = BlockStore.journalRegions(config: cl.config).b
        let journalEnd = (b.offset + UInt64(b.length)) / 4096
        for id in cl.disks.keys.sorted() {
            for s in cl.disks[id]!.keys.sorted() where s >= journalEnd { cl.disks[id]![s]![100] ^= 0xFF }
        }
        let r = cl.wait(cl.submit(c2, .read(offset: 0, length: 16384)))
        #expect(r == .failure(.readFailed(block: 0)))
    }
}
