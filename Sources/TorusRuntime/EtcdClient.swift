import CCurl
import Glibc
import Synchronization
import TorusCore

/// TLS settings for `https://` etcd endpoints (PEM files; nil = libcurl's default).
public struct EtcdTLS: Hashable, Sendable {
    /// CA bundle that signed the etcd server certificates (CURLOPT_CAINFO); nil = system CAs.
    public var caFile: String?
    /// Client certificate and its private key, for etcd's `--client-cert-auth` (both or neither).
    public var certFile: String?
    public var keyFile: String?

    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }

    /// The names of the environment variables every `torus` command reads for `https://`
    /// etcd endpoints: the CA bundle, and the client certificate and key (for etcd's
    /// `--client-cert-auth`).
    public static let environmentNames = (ca: "TORUS_ETCD_CA", cert: "TORUS_ETCD_CERT", key: "TORUS_ETCD_KEY")

    /// TLS settings from `TORUS_ETCD_CA`, `TORUS_ETCD_CERT` and `TORUS_ETCD_KEY` (each optional).
    public static func fromEnvironment() -> EtcdTLS {
        func value(_ name: String) -> String? {
            guard let v = getenv(name), v.pointee != 0 else { return nil }
            return String(cString: v)
        }
        return EtcdTLS(caFile: value(environmentNames.ca), certFile: value(environmentNames.cert),
                       keyFile: value(environmentNames.key))
    }
}

/// Errors `EtcdClient` throws. An unreachable or silent etcd is not one of them: `apply`
/// answers `.error(.unavailable(...))` for that (`version` throws `.unavailable`).
public enum EtcdClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// An endpoint is not `http://host:port`, `https://host:port` or `etcd://host:port`.
    case invalidEndpoint(String, reason: String)
    /// A TLS file is missing or unreadable, or only one of certificate and key was given.
    case invalidTLS(String)
    /// The user/password settings are incomplete or unreadable (`EtcdAuth.fromEnvironment`).
    case invalidAuth(String)
    /// libcurl could not create or configure a handle.
    case curl(String)
    /// No endpoint could be reached, or one did not answer in time (`version` only).
    case unavailable(String)
    /// The reply was not what etcd's gateway sends for this request (not etcd, or a bug here).
    case malformedReply(endpoint: String, path: String, reason: String)
    /// etcd answered with an error that has no `MetaError` equivalent.
    case server(endpoint: String, path: String, status: Int, code: Int, message: String)

    public var description: String {
        switch self {
        case .invalidEndpoint(let e, let reason): return "invalid etcd endpoint \"\(e)\": \(reason)"
        case .invalidTLS(let reason): return "invalid etcd TLS settings: \(reason)"
        case .invalidAuth(let reason): return "invalid etcd user settings: \(reason)"
        case .curl(let reason): return "libcurl: \(reason)"
        case .unavailable(let reason): return "etcd unavailable: \(reason)"
        case .malformedReply(let endpoint, let path, let reason):
            return "unexpected reply from \(endpoint)\(path): \(reason) (is this etcd 3.4+?)"
        case .server(let endpoint, let path, let status, let code, let message):
            let hint = message.contains("user name is empty") || message.contains("authentication failed")
                ? " (etcd checks users: set \(EtcdAuth.environmentNames.user) and \(EtcdAuth.environmentNames.password) or \(EtcdAuth.environmentNames.passwordFile))"
                : ""
            return "etcd at \(endpoint) rejected \(path) (HTTP \(status), code \(code)): \(message)\(hint)"
        }
    }
}

/// A blocking client for etcd 3.4's v3 JSON gateway over libcurl: the production driver for
/// `MetaRequest`s against a real etcd cluster. Watches are `EtcdWatch`es.
///
/// Every call blocks its thread for up to about twice `timeout`: call it from a thread pool
/// (for example `NIOThreadPool`), never from an event loop. An attempt that fails before the
/// request was sent is retried on the next endpoint; one that fails after it may have applied,
/// so `apply` answers `.error(.unavailable(...))` and the caller must re-read before deciding.
/// Semantics are `MetadataStateMachine`'s, with the driver-side choices (retries, lease TTLs
/// and ids, error names) in docs/metadata.md, "The etcd client".
public final class EtcdClient: Sendable {
    /// The endpoints as base URLs (`etcd://` rewritten to `http://`, or `https://` with TLS).
    public let endpoints: [String]
    /// Bound on one attempt (connect, send, reply), and on starting retries.
    public let timeout: Duration
    /// TLS settings (also used by watches, which open their own connections).
    public let tls: EtcdTLS?
    /// User/password authentication (its token is shared with watches); nil: none.
    public let auth: EtcdAuth?

    /// Attempts per call when earlier attempts surely did not reach etcd.
    public static let attemptsMax = 4
    /// Pause before the 2nd, 3rd and 4th attempt.
    public static let retryBackoff: [Duration] = [.milliseconds(50), .milliseconds(100), .milliseconds(200)]
    /// Connect timeout cap, so a black-holed endpoint leaves time to try another.
    public static let connectTimeoutMax: Duration = .seconds(2)
    /// Larger replies are refused (a range over a huge prefix).
    public static let replyBytesMax = 64 << 20

    private let connection: Mutex<CurlConnection>

    /// Connects lazily: no request is sent until the first call.
    /// - Parameters:
    ///   - endpoints: `http://host:port`, `https://host:port` or `etcd://host:port` (http, or
    ///     https when `tls` is given); at least one.
    ///   - timeout: bound on each attempt; must be positive.
    public init(endpoints: [String], timeout: Duration, tls: EtcdTLS? = nil, auth: EtcdAuth? = nil) throws {
        self.auth = auth
        guard !endpoints.isEmpty else { throw EtcdClientError.invalidEndpoint("", reason: "no endpoints given") }
        guard timeout > .zero else { throw EtcdClientError.invalidEndpoint(endpoints[0], reason: "timeout must be positive") }
        self.endpoints = try endpoints.map { try Self.normalize($0, tls: tls != nil) }
        self.timeout = timeout
        self.tls = tls
        if let tls { try Self.check(tls) }
        _ = curlGlobalInit
        let timeoutMs = Self.milliseconds(timeout)
        let connectMs = min(timeoutMs, Self.milliseconds(Self.connectTimeoutMax))
        connection = Mutex(try CurlConnection(timeoutMs: timeoutMs, connectTimeoutMs: connectMs, tls: tls))
    }

    /// Applies `request` to etcd. Transport failures answer `.error(.unavailable(reason))` with
    /// the endpoint(s) in `reason`; etcd errors become the matching `MetaError`.
    /// - Throws: `EtcdClientError.malformedReply` or `.server` for replies that are not etcd's
    ///   or errors with no `MetaError` equivalent.
    public func apply(_ request: MetaRequest) throws -> MetaResponse {
        if case .leaseGrant(let ttl, _) = request, ttl <= 0 { return .error(.invalidTTL(ttl)) }
        let call = EtcdGateway.call(for: request)
        let reply: Reply
        switch exchange(path: call.path, body: call.body) {
        case .failure(let failure): return .error(.unavailable(failure.message))
        case .success(let r): reply = r
        }
        let decoded: EtcdGateway.Decoded
        do {
            decoded = try EtcdGateway.decode(request, status: reply.status, body: reply.body)
        } catch {
            throw EtcdClientError.malformedReply(endpoint: reply.endpoint, path: call.path, reason: error.reason)
        }
        switch decoded {
        case .response(let response): return response
        case .serverError(let error):
            if let metaError = EtcdGateway.metaError(error, for: request, endpoint: reply.endpoint) { return .error(metaError) }
            throw EtcdClientError.server(endpoint: reply.endpoint, path: call.path, status: error.status,
                                         code: error.code, message: error.message)
        }
    }

    /// The etcd server version (`GET /version`), e.g. "3.4.23": a health check.
    public func version() throws -> String {
        switch exchange(path: "/version", body: nil) {
        case .failure(let failure): throw EtcdClientError.unavailable(failure.message)
        case .success(let reply):
            do {
                return try EtcdGateway.decodeVersion(status: reply.status, body: reply.body)
            } catch {
                throw EtcdClientError.malformedReply(endpoint: reply.endpoint, path: "/version", reason: error.reason)
            }
        }
    }

    // MARK: - Transport

    struct Reply {
        var endpoint: String
        var status: Int
        var body: [UInt8]
    }

    struct TransportFailure: Error {
        var message: String
    }

    /// One call, authenticated when `auth` is set: a missing token is fetched first, and a
    /// token etcd rejects (expired, or etcd restarted) is fetched again and the call retried
    /// once. A refused authentication comes back as its own reply (etcd's error, which `apply`
    /// reports), not as unavailability.
    private func exchange(path: String, body: [UInt8]?) -> Result<Reply, TransportFailure> {
        guard let auth, body != nil else { return send(path: path, body: body, token: nil) }
        if auth.token == nil, let refused = authenticate(auth) { return refused }
        let result = send(path: path, body: body, token: auth.token)
        guard case .success(let reply) = result, EtcdAuth.rejectsToken(status: reply.status, body: reply.body) else { return result }
        RuntimeLoggers.metadata.info("etcd at \(reply.endpoint) rejected the auth token (expired, or etcd restarted): authenticating again as \(auth.user)")
        if let refused = authenticate(auth) { return refused }
        return send(path: path, body: body, token: auth.token)
    }

    /// Fetches a token into `auth`; nil on success, else what to answer the call with.
    private func authenticate(_ auth: EtcdAuth) -> Result<Reply, TransportFailure>? {
        switch send(path: "/v3/auth/authenticate", body: auth.request, token: nil) {
        case .failure(let failure): return .failure(failure)
        case .success(let reply):
            guard reply.status == 200, let token = EtcdAuth.token(in: reply.body) else { return .success(reply) }
            auth.token = token
            return nil
        }
    }

    /// One call with bounded retries of attempts that surely did not reach etcd.
    private func send(path: String, body: [UInt8]?, token: String?) -> Result<Reply, TransportFailure> {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var tried: [String] = []
        var lastError = ""
        for attempt in 0..<Self.attemptsMax {
            if attempt > 0 {
                let pause = Self.retryBackoff[min(attempt - 1, Self.retryBackoff.count - 1)]
                if clock.now + pause >= deadline { break }
                Self.sleep(pause)
            }
            let outcome = connection.withLock { c in c.perform(endpoints: endpoints, path: path, body: body, token: token) }
            switch outcome {
            case .reply(let reply):
                return .success(reply)
            case .notSent(let endpoint, let error):
                if !tried.contains(endpoint) { tried.append(endpoint) }
                lastError = error
            case .maybeApplied(let endpoint, let error):
                return .failure(TransportFailure(message:
                    "etcd at \(endpoint) did not answer \(path) (the request may have been applied): \(error)"))
            }
        }
        return .failure(TransportFailure(message:
            "cannot reach etcd at \(tried.joined(separator: ", ")) for \(path): \(lastError)"))
    }

    private static func sleep(_ d: Duration) {
        let ns = milliseconds(d) * 1_000_000
        var request = timespec(tv_sec: ns / 1_000_000_000, tv_nsec: ns % 1_000_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }

    static func milliseconds(_ d: Duration) -> Int {
        let (seconds, attoseconds) = d.components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }

    static func normalize(_ endpoint: String, tls: Bool) throws -> String {
        var url = endpoint
        while url.hasSuffix("/") { url.removeLast() }
        let schemes = ["http://", "https://", "etcd://"]
        guard let scheme = schemes.first(where: { url.hasPrefix($0) }) else {
            throw EtcdClientError.invalidEndpoint(endpoint, reason: "expected http://host:port, https://host:port or etcd://host:port")
        }
        let authority = url.dropFirst(scheme.count)
        guard !authority.isEmpty, !authority.contains("/"), !authority.contains(where: \.isWhitespace) else {
            throw EtcdClientError.invalidEndpoint(endpoint, reason: "expected host:port with no path")
        }
        if scheme == "etcd://" { return (tls ? "https://" : "http://") + authority }
        return url
    }

    private static func check(_ tls: EtcdTLS) throws {
        if (tls.certFile == nil) != (tls.keyFile == nil) {
            throw EtcdClientError.invalidTLS("a client certificate needs its key file and vice versa")
        }
        for path in [tls.caFile, tls.certFile, tls.keyFile].compactMap({ $0 }) where access(path, R_OK) != 0 {
            throw EtcdClientError.invalidTLS("cannot read \(path): \(String(cString: strerror(errno)))")
        }
    }
}

/// The headers of every gateway request (JSON, no 100-continue round trip), with the auth token
/// when there is one; nil when libcurl could not allocate them. Free with `curl_slist_free_all`.
func etcdRequestHeaders(token: String?) -> UnsafeMutablePointer<curl_slist>? {
    var list = curl_slist_append(nil, "Content-Type: application/json")
    if let l = list { list = curl_slist_append(l, "Expect:") }
    if let l = list, let token { list = curl_slist_append(l, "Authorization: \(token)") }
    return list
}

/// libcurl's process-wide initialization, run once (Swift globals initialize exactly once,
/// thread-safely) before the first handle is created.
private let curlGlobalInit: Bool = torus_curl_global_init() == CURLE_OK

/// Accumulates one reply body; libcurl calls `curlWriteCallback` with it as user data.
private final class ReplyBuffer {
    var bytes: [UInt8] = []
    var overflowed = false
}

private let curlWriteCallback: torus_curl_write_fn = { data, size, count, user in
    let buffer = Unmanaged<ReplyBuffer>.fromOpaque(user!).takeUnretainedValue()
    let n = size * count
    guard buffer.bytes.count + n <= EtcdClient.replyBytesMax else {
        buffer.overflowed = true
        return 0  // makes curl_easy_perform fail with CURLE_WRITE_ERROR
    }
    if n > 0, let data { buffer.bytes.append(contentsOf: UnsafeRawBufferPointer(start: data, count: n)) }
    return n
}

/// One libcurl easy handle with its header list and error buffer; owned by `EtcdClient`'s lock.
private struct CurlConnection: ~Copyable {
    enum Outcome {
        case reply(EtcdClient.Reply)
        /// Nothing was sent: safe to retry.
        case notSent(endpoint: String, error: String)
        /// The request may have reached etcd.
        case maybeApplied(endpoint: String, error: String)
    }

    let handle: UnsafeMutableRawPointer
    let headers: UnsafeMutablePointer<curl_slist>
    let errorBuffer: UnsafeMutablePointer<CChar>
    /// Index of the endpoint to use next; moves on after any transport failure.
    var current = 0

    init(timeoutMs: Int, connectTimeoutMs: Int, tls: EtcdTLS?) throws {
        guard let handle = curl_easy_init() else { throw EtcdClientError.curl("curl_easy_init failed") }
        guard let headers = etcdRequestHeaders(token: nil) else {
            curl_easy_cleanup(handle)
            throw EtcdClientError.curl("curl_slist_append failed")
        }
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        if let failed = Self.configure(handle, headers: headers, errorBuffer: errorBuffer, timeoutMs: timeoutMs,
                                       connectTimeoutMs: connectTimeoutMs, tls: tls) {
            curl_easy_cleanup(handle)
            curl_slist_free_all(headers)
            errorBuffer.deallocate()
            throw EtcdClientError.curl(failed)
        }
        self.handle = handle
        self.headers = headers
        self.errorBuffer = errorBuffer
    }

    /// Sets the options shared by every request; the first failure, nil when all succeeded.
    private static func configure(_ handle: UnsafeMutableRawPointer, headers: UnsafeMutablePointer<curl_slist>,
                                  errorBuffer: UnsafeMutablePointer<CChar>, timeoutMs: Int, connectTimeoutMs: Int,
                                  tls: EtcdTLS?) -> String? {
        var failed: String?
        func set(_ name: String, _ code: CURLcode) {
            if code != CURLE_OK, failed == nil { failed = "\(name): \(String(cString: curl_easy_strerror(code)))" }
        }
        set("NOSIGNAL", torus_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        set("TIMEOUT_MS", torus_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, timeoutMs))
        set("CONNECTTIMEOUT_MS", torus_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, connectTimeoutMs))
        set("PROTOCOLS_STR", torus_curl_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https"))
        set("TCP_KEEPALIVE", torus_curl_setopt_long(handle, CURLOPT_TCP_KEEPALIVE, 1))
        set("HTTPHEADER", torus_curl_setopt_pointer(handle, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(headers)))
        set("ERRORBUFFER", torus_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, UnsafeMutableRawPointer(errorBuffer)))
        set("WRITEFUNCTION", torus_curl_setopt_write_function(handle, curlWriteCallback))
        if let tls {
            if let ca = tls.caFile { set("CAINFO", torus_curl_setopt_string(handle, CURLOPT_CAINFO, ca)) }
            if let cert = tls.certFile { set("SSLCERT", torus_curl_setopt_string(handle, CURLOPT_SSLCERT, cert)) }
            if let key = tls.keyFile { set("SSLKEY", torus_curl_setopt_string(handle, CURLOPT_SSLKEY, key)) }
        }
        return failed
    }

    deinit {
        curl_easy_cleanup(handle)
        curl_slist_free_all(headers)
        errorBuffer.deallocate()
    }

    /// One attempt on the current endpoint: a POST of `body`, or a GET when it is nil.
    mutating func perform(endpoints: [String], path: String, body: [UInt8]?, token: String?) -> Outcome {
        let endpoint = endpoints[current % endpoints.count]
        // With a token, the shared headers plus `Authorization` for this request only.
        let withToken = token.flatMap { etcdRequestHeaders(token: $0) }
        defer {
            if withToken != nil {
                _ = torus_curl_setopt_pointer(handle, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(headers))
                curl_slist_free_all(withToken)
            }
        }
        if let withToken { _ = torus_curl_setopt_pointer(handle, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(withToken)) }
        let failure = setUp(url: endpoint + path, body: body)
        if let failure { return .notSent(endpoint: endpoint, error: failure) }
        let buffer = ReplyBuffer()
        errorBuffer[0] = 0
        let code: CURLcode = withExtendedLifetime(buffer) {
            _ = torus_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, Unmanaged.passUnretained(buffer).toOpaque())
            let code = curl_easy_perform(handle)
            _ = torus_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, nil)
            return code
        }
        if code == CURLE_OK {
            var status = 0
            _ = torus_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
            return .reply(EtcdClient.Reply(endpoint: endpoint, status: status, body: buffer.bytes))
        }
        var detail = errorBuffer[0] != 0 ? String(cString: errorBuffer) : String(cString: curl_easy_strerror(code))
        if buffer.overflowed { detail = "reply larger than \(EtcdClient.replyBytesMax) bytes" }
        var sentBytes = 0
        _ = torus_curl_getinfo_long(handle, CURLINFO_REQUEST_SIZE, &sentBytes)
        let surelyNotSent = code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST || sentBytes == 0
        // Either way the next attempt or call goes to the next endpoint.
        current = (current + 1) % endpoints.count
        return surelyNotSent ? .notSent(endpoint: endpoint, error: detail) : .maybeApplied(endpoint: endpoint, error: detail)
    }

    private func setUp(url: String, body: [UInt8]?) -> String? {
        var code = torus_curl_setopt_string(handle, CURLOPT_URL, url)
        if code == CURLE_OK {
            if let body {
                code = body.withUnsafeBytes { torus_curl_set_post_body(handle, $0.baseAddress, curl_off_t($0.count)) }
            } else {
                code = torus_curl_setopt_long(handle, CURLOPT_HTTPGET, 1)
            }
        }
        return code == CURLE_OK ? nil : String(cString: curl_easy_strerror(code))
    }
}
