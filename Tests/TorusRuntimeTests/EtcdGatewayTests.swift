import Foundation
import Testing
import TorusCore
@testable import TorusRuntime

private func b(_ s: String) -> [UInt8] { Array(s.utf8) }
/// Whether two JSON texts hold the same value (objects compare regardless of member order).
private func sameJSON(_ a: [UInt8], _ b: String) -> Bool {
    func normalized(_ bytes: [UInt8]) -> Data? {
        guard let value = try? JSONSerialization.jsonObject(with: Data(bytes), options: .fragmentsAllowed) else { return nil }
        return try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed])
    }
    guard let x = normalized(a) else { return false }
    return x == normalized(Array(b.utf8))
}

@Suite("etcd gateway encoding")
struct EtcdGatewayTests {
    @Test("JSON parses and serializes strings, escapes, int64s and rejects malformed or too deep input")
    func jsonRoundTrip() throws {
        let error = b(#"{"error":"e","message":"x\"y\\z\n\u00e9\ud83d\ude00/","code":"5"}"#)
        guard case .serverError(let e) = try EtcdGateway.decode(.leaseRevoke(id: 1), status: 500, body: error) else {
            Issue.record("expected a server error")
            return
        }
        #expect(e == .init(status: 500, code: 5, message: "x\"y\\z\né😀/"))
        #expect(EtcdCodec.encode("a\u{1}\"é") == b(#""a\u0001\"é""#))
        #expect(try EtcdCodec.decode(EtcdInt64.self, from: b(#""9223372036854775807""#)).value == Int64.max)
        #expect(try EtcdCodec.decode(EtcdInt64.self, from: b("-9223372036854775808")).value == Int64.min)
        for bad in ["", "{", "[1,]", "01", "1.", "\"\\x\"", "\"\\ud800\"", "{\"a\" 1}", "tru", "1 2", "\"\u{1}\""] {
            #expect(throws: EtcdGateway.MalformedReply.self, "\(bad)") { try EtcdGateway.decodeWatch(b(bad)) }
        }
        let deep = String(repeating: #"{"result":"#, count: 10_000) + "{}" + String(repeating: "}", count: 10_000)
        #expect(throws: EtcdGateway.MalformedReply.self) { try EtcdGateway.decodeWatch(b(deep)) }
    }

    @Test("base64 matches RFC 4648 test vectors and rejects malformed input")
    func base64() {
        let vectors = ["": "", "f": "Zg==", "fo": "Zm8=", "foo": "Zm9v", "foob": "Zm9vYg==", "fooba": "Zm9vYmE=", "foobar": "Zm9vYmFy"]
        for (plain, encoded) in vectors {
            #expect(Base64.encode(b(plain)) == encoded)
            #expect(Base64.decode(encoded) == b(plain))
        }
        let all = (0...255).map(UInt8.init)
        #expect(Base64.decode(Base64.encode(all)) == all)
        for bad in ["Zg=", "Z===", "Zm9v!A==", "Zm=v"] { #expect(Base64.decode(bad) == nil, "\(bad)") }
    }

    @Test("prefix ranges follow etcd's rule: increment the last byte below 0xFF")
    func prefixRange() {
        #expect(EtcdGateway.prefixRange("a/") == (b("a/"), b("a0")))
        #expect(EtcdGateway.prefixRange("az") == (b("az"), b("a{")))
        #expect(EtcdGateway.prefixRange("") == ([0], [0]))
    }

    @Test("requests encode keys and values as base64 and int64s as strings")
    func requestEncoding() throws {
        let txn = MetaRequest.txn(MetaTxn(compares: [.absent("k"), .modRevision("k", is: 7)],
                                          success: [.put(key: "k", value: b("v"), lease: 5), .range(key: "p/", prefix: true)],
                                          failure: [.delete(key: "k", prefix: false)]))
        let call = EtcdGateway.call(for: txn)
        #expect(call.path == "/v3/kv/txn")
        #expect(sameJSON(call.body, #"{"compare":[{"key":"aw==","target":"CREATE","result":"EQUAL","create_revision":"0"},"#
            + #"{"key":"aw==","target":"MOD","result":"EQUAL","mod_revision":"7"}],"#
            + #""success":[{"request_put":{"key":"aw==","value":"dg==","prev_kv":true,"lease":"5"}},"#
            + #"{"request_range":{"key":"cC8=","range_end":"cDA="}}],"#
            + #""failure":[{"request_delete_range":{"key":"aw==","prev_kv":true}}]}"#))
        #expect(EtcdGateway.call(for: .leaseGrant(ttlSeconds: 10, id: 0)) == .init(path: "/v3/lease/grant", body: b(#"{"TTL":"10"}"#)))
        #expect(EtcdGateway.call(for: .leaseKeepAlive(id: 3)) == .init(path: "/v3/lease/keepalive", body: b(#"{"ID":"3"}"#)))
    }

    @Test("replies decode with omitted fields as false, zero or empty")
    func replyDecoding() throws {
        let header = #""header":{"cluster_id":"1","member_id":"2","revision":"9","raft_term":"2"}"#
        let txn = MetaRequest.txn(MetaTxn(compares: [.absent("k")], success: [.put(key: "k", value: [], lease: 0)],
                                          failure: [.range(key: "k", prefix: false), .range(key: "x", prefix: false)]))
        let failed = b("{\(header),\"responses\":[{\"response_range\":{\"header\":{\"revision\":\"9\"},"
            + #""kvs":[{"key":"aw==","create_revision":"3","mod_revision":"4","version":"2","lease":"77"}],"count":"1"}},"#
            + #"{"response_range":{"header":{"revision":"9"}}}]}"#)
        let kv = MetaKeyValue(key: "k", value: [], createRevision: 3, modRevision: 4, version: 2, lease: 77)
        #expect(try EtcdGateway.decode(txn, status: 200, body: failed)
            == .response(.txn(MetaTxnResult(succeeded: false, revision: 9, results: [.range([kv]), .range([])]))))
        let succeeded = b("{\(header),\"succeeded\":true,\"responses\":[{\"response_put\":{\"header\":{\"revision\":\"9\"}}}]}")
        #expect(try EtcdGateway.decode(txn, status: 200, body: succeeded)
            == .response(.txn(MetaTxnResult(succeeded: true, revision: 9, results: [.put(previous: nil)]))))
        // Op responses must match the ops of the branch that ran.
        #expect(throws: EtcdGateway.MalformedReply.self) {
            try EtcdGateway.decode(txn, status: 200, body: b("{\(header),\"responses\":[]}"))
        }

        let expired = b("{\"result\":{\(header),\"ID\":\"12\"}}\n")
        #expect(try EtcdGateway.decode(.leaseKeepAlive(id: 12), status: 200, body: expired) == .response(.error(.leaseNotFound(12))))
        let alive = b("{\"result\":{\(header),\"ID\":\"12\",\"TTL\":\"30\"}}\n")
        #expect(try EtcdGateway.decode(.leaseKeepAlive(id: 12), status: 200, body: alive) == .response(.lease(id: 12, ttlSeconds: 30)))
        let unknown = b("{\(header),\"ID\":\"12\",\"TTL\":\"-1\"}")
        #expect(try EtcdGateway.decode(.leaseTimeToLive(id: 12), status: 200, body: unknown) == .response(.error(.leaseNotFound(12))))
        let almost = b("{\(header),\"ID\":\"12\",\"grantedTTL\":\"5\"}")
        #expect(try EtcdGateway.decode(.leaseTimeToLive(id: 12), status: 200, body: almost) == .response(.lease(id: 12, ttlSeconds: 0)))

        let error = b(#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#)
        guard case .serverError(let e) = try EtcdGateway.decode(.leaseRevoke(id: 12), status: 404, body: error) else {
            Issue.record("expected a server error")
            return
        }
        #expect(e == .init(status: 404, code: 5, message: "etcdserver: requested lease not found"))
        #expect(EtcdGateway.metaError(e, for: .leaseRevoke(id: 12), endpoint: "e") == .leaseNotFound(12))
        let noLeader = EtcdGateway.ServerError(status: 503, code: 14, message: "etcdserver: no leader")
        #expect(EtcdGateway.metaError(noLeader, for: .leaseRevoke(id: 12), endpoint: "http://h:1") == .unavailable("etcd at http://h:1 answered HTTP 503: etcdserver: no leader"))
        #expect(EtcdGateway.metaError(.init(status: 500, code: 2, message: "boom"), for: .leaseRevoke(id: 12), endpoint: "e") == nil)
        #expect(throws: EtcdGateway.MalformedReply.self) { try EtcdGateway.decode(.leaseRevoke(id: 1), status: 404, body: b("404 page not found")) }
    }

    @Test("watch streams: create body, created, events with previous values, deletes, compaction cancel")
    func watchMessages() throws {
        let body = EtcdGateway.watchCreate(key: "/w/", prefix: true, fromRevision: 7)
        #expect(sameJSON(body, #"{"create_request":{"key":"L3cv","range_end":"L3cw","start_revision":"7","prev_kv":true}}"#))
        let header = #""header":{"cluster_id":"1","member_id":"2","revision":"4","raft_term":"2"}"#
        #expect(try EtcdGateway.decodeWatch(Array(#"{"result":{\#(header),"created":true}}"#.utf8)) == .created(revision: 4))
        let events = #"{"result":{\#(header),"events":[{"kv":{"key":"L3cvYQ==","create_revision":"2","mod_revision":"3","version":"2","value":"eQ=="},"prev_kv":{"key":"L3cvYQ==","create_revision":"2","mod_revision":"2","version":"1","value":"eA=="}},{"type":"DELETE","kv":{"key":"L3cvYQ==","mod_revision":"4"}}]}}"#
        let a2 = MetaKeyValue(key: "/w/a", value: Array("y".utf8), createRevision: 2, modRevision: 3, version: 2, lease: 0)
        let a1 = MetaKeyValue(key: "/w/a", value: Array("x".utf8), createRevision: 2, modRevision: 2, version: 1, lease: 0)
        let gone = MetaKeyValue(key: "/w/a", value: [], createRevision: 0, modRevision: 4, version: 0, lease: 0)
        #expect(try EtcdGateway.decodeWatch(Array(events.utf8)) == .events([
            MetaWatchEvent(kind: .put, kv: a2, previous: a1), MetaWatchEvent(kind: .delete, kv: gone, previous: nil),
        ], revision: 4))
        let cancel = #"{"result":{"header":{"cluster_id":"1"},"canceled":true,"compact_revision":"3"}}"#
        #expect(try EtcdGateway.decodeWatch(Array(cancel.utf8)) == .canceled(compactRevision: 3, reason: ""))
        #expect(throws: EtcdGateway.MalformedReply.self) { try EtcdGateway.decodeWatch(Array(#"{"result":{\#(header),"events":[{"type":"BOGUS","kv":{"key":"L3cvYQ=="}}]}}"#.utf8)) }
        #expect(throws: EtcdGateway.MalformedReply.self) { try EtcdGateway.decodeWatch(Array(#"{"error":{"grpc_code":14,"message":"no leader"}}"#.utf8)) }
        #expect(throws: EtcdGateway.MalformedReply.self) { try EtcdGateway.decodeWatch(Array("not json".utf8)) }
    }

    @Test("the duplicate key named in an error is found the way etcd's checkIntervals finds it")
    func duplicateKey() {
        #expect(EtcdGateway.duplicateKey(MetaTxn(success: [.put(key: "a", value: [], lease: 0), .put(key: "a", value: [], lease: 0)])) == "a")
        #expect(EtcdGateway.duplicateKey(MetaTxn(success: [.delete(key: "p/", prefix: true), .put(key: "p/x", value: [], lease: 0)])) == "p/x")
        #expect(EtcdGateway.duplicateKey(MetaTxn(failure: [.put(key: "b", value: [], lease: 0), .delete(key: "b", prefix: false)])) == "b")
        #expect(EtcdGateway.duplicateKey(MetaTxn(success: [.delete(key: "p/", prefix: true), .put(key: "q", value: [], lease: 0)])) == nil)
        #expect(EtcdGateway.duplicateKey(MetaTxn(success: [.put(key: "a", value: [], lease: 0)], failure: [.put(key: "a", value: [], lease: 0)])) == nil)
    }
}
