/// Boot: rebuilding the index from the two journal regions.
extension BlockStore {
    /// What recovery found on disk; for logs, tests and checkers.
    public struct RecoveryReport: Hashable, Sendable {
        /// The region whose journal was replayed; nil when neither region holds a valid header
        /// with a verified snapshot (a fresh disk).
        public var region: JournalRegion?
        /// Generation of that region (0 for a fresh disk).
        public var generation: UInt64
        public var snapshotRecords: Int
        /// Appended journal sectors replayed after the snapshot.
        public var journalSectors: Int
        public var journalRecords: Int
        /// Sector index (within the region) where replay stopped because the sector failed to
        /// verify; nil when replay reached the end of the region.
        public var firstUntrustedSector: Int?
        /// Replay stopped at a verified record that contradicts the state so far (a bug or an
        /// undetected corruption); the records before it were kept.
        public var stoppedAtInconsistentRecord: Bool
        /// A region with a newer header was skipped because its snapshot did not verify.
        public var skippedDamagedRegion: Bool
        /// Puts of the last journal write whose slot did not hold their bytes: that write's sync
        /// never completed (it covers data and journal at once), so none was acknowledged.
        public var droppedUnsyncedPuts: Int = 0
        /// Refs in the recovered index.
        public var refs: Int
        /// Generation the store's first compaction uses: above every generation found in any
        /// verified sector of either region, so no stale sector can ever pass as current.
        public var nextGeneration: UInt64
    }

    /// Rebuilds a store from the bytes of the two journal regions, read at boot at
    /// `journalRegions(config:)` (an all-zero disk is a fresh store).
    ///
    /// Picks the verified region header with the highest generation whose snapshot sectors all
    /// verify, loads the snapshot, then replays appended sectors in sequence order up to the
    /// first one that does not verify (bad CRC, other generation, wrong sequence): only that
    /// prefix is trusted. One sync makes a cycle's data and journal durable together, so the
    /// puts of the last journal write are checked against their slots (`readSlot`: the bytes
    /// at `config.slotOffset(slot)`, nil if unreadable) and dropped if they do not match.
    /// Every ref recovered is durable. The returned store has a compaction
    /// into the other region pending: call `start()` and perform its outputs before anything
    /// else. Traps if the regions have the wrong size or were formatted with another layout.
    ///
    /// `firstDiskOpID` is the first id this life gives its disk requests; a driver that may
    /// still see completions from before a crash can start each life in its own id range.
    /// `trustLastWrite` is an injected bug (simulator canary `store-trusts-last-write`).
    public static func recover(
        config: BlockStoreConfig, regionA: [UInt8], regionB: [UInt8], readSlot: (Int) -> [UInt8]?,
        firstDiskOpID: DiskOpID = DiskOpID(1), trustLastWrite: Bool = false
    ) -> BlockStore {
        precondition(
            regionA.count == config.regionBytes && regionB.count == config.regionBytes,
            "journal regions must be \(config.regionBytes) bytes, got \(regionA.count) and \(regionB.count)")
        let regions: [(JournalRegion, [UInt8])] = [(.a, regionA), (.b, regionB)]
        var maxGeneration: UInt64 = 0
        var candidates: [(JournalRegion, BlockStoreFormat.RegionHeader)] = []
        for (name, bytes) in regions {
            for s in 0..<config.journalRegionSectors {
                if let v = BlockStoreFormat.verifiedSector(sector(bytes, s, config)) {
                    maxGeneration = max(maxGeneration, v.generation)
                }
            }
            if let h = BlockStoreFormat.decodeRegionHeader(sector(bytes, 0, config), config: config) {
                candidates.append((name, h))
            }
        }
        // Highest generation first; generations are unique per region life, A first on a tie.
        candidates.sort { $0.1.generation != $1.1.generation ? $0.1.generation > $1.1.generation : $0.0 == .a }

        var report = RecoveryReport(
            region: nil, generation: 0, snapshotRecords: 0, journalSectors: 0, journalRecords: 0,
            firstUntrustedSector: nil, stoppedAtInconsistentRecord: false, skippedDamagedRegion: false,
            refs: 0, nextGeneration: maxGeneration + 1)
        var state = ReplayState(slots: config.totalSlots)
        for (name, header) in candidates {
            let bytes = name == .a ? regionA : regionB
            if let replayed = replay(bytes, header: header, config: config, report: &report) {
                report.region = name
                report.generation = header.generation
                state = replayed
                break
            }
            report.skippedDamagedRegion = true
        }
        for r in state.lastWritePuts where !trustLastWrite && state.index[r.ref] == DurableEntry(slot: r.slot, crc: r.crc) {
            guard let bytes = readSlot(r.slot), bytes.count == config.blockSize, CRC32C.checksum(bytes) == r.crc else {
                state.remove(r.ref)
                report.droppedUnsyncedPuts += 1
                continue
            }
        }
        report.refs = state.index.count
        return BlockStore(config: config, recovered: state.index, report: report, firstDiskOpID: firstDiskOpID)
    }

    /// Where the two journal regions are; the driver reads both whole before `recover`.
    public static func journalRegions(
        config: BlockStoreConfig
    ) -> (a: (offset: UInt64, length: Int), b: (offset: UInt64, length: Int)) {
        ((config.regionOffset(.a), config.regionBytes), (config.regionOffset(.b), config.regionBytes))
    }

    private static func sector(_ bytes: [UInt8], _ index: Int, _ config: BlockStoreConfig) -> ArraySlice<UInt8> {
        bytes[(index * config.sectorSize)..<((index + 1) * config.sectorSize)]
    }

    /// The replayed state of one region, or nil when its snapshot does not verify completely.
    private static func replay(
        _ bytes: [UInt8], header: BlockStoreFormat.RegionHeader, config: BlockStoreConfig,
        report: inout RecoveryReport
    ) -> ReplayState? {
        var state = ReplayState(slots: config.totalSlots)
        var snapshotRecords = 0
        for s in 1..<(1 + header.snapshotSectors) {
            guard
                let records = BlockStoreFormat.decodeSector(
                    sector(bytes, s, config), generation: header.generation, sequence: s, config: config)
            else { return nil }
            for r in records {
                guard r.op == .put, state.apply(r) else { return nil }
            }
            snapshotRecords += records.count
        }
        report.snapshotRecords = snapshotRecords
        report.journalSectors = 0
        report.journalRecords = 0
        report.firstUntrustedSector = nil
        report.stoppedAtInconsistentRecord = false
        var s = 1 + header.snapshotSectors
        sectors: while s < config.journalRegionSectors {
            guard
                let (records, indexInWrite) = BlockStoreFormat.decodeSectorInWrite(
                    sector(bytes, s, config), generation: header.generation, sequence: s, config: config)
            else {
                report.firstUntrustedSector = s
                break
            }
            if indexInWrite == 0 { state.lastWritePuts.removeAll() }
            // Records are in change order, so every record prefix is a consistent past state.
            for r in records {
                guard state.apply(r) else {
                    report.stoppedAtInconsistentRecord = true
                    report.firstUntrustedSector = s
                    break sectors
                }
                if r.op == .put { state.lastWritePuts.append(r) }
                report.journalRecords += 1
            }
            report.journalSectors += 1
            s += 1
        }
        return state
    }

    /// The index as the journal describes it, with a slot → ref map to reject contradictions.
    struct ReplayState {
        var index: [BlockRef: DurableEntry] = [:]
        var owner: [BlockRef?]
        /// The puts of the last journal write replayed (its sync may not have completed).
        var lastWritePuts: [BlockStoreFormat.Record] = []

        init(slots: Int) { owner = [BlockRef?](repeating: nil, count: slots) }

        /// Applies `r`; false (state unchanged) when it contradicts the state.
        mutating func apply(_ r: BlockStoreFormat.Record) -> Bool {
            switch r.op {
            case .put:
                if let e = index[r.ref] { return e.slot == r.slot && e.crc == r.crc }
                guard owner[r.slot] == nil else { return false }
                index[r.ref] = DurableEntry(slot: r.slot, crc: r.crc)
                owner[r.slot] = r.ref
            case .delete:
                // A delete of an absent ref changes nothing and frees nothing: harmless.
                guard let e = index[r.ref] else { return true }
                guard e.slot == r.slot else { return false }
                index[r.ref] = nil
                owner[r.slot] = nil
            }
            return true
        }

        mutating func remove(_ ref: BlockRef) {
            guard let e = index.removeValue(forKey: ref) else { return }
            owner[e.slot] = nil
        }
    }
}
