import Testing
import TorusCore
@testable import TorusSim

/// The simulated disk keeps "header + one repeated word" sectors as three words: reads,
/// syncs, crashes and bit rot must see exactly the bytes that were written.
@Suite("simulated disk")
struct SimDiskTests {
    static let size = 4096

    /// A sector of the sector model's shape: two header words, then `fill` repeated.
    static func uniform(_ head: UInt64, _ stamp: UInt64, _ fill: UInt64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: size)
        b.withUnsafeMutableBytes { p in
            p.storeBytes(of: head, toByteOffset: 0, as: UInt64.self)
            p.storeBytes(of: stamp, toByteOffset: 8, as: UInt64.self)
            for off in stride(from: 16, to: size, by: 8) { p.storeBytes(of: fill, toByteOffset: off, as: UInt64.self) }
        }
        return b
    }

    /// Sectors that must stay bytes: one byte off at the first body word, the second, the
    /// middle, words between the probes, and the last bytes.
    static let nearMisses: [Int] = [16, 24, 31, size / 2, size / 2 + 8 * 37 + 3, size - 16, size - 9, size - 1]

    func write(_ disk: SimDisk, _ id: UInt64, at sector: UInt64, _ bytes: [UInt8]) {
        disk.issueWrite(DiskOpID(id), offset: sector * UInt64(Self.size), bytes: bytes)
        disk.completeWrite(DiskOpID(id))
    }

    @Test("uniform sectors are kept compact and read back byte for byte; near misses stay bytes")
    func compactRoundTrip() {
        let disk = SimDisk(geometry: DiskGeometry(sectorSize: Self.size, capacityBytes: 64 * UInt64(Self.size)))
        var expected: [[UInt8]] = []
        expected.append(Self.uniform(7, 3, 0x0123_4567_89AB_CDEF))
        expected.append([UInt8](repeating: 0, count: Self.size))
        expected.append(Self.uniform(0, 0, 0xFFFF_FFFF_FFFF_FFFF))
        for at in Self.nearMisses {
            var b = Self.uniform(9, 5, 0x5555_AAAA_5555_AAAA)
            b[at] ^= 1
            expected.append(b)
        }
        write(disk, 1, at: 0, expected.flatMap { $0 })
        for (i, e) in expected.enumerated() {
            #expect(disk.isCompact(sector: UInt64(i)) == (i < 3), "sector \(i)")
            let same = disk.read(offset: UInt64(i * Self.size), length: Self.size) == e
            #expect(same, "sector \(i) before sync")
        }
        disk.sync()
        let synced = disk.read(offset: 0, length: expected.count * Self.size) == expected.flatMap { $0 }
        #expect(synced, "the same bytes after the sync")
        let zeros = disk.read(offset: UInt64(expected.count * Self.size), length: Self.size) == [UInt8](repeating: 0, count: Self.size)
        #expect(zeros, "a sector never written reads as zeros")
        #expect(disk.writtenSectors(from: 0) == (0..<UInt64(expected.count)).map { $0 })
    }

    @Test("bit rot on a compact sector flips exactly one byte; a crash keeps the synced bytes")
    func rotAndCrash() {
        let disk = SimDisk(geometry: DiskGeometry(sectorSize: Self.size, capacityBytes: 8 * UInt64(Self.size)))
        let a = Self.uniform(1, 0, 0x1111_2222_3333_4444)
        let b = Self.uniform(2, 0, 0x9999_8888_7777_6666)
        write(disk, 1, at: 0, a)
        disk.sync()
        write(disk, 2, at: 0, b)  // volatile over durable
        var rotted = b
        rotted[100] ^= 0x5A
        disk.rot(sector: 0, byte: 100)
        #expect(!disk.isCompact(sector: 0))
        let rotRead = disk.read(offset: 0, length: Self.size) == rotted
        #expect(rotRead, "the rotted sector reads with exactly one byte flipped")
        var random = SeededRandom(seed: 1)
        disk.crash(random: &random, survivalProbability: 0, tearProbability: 0)
        #expect(disk.isCompact(sector: 0))
        let survived = disk.readDurable(offset: 0, length: Self.size) == a
        #expect(survived, "the unsynced write is lost, the synced one stays")
    }
}
