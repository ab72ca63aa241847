/// Opening the volume for writing (lease, writer lock, epoch, head, map) and keeping the lease.
extension VolumeClient {
    mutating func openStep() {
        switch open {
        case .grantLease:
            sendMeta(.grant, .leaseGrant(ttlSeconds: config.leaseTTLSeconds, id: 0))
        case .readLock:
            let txn = MetaTxn(compares: [], success: [
                .range(key: VolumeInfo.lockKey(info.name), prefix: false),
                .range(key: VolumeInfo.epochKey(info.name), prefix: false),
            ], failure: [])
            sendMeta(.readLock, .txn(txn))
        case .loadRoot, .loadPages:
            // The map could not be read from any replica: retry from the root, keeping the lock.
            guard let root = rootEntry else { preconditionFailure("map load without a root") }
            for key in fetches.keys.sorted() where key >= BlockRef.mapIndexBase { fetches[key] = nil }
            open = .loadRoot
            startMapFetch(BlockRef.rootIndex, root)
        case .acquire, .done:
            preconditionFailure("openStep in state \(open)")
        }
    }

    mutating func metaReplied(_ pending: PendingMeta, _ response: MetaResponse) {
        switch pending.purpose {
        case .grant:
            guard case .lease(let id, let ttl) = response, ttl > 0 else { return retryOpen(from: .grantLease) }
            leaseID = id
            leaseRenewed(sentAt: pending.sentAt, ttlSeconds: ttl)
            open = .readLock
            openStep()
        case .readLock:
            guard case .txn(let r) = response, r.results.count == 2,
                  case .range(let lock) = r.results[0], case .range(let ep) = r.results[1] else {
                return retryOpen(from: .readLock)
            }
            if !lock.isEmpty { return retryOpen(from: .readLock) }  // held by another writer: wait for its lease
            let previous = ep.first.flatMap { MetaValue.u64($0.value) } ?? 0
            let epochModRevision = ep.first?.modRevision ?? 0
            let newEpoch = previous + 1
            var lockValue = ByteWriter()
            lockValue.u64(UInt64(clientID.raw))
            lockValue.u64(newEpoch)
            let txn = MetaTxn(
                compares: [
                    MetaCompare(key: VolumeInfo.lockKey(info.name), result: .equal, target: .createRevision(0)),
                    MetaCompare(key: VolumeInfo.epochKey(info.name), result: .equal, target: .modRevision(epochModRevision)),
                ],
                success: [
                    .put(key: VolumeInfo.lockKey(info.name), value: lockValue.bytes, lease: leaseID),
                    .put(key: VolumeInfo.epochKey(info.name), value: MetaValue.u64(newEpoch), lease: 0),
                    .range(key: VolumeInfo.headKey(info.name), prefix: false),
                ],
                failure: [])
            open = .acquire
            sendMeta(.acquire(previousEpoch: previous), .txn(txn))
        case .acquire(let previous):
            guard case .txn(let r) = response, r.succeeded, r.results.count == 3,
                  case .range(let head) = r.results[2] else {
                // Lost a race (or the lease vanished): start over from reading the lock.
                if case .error(.leaseNotFound) = response { return retryOpen(from: .grantLease) }
                return retryOpen(from: .readLock)
            }
            epoch = previous + 1
            headModRevision = head.first?.modRevision ?? 0
            guard let kv = head.first else {
                becomeReady()
                return
            }
            guard let h = VolumeHead.decode(kv.value), h.epoch < epoch else {
                becomeFenced("head at revision \(kv.modRevision) is corrupt or from a newer epoch")
                return
            }
            generation = h.generation
            rootEntry = h.root
            guard let root = h.root else {
                becomeReady()
                return
            }
            open = .loadRoot
            startMapFetch(BlockRef.rootIndex, root)
        case .keepAlive:
            keepAliveInFlight = false
            switch response {
            case .lease(_, let ttl) where ttl > 0:
                leaseRenewed(sentAt: pending.sentAt, ttlSeconds: ttl)
            case .error(.leaseNotFound):
                becomeFenced("lease \(leaseID) expired")
            default:
                break  // transient: the next keep-alive tries again
            }
        case .commit:
            commitReplied(response)
        }
    }

    mutating func retryOpen(from state: OpenState) {
        open = state
        openRetryAt = now + config.lockRetryInterval
    }

    mutating func startMapFetch(_ key: UInt64, _ entry: MapEntry) {
        let ref = entry.ref(volume: info.id, index: key)
        var f = Fetch(ref: ref, crc: entry.crc, nodes: healthyFirst(candidates(ref)))
        f.waiters.append(.open)
        fetches[key] = f
        sendGet(key)
    }

    mutating func mapBlockFetched(_ key: UInt64, _ data: [UInt8]) {
        if key == BlockRef.rootIndex {
            // A root written before the volume grew names fewer pages; the rest are empty.
            guard let root = BlockMapCodec.decodeRoot(data, volume: info.id), root.pages.count <= info.pageCount else {
                becomeFenced("root block is undecodable")
                return
            }
            pageRefs = root.pages + Array(repeating: nil, count: info.pageCount - root.pages.count)
            let present = root.pages.enumerated().filter { $0.element != nil }
            if present.isEmpty {
                becomeReady()
                return
            }
            open = .loadPages(remaining: present.count)
            for (p, e) in present { startMapFetch(BlockRef.mapIndexBase + UInt64(p), e!) }
            return
        }
        let p = Int(key - BlockRef.mapIndexBase)
        guard let page = BlockMapCodec.decodePage(data, volume: info.id, page: UInt64(p)) else {
            becomeFenced("map page \(p) is undecodable")
            return
        }
        let lo = p * entriesPerPage
        for (i, e) in page.enumerated() where lo + i < entries.count { entries[lo + i] = e }
        guard case .loadPages(let remaining) = open else { preconditionFailure("page fetched in state \(open)") }
        if remaining == 1 {
            committed = entries
            becomeReady()
        } else {
            open = .loadPages(remaining: remaining - 1)
        }
    }

    mutating func becomeReady() {
        open = .done
        phase = .ready
        nextKeepAliveAt = now + Nanoseconds(UInt64(config.leaseTTLSeconds) * 1_000_000_000 / 3)
        out.append(.phaseChanged(.ready))
        let queued = queuedBeforeOpen
        queuedBeforeOpen.removeAll()
        for (id, op) in queued { execute(id, op) }
    }

    mutating func leaseRenewed(sentAt: Instant, ttlSeconds: Int64) {
        let ttl = Nanoseconds.seconds(UInt64(ttlSeconds))
        let margin = config.leaseSafetyMargin
        let valid = ttl.value > margin.value ? sentAt + Nanoseconds(ttl.value - margin.value) : sentAt
        if valid > leaseValidUntil { leaseValidUntil = valid }
        nextKeepAliveAt = sentAt + Nanoseconds(ttl.value / 3)
    }

    mutating func sendKeepAlive() {
        keepAliveInFlight = true
        sendMeta(.keepAlive, .leaseKeepAlive(id: leaseID))
    }

    mutating func expireMetadata() {
        let expired = metaPending.filter { $0.value.deadline <= now }.keys.sorted()
        for id in expired {
            let pending = metaPending.removeValue(forKey: id)!
            switch pending.purpose {
            case .grant: retryOpen(from: .grantLease)
            case .readLock: retryOpen(from: .readLock)
            case .acquire:
                // Unknown outcome: if it applied, the lock is ours under our lease but we don't
                // know the epoch. Start over with a fresh lease; the old one expires.
                retryOpen(from: .grantLease)
            case .keepAlive: keepAliveInFlight = false
            case .commit: retryCommitLater()
            }
        }
        if let at = commitRetryAt, at <= now, flush != nil {
            commitRetryAt = nil
            sendCommit()
        }
    }
}
