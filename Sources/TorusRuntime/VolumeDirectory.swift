import NIOConcurrencyHelpers
import TorusNBD

/// The exports the NBD server offers, readable from any thread.
public final class VolumeDirectory: @unchecked Sendable {
    private let lock = NIOLock()
    private var exports: [String: NBDExport] = [:]

    public func set(_ e: NBDExport) { lock.withLock { exports[e.name] = e } }
    public func remove(_ name: String) { _ = lock.withLock { exports.removeValue(forKey: name) } }
    public func lookup(_ name: String) -> NBDExport? { lock.withLock { exports[name] } }
    /// Changes when the volume's writer is replaced; connections of an older one must close.
    private var generations: [String: Int] = [:]
    public func bumpGeneration(_ name: String) { lock.withLock { generations[name, default: 0] += 1 } }
    public func generation(_ name: String) -> Int { lock.withLock { generations[name] ?? 0 } }
    public func all() -> [NBDExport] { lock.withLock { exports.values.sorted { $0.name < $1.name } } }
    /// NBD connections in transmission on each export (a rollback refuses a volume in use).
    private var attached: [String: Int] = [:]
    public func attach(_ name: String) { lock.withLock { attached[name, default: 0] += 1 } }
    public func detach(_ name: String) { lock.withLock { attached[name, default: 1] -= 1 } }
    public func connections(_ name: String) -> Int { lock.withLock { attached[name] ?? 0 } }
}
