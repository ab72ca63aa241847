/// Metadata: every volume's info, epoch and head, and the ring version, in one read.
extension Collector {
    mutating func beginMetadata() {
        guard stage == .listing else { return }
        remarks = 0
        stage = .metadata
        sendMetadata(attempts: 0)
    }

    mutating func sendMetadata(attempts: Int) {
        let id = MetaRequestID(nextMeta)
        nextMeta += 1
        metaRequest = (id, now + config.metadataTimeout, attempts)
        let txn = MetaTxn(compares: [], success: [.range(key: VolumeInfo.volumesPrefix, prefix: true),
                                                  .range(key: Ring.versionKey, prefix: false)], failure: [])
        out.append(.metadata(id, .txn(txn)))
    }

    mutating func retryMetadata() {
        guard let m = metaRequest else { return }
        if m.attempts + 1 >= config.attemptsMax { return endPass(sweep: false) }
        sendMetadata(attempts: m.attempts + 1)
    }

    mutating func metadataReplied(_ response: MetaResponse) {
        guard case .txn(let r) = response, r.succeeded, r.results.count == 2, case .range(let kvs) = r.results[0],
              case .range(let ringKV) = r.results[1] else {
            return retryMetadata()
        }
        metaRequest = nil
        storedRingVersion = ringKV.first.flatMap { MetaValue.u64($0.value) }
        metadataDoubtful = false
        var infos: [String: VolumeInfo] = [:]
        var epochs: [String: UInt64] = [:]
        var heads: [String: VolumeHead] = [:]
        var snapshots: [String: [SnapshotRecord]] = [:]
        for kv in kvs {
            guard let (name, field) = VolumeInfo.splitKey(kv.key) else { continue }
            if field.hasPrefix("snapshots/") {
                if let s = SnapshotRecord.decode(kv.value) { snapshots[name, default: []].append(s) } else { metadataDoubtful = true }
                continue
            }
            switch field {
            case "info":
                if let i = VolumeInfo.decode(kv.value), i.name == name { infos[name] = i } else { metadataDoubtful = true }
            case "epoch":
                if let e = MetaValue.u64(kv.value) { epochs[name] = e } else { metadataDoubtful = true }
            case "head":
                if let h = VolumeHead.decode(kv.value) { heads[name] = h } else { metadataDoubtful = true }
            default:
                continue
            }
        }
        for (name, info) in infos {
            var v = VolumeState(info: info)
            v.epochKey = epochs[name] ?? 0
            v.head = heads[name]
            // A snapshot of an older volume of the same name keeps nothing of this one.
            v.snapshots = (snapshots[name] ?? []).filter { $0.volumeID == info.id }
            volumes[info.id] = v
        }
        // Two names with one id would make the map ambiguous: collect nothing of either.
        if Set(infos.values.map(\.id)).count != infos.count { metadataDoubtful = true }
        stage = .marking
        for id in volumes.keys.sorted() {
            // The head's map and every snapshot's: what any of them reaches is kept.
            let roots = (volumes[id]!.head?.root).map { [$0] } ?? []
            for root in roots + (config.canaryIgnoresSnapshots ? [] : volumes[id]!.snapshots.map(\.root)) {
                let ref = root.ref(volume: id, index: BlockRef.rootIndex)
                markReachable(ref, crc: root.crc)
                startFetch(volume: id, kind: .root, ref: ref, crc: root.crc)
            }
        }
        if rpcs.isEmpty { sweep() }
    }
}
