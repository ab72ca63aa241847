#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TorusCore

/// A simulated disk that is honest about durability (after FoundationDB's AsyncFileNonDurable).
///
/// Fault model:
/// - a completed write is visible to reads but volatile until a `sync` issued after it completes;
/// - `crash` keeps each volatile sector with probability `survivalProbability`, loses the rest
///   (the durable contents come back), and may tear one sector of a write still in flight
///   (first half new, second half old);
/// - sectors never written read as zeros.
/// Bounded so recovery stays possible: a crash damages no durable sector except the one a
/// torn write hits.
/// Media faults, injected on purpose on a minority of nodes: bit rot (`rot`), latent sector
/// errors (`makeUnreadable`: reads covering the sector fail until it is rewritten) and
/// misdirected writes (the driver changes the offset before `issueWrite`).
final class SimDisk {
    /// One sector's contents. A disk keeps every sector it was ever written (old block versions
    /// on freed slots included), so a sector that is a 16-byte header and one repeated 8-byte
    /// word (the sector model's pattern, and zeros) is kept as its three words and the written
    /// buffer goes back to the allocator (why: docs/simulation.md, "Speed"). Reads give back the
    /// same bytes either way.
    enum Sector {
        case unwritten
        case bytes(ArraySlice<UInt8>)
        /// Words as loaded from the bytes (native order), so storing them back restores the bytes.
        case uniform(head: UInt64, stamp: UInt64, fill: UInt64)

        var isWritten: Bool {
            if case .unwritten = self { return false }
            return true
        }

        /// The three-word form of one sector's bytes, if they have it.
        @inline(__always)
        static func compact(_ p: UnsafeRawBufferPointer) -> Sector? {
            let n = p.count
            let fill = p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
            // Two probes reject most other sectors (journal, map pages) before the full scan.
            guard p.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self) == fill,
                  p.loadUnaligned(fromByteOffset: n / 2, as: UInt64.self) == fill else { return nil }
            // Every body word equals the next one: one overlapping memcmp (libc's vector code,
            // far cheaper than a Swift loop).
            guard memcmp(p.baseAddress! + 16, p.baseAddress! + 24, n - 24) == 0 else { return nil }
            return .uniform(head: p.loadUnaligned(fromByteOffset: 0, as: UInt64.self),
                            stamp: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self), fill: fill)
        }

        /// Writes the sector's bytes to `dst` (`size` bytes; zeros if never written).
        @inline(__always)
        func copy(to dst: UnsafeMutableRawPointer, size: Int) {
            switch self {
            case .unwritten:
                dst.initializeMemory(as: UInt8.self, repeating: 0, count: size)
            case .bytes(let b):
                b.withUnsafeBytes { src in dst.copyMemory(from: src.baseAddress!, byteCount: size) }
            case let .uniform(head, stamp, fill):
                dst.storeBytes(of: head, toByteOffset: 0, as: UInt64.self)
                dst.storeBytes(of: stamp, toByteOffset: 8, as: UInt64.self)
                // Four words a store (size is a multiple of 32).
                dst.storeBytes(of: fill, toByteOffset: 16, as: UInt64.self)
                dst.storeBytes(of: fill, toByteOffset: 24, as: UInt64.self)
                let fills = SIMD4<UInt64>(repeating: fill)
                var off = 32
                while off < size {
                    dst.storeBytes(of: fills, toByteOffset: off, as: SIMD4<UInt64>.self)
                    off += 32
                }
            }
        }

        /// The sector's bytes as an array of `size` bytes (zeros if never written).
        func materialized(size: Int) -> [UInt8] {
            [UInt8](unsafeUninitializedCapacity: size) { buf, initialized in
                copy(to: UnsafeMutableRawPointer(buf.baseAddress!), size: size)
                initialized = size
            }
        }
    }

    let geometry: DiskGeometry
    /// Sector contents by sector number: three words, or slices sharing the written buffers
    /// (so a write costs no copy). Arrays, not dictionaries: hashing sector numbers was a
    /// tenth of the simulator's time.
    private var durable: [Sector]
    private var volatile: [Sector]
    /// The sectors `volatile` holds, in the order they were first written.
    private var volatileSectors: [UInt64] = []
    /// Writes issued but not completed, by op id: (offset, bytes).
    private var inFlight: [DiskOpID: (UInt64, [UInt8])] = [:]
    private(set) var bytesWritten: UInt64 = 0
    /// Sectors with a latent read error.
    private var unreadable: Set<UInt64> = []

    init(geometry: DiskGeometry) {
        self.geometry = geometry
        precondition(geometry.sectorSize >= 32 && geometry.sectorSize % 32 == 0, "sector size \(geometry.sectorSize)")
        let sectors = Int(geometry.capacityBytes / UInt64(geometry.sectorSize))
        durable = Array(repeating: .unwritten, count: sectors)
        volatile = Array(repeating: .unwritten, count: sectors)
    }

    var sectorSize: Int { geometry.sectorSize }

    func validRange(_ offset: UInt64, _ length: Int) -> Bool {
        offset % UInt64(sectorSize) == 0 && length % sectorSize == 0 && length >= 0
            && offset + UInt64(length) <= geometry.capacityBytes
    }

    func issueWrite(_ id: DiskOpID, offset: UInt64, bytes: [UInt8]) {
        inFlight[id] = (offset, bytes)
    }

    /// Applies a completed write to the volatile layer.
    func completeWrite(_ id: DiskOpID) {
        guard let (offset, bytes) = inFlight.removeValue(forKey: id) else { return }
        let s = sectorSize
        let first = Int(offset / UInt64(s))
        // One uniqueness check for the whole write, not one per sector.
        precondition(bytes.count % s == 0 && first + bytes.count / s <= volatile.count, "write outside the disk")
        bytes.withUnsafeBytes { raw in
            volatile.withUnsafeMutableBufferPointer { v in
                var i = 0
                var sector = first
                while i < bytes.count {
                    if !v[sector].isWritten { volatileSectors.append(UInt64(sector)) }
                    v[sector] = Sector.compact(UnsafeRawBufferPointer(rebasing: raw[i..<(i + s)])) ?? .bytes(bytes[i..<(i + s)])
                    i += s
                    sector += 1
                }
            }
        }
        if !unreadable.isEmpty {  // the drive remaps on write
            for k in 0..<(bytes.count / s) { unreadable.remove(UInt64(first + k)) }
        }
        bytesWritten += UInt64(bytes.count)
    }

    func read(offset: UInt64, length: Int) -> [UInt8] {
        let s = sectorSize
        let first = offset / UInt64(s)
        // Each sector is either copied or zeroed, once (no zero fill of the whole buffer first:
        // boots read whole journal regions).
        return [UInt8](unsafeUninitializedCapacity: length) { dst, initialized in
            let base = UnsafeMutableRawPointer(dst.baseAddress!)
            for k in 0..<(length / s) {
                let sector = Int(first) + k
                let v = volatile[sector]
                (v.isWritten ? v : durable[sector]).copy(to: base + k * s, size: s)
            }
            initialized = length
        }
    }

    /// A read through the drive: fails when it covers a sector with a latent error.
    func readChecked(offset: UInt64, length: Int) -> [UInt8]? {
        if !unreadable.isEmpty {
            let first = offset / UInt64(sectorSize)
            for k in 0..<UInt64(length / sectorSize) where unreadable.contains(first + k) { return nil }
        }
        return read(offset: offset, length: length)
    }

    /// Written sectors at or after `from` (sorted, so a seeded pick is deterministic).
    func writtenSectors(from: UInt64) -> [UInt64] {
        (Int(from)..<durable.count).filter { volatile[$0].isWritten || durable[$0].isWritten }.map { UInt64($0) }
    }

    /// Bit rot: flips one byte of `sector` where it is stored now.
    func rot(sector: UInt64, byte: Int) {
        let k = Int(sector)
        func flipped(_ s: Sector) -> Sector {
            var b = s.materialized(size: sectorSize)
            b[byte] ^= 0x5A
            return .bytes(b[...])
        }
        if volatile[k].isWritten {
            volatile[k] = flipped(volatile[k])
        } else if durable[k].isWritten {
            durable[k] = flipped(durable[k])
        }
    }

    func makeUnreadable(sector: UInt64) { unreadable.insert(sector) }

    /// Whether `sector` is kept as three words now (for tests).
    func isCompact(sector: UInt64) -> Bool {
        let v = volatile[Int(sector)]
        if case .uniform = v.isWritten ? v : durable[Int(sector)] { return true }
        return false
    }

    /// Reads what survives a crash right now (used at boot, after `crash`).
    func readDurable(offset: UInt64, length: Int) -> [UInt8] {
        precondition(volatileSectors.isEmpty, "boot read with volatile state present")
        return read(offset: offset, length: length)
    }

    func sync() {
        volatile.withUnsafeMutableBufferPointer { v in
            durable.withUnsafeMutableBufferPointer { d in
                for k in volatileSectors { swap(&d[Int(k)], &v[Int(k)]); v[Int(k)] = .unwritten }  // moved, not copied
            }
        }
        volatileSectors.removeAll(keepingCapacity: true)
    }

    /// Power loss: see the fault model above.
    func crash(random: inout SeededRandom, survivalProbability: Double, tearProbability: Double) {
        for k in volatileSectors.sorted() {
            var v = Sector.unwritten
            swap(&v, &volatile[Int(k)])
            if random.chance(survivalProbability) { durable[Int(k)] = v }
        }
        volatileSectors.removeAll()
        let pending = inFlight.keys.sorted()
        if let victim = pending.first, random.chance(tearProbability) {
            let (offset, bytes) = inFlight[victim]!
            let sectors = bytes.count / sectorSize
            if sectors > 0 {
                let k = Int(random.below(UInt64(sectors)))
                let sector = offset / UInt64(sectorSize) + UInt64(k)
                var torn = durable[Int(sector)].materialized(size: sectorSize)
                let half = sectorSize / 2
                torn.replaceSubrange(0..<half, with: bytes[(k * sectorSize)..<(k * sectorSize + half)])
                durable[Int(sector)] = .bytes(torn[...])
            }
        }
        inFlight.removeAll()
    }
}
