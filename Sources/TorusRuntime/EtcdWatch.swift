import CCurl
import Glibc
import NIOPosix
import Synchronization
import TorusCore

/// A watch on etcd through the gateway's streaming `POST /v3/watch`, on a thread of its own
/// with its own libcurl handle.
///
/// The stream is one JSON object per line (`EtcdGateway.decodeWatch`). When it breaks (etcd
/// restarted, connection reset, endpoint down) the watch reconnects, trying the endpoints in
/// turn with a backoff from 100 ms to 2 s, and resumes from the revision after the last event it
/// delivered, so no change is lost or repeated. When that revision is compacted away, etcd
/// cancels the watch; it restarts from the present and reports `.resync` first. A dead peer
/// that sends nothing is found by TCP keep-alive probes (5 s idle, 5 s apart).
///
/// `cancel()` stops the stream within about a second (libcurl's progress callback) and returns
/// at once; the handler is not called after `cancel()` returned.
public final class EtcdWatch: MetadataWatch, @unchecked Sendable {
    let endpoints: [String]
    let tls: EtcdTLS?
    /// Its current token goes with each connection (the service's clients refresh it).
    let auth: EtcdAuth?
    let key: String
    let prefix: Bool
    let handler: MetadataWatchHandler
    /// Guards handler calls against `cancel`: true once cancelled.
    let gate = Mutex(false)
    let cancelled = Atomic(false)
    private let thread = NIOThreadPool(numberOfThreads: 1)
    /// Connection attempts and stream breaks so far (for tests and logs).
    let reconnects = Atomic(0)

    static let backoffMin: Duration = .milliseconds(100)
    static let backoffMax: Duration = .seconds(2)

    /// Starts watching at once (changes from `fromRevision`, 0 = from now).
    public init(endpoints: [String], tls: EtcdTLS?, auth: EtcdAuth? = nil, key: String, prefix: Bool, fromRevision: Int64,
                handler: @escaping MetadataWatchHandler) {
        self.endpoints = endpoints
        self.tls = tls
        self.auth = auth
        self.key = key
        self.prefix = prefix
        self.handler = handler
        thread.start()
        thread.submit { [self] _ in run(from: fromRevision) }
    }

    public func cancel() {
        guard !cancelled.exchange(true, ordering: .sequentiallyConsistent) else { return }
        gate.withLock { $0 = true }
        thread.shutdownGracefully { _ in }
    }

    /// Calls the handler unless cancelled.
    func deliver(_ update: MetadataWatchUpdate) {
        gate.withLock { stopped in
            if !stopped { handler(update) }
        }
    }

    private func run(from start: Int64) {
        _ = curlReady
        let stream = WatchStream(watch: self, next: start)
        var backoff = Self.backoffMin
        var endpoint = 0
        var failing = false
        while !cancelled.load(ordering: .sequentiallyConsistent) {
            let url = endpoints[endpoint % endpoints.count]
            let outcome = stream.perform(url: url + "/v3/watch")
            if cancelled.load(ordering: .sequentiallyConsistent) { break }
            reconnects.add(1, ordering: .relaxed)
            if stream.connected {
                backoff = Self.backoffMin  // it worked for a while: retry soon
                failing = false
            }
            if !failing {  // log once per outage
                RuntimeLoggers.metadata.warning("watch of \(key): stream ended (\(outcome)); reconnecting",
                                                metadata: ["address": "\(url)"])
                failing = true
            }
            endpoint += 1
            Self.pause(backoff)
            backoff = min(backoff * 2, Self.backoffMax)
        }
    }

    private static func pause(_ d: Duration) {
        let ms = EtcdClient.milliseconds(d)
        var request = timespec(tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}

private let curlReady: Bool = torus_curl_global_init() == CURLE_OK

/// The state of one watch across reconnects: the revision to resume from and the partial line.
final class WatchStream {
    unowned let watch: EtcdWatch
    /// The first revision not delivered yet; 0 before the first `created` of a watch "from now".
    var next: Int64
    /// Set when etcd cancelled a compacted watch: the next `created` reports `.resync`.
    var pendingResync: String?
    var line: [UInt8] = []
    var connected = false
    var failure: String?

    init(watch: EtcdWatch, next: Int64) {
        self.watch = watch
        self.next = next
    }

    /// One connection: streams until it breaks, etcd cancels, or the watch is cancelled.
    func perform(url: String) -> String {
        guard let handle = curl_easy_init() else { return "curl_easy_init failed" }
        defer { curl_easy_cleanup(handle) }
        let headers = etcdRequestHeaders(token: watch.auth?.token)
        defer { curl_slist_free_all(headers) }
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        defer { errorBuffer.deallocate() }
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        line.removeAll()
        connected = false
        failure = nil
        let body = EtcdGateway.watchCreate(key: watch.key, prefix: watch.prefix, fromRevision: next)
        let me = Unmanaged.passUnretained(self).toOpaque()
        var codes: [CURLcode] = [
            torus_curl_setopt_string(handle, CURLOPT_URL, url),
            torus_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1),
            torus_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, EtcdClient.milliseconds(EtcdClient.connectTimeoutMax)),
            torus_curl_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https"),
            torus_curl_setopt_long(handle, CURLOPT_TCP_KEEPALIVE, 1),
            torus_curl_setopt_long(handle, CURLOPT_TCP_KEEPIDLE, 5),
            torus_curl_setopt_long(handle, CURLOPT_TCP_KEEPINTVL, 5),
            torus_curl_setopt_pointer(handle, CURLOPT_HTTPHEADER, headers.map { UnsafeMutableRawPointer($0) }),
            torus_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, UnsafeMutableRawPointer(errorBuffer)),
            torus_curl_setopt_write_function(handle, watchWriteCallback),
            torus_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, me),
            torus_curl_set_xferinfo(handle, watchProgressCallback, me),
            body.withUnsafeBytes { torus_curl_set_post_body(handle, $0.baseAddress, curl_off_t($0.count)) },
        ]
        if let tls = watch.tls {
            if let ca = tls.caFile { codes.append(torus_curl_setopt_string(handle, CURLOPT_CAINFO, ca)) }
            if let cert = tls.certFile { codes.append(torus_curl_setopt_string(handle, CURLOPT_SSLCERT, cert)) }
            if let key = tls.keyFile { codes.append(torus_curl_setopt_string(handle, CURLOPT_SSLKEY, key)) }
        }
        if let bad = codes.first(where: { $0 != CURLE_OK }) { return "libcurl: " + String(cString: curl_easy_strerror(bad)) }
        let code = withExtendedLifetime(self) { curl_easy_perform(handle) }
        if let failure { return failure }
        if code == CURLE_OK {
            var status = 0
            _ = torus_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
            return status == 200 ? "closed by etcd" : "HTTP \(status)"
        }
        return errorBuffer[0] != 0 ? String(cString: errorBuffer) : String(cString: curl_easy_strerror(code))
    }

    /// Bytes from libcurl; false stops the transfer.
    func received(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var start = 0
        for (i, b) in bytes.enumerated() where b == UInt8(ascii: "\n") {
            line.append(contentsOf: bytes[start..<i])
            start = i + 1
            let ok = handleLine()
            line.removeAll(keepingCapacity: true)
            if !ok { return false }
        }
        line.append(contentsOf: bytes[start...])
        if line.count > EtcdClient.replyBytesMax {
            failure = "watch message larger than \(EtcdClient.replyBytesMax) bytes"
            return false
        }
        return true
    }

    private func handleLine() -> Bool {
        guard line.contains(where: { $0 > 0x20 }) else { return true }
        let message: EtcdGateway.WatchMessage
        do {
            message = try EtcdGateway.decodeWatch(line)
        } catch {
            failure = error.reason
            return false
        }
        switch message {
        case .created(let revision):
            connected = true
            if next == 0 {
                next = revision + 1
                if let reason = pendingResync {
                    pendingResync = nil
                    watch.deliver(.resync(revision: revision, reason: reason))
                }
            }
        case .events(let events, _):
            // A reconnect resumes at `next`; anything older was delivered already.
            let fresh = events.filter { $0.kv.modRevision >= next }
            guard let last = fresh.last else { return true }
            next = last.kv.modRevision + 1
            watch.deliver(.events(fresh))
        case .canceled(let compact, let reason):
            pendingResync = "etcd compacted the history this watch resumed from (revision \(compact))"
                + (reason.isEmpty ? "" : ": \(reason)")
            next = 0
            failure = "watch cancelled by etcd"
            return false
        case .other:
            break
        }
        return true
    }
}

private let watchWriteCallback: torus_curl_write_fn = { data, size, count, user in
    let stream = Unmanaged<WatchStream>.fromOpaque(user!).takeUnretainedValue()
    let n = size * count
    guard n > 0, let data else { return n }
    return stream.received(UnsafeRawBufferPointer(start: data, count: n)) ? n : 0
}

private let watchProgressCallback: torus_curl_xferinfo_fn = { user, _, _, _, _ in
    let stream = Unmanaged<WatchStream>.fromOpaque(user!).takeUnretainedValue()
    return stream.watch.cancelled.load(ordering: .relaxed) ? 1 : 0
}

extension EtcdMetadataService {
    public func watch(key: String, prefix: Bool, fromRevision: Int64,
                      handler: @escaping MetadataWatchHandler) throws -> any MetadataWatch {
        EtcdWatch(endpoints: client.endpoints, tls: client.tls, auth: client.auth, key: key, prefix: prefix,
                  fromRevision: fromRevision, handler: handler)
    }
}
