import Glibc
import Synchronization
import Testing
import TorusCore
import TorusRuntime
import TorusSim

// Support for MetadataConformanceTests: the two stores under test and a session that records
// normalized responses (revisions relative to the scenario's start, lease ids as L1, L2...,
// keys without the scenario's prefix).

/// A metadata store under test.
protocol ConformanceBackend: AnyObject {
    var name: String { get }
    func apply(_ request: MetaRequest) throws -> MetaResponse
    func watch(key: String, prefix: Bool, fromRevision: Int64, handler: @escaping MetadataWatchHandler) throws -> any MetadataWatch
    func close()
}

/// The embedded store on the monotonic clock, expiring leases before every request the way
/// etcd's lessor does on its own.
final class EmbeddedConformanceBackend: ConformanceBackend {
    let name = "embedded"
    let directory = ScratchDirectory("conformance")
    let store: EmbeddedMetadataStore

    init() throws {
        store = try EmbeddedMetadataStore(directory: directory.path + "/metadata", now: SystemClock.now())
    }

    func apply(_ request: MetaRequest) throws -> MetaResponse {
        let now = SystemClock.now()
        try store.expireLeases(now: now)
        return try store.apply(request, now: now)
    }

    func watch(key: String, prefix: Bool, fromRevision: Int64, handler: @escaping MetadataWatchHandler) throws -> any MetadataWatch {
        try store.watch(key: key, prefix: prefix, fromRevision: fromRevision, handler: handler)
    }

    func close() {
        store.close()
        directory.remove()
    }
}

/// The simulator's metadata store (the state machine the simulator drives), on the monotonic
/// clock, expiring leases before every request; watch handlers run under its lock, like the
/// embedded store's.
final class SimConformanceBackend: ConformanceBackend, @unchecked Sendable {
    let name = "simulated"
    private let state = Mutex<(store: SimMetadataStore, handlers: [WatchID: MetadataWatchHandler])>((SimMetadataStore(), [:]))

    func apply(_ request: MetaRequest) throws -> MetaResponse {
        state.withLock { s in
            let now = SystemClock.now()
            deliver(s.store.tick(now: now), s.handlers)
            guard let (response, notifications) = s.store.apply(request, now: now) else { return .error(.unavailable("store down")) }
            deliver(notifications, s.handlers)
            return response
        }
    }

    func watch(key: String, prefix: Bool, fromRevision: Int64, handler: @escaping MetadataWatchHandler) throws -> any MetadataWatch {
        try state.withLock { s in
            switch s.store.watch(key: key, prefix: prefix, fromRevision: fromRevision) {
            case .failure(let e): throw e
            case .success(let (id, replay)):
                s.handlers[id] = handler
                deliver(replay, s.handlers)
                return SimWatch { [weak self] in
                    self?.state.withLock { s in
                        s.store.cancelWatch(id)
                        s.handlers[id] = nil
                    }
                }
            }
        }
    }

    private func deliver(_ notifications: [WatchNotification], _ handlers: [WatchID: MetadataWatchHandler]) {
        for n in notifications where !n.events.isEmpty { handlers[n.watch]?(.events(n.events)) }
    }

    func close() {}
}

final class SimWatch: MetadataWatch, @unchecked Sendable {
    let onCancel: () -> Void
    init(_ onCancel: @escaping () -> Void) { self.onCancel = onCancel }
    func cancel() { onCancel() }
}

final class EtcdConformanceBackend: ConformanceBackend {
    let name = "etcd"
    let client: EtcdClient

    init(endpoint: String) throws {
        client = try EtcdClient(endpoints: [endpoint], timeout: .seconds(5))
    }

    func apply(_ request: MetaRequest) throws -> MetaResponse { try client.apply(request) }
    func watch(key: String, prefix: Bool, fromRevision: Int64, handler: @escaping MetadataWatchHandler) throws -> any MetadataWatch {
        EtcdWatch(endpoints: client.endpoints, tls: nil, key: key, prefix: prefix, fromRevision: fromRevision, handler: handler)
    }
    func close() {}
}

/// Runs one scenario on one backend, under a key prefix, recording normalized responses.
final class ConformanceSession {
    let backend: ConformanceBackend
    let prefix: String
    /// Explicit lease ids of this scenario are `leaseBase + n`, distinct from other scenarios'.
    let leaseBase: Int64
    private(set) var base: Int64 = 0
    private(set) var transcript: [String] = []
    private var leaseTokens: [Int64: String] = [:]
    private var granted: [Int64] = []

    init(backend: ConformanceBackend, prefix: String, leaseBase: Int64) throws {
        self.backend = backend
        self.prefix = prefix
        self.leaseBase = leaseBase
        base = try currentRevision()
    }

    func key(_ name: String) -> String { prefix + name }

    /// The absolute revision `relative` revisions after the scenario's start.
    func revision(_ relative: Int64) -> Int64 { base + relative }

    func currentRevision() throws -> Int64 {
        guard case .txn(let result) = try backend.apply(.txn(MetaTxn(success: [.range(key: prefix, prefix: false)]))) else {
            throw SessionError(description: "\(backend.name): cannot read the revision")
        }
        return result.revision
    }

    struct SessionError: Error, CustomStringConvertible { var description: String }

    /// Applies `request`, records its normalized response, and expects it to read `expected`.
    @discardableResult
    func check(_ request: MetaRequest, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> MetaResponse {
        let response = try apply(request)
        #expect(transcript.last == expected, "on \(backend.name)", sourceLocation: sourceLocation)
        return response
    }

    /// Applies `request` and records its normalized response.
    @discardableResult
    func apply(_ request: MetaRequest) throws -> MetaResponse {
        let response = try backend.apply(request)
        if case .leaseGrant = request, case .lease(let id, _) = response { granted.append(id) }
        transcript.append(describe(response))
        return response
    }

    /// Records a line of the scenario's own (e.g. the outcome of a polling loop).
    func note(_ line: String) { transcript.append(line) }

    /// Grants a lease and returns its id (0 and an issue when the grant fails).
    func grant(_ ttl: Int64, id: Int64 = 0, sourceLocation: SourceLocation = #_sourceLocation) throws -> Int64 {
        let response = try apply(.leaseGrant(ttlSeconds: ttl, id: id))
        guard case .lease(let granted, _) = response else {
            Issue.record("\(backend.name): grant failed: \(response)", sourceLocation: sourceLocation)
            return 0
        }
        return granted
    }

    /// Revokes the leases this scenario granted and deletes its keys, without recording.
    func cleanUp() {
        for id in granted { _ = try? backend.apply(.leaseRevoke(id: id)) }
        _ = try? backend.apply(.txn(MetaTxn(success: [.delete(key: prefix, prefix: true)])))
    }

    /// Starts a watch on `name` under the prefix from the relative revision (0: from now).
    func watch(_ name: String, prefix: Bool, from relative: Int64?) throws -> WatchRecorder {
        let recorder = WatchRecorder()
        recorder.handle = try backend.watch(key: key(name), prefix: prefix, fromRevision: relative.map(revision) ?? 0) { update in
            recorder.record(update)
        }
        return recorder
    }

    /// The normalized events a watch received, once `count` arrived (or after 5 s).
    func events(_ recorder: WatchRecorder, count: Int) -> String {
        let start = ContinuousClock.now
        while recorder.updates.flatMap(\.events).count < count && ContinuousClock.now - start < .seconds(5) { usleep(10_000) }
        return recorder.updates.map { update -> String in
            switch update {
            case .events(let events): return events.map(describe).joined(separator: "; ")
            case .resync(_, let reason): return "resync(\(reason))"
            }
        }.joined(separator: "; ")  // etcd may batch the events of several revisions
    }

    func describe(_ e: MetaWatchEvent) -> String {
        let previous = e.previous.map(describe) ?? "nil"
        switch e.kind {
        case .put: return "PUT \(describe(e.kv)) prev \(previous)"
        case .delete: return "DELETE \(name(e.kv.key)) m\(e.kv.modRevision - base) prev \(previous)"
        }
    }

    // MARK: - Normalizing

    func token(_ lease: Int64) -> String {
        if lease == 0 { return "none" }
        if let t = leaseTokens[lease] { return t }
        let t = "L\(leaseTokens.count + 1)"
        leaseTokens[lease] = t
        return t
    }

    private func name(_ key: String) -> String {
        key.hasPrefix(prefix) ? String(key.dropFirst(prefix.count)) : "!" + key
    }

    private func describe(_ kv: MetaKeyValue) -> String {
        let lease = kv.lease == 0 ? "" : " " + token(kv.lease)
        let value = String(decoding: kv.value, as: UTF8.self)
        return "\(name(kv.key))=\(value) c\(kv.createRevision - base) m\(kv.modRevision - base) v\(kv.version)\(lease)"
    }

    func describe(_ response: MetaResponse) -> String {
        switch response {
        case .txn(let r):
            let results = r.results.map { result -> String in
                switch result {
                case .range(let kvs): return "range[\(kvs.map(describe).joined(separator: ", "))]"
                case .put(let previous): return "put(prev: \(previous.map(describe) ?? "nil"))"
                case .delete(let deleted): return "delete[\(deleted.map(describe).joined(separator: ", "))]"
                }
            }
            return "\(r.succeeded ? "succeeded" : "failed") r\(r.revision - base) [\(results.joined(separator: ", "))]"
        case .lease(let id, let ttl): return "lease \(token(id)) ttl \(ttl)"
        case .revoked(let id): return "revoked \(token(id))"
        case .error(let error):
            switch error {
            case .leaseNotFound(let id): return "leaseNotFound(\(token(id)))"
            case .leaseExists(let id): return "leaseExists(\(token(id)))"
            case .duplicateKeyInTxn(let key): return "duplicateKeyInTxn(\(name(key)))"
            case .unavailable: return "unavailable"
            default: return "\(error)"
            }
        }
    }
}

/// Collects what a watch delivers.
final class WatchRecorder: @unchecked Sendable {
    private let lock = Mutex<[MetadataWatchUpdate]>([])
    var handle: (any MetadataWatch)?
    func record(_ u: MetadataWatchUpdate) { lock.withLock { $0.append(u) } }
    var updates: [MetadataWatchUpdate] { lock.withLock { $0 } }
    func cancel() { handle?.cancel() }
}

extension MetadataWatchUpdate {
    var events: [MetaWatchEvent] {
        if case .events(let e) = self { return e }
        return []
    }
}
