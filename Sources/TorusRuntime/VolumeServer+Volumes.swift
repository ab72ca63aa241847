import Logging
import NIOCore
import TorusCore
import TorusNBD

/// The volumes' lifecycle: created, opened (a writer each), resized, deleted; a writer fenced
/// after it opened is replaced.
extension VolumeServer {
    /// Creates missing volumes, then opens every volume the metadata store knows.
    func openVolumes() -> EventLoopFuture<Void> {
        var chain = loop.makeSucceededVoidFuture()
        for (name, size) in config.volumes {
            chain = chain.flatMap { self.createVolume(name: name, sizeBytes: size, ifMissing: true).map { _ in } }
        }
        return chain.flatMap { self.listVolumes() }.flatMap { infos in
            if infos.isEmpty, self.config.volumes.isEmpty, let (name, size) = self.config.defaultVolume {
                return self.createVolume(name: name, sizeBytes: size, ifMissing: true).map { [$0] }
            }
            return self.loop.makeSucceededFuture(infos)
        }.flatMap { infos in
            EventLoopFuture.andAllSucceed(infos.map { self.openVolume($0) }, on: self.loop)
        }.always { _ in self.serveSnapshots() }
    }

    public func listVolumes() -> EventLoopFuture<[VolumeInfo]> {
        let meta = self.meta
        return metaPool.runIfActive(eventLoop: loop) { try ClusterCatalog.listVolumes(meta) }
    }

    /// Creates a volume; with `ifMissing`, an existing volume of that name is returned instead.
    public func createVolume(name: String, sizeBytes: UInt64, ifMissing: Bool = false) -> EventLoopFuture<VolumeInfo> {
        let meta = self.meta, blockSize = config.blockSize, replication = config.replication
        return metaPool.runIfActive(eventLoop: loop) {
            try ClusterCatalog.createVolume(meta, name: name, sizeBytes: sizeBytes, blockSize: blockSize,
                                            replication: replication, ifMissing: ifMissing)
        }
    }

    /// 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.', not starting with '-' (they appear in
    /// metadata keys, NBD export names and command lines).
    public static func validName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64 && !name.hasPrefix("-")
            && name.unicodeScalars.allSatisfy { ($0.properties.isASCIIHexDigit || ("a"..."z").contains($0) || ("A"..."Z").contains($0) || "-_.".unicodeScalars.contains($0)) }
    }

    /// Serves a volume (or, with `snapshotRoot`, a snapshot read-only as `VOL@SNAP`).
    public func openVolume(_ info: VolumeInfo, snapshotRoot: MapEntry? = nil) -> EventLoopFuture<Void> {
        if volumes[info.name] != nil { return loop.makeSucceededVoidFuture() }
        let name = info.name
        let host = VolumeHost(client: makeWriter(info, snapshotRoot: snapshotRoot), adapter: ByteRangeAdapter(sectorSize: 4096, volumeSize: info.sizeBytes),
                              loop: loop, tick: { self.writerTicked(name, $0) }) { node, link, msg in
            self.clientReceived(name, from: node, via: link, msg)
        }
        let ready = loop.makePromise(of: Void.self)
        host.ready = ready
        volumes[info.name] = host
        directory.set(export(info, readOnly: snapshotRoot != nil))
        handleClient(info.name, host.client.start(now: SystemClock.now()))
        return ready.futureResult
    }

    func export(_ info: VolumeInfo, readOnly snapshot: Bool = false) -> NBDExport {
        let readOnly = config.readOnly || snapshot
        return NBDExport(name: info.name, size: info.sizeBytes, readOnly: readOnly, multiConn: true,
                  description: (snapshot ? "torus snapshot \(info.name)" : "torus volume \(info.name)") + (readOnly ? " (read-only)" : ""),
                  payloadChunkBytes: info.blockSize)
    }

    func makeWriter(_ info: VolumeInfo, snapshotRoot: MapEntry? = nil) -> VolumeClient {
        var cfg = VolumeClientConfig()
        cfg.readOnly = config.readOnly || snapshotRoot != nil
        cfg.snapshotRoot = snapshotRoot
        cfg.leaseTTLSeconds = 10
        // Figures behind these settings: docs/runtime.md, "Writer settings".
        // Enough write-backs in flight to keep a node's group commit busy.
        cfg.writebacksInFlightMax = 256
        // Deferred syncing (docs/storage-core.md, "Volume writer and commit"): a FLUSH syncs the
        // puts, so a block rewritten before then costs no disk sync. The cache holds every
        // unsynced block, so it is big; half of it may be dirty.
        cfg.cacheBytesMax = config.cacheBytes
        cfg.dirtyBytesHigh = config.cacheBytes / 2
        cfg.durableWriteback = config.durableWrites
        cfg.unsyncedBytesHigh = config.cacheBytes / 4 * 3
        cfg.syncDelay = config.syncDelay
        // A dirty block waits before write-back (like the kernel's page cache), so a block
        // rewritten meanwhile is written back once.
        cfg.writebackDelay = config.writebackDelay
        // Nodes route replies by the client's id: every writer and reader of every process
        // needs its own. Node ids are small; these are not.
        var rng = SystemRandomNumberGenerator()
        let clientID = NodeID(UInt32.random(in: 1_000_000...UInt32.max - 1, using: &rng))
        return VolumeClient(info: info, ring: ring, clientID: clientID, config: cfg, seed: info.id)
    }

    /// A writer that was fenced after it opened (its lease expired, e.g. when the process was
    /// stopped for longer than the lease) is replaced by a new one, which waits for the lease
    /// and takes a new epoch. Writes it had not flushed are gone, as after a crash, so the NBD
    /// connections that used it are closed (their clients see the failure instead of a silent
    /// loss) and new connections get the new writer.
    func replaceFencedWriter(_ name: String, _ host: VolumeHost) {
        host.generation += 1
        let generation = host.generation
        directory.bumpGeneration(name)
        closeLinks(host)
        host.ticks.cancel()
        loop.scheduleTask(in: .seconds(1)) {
            guard self.volumes[name] === host, host.generation == generation else { return }
            RuntimeLoggers.volume.info("opening a new writer", metadata: ["volume": "\(name)"])
            host.client = self.makeWriter(host.client.info, snapshotRoot: host.client.config.snapshotRoot)
            self.handleClient(name, host.client.start(now: SystemClock.now()))
        }
    }

    /// Deletes a volume: it stops being served, requests in flight fail, its metadata goes.
    /// Its blocks stay on the nodes until the garbage collector's next pass finds them.
    public func deleteVolume(name: String) -> EventLoopFuture<Void> {
        loop.assertInEventLoop()
        guard volumes[name] != nil else {
            return loop.makeFailedFuture(RuntimeError.notFound("no volume named '\(name)'"))
        }
        let meta = self.meta
        return metaPool.runIfActive(eventLoop: loop) { try ClusterCatalog.deleteVolume(meta, name: name) }.map {
            for n in self.volumes.keys.sorted() where n == name || n.hasPrefix(name + "@") {
                self.stopServing(n, reason: "volume '\(name)' was deleted")
            }
        }
    }

    /// Stops serving a volume: its NBD connections close, requests in flight fail, its writer
    /// gives up its lease.
    func stopServing(_ name: String, reason: String) {
        guard let host = volumes[name] else { return }
        directory.remove(name)
        directory.bumpGeneration(name)
        host.ticks.cancel()
        host.generation += 1
        volumes[name] = nil
        closeLinks(host)
        for id in host.pending.keys.sorted() {
            host.pending[id]!.fail(RuntimeError.badInput(reason))
        }
        host.pending.removeAll()
        for (_, p) in host.snapshotOps { p.fail(RuntimeError.badInput(reason)) }
        host.snapshotOps.removeAll()
        if host.client.leaseID != 0 {
            _ = metaApply(.leaseRevoke(id: host.client.leaseID))
        }
    }

    /// Grows a volume: in the metadata store, then (through the watch, or at once here) in its
    /// writer. New NBD connections see the new size; open ones keep the size they negotiated.
    public func resizeVolume(name: String, sizeBytes: UInt64) -> EventLoopFuture<VolumeInfo> {
        let meta = self.meta
        return metaPool.runIfActive(eventLoop: loop) { try ClusterCatalog.resizeVolume(meta, name: name, sizeBytes: sizeBytes) }
            .map { old, new in
                self.reconcile(new)
                return new
            }
    }

    /// Brings what is served in line with one volume's description.
    func reconcile(_ info: VolumeInfo) {
        loop.assertInEventLoop()
        guard let host = volumes[info.name] else {
            RuntimeLoggers.volume.info("found in \(meta.location); serving it", metadata: ["volume": "\(info.name)"])
            _ = openVolume(info)
            return
        }
        let current = host.client.info
        if info.id != current.id {
            RuntimeLoggers.volume.info("recreated (id \(current.id) -> \(info.id)); serving the new one", metadata: ["volume": "\(info.name)"])
            stopServing(info.name, reason: "volume '\(info.name)' was recreated")
            _ = openVolume(info)
        } else if info.sizeBytes > max(current.sizeBytes, host.growingTo) {
            RuntimeLoggers.volume.info("growing from \(current.sizeBytes) to \(info.sizeBytes) bytes", metadata: ["volume": "\(info.name)"])
            host.growingTo = info.sizeBytes
            handleClient(info.name, host.client.grow(to: info, now: SystemClock.now()))
        }
    }
}
