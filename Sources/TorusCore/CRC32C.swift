import CTorusCRC

/// CRC-32C (Castagnoli), the checksum on every stored block and journal record.
///
/// "123456789" → 0xE3069283. Computed by ISA-L's `crc32_iscsi` (docs/storage-core.md, "Cost
/// notes"); a slicing-by-8 table version is kept for tests that cross-check it.
public enum CRC32C {
    /// Checksum of `bytes`, continuing from `crc` (pass the previous result to chain).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return ctorus_crc32c(crc, base, bytes.count)
    }

    public static func checksum(_ bytes: [UInt8], continuing crc: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, continuing: crc) }
    }

    public static func checksum(_ bytes: ArraySlice<UInt8>, continuing crc: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, continuing: crc) }
    }
}
