/// CRC32C of each sector of recently read blocks, so a range read touches only the sectors it
/// returns instead of the whole block. In memory only: a whole-block read that matched the
/// block's checksum teaches them, and a slot's entry is forgotten whenever its block leaves
/// the index. A direct-mapped table by slot (bounded, deterministic); an entry also holds the
/// block checksum it was learned under, so it never vouches for another block in its slot.
struct SectorChecksums: Sendable {
    let sectorSize: Int
    let sectorsPerBlock: Int
    let entries: Int
    /// Per entry: the slot + 1 whose sums it holds (0: none) and that block's checksum.
    private var tags: [Int]
    private var blockCRCs: [UInt32]
    private var sums: [UInt32]

    /// The table holds sums for at most `maxBytes` of its own memory (4 MiB by default).
    init(blockSize: Int, sectorSize: Int, slots: Int, maxBytes: Int = 4 << 20) {
        self.sectorSize = sectorSize
        sectorsPerBlock = blockSize / sectorSize
        entries = max(1, min(slots, maxBytes / (4 * sectorsPerBlock + 12)))
        tags = []
        blockCRCs = []
        sums = []
    }

    /// The sums of `slot`'s block if known under `blockCRC`, else nil.
    func lookup(slot: Int, blockCRC: UInt32) -> ArraySlice<UInt32>? {
        guard !tags.isEmpty else { return nil }
        let e = slot % entries
        guard tags[e] == slot + 1, blockCRCs[e] == blockCRC else { return nil }
        return sums[e * sectorsPerBlock..<(e + 1) * sectorsPerBlock]
    }

    /// Learns the sums of `block`, which matched `blockCRC`, stored in `slot`.
    mutating func learn(slot: Int, blockCRC: UInt32, block: [UInt8]) {
        if tags.isEmpty {  // allocated on first use: most simulated stores never need it
            tags = [Int](repeating: 0, count: entries)
            blockCRCs = [UInt32](repeating: 0, count: entries)
            sums = [UInt32](repeating: 0, count: entries * sectorsPerBlock)
        }
        let e = slot % entries
        tags[e] = slot + 1
        blockCRCs[e] = blockCRC
        block.withUnsafeBytes { raw in
            for s in 0..<sectorsPerBlock {
                sums[e * sectorsPerBlock + s] = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[s * sectorSize..<(s + 1) * sectorSize]))
            }
        }
    }

    /// Drops what is known of `slot` (its block left the index).
    mutating func forget(slot: Int) {
        guard !tags.isEmpty else { return }
        let e = slot % entries
        if tags[e] == slot + 1 { tags[e] = 0 }
    }
}
