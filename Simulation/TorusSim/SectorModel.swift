import TorusCore

/// Durability and no wrong data (docs/design.md, "Promises to users") as a per-sector model,
/// checked on every read. Every write stamps each 4 KiB sector with (write id, sector index)
/// and a pattern derived from both; value 0 means zeros (never written or trimmed).
///
/// Per sector: `base`, the candidates for the durable value (several after a writer crash until
/// a read settles which survived), and `pending`, the values of writes completed since, oldest
/// first, each with its completion sequence number. A read must return the newest pending
/// value, or a base candidate when nothing is pending. The rules for flushes, FUA, failed
/// writes and crashes: docs/simulation.md, "5. The checkers".
struct SectorModel {
    struct Sector {
        var base: [UInt64] = [0]
        var pending: [(value: UInt64, seq: UInt64, maybe: Bool)] = []
        /// In `withPending` (its pending list may have emptied since).
        var listed = false
    }

    enum Promise: String {
        case durability = "durability (acknowledged data survives)"
        case noWrongData = "no wrong data (never stale, foreign or garbage sectors)"
        case fencing = "fencing (no commit from a stale epoch is ever visible)"
        case convergence = "convergence (every committed block fully replicated after healing)"
        case liveness = "liveness (progress after faults heal)"
        case reclaim = "reclaim (after healing, garbage collection leaves no unreachable block)"
    }

    struct Violation: Error, CustomStringConvertible {
        var promise: Promise
        var detail: String
        var description: String { "promise broken: \(promise.rawValue): \(detail)" }
    }

    static let sectorSize = 4096
    private(set) var sectors: [Sector]
    private(set) var completionSeq: UInt64 = 0
    private(set) var readsChecked = 0
    /// The sectors that may have pending values (a flush visits these, not the whole volume).
    private var withPending: [Int] = []

    init(sectorCount: Int) {
        sectors = Array(repeating: Sector(), count: sectorCount)
    }

    /// A volume whose every sector holds one of `base[s]` durably (a clone, or a volume rolled
    /// back, from a snapshot's model).
    init(base: [[UInt64]]) {
        sectors = base.map { Sector(base: $0) }
    }

    // MARK: Data patterns

    static func fill(value: UInt64, sector: UInt64) -> UInt64 { StableHasher.mix(value, sector) | 1 }

    /// `count` consecutive sectors of write `value` from `first`, in one buffer written once.
    static func writeBytes(value: UInt64, first: UInt64, count: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count * sectorSize) { buf, initialized in
            let base = UnsafeMutableRawPointer(buf.baseAddress!)
            for k in 0..<count {
                let sector = first + UInt64(k)
                let p = base + k * sectorSize
                let f = fill(value: value, sector: sector)
                p.storeBytes(of: value.littleEndian, toByteOffset: 0, as: UInt64.self)
                p.storeBytes(of: sector.littleEndian, toByteOffset: 8, as: UInt64.self)
                var off = 16
                while off < sectorSize {
                    p.storeBytes(of: f.littleEndian, toByteOffset: off, as: UInt64.self)
                    off += 8
                }
            }
            initialized = count * sectorSize
        }
    }

    /// Decodes a sector read back: its value, or a description of what is wrong with it.
    static func decode(_ bytes: ArraySlice<UInt8>, sector: UInt64) -> Result<UInt64, Violation> {
        precondition(bytes.count == sectorSize, "decode needs a whole sector")
        return bytes.withUnsafeBytes { raw -> Result<UInt64, Violation> in
            let value = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
            let stamped = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            // Every body word must equal the fill: OR of the differences, without an early exit
            // (so the loop vectorizes; a failing run is rare and reports the same either way).
            func bodyDiffers(from f: UInt64) -> Bool {
                var diff: UInt64 = 0
                var off = 16
                while off < sectorSize {
                    diff |= raw.loadUnaligned(fromByteOffset: off, as: UInt64.self) ^ f
                    off += 8
                }
                return diff != 0
            }
            if value == 0 && stamped == 0 {
                if bodyDiffers(from: 0) {
                    return .failure(Violation(promise: .noWrongData, detail: "sector \(sector) holds garbage (zero header, non-zero body)"))
                }
                return .success(0)
            }
            if stamped != sector {
                return .failure(Violation(promise: .noWrongData,
                                          detail: "sector \(sector) holds sector \(stamped)'s data (write \(value))"))
            }
            if bodyDiffers(from: fill(value: value, sector: sector).littleEndian) {
                return .failure(Violation(promise: .noWrongData,
                                          detail: "sector \(sector) holds garbage (torn or corrupt; header says write \(value))"))
            }
            return .success(value)
        }
    }

    // MARK: Events

    /// A write (or trim, value 0 with the trim's id recorded as 0) completed.
    mutating func writeCompleted(firstSector: UInt64, count: Int, value: UInt64, durable: Bool) {
        completionSeq += 1
        for s in Int(firstSector)..<(Int(firstSector) + count) {
            if durable {
                sectors[s].base = [value]
                sectors[s].pending.removeAll()
            } else {
                addPending(s, (value, completionSeq, false))
            }
        }
    }

    /// The values a read of sector `s` may return now: the newest completed write (and, while
    /// that one may not have applied, the ones before it), else a durable candidate.
    func allowedNow(sector s: Int) -> [UInt64] {
        var out: [UInt64] = []
        for p in sectors[s].pending.reversed() {
            if !out.contains(p.value) { out.append(p.value) }
            if !p.maybe { return out }
        }
        for b in sectors[s].base where !out.contains(b) { out.append(b) }
        return out
    }

    /// The completion sequence a flush issued now covers.
    var flushMark: UInt64 { completionSeq }

    private mutating func addPending(_ s: Int, _ p: (value: UInt64, seq: UInt64, maybe: Bool)) {
        sectors[s].pending.append(p)
        if !sectors[s].listed {
            sectors[s].listed = true
            withPending.append(s)
        }
    }

    /// Drops the sectors whose pending list is empty from `withPending`.
    private mutating func prunePending() {
        var kept: [Int] = []
        for s in withPending {
            if sectors[s].pending.isEmpty { sectors[s].listed = false } else { kept.append(s) }
        }
        withPending = kept
    }

    mutating func flushCompleted(mark: UInt64) {
        defer { prunePending() }
        for s in withPending where !sectors[s].pending.isEmpty {
            guard let last = sectors[s].pending.lastIndex(where: { $0.seq <= mark }) else { continue }
            // Durable now: the last value covered, or, if that was a maybe, what came before it too.
            var candidates: [UInt64] = []
            var i = last
            while true {
                let p = sectors[s].pending[i]
                if !candidates.contains(p.value) { candidates.append(p.value) }
                if !p.maybe { break }
                if i == 0 {
                    for b in sectors[s].base where !candidates.contains(b) { candidates.append(b) }
                    break
                }
                i -= 1
            }
            sectors[s].base = candidates
            sectors[s].pending.removeFirst(last + 1)
        }
    }

    /// The writer lost all volatile state; `inFlight` are the (sector, value) of writes not completed.
    mutating func writerCrashed(inFlight: [(UInt64, UInt64)]) {
        defer { prunePending() }
        for s in withPending where !sectors[s].pending.isEmpty {
            for p in sectors[s].pending where !sectors[s].base.contains(p.value) { sectors[s].base.append(p.value) }
            sectors[s].pending.removeAll()
        }
        for (s, v) in inFlight where !sectors[Int(s)].base.contains(v) { sectors[Int(s)].base.append(v) }
    }

    /// A write that failed part-way: each sector holds its previous value or `value`, and
    /// neither is more durable than before (the next read settles which one it is).
    mutating func writeMaybe(firstSector: UInt64, count: Int, value: UInt64) {
        completionSeq += 1
        for s in Int(firstSector)..<(Int(firstSector) + count) {
            addPending(s, (value, completionSeq, true))
        }
    }

    /// Checks a completed read from `firstSector`, over its pieces as the client returned them
    /// (each a whole number of sectors when blocks are; otherwise they are joined first).
    mutating func readCompleted(firstSector: UInt64, parts: [ArraySlice<UInt8>]) -> Violation? {
        guard parts.allSatisfy({ $0.count % Self.sectorSize == 0 }) else {
            return readCompleted(firstSector: firstSector, parts: [parts.joined[...]])
        }
        var s = Int(firstSector)
        for part in parts {
            var at = part.startIndex
            while at < part.endIndex {
                if let v = check(sector: s, part[at..<(at + Self.sectorSize)]) { return v }
                at += Self.sectorSize
                s += 1
            }
        }
        return nil
    }

    private mutating func check(sector s: Int, _ bytes: ArraySlice<UInt8>) -> Violation? {
        let value: UInt64
        switch Self.decode(bytes, sector: UInt64(s)) {
        case .failure(let v): return v
        case .success(let v): value = v
        }
        readsChecked += 1
        // A maybe the read does not show did not apply: drop it and look further back.
        while let last = sectors[s].pending.last, last.maybe, last.value != value { sectors[s].pending.removeLast() }
        if let last = sectors[s].pending.last {
            if value != last.value {
                return staleOrLost(s, got: value, expected: [last.value], durable: false)
            }
            sectors[s].pending[sectors[s].pending.count - 1].maybe = false  // it applied
        } else if !sectors[s].base.contains(value) {
            return staleOrLost(s, got: value, expected: sectors[s].base, durable: true)
        } else if sectors[s].base.count > 1 {
            sectors[s].base = [value]  // settled: this is what survived
        }
        return nil
    }

    /// A durable value that did not come back breaks durability; anything else (stale data
    /// from before the last completed write) breaks "no wrong data".
    private func staleOrLost(_ s: Int, got: UInt64, expected: [UInt64], durable: Bool) -> Violation {
        let exp = expected.map { $0 == 0 ? "zeros" : "write \($0)" }.joined(separator: " or ")
        let gotS = got == 0 ? "zeros" : "write \(got)"
        let what = durable ? "durable value" : "last completed write"
        return Violation(promise: durable ? .durability : .noWrongData,
                         detail: "sector \(s) read \(gotS), expected the \(what): \(exp)")
    }
}
