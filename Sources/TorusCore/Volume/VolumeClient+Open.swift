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
        case .readHead:
            sendMeta(.readHead, .txn(MetaTxn(success: [.range(key: VolumeInfo.headKey(info.name), prefix: false)])))
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
            loadHead(head.first)
        case .readHead, .refreshHead:
            guard case .txn(let r) = response, r.results.count == 1, case .range(let head) = r.results[0] else {
                if case .readHead = pending.purpose { return retryOpen(from: .readHead) }
                return refreshEnded(found: false)
            }
            if case .refreshHead = pending.purpose, (head.first?.modRevision ?? 0) == headModRevision {
                // The same checkpoint: what the log added since.
                return readNextFollowed() ? () : refreshEnded(found: false)
            }
            loadHead(head.first)
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
        case .closeLog:
            closeReplied(response)
        }
    }

    /// Loads the map of the head read from the store (nil: nothing committed yet).
    mutating func loadHead(_ kv: MetaKeyValue?) {
        guard let kv else { return mapLoaded() }
        guard let h = VolumeHead.decode(kv.value), config.readOnly || h.epoch < epoch else {
            becomeFenced("head at revision \(kv.modRevision) is corrupt or from a newer epoch")
            return
        }
        headModRevision = kv.modRevision
        generation = h.generation
        rootEntry = h.root
        keepBelow = h.keepBelow
        // A writer seals and replays the head's log segment once the map is loaded; a reader
        // follows it.
        if !config.readOnly, let seg = h.log { recovery = LogRecovery(segment: seg, head: h) }
        followHead(h.log)
        guard let root = h.root else { return mapLoaded() }
        open = .loadRoot
        startMapFetch(BlockRef.rootIndex, root)
    }

    /// The map named by the head is loaded: the writer (or reader) opens, or a reader's
    /// refresh is done.
    mutating func mapLoaded() {
        if let p = loadingPageRefs {
            pageRefs = p
            loadingPageRefs = nil
        }
        committed = entries
        if phase == .opening {
            if recovery != nil { return startRecovery() }
            becomeReady()
            if config.readOnly { refreshing = readNextFollowed() }
        } else {
            open = .done
            stats.refreshes += 1
            if !readNextFollowed() { refreshEnded(found: true) }
        }
    }

    /// Read-only clients: re-reads the head; a newer one's changed map pages are loaded while
    /// reads go on (each block reads as its old or its new version).
    mutating func startRefresh() {
        refreshing = true
        sendMeta(.refreshHead, .txn(MetaTxn(success: [.range(key: VolumeInfo.headKey(info.name), prefix: false)])))
    }

    mutating func refreshEnded(found: Bool) {
        refreshing = false
        nextRefreshAt = now + config.readOnlyRefresh
    }

    /// Read-only clients: a map entry changed under a refresh; its cached copy is stale.
    mutating func replaceEntry(_ i: Int, _ e: MapEntry?) {
        guard entries[i] != e else { return }
        entries[i] = e
        let block = UInt64(i)
        if phase == .ready, let c = cache[block], !c.loading {
            precondition(config.readOnly && !c.isDirty, "a writer's map changed under its cache")
            cache[block] = nil
            cacheBytes -= info.blockSize
        }
    }

    mutating func retryOpen(from state: OpenState) {
        open = state
        openRetryAt = now + config.lockRetryInterval
    }

    mutating func startMapFetch(_ key: UInt64, _ entry: MapEntry) {
        let ref = entry.ref(volume: info.id, index: key)
        var f = Fetch(ref: ref, crc: entry.crc, nodes: healthyFirst(readCandidates(ref)))
        f.waiters.append(.open)
        fetches[key] = f
        sendGet(key)
    }

    /// A map block arrived; `owner` is the volume that wrote it (a clone's map starts out as
    /// its origin's).
    mutating func mapBlockFetched(_ key: UInt64, _ data: [UInt8], owner: UInt64) {
        if key == BlockRef.rootIndex {
            // A root written before the volume grew names fewer pages; the rest are empty.
            guard let root = BlockMapCodec.decodeRoot(data, volume: owner, reader: info.id) else {
                becomeFenced("root block is undecodable")
                return
            }
            guard root.pages.count <= info.pageCount else {
                // The writer grew the volume before we heard of it: try again later.
                if refreshing { open = .done; return refreshEnded(found: false) }
                becomeFenced("root block names \(root.pages.count) map pages, more than the volume's \(info.pageCount)")
                return
            }
            let newPages = root.pages + Array(repeating: nil, count: info.pageCount - root.pages.count)
            // A refresh loads only the pages that changed (an opening client has no pages yet);
            // a page that went away empties its entries.
            loadingPageRefs = newPages
            for p in 0..<newPages.count where newPages[p] == nil && pageRefs[p] != nil {
                let lo = p * entriesPerPage
                for i in lo..<min(entries.count, lo + entriesPerPage) { replaceEntry(i, nil) }
            }
            let changed = newPages.enumerated().filter { $0.element != nil && $0.element != pageRefs[$0.offset] }
            if changed.isEmpty {
                mapLoaded()
                return
            }
            open = .loadPages(remaining: changed.count)
            for (p, e) in changed { startMapFetch(BlockRef.mapIndexBase + UInt64(p), e!) }
            return
        }
        let p = Int(key - BlockRef.mapIndexBase)
        guard let page = BlockMapCodec.decodePage(data, volume: owner, page: UInt64(p), reader: info.id) else {
            becomeFenced("map page \(p) is undecodable")
            return
        }
        let lo = p * entriesPerPage
        for (i, e) in page.enumerated() where lo + i < entries.count { replaceEntry(lo + i, e) }
        guard case .loadPages(let remaining) = open else { preconditionFailure("page fetched in state \(open)") }
        if remaining == 1 {
            mapLoaded()
        } else {
            open = .loadPages(remaining: remaining - 1)
        }
    }

    mutating func becomeReady() {
        open = .done
        phase = .ready
        nextRefreshAt = now + config.readOnlyRefresh
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
            case .closeLog: recoveryRetryLater()
            case .readHead: retryOpen(from: .readHead)
            case .refreshHead: refreshEnded(found: false)
            }
        }
        if let at = commitRetryAt, at <= now, flush != nil {
            commitRetryAt = nil
            sendCommit()
        }
    }
}
