#if canImport(Glibc)
import Glibc
#endif

/// What the runtime fails with: a message for the operator, by kind.
public enum RuntimeError: Error, CustomStringConvertible {
    case badInput(String)
    /// The named volume or snapshot does not exist.
    case notFound(String)
    /// The name is taken.
    case exists(String)
    /// Refused in the current state (clones share the blocks, clients are connected, shrinking).
    case refused(String)
    /// The same operation is under way: try again later.
    case busy(String)
    case metadata(String)
    case io(String)

    public var description: String {
        switch self {
        case .badInput(let s), .notFound(let s), .exists(let s), .refused(let s), .busy(let s), .metadata(let s), .io(let s): s
        }
    }
}

/// Creates a directory (mode 755) unless it exists.
func makeDirectory(_ path: String) throws {
    if mkdir(path, 0o755) != 0 && errno != EEXIST {
        throw RuntimeError.io("cannot create directory \(path): \(String(cString: strerror(errno)))")
    }
}
