import TorusCore

/// Where a cluster's metadata lives: the embedded store in the data directory (one machine,
/// nothing else to run) or etcd. Calls block (file fsync, HTTP round trip): run them on a
/// thread pool, never on an event loop.
public protocol MetadataService: AnyObject, Sendable {
    /// Applies one request (etcd v3 semantics, see `MetadataStateMachine`). Unreachable
    /// stores answer `.error(.unavailable(...))` or throw; either way nothing is known applied.
    func apply(_ request: MetaRequest, now: Instant) throws -> MetaResponse
    /// Expires leases whose TTL ran out (the embedded store needs the clock to be driven;
    /// etcd expires leases on its own and ignores this).
    func expireLeases(now: Instant) throws
    /// For logs and errors: "embedded store in DIR" or the etcd endpoints.
    var location: String { get }
    /// Watches `key` (or every key starting with it when `prefix`) for changes from
    /// `fromRevision` (0: after now); see `MetadataWatchUpdate` and `MetadataWatchHandler`.
    func watch(key: String, prefix: Bool, fromRevision: Int64, handler: @escaping MetadataWatchHandler) throws -> any MetadataWatch
}

extension EmbeddedMetadataStore: MetadataService {
    public var location: String { "embedded metadata store in \(directory)" }
}

/// etcd through its v3 JSON gateway (`EtcdClient`).
public final class EtcdMetadataService: MetadataService {
    public let client: EtcdClient
    /// Lease keep-alives use a connection of their own, so they never wait for a slow
    /// request on the main one (one curl handle serves one request at a time).
    let leaseClient: EtcdClient

    public init(client: EtcdClient, leaseClient: EtcdClient) {
        self.client = client
        self.leaseClient = leaseClient
    }

    /// `etcd://host:port[,host:port...]` or http(s) URLs, comma-separated. Without `tls`,
    /// `https://` endpoints take their TLS files from the environment (`EtcdTLS.fromEnvironment`).
    public convenience init(url: String, timeout: Duration = .seconds(5), tls: EtcdTLS? = nil) throws {
        let tls = tls ?? (url.contains("https://") ? EtcdTLS.fromEnvironment() : nil)
        var endpoints: [String] = []
        if url.hasPrefix("etcd://") {
            endpoints = url.dropFirst("etcd://".count).split(separator: ",").map { "etcd://" + $0 }
        } else {
            endpoints = url.split(separator: ",").map(String.init)
        }
        let auth = try EtcdAuth.fromEnvironment()
        try self.init(client: EtcdClient(endpoints: endpoints, timeout: timeout, tls: tls, auth: auth),
                      leaseClient: EtcdClient(endpoints: endpoints, timeout: timeout, tls: tls, auth: auth))
    }

    public func apply(_ request: MetaRequest, now: Instant) throws -> MetaResponse {
        if case .leaseKeepAlive = request { return try leaseClient.apply(request) }
        return try client.apply(request)
    }

    public func expireLeases(now: Instant) throws {}

    public var location: String { "etcd at " + client.endpoints.joined(separator: ",") }
}
