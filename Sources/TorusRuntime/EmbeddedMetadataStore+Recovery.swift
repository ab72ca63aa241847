import Glibc
import TorusCore

/// Journal replay at `EmbeddedMetadataStore.init` (see the type's "Recovery" and "Time" notes).
extension EmbeddedMetadataStore.State {
    static func recover(path: String, now: Instant) throws -> (Self, EmbeddedMetadataStore.Recovery) {
        _ = unlink(path + ".tmp")  // an interrupted compaction: the journal itself is intact
        if access(path, F_OK) != 0 {
            guard errno == ENOENT else { throw FileDiskError(path: path, operation: "access", errno: errno) }
            _ = try MetadataJournalFile.create(path: path, records: []).close()
        }
        var (journal, contents) = try MetadataJournalFile.open(path: path)
        var state = Self(machine: MetadataStateMachine(), journal: journal, journalBase: now, callerBase: now, lastTime: now)
        var recovery = EmbeddedMetadataStore.Recovery(recordsReplayed: 0, truncatedBytes: 0, snapshotRevision: nil, renewedLeases: 0)
        do {
            if contents.count < MetadataJournalCodec.headerSize {
                // Journals are created whole by rename, so this holds no records.
                journal.close()
                journal = try MetadataJournalFile.create(path: path, records: [])
                contents = MetadataJournalCodec.header
                state.journal = journal
            }
            guard contents[0..<4].elementsEqual(MetadataJournalCodec.header[0..<4]) else {
                throw EmbeddedMetadataStoreError.corruptJournal(path: path, offset: 0, reason: "not a metadata journal")
            }
            guard contents[4] == MetadataJournalCodec.version else {
                throw EmbeddedMetadataStoreError.corruptJournal(path: path, offset: 4, reason: "unsupported journal version \(contents[4])")
            }
            let (records, validEnd) = MetadataJournalCodec.scan(contents)
            var lastRecordTime: Instant?
            for (index, (offset, payload)) in records.enumerated() {
                func corrupt(_ reason: String) -> EmbeddedMetadataStoreError {
                    .corruptJournal(path: path, offset: UInt64(offset), reason: reason)
                }
                let record: MetadataJournalRecord
                do { record = try MetadataJournalCodec.decode(payload) } catch { throw corrupt(error.reason) }
                if case .snapshot(let snapshot, _) = record {
                    guard index == 0 else { throw corrupt("snapshot record after the start of the journal") }
                    do {
                        state.machine = try MetadataSnapshotRestore.restore(snapshot, now: record.now)
                    } catch {
                        throw corrupt("snapshot cannot be restored: \(error.reason)")
                    }
                    state.nextAutoLeaseID = snapshot.nextAutoLeaseID
                    state.snapshotRevision = snapshot.revision
                    recovery.snapshotRevision = snapshot.revision
                } else if let reason = state.replay(record) {
                    throw corrupt("replay diverged: \(reason)")
                }
                lastRecordTime = max(lastRecordTime ?? record.now, record.now)
                recovery.recordsReplayed += 1
            }
            if validEnd < contents.count {
                try state.journal.truncate(to: UInt64(validEnd))
                recovery.truncatedBytes = UInt64(contents.count - validEnd)
            }
            if let last = lastRecordTime {
                state.journalBase = last
                state.lastTime = last
                let renewed = state.renewLeases(at: last)
                if renewed > 0 { try state.journal.append(MetadataJournalCodec.frame(.renewLeases(now: last))) }
                recovery.renewedLeases = renewed
            }
        } catch {
            state.journal.close()
            throw error
        }
        return (state, recovery)
    }

    /// Applies one non-snapshot record; returns why it does not reproduce a state change.
    mutating func replay(_ record: MetadataJournalRecord) -> String? {
        switch record {
        case .request(let request, let now):
            let revision = machine.revision
            let response = machine.apply(request, now: now).0
            lastTime = max(lastTime, now)
            guard Self.changedState(request, response, revisionBefore: revision, nextAutoLeaseID: &nextAutoLeaseID) else {
                return "\(request) answered \(response) and changed nothing"
            }
        case .expireLeases(let now):
            guard let expiry = machine.nextLeaseExpiry(), expiry <= now else { return "no lease expired at \(now)" }
            _ = machine.expireLeases(now: now)
        case .renewLeases(let now):
            guard renewLeases(at: now) > 0 else { return "no lease to renew at \(now)" }
        case .snapshot:
            return "unexpected snapshot"
        }
        return nil
    }

    /// Keeps alive, at `now`, every lease alive at `now`; returns how many.
    mutating func renewLeases(at now: Instant) -> Int {
        var renewed = 0
        for id in machine.leaseIDs where machine.lease(id)!.expiry > now {
            if case .lease = machine.apply(.leaseKeepAlive(id: id), now: now).0 { renewed += 1 }
        }
        return renewed
    }
}
