import ArgumentParser
import TorusRuntime

// What `torus status` prints: the node table, capacity, volumes, collector state, ring and health.

extension Status {
    static func render(_ status: ClusterCatalog.Status, location: String, ringVersion: UInt64) throws {
        let members = status.members
        let up = members.filter { status.alive.contains($0.id) }
        say("cluster: \(location), block size \(humanBytes(UInt64(status.config.blockSize))), replication \(status.config.replication), "
            + "\(members.count) node(s), \(up.count) alive, peers \(status.config.peerTLS ? "over mutual TLS" : "in plaintext (--insecure)")")
        say("")
        let (used, capacity, nodeWarnings) = showNodes(status)
        var warnings = nodeWarnings
        let pct = capacity == 0 ? 0 : Double(used) * 100 / Double(capacity)
        say("")
        say("capacity: \(humanBytes(used)) used of \(humanBytes(capacity)) raw (\(fixed(pct, 1))%); "
            + "\(humanBytes(capacity / UInt64(max(1, status.config.replication)))) usable at replication \(status.config.replication)")
        if pct >= 80 { warnings.append("the cluster is \(fixed(pct, 0))% full") }
        let provisioned = status.volumes.reduce(UInt64(0)) { $0 + $1.sizeBytes }
        say("volumes: \(status.volumes.count), \(humanBytes(provisioned)) provisioned")
        for v in status.volumes {
            say("  \(v.name): \(humanBytes(v.sizeBytes))\(status.openForWriting.contains(v.name) ? ", open for writing" : "")")
        }
        let fullyRedundant = Self.showMaintenance(status.maintenance)
        Self.showRebalancing(status, ringVersion: ringVersion)
        for w in warnings { say("warning: \(w)") }
        try showHealth(status, fullyRedundant: fullyRedundant)
    }

    /// Prints the table of nodes; their bytes used and capacity summed, and warnings about full nodes.
    static func showNodes(_ status: ClusterCatalog.Status) -> (used: UInt64, capacity: UInt64, warnings: [String]) {
        say(pad("NODE", 6) + pad("ADDRESS", 24) + pad("ZONE", 8) + pad("STATE", 7) + pad("USED", 12) + pad("CAPACITY", 12) + "USE%")
        var used: UInt64 = 0, capacity: UInt64 = 0
        var warnings: [String] = []
        for m in status.members {
            let isUp = status.alive.contains(m.id)
            var usedText = "-", pct = "-"
            var cap = m.capacityBytes
            if let u = status.usage[m.id] {
                cap = u.capacityBytes
                usedText = humanBytes(u.usedBytes)
                let p = u.capacityBytes == 0 ? 0 : Double(u.usedBytes) * 100 / Double(u.capacityBytes)
                pct = fixed(p, 0) + "%"
                if p >= 80 { warnings.append("node \(m.id.raw) is \(pct) full") }
                used += u.usedBytes
            }
            capacity += cap
            say(pad("\(m.id.raw)", 6) + pad(m.address, 24) + pad(m.zone.isEmpty ? "-" : m.zone, 8) + pad(isUp ? "alive" : "DOWN", 7)
                + pad(usedText, 12) + pad(humanBytes(cap), 12) + pad(pct, 6) + (m.draining ? "draining" : ""))
        }
        return (used, capacity, warnings)
    }

    /// Prints the health line; exit status 2 when DEGRADED or UNAVAILABLE.
    static func showHealth(_ status: ClusterCatalog.Status, fullyRedundant: Bool) throws {
        let members = status.members
        let up = members.filter { status.alive.contains($0.id) }
        let down = members.filter { !status.alive.contains($0.id) }.map { "\($0.id.raw)" }
        if up.count < status.config.replication {
            say("health: UNAVAILABLE: \(up.count) of \(members.count) node(s) alive; replication \(status.config.replication) needs \(status.config.replication)")
            throw ExitCode(2)
        } else if !down.isEmpty {
            if fullyRedundant {
                say("health: DEGRADED: node(s) \(down.joined(separator: ", ")) down; their blocks were copied elsewhere "
                    + "(full redundancy on the nodes alive)")
            } else {
                say("health: DEGRADED: node(s) \(down.joined(separator: ", ")) down; blocks with a copy there have fewer than "
                    + "\(status.config.replication) copies until they return or are repaired")
            }
            throw ExitCode(2)
        }
        say("health: OK")
    }

    /// Prints the ring version and where rebalancing stands.
    static func showRebalancing(_ status: ClusterCatalog.Status, ringVersion: UInt64) {
        let m = status.maintenance
        let draining = status.members.filter(\.draining).map(\.id.raw)
        let drainedNow = drained(m, ringVersion: ringVersion)
        let moved = "\(m["moved-total"] ?? "0") blocks (\(humanBytes(UInt64(m["bytes-moved-total"] ?? "0") ?? 0))) moved since its server started"
        var line = "ring: version \(ringVersion)"
        if m["ring-version"] != "\(ringVersion)" {
            line += "; rebalancing: not yet judged under this version (next collector pass); \(moved)"
        } else if let off = Int(m["misplaced"] ?? ""), off > 0 || (Int(m["trimmed"] ?? "") ?? 0) > 0 {
            line += "; rebalancing: \(off) blocks off their placement at the last pass, \(m["trimmed"] ?? "0") old copies deleted; \(moved)"
        } else {
            line += "; balanced at the last pass; \(moved)"
        }
        say(line)
        for id in draining {
            say(drainedNow.contains(id) ? "node \(id): drained: it holds nothing needed; `torus peer remove \(id)` takes it out of the ring"
                                        : "node \(id): draining: its blocks are moving to the other nodes")
        }
    }

    /// Prints the collector's state (`/torus/maintenance/status`); true when its last pass
    /// found every committed block with all its copies.
    static func showMaintenance(_ m: [String: String]) -> Bool {
        let state = Redundancy(maintenance: m)
        let age = max(0, SystemClock.wallSeconds() - (m["time"].flatMap { Int($0) } ?? 0))
        let copiedTotal = m["copied-total"] ?? "0"
        let bytesTotal = UInt64(m["bytes-copied-total"] ?? "0") ?? 0
        let totals = "\(copiedTotal) blocks (\(humanBytes(bytesTotal))) copied by the collector since its server started"
        switch state {
        case .unknown:
            say("redundancy: unknown (no collector pass recorded yet; `torus nbd serve` runs them)")
        case .repairing:
            let rate = UInt64(m["repair-rate"] ?? "0") ?? 0
            let eta = Int(m["repair-eta"] ?? "-1") ?? -1
            say("repair: \(m["repair-copied"] ?? "?") of \(m["repair-total"] ?? "?") blocks copied "
                + "(\(humanBytes(UInt64(m["repair-bytes"] ?? "0") ?? 0))) at \(humanBytes(rate))/s"
                + (eta >= 0 ? ", about \(eta) s left" : "") + " (as of \(age) s ago)")
        case .waiting:
            say("redundancy: waiting: \(m["nodes-resting"]!) node(s) silent for less than the repair grace are assumed to keep "
                + "their copies (collector pass \(age) s ago); \(totals)")
        case .full:
            say("redundancy: full: every committed block has all its copies (collector pass \(age) s ago); \(totals)")
        case .short:
            let lost = Int(m["unrepairable"] ?? "0") ?? 0
            say("redundancy: \(m["short"]!) committed blocks short of copies at the last pass (\(age) s ago)"
                + (lost > 0 ? ", \(lost) with no copy on any node that answered" : "") + "; \(totals)")
        case .incomplete:
            say("redundancy: not known: the last collector pass (\(age) s ago) could not read every volume; \(totals)")
        }
        return state == .full
    }

    private static func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
    }
}
