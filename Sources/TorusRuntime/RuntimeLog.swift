#if canImport(Glibc)
import Glibc
#endif

/// Log lines of the runtime: one line each, flushed at once (they go to the terminal or the
/// log file of `torus up`).
@Sendable func runtimeLog(_ line: String) {
    print("torus: \(line)")
    fflush(nil)
}
