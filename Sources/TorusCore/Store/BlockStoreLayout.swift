/// Geometry, on-disk layout and limits of one node-local block store.
///
/// The disk is cut into three areas, all sector aligned:
///
///     offset 0                      journal region A  (journalRegionSectors sectors)
///     regionBytes                   journal region B  (journalRegionSectors sectors)
///     2 * regionBytes               slot 0, slot 1, ... (blockSize bytes each)
///
/// There is no superblock: each region header records the format facts (sector size, block
/// size, region size, slot count) and recovery refuses to open a disk whose facts differ.
/// The slot count is whatever fits after the two regions.
///
/// Traps (programmer or operator error, never data dependent): a block size that is not a
/// positive multiple of the sector size, a sector too small for one journal record, a disk
/// with no room for a slot, or journal regions too small to hold a snapshot of a full index
/// plus one appended sector.
public struct BlockStoreConfig: Hashable, Sendable {
    public let geometry: DiskGeometry
    /// Size of every block and every slot, in bytes (callers pad short blocks).
    public let blockSize: Int
    /// Size of each of the two journal regions, in sectors (sector 0 is the region header).
    public let journalRegionSectors: Int
    /// Most index changes one sync cycle journals; the rest wait for the next cycle.
    public let journalBatchLimitRecords: Int
    /// Unjournaled index changes that start a sync cycle even when nobody waits for one, so
    /// non-durable puts do not stay unjournaled forever on a busy node.
    public let lazyCommitThresholdRecords: Int
    /// Most requests that may await a reply at once (puts in flight, durable puts, gets,
    /// syncs). Beyond it a put or get fails with `.ioError` (retry later) and a sync is
    /// answered at once with what is durable now.
    public let outstandingRepliesLimitRequests: Int
    /// Free slots kept back: a node this near full refuses new blocks (`noSpace`), so writers
    /// and the collector place them elsewhere while it still has room for what is in flight.
    public let reserveSlots: Int

    /// Number of block slots on the disk.
    public let totalSlots: Int
    /// Journal records that fit in one journal sector.
    public let recordsPerSector: Int
    /// Byte offset of the first slot.
    public let slotAreaOffset: UInt64

    public init(
        geometry: DiskGeometry,
        blockSize: Int,
        journalRegionSectors: Int,
        journalBatchLimitRecords: Int = 4096,
        lazyCommitThresholdRecords: Int = 256,
        outstandingRepliesLimitRequests: Int = 16384,
        reserveSlots: Int = 0
    ) {
        let sector = geometry.sectorSize
        precondition(
            blockSize > 0 && blockSize % sector == 0,
            "block size \(blockSize) must be a positive multiple of the sector size \(sector)")
        precondition(
            sector >= BlockStoreFormat.sectorHeaderBytes + BlockStoreFormat.recordBytes,
            "sector size \(sector) cannot hold a journal sector header and one record")
        precondition(journalBatchLimitRecords >= 1, "journal batch limit must be at least one record")
        precondition(lazyCommitThresholdRecords >= 1, "lazy commit threshold must be at least one record")
        precondition(outstandingRepliesLimitRequests >= 1, "outstanding reply limit must be at least one")
        self.geometry = geometry
        self.blockSize = blockSize
        self.journalRegionSectors = journalRegionSectors
        self.journalBatchLimitRecords = journalBatchLimitRecords
        self.lazyCommitThresholdRecords = lazyCommitThresholdRecords
        self.outstandingRepliesLimitRequests = outstandingRepliesLimitRequests
        precondition(reserveSlots >= 0, "the slot reserve cannot be negative")
        self.reserveSlots = reserveSlots
        self.recordsPerSector = (sector - BlockStoreFormat.sectorHeaderBytes) / BlockStoreFormat.recordBytes
        let regionBytes = UInt64(journalRegionSectors) * UInt64(sector)
        self.slotAreaOffset = 2 * regionBytes
        precondition(
            geometry.capacityBytes > slotAreaOffset,
            "disk of \(geometry.capacityBytes) bytes has no room for slots after two journal regions")
        self.totalSlots = Int((geometry.capacityBytes - slotAreaOffset) / UInt64(blockSize))
        precondition(totalSlots >= 1, "disk of \(geometry.capacityBytes) bytes has no room for one slot")
        let needed = 2 + (totalSlots + recordsPerSector - 1) / recordsPerSector
        precondition(
            journalRegionSectors >= needed,
            "journal regions of \(journalRegionSectors) sectors cannot hold a snapshot of \(totalSlots) slots; need at least \(needed)"
        )
    }

    public var sectorSize: Int { geometry.sectorSize }

    /// Bytes in one journal region.
    public var regionBytes: Int { journalRegionSectors * geometry.sectorSize }

    /// Byte offset of the first sector of `region`.
    public func regionOffset(_ region: BlockStore.JournalRegion) -> UInt64 {
        switch region {
        case .a: 0
        case .b: UInt64(regionBytes)
        }
    }

    /// Byte offset of `slot` (0-based).
    public func slotOffset(_ slot: Int) -> UInt64 {
        precondition(slot >= 0 && slot < totalSlots, "slot \(slot) outside 0..<\(totalSlots)")
        return slotAreaOffset + UInt64(slot) * UInt64(blockSize)
    }

    /// Sectors needed for `records` journal records (0 for none).
    public func sectorsFor(records: Int) -> Int {
        (records + recordsPerSector - 1) / recordsPerSector
    }

    /// The largest snapshot any compaction writes: one record per slot.
    public var snapshotSectorsMax: Int { sectorsFor(records: totalSlots) }
}
