/// The block store's on-disk journal format: region headers, journal sectors and records.
///
/// All integers little-endian. Every sector carries a CRC32C of its whole `sectorSize` bytes
/// computed with its own CRC field set to zero, so a torn, garbage or misdirected sector never
/// decodes.
///
/// Region header (sector 0 of a region):
///
///     0  u32 magic "TSRH"        4  u32 crc32c           8  u64 generation
///     16 u64 snapshot sectors    24 u32 format version   28 u32 sector size
///     32 u64 block size          40 u64 region sectors   48 u64 slot count   56.. zero
///
/// Journal sector (sectors 1... of a region; the first `snapshot sectors` hold the snapshot):
///
///     0  u32 magic "TSJS"        4  u32 crc32c           8  u64 generation
///     16 u64 sequence (= sector index within the region) 24 u32 record count
///     28 u32 the sector's index within the write that wrote it (0: first; finds the last batch)
///     32.. records, 48 bytes each, then zero
///
/// Record: `u8 op (1 put, 2 delete), 3 zero bytes, u32 data crc32c, u64 slot, 32-byte BlockRef`.
/// A block's length is always the block size recorded in the header, so records carry none.
enum BlockStoreFormat {
    static let regionHeaderMagic: UInt32 = 0x4852_5354  // "TSRH" as little-endian bytes
    static let journalSectorMagic: UInt32 = 0x534A_5354  // "TSJS"
    static let formatVersion: UInt32 = 1
    static let sectorHeaderBytes = 32
    static let recordBytes = 48

    enum Op: UInt8, Sendable {
        case put = 1
        case delete = 2
    }

    struct Record: Hashable, Sendable {
        var op: Op
        var ref: BlockRef
        var slot: Int
        var crc: UInt32
    }

    struct RegionHeader: Hashable, Sendable {
        var generation: UInt64
        var snapshotSectors: Int
    }

    // MARK: Encoding

    /// `ceil(records.count / recordsPerSector)` journal sectors, numbered from `firstSequence`.
    static func encodeSectors(
        _ records: some Collection<Record>, generation: UInt64, firstSequence: Int, config: BlockStoreConfig
    ) -> [UInt8] {
        // One buffer for every sector, each sealed in place (no per-sector buffers or copies).
        var w = ByteWriter(capacity: config.sectorsFor(records: records.count) * config.sectorSize)
        var sequence = firstSequence
        var rest = records[...]
        while !rest.isEmpty {
            let chunk = rest.prefix(config.recordsPerSector)
            rest = rest.dropFirst(chunk.count)
            let start = w.count
            w.u32(journalSectorMagic)
            w.u32(0)
            w.u64(generation)
            w.u64(UInt64(sequence))
            w.u32(UInt32(chunk.count))
            w.u32(UInt32(sequence - firstSequence))
            // The records through one buffer (the layout above; the zero bytes are zero).
            w.append(chunk.count * recordBytes) { p in
                var o = 0
                for r in chunk {
                    p.storeBytes(of: r.op.rawValue, toByteOffset: o, as: UInt8.self)
                    p.storeBytes(of: r.crc.littleEndian, toByteOffset: o + 4, as: UInt32.self)
                    p.storeBytes(of: UInt64(r.slot).littleEndian, toByteOffset: o + 8, as: UInt64.self)
                    r.ref.store(into: p, at: o + 16)
                    o += recordBytes
                }
            }
            w.pad(to: start + config.sectorSize)
            seal(&w, sectorAt: start, size: config.sectorSize)
            sequence += 1
        }
        return w.bytes
    }

    static func encodeRegionHeader(_ header: RegionHeader, config: BlockStoreConfig) -> [UInt8] {
        var w = ByteWriter(capacity: config.sectorSize)
        w.u32(regionHeaderMagic)
        w.u32(0)
        w.u64(header.generation)
        w.u64(UInt64(header.snapshotSectors))
        w.u32(formatVersion)
        w.u32(UInt32(config.sectorSize))
        w.u64(UInt64(config.blockSize))
        w.u64(UInt64(config.journalRegionSectors))
        w.u64(UInt64(config.totalSlots))
        w.pad(to: config.sectorSize)
        seal(&w, sectorAt: 0, size: config.sectorSize)
        return w.bytes
    }

    /// Writes the CRC of a whole sector (with the CRC field zero) into bytes 4..<8.
    /// Writes the checksum of the sector at `start` into its bytes 4..<8 (still zero).
    private static func seal(_ w: inout ByteWriter, sectorAt start: Int, size: Int) {
        let crc = sectorCRC(w.written(start..<(start + size)))
        w.patch(u32: crc, at: start + 4)
    }

    private static func sectorCRC(_ s: ArraySlice<UInt8>) -> UInt32 {
        let start = s.startIndex
        var crc = CRC32C.checksum(s[start..<(start + 4)])
        crc = CRC32C.checksum([0, 0, 0, 0], continuing: crc)
        return CRC32C.checksum(s[(start + 8)...], continuing: crc)
    }

    // MARK: Decoding

    /// Magic and generation of a sector whose CRC verifies, else nil.
    static func verifiedSector(_ s: ArraySlice<UInt8>) -> (magic: UInt32, generation: UInt64)? {
        guard s.count >= sectorHeaderBytes else { return nil }
        var r = ByteReader(s)
        guard let magic = r.u32(), let crc = r.u32(), let generation = r.u64() else { return nil }
        guard magic == regionHeaderMagic || magic == journalSectorMagic, crc == sectorCRC(s) else { return nil }
        return (magic, generation)
    }

    /// The header in `sector`, or nil if it is not a verified region header.
    /// Traps when a verified header was written with a different layout: opening a disk with
    /// the wrong configuration must not silently discard its contents.
    static func decodeRegionHeader(_ sector: ArraySlice<UInt8>, config: BlockStoreConfig) -> RegionHeader? {
        guard let v = verifiedSector(sector), v.magic == regionHeaderMagic else { return nil }
        var r = ByteReader(sector)
        _ = r.raw(16)
        guard let snapshot = r.u64(), let version = r.u32(), let sectorSize = r.u32(),
            let blockSize = r.u64(), let regionSectors = r.u64(), let slots = r.u64()
        else { return nil }
        precondition(
            version == formatVersion && Int(sectorSize) == config.sectorSize && Int(blockSize) == config.blockSize
                && Int(regionSectors) == config.journalRegionSectors && Int(slots) == config.totalSlots,
            "disk was formatted with version \(version), sector \(sectorSize), block \(blockSize), region \(regionSectors) sectors, \(slots) slots; config differs"
        )
        guard snapshot < UInt64(config.journalRegionSectors) else { return nil }
        return RegionHeader(generation: v.generation, snapshotSectors: Int(snapshot))
    }

    /// The records of a verified journal sector with exactly this generation and sequence.
    static func decodeSector(
        _ sector: ArraySlice<UInt8>, generation: UInt64, sequence: Int, config: BlockStoreConfig
    ) -> [Record]? {
        decodeSectorInWrite(sector, generation: generation, sequence: sequence, config: config)?.records
    }

    /// `decodeSector`, with the sector's index within the write that wrote it.
    static func decodeSectorInWrite(
        _ sector: ArraySlice<UInt8>, generation: UInt64, sequence: Int, config: BlockStoreConfig
    ) -> (records: [Record], indexInWrite: Int)? {
        guard let v = verifiedSector(sector), v.magic == journalSectorMagic, v.generation == generation else {
            return nil
        }
        var r = ByteReader(sector)
        _ = r.raw(16)
        guard let seq = r.u64(), seq == UInt64(sequence), let count = r.u32(), let inWrite = r.u32(),
            Int(count) <= config.recordsPerSector, Int(inWrite) < sequence
        else { return nil }
        var records: [Record] = []
        records.reserveCapacity(Int(count))
        for _ in 0..<Int(count) {
            guard let opByte = r.u8(), let op = Op(rawValue: opByte), let _ = r.raw(3), let crc = r.u32(),
                let slot = r.u64(), let ref = BlockRef.decode(from: &r)
            else { return nil }
            guard slot < UInt64(config.totalSlots) else { return nil }
            records.append(Record(op: op, ref: ref, slot: Int(slot), crc: crc))
        }
        return (records, Int(inWrite))
    }
}
