/// Marking: every ref the committed maps reach, read from the replicas and verified.
extension Collector {
    mutating func startFetch(volume: UInt64, kind: Fetch.Kind, ref: BlockRef, crc: UInt32) {
        let info = volumes[volume]!.info
        let nodes = ring.everyCandidate(for: ref.placementKey, replication: info.replication)
        volumes[volume]!.fetchesLeft += 1
        sendFetch(Fetch(volume: volume, kind: kind, ref: ref, crc: crc, nodes: nodes, next: 0, node: nodes[0],
                        deadline: now))
    }

    /// Asks the next candidate (after a full round, the volume is given up for this pass).
    mutating func sendFetch(_ f: Fetch) {
        var f = f
        guard f.next < f.nodes.count * config.attemptsMax else {
            volumes[f.volume]!.failed = true
            return fetchDone(f.volume)
        }
        f.node = f.nodes[f.next % f.nodes.count]
        f.next += 1
        f.deadline = now + config.rpcTimeout
        let rpc = RPCID(nextRPC)
        nextRPC += 1
        rpcs[rpc] = f
        out.append(.send(to: f.node, .getBlock(rpc, f.ref)))
    }

    mutating func fetched(_ rpc: RPCID, from node: NodeID, _ result: Result<[UInt8], StoreError>) {
        guard stage == .marking, let f = rpcs[rpc], f.node == node else { return }
        rpcs[rpc] = nil
        guard volumes[f.volume]?.failed == false else { return fetchDone(f.volume) }
        guard case .success(let bytes) = result, CRC32C.checksum(bytes) == f.crc else { return sendFetch(f) }
        let id = f.volume
        switch f.kind {
        // A clone's map names blocks of its origin too: `f.ref.volume` wrote this one.
        case .root:
            guard let (_, pages) = BlockMapCodec.decodeRoot(bytes, volume: f.ref.volume, reader: id) else { return sendFetch(f) }
            for (p, e) in pages.enumerated() {
                guard let e else { continue }
                let ref = e.ref(volume: id, index: BlockRef.mapIndexBase + UInt64(p))
                // Snapshots share most pages with the head: each page is read once.
                guard markReachable(ref, crc: e.crc) else { continue }
                startFetch(volume: id, kind: .page(p), ref: ref, crc: e.crc)
            }
        case .page(let p):
            guard let entries = BlockMapCodec.decodePage(bytes, volume: f.ref.volume, page: UInt64(p), reader: id) else { return sendFetch(f) }
            let base = p * BlockMapCodec.entriesPerPage(blockSize: volumes[id]!.info.blockSize)
            for (i, e) in entries.enumerated() {
                if let e { markReachable(e.ref(volume: id, index: UInt64(base + i)), crc: e.crc) }
            }
        }
        fetchDone(id)
    }

    /// Records that a committed map reaches `ref` (under the volume that wrote it); false if
    /// it was already known.
    @discardableResult
    mutating func markReachable(_ ref: BlockRef, crc: UInt32) -> Bool {
        if volumes[ref.volume] != nil {
            return volumes[ref.volume]!.reachable.updateValue(crc, forKey: ref) == nil
        }
        // A clone's origin that is gone from the metadata: never collected while reached.
        return orphansReached.updateValue(crc, forKey: ref) == nil
    }

    mutating func fetchDone(_ volume: UInt64) {
        volumes[volume]!.fetchesLeft -= 1
        guard stage == .marking && volumes.values.allSatisfy({ $0.fetchesLeft == 0 }) else { return }
        // A map that could not be read is usually one the writer replaced (and deleted) after
        // we read its head: read the heads again, a few times (the inventory stays older).
        if volumes.values.contains(where: \.failed) && remarks < config.attemptsMax {
            remarks += 1
            volumes = [:]
            orphansReached = [:]
            stage = .metadata
            sendMetadata(attempts: 0)
            return
        }
        sweep()
    }

    /// Retries what timed out: a listing page (a node that keeps failing is skipped) or a fetch
    /// (at the next candidate).
    mutating func expireRPCs() {
        for rpc in listRPCs.keys.sorted() {
            guard stage == .listing, let l = listRPCs[rpc], l.deadline <= now else { continue }
            listRPCs[rpc] = nil
            listing[l.node]!.attempts += 1
            if listing[l.node]!.attempts >= config.attemptsMax { skipNode(l.node) } else { sendList(l.node) }
        }
        for rpc in rpcs.keys.sorted() {
            guard stage == .marking, let f = rpcs[rpc], f.deadline <= now else { continue }
            rpcs[rpc] = nil
            sendFetch(f)
        }
    }
}
