/// How big a store's journal regions are and what it keeps back, from the disk it gets: the
/// one sizing rule production nodes (`StorageNodeServer`) and the simulator both use.
extension BlockStoreConfig {
    /// A store on a disk of `diskBytes` with `blockSize` slots and 4 KiB sectors. Each journal
    /// region holds twice a snapshot of a full index (one 48-byte record per slot, plus two
    /// header sectors) and `journalAppendSectors` of appends between compactions. The other
    /// defaults are production's: puts nobody asked to make durable are journaled only when
    /// something else syncs (writers sync what a FLUSH needs, and most written-back versions are
    /// replaced before that), and 2% of the slots (at least 3) are kept back, so a node that
    /// near full takes no new blocks (they go to other nodes) but finishes what it started, and
    /// a writer can always seal its log there.
    public static func sized(
        diskBytes: UInt64,
        blockSize: Int,
        journalAppendSectors: Int = 256,
        journalBatchLimitRecords: Int = 4096,
        lazyCommitThresholdRecords: Int = 1 << 20,
        reservePercent: Int = 2
    ) -> BlockStoreConfig {
        let slotsMax = Int(diskBytes) / blockSize
        let journalSectors = 2 * (slotsMax * BlockStoreFormat.recordBytes / 4096 + 2) + journalAppendSectors
        return BlockStoreConfig(geometry: DiskGeometry(sectorSize: 4096, capacityBytes: diskBytes),
                                blockSize: blockSize, journalRegionSectors: journalSectors,
                                journalBatchLimitRecords: journalBatchLimitRecords,
                                lazyCommitThresholdRecords: lazyCommitThresholdRecords,
                                reserveSlots: max(min(3, slotsMax / 4), slotsMax * reservePercent / 100))
    }
}
