import Synchronization
import TorusCore

/// What a metadata watch reports to its handler.
public enum MetadataWatchUpdate: Sendable, Equatable {
    /// Changes to the watched keys, in revision order; one call never repeats an event of an
    /// earlier call.
    case events([MetaWatchEvent])
    /// Changes may have been missed (the stream broke and the history it would resume from is
    /// compacted, or the store restarted): re-read the state you follow. The watch goes on with
    /// changes after `revision`.
    case resync(revision: Int64, reason: String)
}

/// A running watch; `cancel` stops it (idempotent). After `cancel` returns the handler is not
/// called again.
public protocol MetadataWatch: AnyObject, Sendable {
    func cancel()
}

/// A watch handler. It runs on a thread of the store (etcd: the watch's own thread; embedded:
/// the thread that applied the change, with the store locked), so it must be quick and must not
/// call the store: hand the update to an event loop.
public typealias MetadataWatchHandler = @Sendable (MetadataWatchUpdate) -> Void

extension EmbeddedMetadataStore {
    /// Watches `key` (or every key under it when `prefix`) from `fromRevision` (0: changes after
    /// now). Events are delivered synchronously by the `apply` or `expireLeases` that made them.
    /// - Throws: `.compacted` (as `RuntimeError.metadata`) for a start before
    ///   `oldestWatchableRevision`.
    public func watch(key: String, prefix: Bool, fromRevision: Int64,
                      handler: @escaping MetadataWatchHandler) throws -> any MetadataWatch {
        if fromRevision > 0 && fromRevision < oldestWatchableRevision {
            throw RuntimeError.metadata("\(location): cannot watch from revision \(fromRevision): history before \(oldestWatchableRevision) is compacted")
        }
        let id = try registerWatch(key: key, prefix: prefix, fromRevision: fromRevision, handler: handler)
        return EmbeddedWatch(store: self, id: id)
    }
}

final class EmbeddedWatch: MetadataWatch {
    private let store: Mutex<EmbeddedMetadataStore?>
    let id: WatchID

    init(store: EmbeddedMetadataStore, id: WatchID) {
        self.store = Mutex(store)
        self.id = id
    }

    func cancel() {
        let s = store.withLock { s -> EmbeddedMetadataStore? in
            defer { s = nil }
            return s
        }
        s?.cancelWatch(id)
    }
}
