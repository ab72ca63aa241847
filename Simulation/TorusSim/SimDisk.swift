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
    let geometry: DiskGeometry
    /// Sector contents by sector number, sharing the written buffers (slices), so a write
    /// costs no copy. Arrays, not dictionaries: hashing sector numbers was a tenth of the
    /// simulator's time.
    private var durable: [ArraySlice<UInt8>?]
    private var volatile: [ArraySlice<UInt8>?]
    /// The sectors `volatile` holds, in the order they were first written.
    private var volatileSectors: [UInt64] = []
    /// Writes issued but not completed, by op id: (offset, bytes).
    private var inFlight: [DiskOpID: (UInt64, [UInt8])] = [:]
    private(set) var bytesWritten: UInt64 = 0
    /// Sectors with a latent read error.
    private var unreadable: Set<UInt64> = []

    init(geometry: DiskGeometry) {
        self.geometry = geometry
        let sectors = Int(geometry.capacityBytes / UInt64(geometry.sectorSize))
        durable = Array(repeating: nil, count: sectors)
        volatile = Array(repeating: nil, count: sectors)
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
        volatile.withUnsafeMutableBufferPointer { v in
            var i = 0
            var sector = first
            while i < bytes.count {
                if v[sector] == nil { volatileSectors.append(UInt64(sector)) }
                v[sector] = bytes[i..<(i + s)]
                i += s
                sector += 1
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
                if let v = volatile[sector] ?? durable[sector] {
                    v.withUnsafeBytes { src in (base + k * s).copyMemory(from: src.baseAddress!, byteCount: s) }
                } else {
                    (base + k * s).initializeMemory(as: UInt8.self, repeating: 0, count: s)
                }
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
        (Int(from)..<durable.count).filter { volatile[$0] != nil || durable[$0] != nil }.map { UInt64($0) }
    }

    /// Bit rot: flips one byte of `sector` where it is stored now.
    func rot(sector: UInt64, byte: Int) {
        let k = Int(sector)
        if var v = volatile[k] {
            v[v.startIndex + byte] ^= 0x5A
            volatile[k] = v
        } else if var d = durable[k] {
            d[d.startIndex + byte] ^= 0x5A
            durable[k] = d
        }
    }

    func makeUnreadable(sector: UInt64) { unreadable.insert(sector) }

    /// Reads what survives a crash right now (used at boot, after `crash`).
    func readDurable(offset: UInt64, length: Int) -> [UInt8] {
        precondition(volatileSectors.isEmpty, "boot read with volatile state present")
        return read(offset: offset, length: length)
    }

    func sync() {
        volatile.withUnsafeMutableBufferPointer { v in
            durable.withUnsafeMutableBufferPointer { d in
                for k in volatileSectors { d[Int(k)] = v[Int(k)].take() }  // moved, not copied
            }
        }
        volatileSectors.removeAll(keepingCapacity: true)
    }

    /// Power loss: see the fault model above.
    func crash(random: inout SeededRandom, survivalProbability: Double, tearProbability: Double) {
        for k in volatileSectors.sorted() {
            let v = volatile[Int(k)].take()
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
                var torn = durable[Int(sector)].map { Array($0) } ?? Array(repeating: 0, count: sectorSize)
                let half = sectorSize / 2
                torn.replaceSubrange(0..<half, with: bytes[(k * sectorSize)..<(k * sectorSize + half)])
                durable[Int(sector)] = torn[...]
            }
        }
        inFlight.removeAll()
    }
}
