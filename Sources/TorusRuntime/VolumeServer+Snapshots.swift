import Logging
import NIOCore
import TorusCore

/// Snapshots where the volumes are served: taking one through the writer, rolling back,
/// serving each snapshot read-only as `VOL@SNAP`, and requests from other processes
/// (`/torus/volumes/VOL/requests/ID`, docs/snapshots.md).
extension VolumeServer {
    /// Takes snapshot `name` of `volume`: a flush that commits by checkpoint and writes the
    /// snapshot's key in the same transaction, so it holds every write completed before.
    public func createSnapshot(volume: String, name: String) -> EventLoopFuture<SnapshotCatalog.Entry> {
        loop.assertInEventLoop()
        guard SnapshotRecord.validName(name) else {
            return loop.makeFailedFuture(RuntimeError.badInput(
                "snapshot name '\(name)' must be 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.', not starting with '-' or '.'"))
        }
        guard let host = volumes[volume], host.client.config.snapshotRoot == nil else {
            return loop.makeFailedFuture(RuntimeError.notFound("no volume named '\(volume)'"))
        }
        guard !config.readOnly else {
            return loop.makeFailedFuture(RuntimeError.refused("this server serves '\(volume)' read-only: take snapshots where its writer runs"))
        }
        let key = "\(volume)@\(name)"
        guard snapshotsUnderWay.insert(key).inserted else {
            return loop.makeFailedFuture(RuntimeError.busy("snapshot \(key) is already being taken"))
        }
        let meta = self.meta, started = SystemClock.now()
        return metaPool.runIfActive(eventLoop: loop) { try SnapshotCatalog.list(meta, volume: volume).contains { $0.name == name } }
            .flatMap { exists -> EventLoopFuture<Void> in
                guard !exists else { return self.loop.makeFailedFuture(RuntimeError.exists("snapshot \(key) already exists")) }
                guard let host = self.volumes[volume] else {
                    return self.loop.makeFailedFuture(RuntimeError.notFound("no volume named '\(volume)'"))
                }
                let id = OpID(host.nextSnapshotOp)
                host.nextSnapshotOp += 1
                let done = self.loop.makePromise(of: Void.self)
                host.snapshotOps[id] = done
                self.handleClient(volume, host.client.submit(id, .snapshot(name: name), now: SystemClock.now()))
                return done.futureResult
            }
            .flatMap { self.metaPool.runIfActive(eventLoop: self.loop) { try SnapshotCatalog.find(meta, volume: volume, name: name) } }
            .map { entry in
                let ms = (SystemClock.now() - started).value / 1_000_000
                RuntimeLoggers.volume.info("snapshot \(name) taken in \(ms) ms (generation \(entry.record.generation))", metadata: ["volume": "\(volume)"])
                self.loop.scheduleTask(in: .milliseconds(20)) { self.serveSnapshot(entry) }
                return entry
            }
            .always { _ in self.snapshotsUnderWay.remove(key) }
    }

    /// Rolls `volume` back to a snapshot: its writer stops (its NBD clients are disconnected;
    /// without `force` a volume in use is refused), the head takes the snapshot's root, and a
    /// new writer opens it. Writes not flushed before are gone, as the user asked.
    public func rollback(volume: String, to snapshot: String, force: Bool) -> EventLoopFuture<Void> {
        loop.assertInEventLoop()
        guard let host = volumes[volume], host.client.config.snapshotRoot == nil, !config.readOnly else {
            return loop.makeFailedFuture(RuntimeError.notFound("no volume named '\(volume)' is served for writing here"))
        }
        let users = directory.connections(volume)
        guard force || users == 0 else {
            return loop.makeFailedFuture(RuntimeError.refused(
                "volume '\(volume)' is in use by \(users) NBD connection(s): disconnect them, or use --force to cut them off"))
        }
        let meta = self.meta, info = host.client.info
        return metaPool.runIfActive(eventLoop: loop) { try SnapshotCatalog.find(meta, volume: volume, name: snapshot) }
            .flatMap { entry -> EventLoopFuture<Void> in
                guard entry.record.sizeBytes <= info.sizeBytes else {
                    return self.loop.makeFailedFuture(RuntimeError.badInput("snapshot is larger than the volume"))
                }
                let cut = users > 0 ? " and \(users) NBD connection(s)" : ""
                RuntimeLoggers.volume.notice("rolling back to snapshot \(snapshot): stopping the writer\(cut)", metadata: ["volume": "\(volume)"])
                self.stopServing(volume, reason: "volume '\(volume)' is being rolled back to \(snapshot)")
                return self.metaPool.runIfActive(eventLoop: self.loop) { try SnapshotCatalog.rollback(meta, volume: volume, snapshot: snapshot) }
            }
            .flatMap {
                RuntimeLoggers.volume.notice("rolled back to snapshot \(snapshot); opening a new writer", metadata: ["volume": "\(volume)"])
                return self.openVolume(info)
            }
            .flatMapError { e in
                // Serve the volume again whatever happened (a failed rollback left its head as it was).
                if self.volumes[volume] == nil { return self.openVolume(info).flatMapThrowing { throw e } }
                return self.loop.makeFailedFuture(e)
            }
    }

    /// Serves every snapshot in the store read-only (and stops serving deleted ones).
    func serveSnapshots() {
        let meta = self.meta
        metaPool.runIfActive(eventLoop: loop) { try SnapshotCatalog.list(meta) }.whenComplete { result in
            guard case .success(let entries) = result else { return }
            let names = Set(entries.map { "\($0.volume)@\($0.name)" })
            for name in self.volumes.keys.sorted() where name.contains("@") && !names.contains(name) {
                self.stopServing(name, reason: "snapshot \(name) was deleted")
            }
            for e in entries { self.serveSnapshot(e) }
        }
    }

    func serveSnapshot(_ e: SnapshotCatalog.Entry) {
        let name = "\(e.volume)@\(e.name)"
        guard volumes[name] == nil, let source = volumes[e.volume]?.client.info, source.id == e.record.volumeID else { return }
        let info = VolumeInfo(name: name, id: source.id, sizeBytes: e.record.sizeBytes, blockSize: source.blockSize,
                              replication: source.replication, origin: source.origin)
        openVolume(info, snapshotRoot: e.record.root).whenFailure { error in
            RuntimeLoggers.volume.warning("snapshot \(name) cannot be served: \(error)", metadata: ["volume": "\(e.volume)"])
        }
    }

    /// A change under `/torus/volumes/VOL/snapshots/` or `/requests/`.
    func snapshotKeyChanged(volume: String, field: Substring, _ event: MetaWatchEvent) {
        if field.hasPrefix("snapshots/") {
            let name = "\(volume)@\(field.dropFirst("snapshots/".count))"
            if event.kind == .delete { stopServing(name, reason: "snapshot \(name) was deleted") } else { serveSnapshots() }
            return
        }
        guard event.kind == .put, !config.readOnly, let host = volumes[volume], host.client.phase == .ready,
              host.client.config.snapshotRoot == nil else { return }
        let text = String(decoding: event.kv.value, as: UTF8.self)
        let words = text.split(separator: " ").map(String.init)
        let done: EventLoopFuture<[String]>
        switch (words.first, words.count) {
        case ("snapshot", 2): done = createSnapshot(volume: volume, name: words[1]).map { [describeSnapshot($0)] }
        case ("rollback", 2), ("rollback", 3):
            done = rollback(volume: volume, to: words[1], force: words.count == 3 && words[2] == "force").map { [] }
        case ("space", 1): done = listSnapshots(volume: volume).map { self.describeSnapshots($0) }
        default: return  // an answer ("ok ...", "error: ...") or something this version does not know
        }
        let key = event.kv.key, revision = event.kv.createRevision, meta = self.meta
        done.whenComplete { result in
            // The answer replaces the request (its requester reads it, then deletes the key),
            // unless the requester gave up and deleted it meanwhile.
            let answer: String
            switch result {
            case .success(let lines): answer = (["ok"] + lines).joined(separator: "\n")
            case .failure(let e): answer = "error: \(e)"
            }
            let op = MetaOp.put(key: key, value: Array(answer.utf8), lease: 0)
            _ = self.metaPool.runIfActive(eventLoop: self.loop) {
                try meta.apply(.txn(MetaTxn(compares: [MetaCompare(key: key, result: .equal, target: .createRevision(revision))], success: [op])),
                               now: SystemClock.now())
            }
        }
    }
}

/// Listing, deleting, cloning and space, where the volumes are served.
extension VolumeServer {
    public func listSnapshots(volume: String?) -> EventLoopFuture<[SnapshotCatalog.Entry]> {
        let meta = self.meta
        return metaPool.runIfActive(eventLoop: loop) {
            if let volume, !(try ClusterCatalog.listVolumes(meta).contains { $0.name == volume }) {
                throw RuntimeError.notFound("no volume named '\(volume)'")
            }
            return try SnapshotCatalog.list(meta, volume: volume)
        }
    }

    public func deleteSnapshot(volume: String, name: String) -> EventLoopFuture<Void> {
        let meta = self.meta
        return metaPool.runIfActive(eventLoop: loop) { try SnapshotCatalog.delete(meta, volume: volume, name: name) }
            .map { self.stopServing("\(volume)@\(name)", reason: "snapshot \(volume)@\(name) was deleted") }
    }

    public func cloneVolume(volume: String, snapshot: String, as newName: String) -> EventLoopFuture<VolumeInfo> {
        let meta = self.meta, started = SystemClock.now()
        // The clone is exported at once; requests wait while its writer loads the map (that
        // part grows with the size, the clone itself does not).
        return metaPool.runIfActive(eventLoop: loop) { try SnapshotCatalog.clone(meta, volume: volume, snapshot: snapshot, as: newName) }
            .map { info in
                let ms = (SystemClock.now() - started).value / 1_000_000
                RuntimeLoggers.volume.info("cloned from \(volume)@\(snapshot) in \(ms) ms", metadata: ["volume": "\(newName)"])
                // Opened just after the reply: a writer's map arrays take O(blocks) to allocate.
                self.loop.scheduleTask(in: .milliseconds(20)) {
                    self.openVolume(info).whenFailure { RuntimeLoggers.volume.error("clone cannot be served: \($0)", metadata: ["volume": "\(newName)"]) }
                }
                return info
            }
    }

    /// Bytes of each snapshot of `volume` that no other map reaches (the volume's head, its
    /// other snapshots, clones): what deleting it would free. Read from the maps served here.
    public func snapshotSpace(volume: String) -> [String: UInt64] {
        loop.assertInEventLoop()
        guard let live = volumes[volume]?.client, live.config.snapshotRoot == nil else { return [:] }
        let prefix = volume + "@"
        let snaps = volumes.filter { $0.key.hasPrefix(prefix) && $0.value.client.phase == .ready }.sorted { $0.key < $1.key }
        let others = volumes.filter { !$0.key.contains("@") && $0.value.client.info.origin == live.info.id }.map(\.value.client)
        var out: [String: UInt64] = [:]
        for (name, host) in snaps {
            let snap = host.client
            var exclusive: UInt64 = 0
            for i in 0..<snap.committedBlockCount {
                guard let ref = snap.committedBlock(i), ref.volume == live.info.id else { continue }
                let shared = (i < live.committedBlockCount && live.committedBlock(i) == ref)
                    || snaps.contains { $0.key != name && i < $0.value.client.committedBlockCount && $0.value.client.committedBlock(i) == ref }
                    || others.contains { i < $0.committedBlockCount && $0.committedBlock(i) == ref }
                if !shared { exclusive += UInt64(live.info.blockSize) }
            }
            out[String(name.dropFirst(prefix.count))] = exclusive
        }
        return out
    }

    /// One line per snapshot for `torus snapshot list` and `torus volume info`.
    public func describeSnapshots(_ entries: [SnapshotCatalog.Entry]) -> [String] {
        var space: [String: [String: UInt64]] = [:]
        for v in Set(entries.map(\.volume)) { space[v] = snapshotSpace(volume: v) }
        return entries.map { e in describeSnapshot(e) + (space[e.volume]?[e.name].map { " exclusive=\($0)" } ?? "") }
    }
}
