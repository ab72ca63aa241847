import Logging
import NIOCore
import TorusCore

/// Following `/torus/volumes/` in the metadata store: volumes created, resized or deleted by
/// any process are opened, grown or no longer served.
extension VolumeServer {
    /// Starts the watch on `/torus/volumes/` (before the first listing, so nothing created in
    /// between is missed; changes already seen are idempotent).
    func watchVolumes() -> EventLoopFuture<Void> {
        let meta = self.meta, loop = self.loop
        return metaPool.runIfActive(eventLoop: loop) { () throws -> any MetadataWatch in
            try meta.watch(key: VolumeInfo.volumesPrefix, prefix: true, fromRevision: 0) { update in
                loop.execute { self.volumesChanged(update) }
            }
        }.map { watch in
            self.volumeWatch = watch
        }
    }

    func volumesChanged(_ update: MetadataWatchUpdate) {
        loop.assertInEventLoop()
        guard volumeWatch != nil else { return }  // shutting down
        switch update {
        case .events(let events):
            for e in events {
                let key = e.kv.key
                guard let (name, field) = VolumeInfo.splitKey(key) else { continue }
                if field.hasPrefix("snapshots/") || field.hasPrefix("requests/") {
                    snapshotKeyChanged(volume: name, field: field, e)
                    continue
                }
                guard field == "info" else { continue }
                switch e.kind {
                case .put:
                    guard let info = VolumeInfo.decode(e.kv.value) else {
                        RuntimeLoggers.volume.error("\(key) is corrupt; not serving it", metadata: ["volume": "\(name)"])
                        continue
                    }
                    reconcile(info)
                case .delete:
                    if volumes[name] != nil {
                        RuntimeLoggers.volume.info("deleted in \(meta.location); no longer serving it", metadata: ["volume": "\(name)"])
                        stopServing(name, reason: "volume '\(name)' was deleted")
                    }
                }
            }
        case .resync(_, let reason):
            RuntimeLoggers.volume.notice("volumes: \(reason); re-reading the volume list")
            listVolumes().whenSuccess { infos in
                let listed = Set(infos.map(\.name))
                for name in self.volumes.keys.sorted() where !listed.contains(name) && !name.contains("@") {
                    RuntimeLoggers.volume.info("no longer in \(self.meta.location); no longer serving it", metadata: ["volume": "\(name)"])
                    self.stopServing(name, reason: "volume '\(name)' was deleted")
                }
                for info in infos { self.reconcile(info) }
                self.serveSnapshots()
            }
        }
    }
}
