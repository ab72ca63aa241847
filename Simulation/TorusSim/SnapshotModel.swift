import TorusCore

/// What one snapshot may hold, per sector: the values the volume could show when the snapshot
/// was asked for, plus every value written while it was being taken (the checkpoint is fixed
/// somewhere in between). A read of the snapshot must return one of them, and the same one
/// ever after: a snapshot never changes.
struct SnapshotModel {
    enum Outcome { case pending, committed, unknown, deleted }
    var name: String
    var allowed: [[UInt64]]
    /// Writes submitted while the snapshot op runs may be in it.
    var windowOpen = true
    var outcome = Outcome.pending
    var takenAt: Instant

    init(name: String, volume: SectorModel, inFlight: [(sector: Int, value: UInt64)], at: Instant) {
        self.name = name
        takenAt = at
        allowed = (0..<volume.sectors.count).map { volume.allowedNow(sector: $0) }
        for (s, v) in inFlight where !allowed[s].contains(v) { allowed[s].append(v) }
    }

    mutating func written(firstSector: UInt64, count: Int, value: UInt64) {
        guard windowOpen else { return }
        for s in Int(firstSector)..<(Int(firstSector) + count) where !allowed[s].contains(value) { allowed[s].append(value) }
    }

    /// Checks one sector of the snapshot as read from the nodes.
    mutating func check(sector s: Int, _ bytes: ArraySlice<UInt8>) -> SectorModel.Violation? {
        switch SectorModel.decode(bytes, sector: UInt64(s)) {
        case .failure(let v): return v
        case .success(let value):
            guard allowed[s].contains(value) else {
                let exp = allowed[s].map { $0 == 0 ? "zeros" : "write \($0)" }.joined(separator: " or ")
                return SectorModel.Violation(promise: .durability,
                                             detail: "snapshot \(name): sector \(s) holds \(value == 0 ? "zeros" : "write \(value)"), expected \(exp)")
            }
            allowed[s] = [value]
            return nil
        }
    }
}
