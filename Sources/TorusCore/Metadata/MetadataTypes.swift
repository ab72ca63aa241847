/// Value types of the metadata store: the subset of the etcd v3 API that Torus uses.
///
/// The types mirror etcd's protobuf messages closely (`mvccpb.KeyValue`, `Compare`, `RequestOp`,
/// `TxnResponse`, lease and watch messages) so drivers can map them one-to-one onto a real etcd
/// client, and `MetadataStateMachine` gives them etcd 3.4 semantics in memory.

/// A key/value pair as stored at the current revision (etcd `mvccpb.KeyValue`).
///
/// Keys are compared and ordered by their UTF-8 bytes, like etcd's byte keys.
public struct MetaKeyValue: Hashable, Sendable {
    public var key: String
    public var value: [UInt8]
    /// Revision of the put that created this incarnation of the key (0 only in delete events).
    public var createRevision: Int64
    /// Revision of the last change to the key (for a delete event: the deletion's revision).
    public var modRevision: Int64
    /// 1 at creation, +1 per put; a delete resets it (0 only in delete events).
    public var version: Int64
    /// Attached lease id, 0 for none.
    public var lease: Int64

    public init(key: String, value: [UInt8], createRevision: Int64, modRevision: Int64, version: Int64, lease: Int64) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }
}

/// What a compare looks at, and the operand it is compared with.
public enum MetaCompareTarget: Hashable, Sendable {
    /// Bytewise (lexicographic) comparison of the value. Always false on a missing key.
    case value([UInt8])
    case version(Int64)
    case createRevision(Int64)
    case modRevision(Int64)
    /// The attached lease id (0 = none), like etcd's `Compare_LEASE`.
    case lease(Int64)
}

/// The relation that must hold between the key's field (left) and the target operand (right).
public enum MetaCompareResult: Hashable, Sendable {
    case equal, notEqual, less, greater
}

/// One guard of a transaction (etcd `Compare` on a single key).
///
/// A missing key reads as createRevision 0, modRevision 0, version 0 and lease 0; any `.value`
/// compare on a missing key is false (even `.notEqual`), as in etcd.
public struct MetaCompare: Hashable, Sendable {
    public var key: String
    public var result: MetaCompareResult
    public var target: MetaCompareTarget

    public init(key: String, result: MetaCompareResult, target: MetaCompareTarget) {
        self.key = key
        self.result = result
        self.target = target
    }

    /// True when `key` does not exist (createRevision == 0): the create-if-absent guard.
    public static func absent(_ key: String) -> MetaCompare {
        MetaCompare(key: key, result: .equal, target: .createRevision(0))
    }

    /// True when `key` was last modified at `revision` (compare-and-swap guard).
    public static func modRevision(_ key: String, is revision: Int64) -> MetaCompare {
        MetaCompare(key: key, result: .equal, target: .modRevision(revision))
    }

    /// True when `key` exists and holds exactly `value`.
    public static func value(_ key: String, is value: [UInt8]) -> MetaCompare {
        MetaCompare(key: key, result: .equal, target: .value(value))
    }
}

/// One operation of a transaction branch.
public enum MetaOp: Hashable, Sendable {
    /// Reads `key`, or with `prefix` every key starting with `key` (sorted by UTF-8 bytes; an
    /// empty prefix reads every key). Sees writes made earlier in the same transaction.
    case range(key: String, prefix: Bool)
    /// Creates or replaces `key`. `lease` 0 = none; a different lease moves the key to it.
    case put(key: String, value: [UInt8], lease: Int64)
    /// Deletes `key`, or with `prefix` every key starting with `key`.
    case delete(key: String, prefix: Bool)
}

/// The result of one `MetaOp`, in the same position as the op.
public enum MetaOpResult: Hashable, Sendable {
    case range([MetaKeyValue])
    /// The key/value before the put, nil when the put created the key.
    case put(previous: MetaKeyValue?)
    /// The deleted key/values (as they were before deletion), sorted by key.
    case delete(deleted: [MetaKeyValue])
}

/// An etcd transaction: if every compare holds run `success`, else run `failure`.
public struct MetaTxn: Hashable, Sendable {
    public var compares: [MetaCompare]
    public var success: [MetaOp]
    public var failure: [MetaOp]

    public init(compares: [MetaCompare] = [], success: [MetaOp] = [], failure: [MetaOp] = []) {
        self.compares = compares
        self.success = success
        self.failure = failure
    }
}

/// Outcome of an applied transaction.
public struct MetaTxnResult: Hashable, Sendable {
    /// Whether the compares held (so `success` ran) — like etcd's `TxnResponse.succeeded`.
    public var succeeded: Bool
    /// The store revision after the transaction (the new revision if it changed anything).
    public var revision: Int64
    /// One result per op of the branch that ran.
    public var results: [MetaOpResult]

    public init(succeeded: Bool, revision: Int64, results: [MetaOpResult]) {
        self.succeeded = succeeded
        self.revision = revision
        self.results = results
    }
}

/// A request that goes through the replicated log (everything except watches).
public enum MetaRequest: Hashable, Sendable {
    case txn(MetaTxn)
    /// `id` 0 lets the store choose the next free id (deterministically).
    case leaseGrant(ttlSeconds: Int64, id: Int64)
    case leaseKeepAlive(id: Int64)
    case leaseRevoke(id: Int64)
    case leaseTimeToLive(id: Int64)
}

/// The response to a `MetaRequest`.
public enum MetaResponse: Hashable, Sendable {
    case txn(MetaTxnResult)
    /// Grant and keepalive: the granted TTL; timeToLive: the remaining TTL in whole seconds
    /// (truncated, like etcd).
    case lease(id: Int64, ttlSeconds: Int64)
    case revoked(id: Int64)
    case error(MetaError)
}

/// Errors of the metadata store; each matches an etcd error (see `description`).
public enum MetaError: Error, Hashable, Sendable, CustomStringConvertible {
    case leaseNotFound(Int64)
    case leaseExists(Int64)
    /// TTL ≤ 0 or above etcd's `MaxLeaseTTL` (9,000,000,000 s).
    case invalidTTL(Int64)
    /// The requested watch revision is older than the retained history; re-watching from
    /// `revision` (the oldest retained) succeeds, like etcd's `CompactRevision`.
    case compacted(revision: Int64)
    /// A key is put twice, or put and deleted, in one branch of a transaction.
    case duplicateKeyInTxn(String)
    /// A put, a compare or a non-prefix range/delete named the empty key.
    case emptyKey
    /// The transaction has more compares or ops per branch than `maxTxnOps` (etcd default 128).
    case tooManyOps(Int)
    /// The store could not be reached (used by drivers, never by the state machine).
    case unavailable(String)

    public var description: String {
        switch self {
        case .leaseNotFound(let id): return "etcdserver: requested lease not found (\(id))"
        case .leaseExists(let id): return "etcdserver: lease already exists (\(id))"
        case .invalidTTL(let ttl): return "etcdserver: invalid lease TTL \(ttl)"
        case .compacted(let rev): return "mvcc: required revision has been compacted (oldest \(rev))"
        case .duplicateKeyInTxn(let key): return "etcdserver: duplicate key given in txn request (\(key))"
        case .emptyKey: return "etcdserver: key is not provided"
        case .tooManyOps(let n): return "etcdserver: too many operations in txn request (\(n))"
        case .unavailable(let why): return "unavailable: \(why)"
        }
    }
}

/// One change seen by a watch (etcd `mvccpb.Event`, always with `prev_kv`).
public struct MetaWatchEvent: Hashable, Sendable {
    public enum Kind: Hashable, Sendable { case put, delete }
    public var kind: Kind
    /// For a put: the new key/value. For a delete: only `key` and `modRevision` (the deletion's
    /// revision) are set; the other fields are zero/empty, as in etcd.
    public var kv: MetaKeyValue
    /// The key/value before the change, nil when a put created the key.
    public var previous: MetaKeyValue?

    public init(kind: Kind, kv: MetaKeyValue, previous: MetaKeyValue?) {
        self.kind = kind
        self.kv = kv
        self.previous = previous
    }

    /// The revision of the change.
    public var revision: Int64 { kv.modRevision }
}

/// Identifies a watch; ids are assigned in increasing order and never reused.
public struct WatchID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var raw: Int64
    public init(raw: Int64) { self.raw = raw }
    public static func < (a: WatchID, b: WatchID) -> Bool { a.raw < b.raw }
    public var description: String { "w\(raw)" }
}

/// Events for one watch, in revision order (and op order within a revision). A notification
/// never splits a revision.
public struct WatchNotification: Hashable, Sendable {
    public var watch: WatchID
    public var events: [MetaWatchEvent]
    public init(watch: WatchID, events: [MetaWatchEvent]) {
        self.watch = watch
        self.events = events
    }
}

/// A key as raw UTF-8 bytes. etcd compares and orders keys bytewise, while Swift `String`
/// compares by Unicode canonical equivalence, so the store indexes keys by their bytes.
struct MetaKeyBytes: Hashable, Comparable, Sendable {
    var bytes: [UInt8]
    init(_ key: String) { bytes = Array(key.utf8) }
    static func < (a: MetaKeyBytes, b: MetaKeyBytes) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }
    func hasPrefix(_ p: MetaKeyBytes) -> Bool { bytes.starts(with: p.bytes) }
}

/// Bytewise three-way comparison (Go's `bytes.Compare`).
func metaCompareBytes(_ a: [UInt8], _ b: [UInt8]) -> Int {
    for (x, y) in zip(a, b) where x != y { return x < y ? -1 : 1 }
    return a.count == b.count ? 0 : (a.count < b.count ? -1 : 1)
}

/// A granted lease.
struct MetaLease: Hashable, Sendable {
    var id: Int64
    var ttlSeconds: Int64
    var expiry: Instant
    var keys: Set<MetaKeyBytes> = []
}

/// A registered watch: it receives events with revision ≥ `startRevision` on matching keys.
struct MetaWatch: Hashable, Sendable {
    var id: WatchID
    var key: MetaKeyBytes
    var prefix: Bool
    var startRevision: Int64

    func matches(_ key: MetaKeyBytes) -> Bool { prefix ? key.hasPrefix(self.key) : key == self.key }
}
