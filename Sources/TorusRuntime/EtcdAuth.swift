import Glibc
import Synchronization

/// etcd's user/password authentication (`etcdctl auth enable`): the credentials, and the
/// token the last `/v3/auth/authenticate` returned. One per `EtcdMetadataService`, shared by
/// its clients (which authenticate, and again when etcd rejects an expired token) and its
/// watches (which send the current token).
public final class EtcdAuth: Sendable {
    public let user: String
    let password: String
    private let current = Mutex<String?>(nil)

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }

    /// `TORUS_ETCD_USER` and `TORUS_ETCD_PASSWORD` (or `TORUS_ETCD_PASSWORD_FILE`, whose first
    /// line is the password): environment variables like the TLS files', and not options, so
    /// the password never shows in `ps`.
    public static let environmentNames = (user: "TORUS_ETCD_USER", password: "TORUS_ETCD_PASSWORD",
                                          passwordFile: "TORUS_ETCD_PASSWORD_FILE")

    /// The credentials from the environment; nil without `TORUS_ETCD_USER`.
    public static func fromEnvironment() throws -> EtcdAuth? {
        func value(_ name: String) -> String? {
            guard let v = getenv(name), v.pointee != 0 else { return nil }
            return String(cString: v)
        }
        guard let user = value(environmentNames.user) else { return nil }
        if let password = value(environmentNames.password) { return EtcdAuth(user: user, password: password) }
        guard let file = value(environmentNames.passwordFile) else {
            throw EtcdClientError.invalidAuth("\(environmentNames.user) is set but neither \(environmentNames.password) nor \(environmentNames.passwordFile)")
        }
        return EtcdAuth(user: user, password: try firstLine(of: file))
    }

    var token: String? {
        get { current.withLock { $0 } }
        set { current.withLock { $0 = newValue } }
    }

    /// The body of `/v3/auth/authenticate`.
    var request: [UInt8] { EtcdCodec.encode(AuthenticateRequest(name: user, password: password)) }

    /// The token in an `/v3/auth/authenticate` reply; nil when it holds none.
    static func token(in reply: [UInt8]) -> String? {
        (try? EtcdCodec.decode(AuthenticateResponse.self, from: reply))?.token
    }

    /// Whether etcd refused a call for want of a valid token (expired, revoked, or etcd restarted).
    static func rejectsToken(status: Int, body: [UInt8]) -> Bool {
        guard status == 401 || status == 400 || status == 500 else { return false }
        let text = String(decoding: body, as: UTF8.self)
        return text.contains("invalid auth token") || text.contains("user name is empty")
    }

    struct AuthenticateRequest: Codable { var name: String; var password: String }
    struct AuthenticateResponse: Codable { var token: String? }

    private static func firstLine(of path: String) throws -> String {
        guard let f = fopen(path, "r") else {
            throw EtcdClientError.invalidAuth("cannot read \(environmentNames.passwordFile) \(path): \(String(cString: strerror(errno)))")
        }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        while true {
            let c = fgetc(f)
            if c == EOF || c == 10 || c == 13 { break }
            bytes.append(UInt8(c))
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
