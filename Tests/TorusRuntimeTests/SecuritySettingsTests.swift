import Testing
import TorusCore
@testable import TorusRuntime

/// The cluster's peer-TLS policy, its check against a process's `--peer-tls`, and the etcd
/// token handling's parsing (the handshakes themselves run in scripts/e2e-etcd-tls.sh).
@Suite("security settings")
struct SecuritySettingsTests {
    @Test("torus init records the peer-TLS policy; a config without the line is plaintext")
    func peerTLSPolicy() throws {
        let dir = ScratchDirectory("peer-tls-policy")
        defer { dir.remove() }
        let meta = try EmbeddedMetadataStore(directory: dir.path, now: SystemClock.now())
        defer { meta.close() }
        try ClusterCatalog.initialize(meta, ClusterCatalog.Config(blockSize: 65536, replication: 2, peerTLS: true), force: false)
        #expect(try ClusterCatalog.config(meta).peerTLS)
        try ClusterCatalog.initialize(meta, ClusterCatalog.Config(blockSize: 65536, replication: 2), force: true)
        #expect(try !ClusterCatalog.config(meta).peerTLS)
        // A config written before the policy existed.
        _ = try meta.apply(.txn(MetaTxn(compares: [], success: [.put(key: ClusterCatalog.configKey,
                                                                         value: Array("block-size=65536\nreplication=2\n".utf8), lease: 0)])),
                           now: SystemClock.now())
        #expect(try ClusterCatalog.config(meta) == ClusterCatalog.Config(blockSize: 65536, replication: 2, peerTLS: false))
    }

    @Test("a process without --peer-tls is refused on a --tls cluster (and agreeing settings pass)")
    func policyCheck() throws {
        #expect(throws: RuntimeError.self) { try PeerTLS.check(clusterRequiresTLS: true, given: nil, location: "etcd at x") }
        try PeerTLS.check(clusterRequiresTLS: false, given: nil, location: "etcd at x")
        do {
            try PeerTLS.check(clusterRequiresTLS: true, given: nil, location: "etcd at x")
        } catch {
            #expect("\(error)".contains("--peer-tls DIR"))
        }
    }

    @Test("etcd tokens: read from authenticate replies; expired or missing tokens recognised, other errors not")
    func etcdTokens() {
        #expect(EtcdAuth.token(in: Array(#"{"header":{"revision":"3"},"token":"abc.12"}"#.utf8)) == "abc.12")
        #expect(EtcdAuth.token(in: Array(#"{"error":"etcdserver: authentication failed","code":3}"#.utf8)) == nil)
        #expect(EtcdAuth.token(in: Array("not json".utf8)) == nil)
        #expect(EtcdAuth.rejectsToken(status: 401, body: Array(#"{"error":"etcdserver: invalid auth token","code":16}"#.utf8)))
        #expect(EtcdAuth.rejectsToken(status: 400, body: Array(#"{"error":"etcdserver: user name is empty","code":3}"#.utf8)))
        #expect(!EtcdAuth.rejectsToken(status: 400, body: Array(#"{"error":"etcdserver: authentication failed","code":3}"#.utf8)))
        #expect(!EtcdAuth.rejectsToken(status: 200, body: Array("invalid auth token".utf8)))
        #expect(Array(EtcdAuth(user: "u\"1", password: "p\\w").request) == Array(#"{"name":"u\"1","password":"p\\w"}"#.utf8))
    }
}
