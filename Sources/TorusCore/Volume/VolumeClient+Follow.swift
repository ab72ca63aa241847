/// Read-only clients follow the log as well as the checkpoints: at each refresh, the records
/// after the checkpoint that every node of its segment holds, but the last one only once the
/// next is there too (a recovery may drop a last record whose blocks are not durable: one
/// round per FLUSH). So a reader never shows a FLUSH that may yet be lost; it lags the writer
/// by a refresh interval and one record (an idle writer checkpoints after `checkpointInterval`).
extension VolumeClient {
    struct LogFollow: Sendable {
        var segment: LogSegment
        /// The next position to read.
        var position: UInt64
        var awaiting: [NodeID] = []
        var copies = 0
        var record: LogRecord?
        /// On every node, applied once the record after it is too.
        var held: LogRecord?

        init(segment: LogSegment) {
            self.segment = segment
            position = segment.start + 1
        }
    }

    /// A read-only client read a head naming `segment`: a new segment starts following afresh
    /// (the checkpoint covers every record of the old one).
    mutating func followHead(_ segment: LogSegment?) {
        guard config.readOnly else { return }
        guard let segment else { follow = nil; return }
        if follow?.segment != segment { follow = LogFollow(segment: segment) }
    }

    /// Reads the next record from every node of the segment (the refresh stays open meanwhile);
    /// false when there is no log to follow.
    mutating func readNextFollowed() -> Bool {
        guard var f = follow else { return false }
        f.awaiting = f.segment.nodes
        f.copies = 0
        f.record = nil
        follow = f
        let ref = f.segment.ref(volume: info.id, position: f.position)
        for n in f.segment.nodes {
            let rpc = allocateRPC(.log(.read(position: f.position)), node: n)
            out.append(.send(to: n, .getBlock(rpc, ref)))
        }
        return true
    }

    mutating func followReplied(_ position: UInt64, from node: NodeID, _ result: Result<[UInt8], StoreError>) {
        guard var f = follow, f.position == position, let i = f.awaiting.firstIndex(of: node) else { return }
        f.awaiting.remove(at: i)
        if case .success(let bytes) = result,
           let record = LogRecord.decode(bytes, volume: info.id, epoch: f.segment.epoch, position: position) {
            f.copies += 1
            f.record = record
        }
        follow = f
        guard f.awaiting.isEmpty else { return }
        guard f.copies == f.segment.nodes.count, let record = f.record else {
            return refreshEnded(found: false)  // not on every node (yet): next refresh
        }
        if let held = f.held {
            for c in held.changes where c.index < UInt64(entries.count) { replaceEntry(Int(c.index), c.entry) }
            generation = max(generation, held.generation)
            stats.followedRecords += 1
        }
        follow!.held = record
        follow!.position += 1
        _ = readNextFollowed()
    }
}
