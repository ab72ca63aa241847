import CTorusSys
import Glibc
import Synchronization
import TorusCore

/// A failed system call (or a refused open) on a file, with the path, the operation and the
/// `strerror` text.
public struct FileDiskError: Error, Hashable, Sendable, CustomStringConvertible {
    public var path: String
    /// What was being done: "open", "lock", "fstat", "allocate", "read", "write", "sync", ...
    public var operation: String
    /// The `errno` value (0 when the refusal is not an OS error, e.g. a size mismatch).
    public var errno: Int32
    /// `strerror(errno)`, or the reason for a refusal.
    public var message: String

    public init(path: String, operation: String, errno: Int32, message: String? = nil) {
        self.path = path
        self.operation = operation
        self.errno = errno
        self.message = message ?? POSIXIO.errorText(errno)
    }

    public var description: String {
        "\(operation) \(path): \(message)" + (errno != 0 ? " (errno \(errno))" : "")
    }
}

/// A `DiskRequest` driver over one preallocated regular file (the production disk).
///
/// Blocking and thread-safe: callers run `perform` on a thread pool, from any number of
/// threads at once (positioned `pread`/`pwrite` on one descriptor need no lock).
///
/// - Opening creates the file at exactly `capacityBytes` (`posix_fallocate`, or `ftruncate`
///   where the file system cannot preallocate) and makes its creation durable (fsync of the
///   file and its directory). An existing file of another size is refused, never resized, so
///   user data is never silently cut or grown (an empty one is allocated like a new one).
/// - `flock(LOCK_EX)` while open refuses a second `FileDisk` on the file (any process).
/// - `perform` checks ranges like `SimDisk` (sector-aligned and inside the disk, else
///   `.outOfRange`); OS errors become `.ioError(offset:)` with the request's offset.
/// - `sync` is `fdatasync`. Once a sync fails, every later sync fails too, until reopened
///   (why: docs/platform.md, "fdatasync after a failure").
/// - After `close()` every request fails with `.ioError` (never touches a reused descriptor).
public final class FileDisk: Sendable {
    public let geometry: DiskGeometry
    public let path: String
    private let fd: Int32
    /// Cleared once the kernel refuses RWF_NOWAIT for reads or writes on this file.
    private let nowaitReads = Atomic<Bool>(true)
    private let nowaitWrites = Atomic<Bool>(true)
    /// Bit 0: closing; bit 1: closed; the rest: 4 × operations currently using `fd`.
    private let state = Atomic<Int>(0)
    private let syncFailed = Atomic<Bool>(false)

    private static let closingBit = 1, closedBit = 2, user = 4

    /// Opens (creating if needed) a data file of exactly `capacityBytes`; see the type's notes.
    /// Throws `FileDiskError` naming the path and the failing operation.
    public init(path: String, capacityBytes: UInt64, sectorSize: Int = 4096) throws {
        func refuse(_ operation: String, _ code: Int32, _ message: String? = nil) -> FileDiskError {
            FileDiskError(path: path, operation: operation, errno: code, message: message)
        }
        guard sectorSize > 0, sectorSize.nonzeroBitCount == 1 else {
            throw refuse("open", EINVAL, "sector size \(sectorSize) is not a power of two")
        }
        guard capacityBytes > 0, capacityBytes % UInt64(sectorSize) == 0, capacityBytes <= UInt64(Int64.max) else {
            throw refuse("open", EINVAL, "capacity \(capacityBytes) bytes is not a positive multiple of the sector size \(sectorSize)")
        }
        var created = true
        var fd = POSIXIO.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC)
        if fd < 0 && Glibc.errno == EEXIST {
            created = false
            fd = POSIXIO.open(path, O_RDWR | O_CLOEXEC)
        }
        guard fd >= 0 else { throw refuse("open", Glibc.errno) }
        do {
            if flock(fd, LOCK_EX | LOCK_NB) != 0 {
                let code = Glibc.errno
                throw refuse("lock", code, code == EWOULDBLOCK ? "the file is already open by another FileDisk or process" : nil)
            }
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw refuse("fstat", Glibc.errno) }
            guard st.st_mode & S_IFMT == S_IFREG else { throw refuse("open", EINVAL, "not a regular file") }
            if st.st_size == 0 {
                try Self.allocate(fd, bytes: capacityBytes, path: path)
            } else if UInt64(st.st_size) != capacityBytes {
                throw refuse("open", 0, "existing file is \(st.st_size) bytes but the disk capacity is \(capacityBytes) bytes; refusing to resize existing data")
            }
        } catch {
            _ = Glibc.close(fd)
            if created { _ = unlink(path) }
            throw error
        }
        self.fd = fd
        self.path = path
        self.geometry = DiskGeometry(sectorSize: sectorSize, capacityBytes: capacityBytes)
    }

    deinit {
        if state.load(ordering: .acquiring) & (Self.closingBit | Self.closedBit) == 0 { _ = Glibc.close(fd) }
    }

    private static func allocate(_ fd: Int32, bytes: UInt64, path: String) throws {
        var rc: Int32
        repeat { rc = posix_fallocate(fd, 0, off_t(bytes)) } while rc == EINTR
        if rc == EOPNOTSUPP || rc == ENOSYS || rc == EINVAL {
            guard ftruncate(fd, off_t(bytes)) == 0 else {
                throw FileDiskError(path: path, operation: "ftruncate", errno: Glibc.errno)
            }
        } else if rc != 0 {
            _ = ftruncate(fd, 0)
            throw FileDiskError(path: path, operation: "allocate", errno: rc)
        }
        guard POSIXIO.fsync(fd) == 0 else { throw FileDiskError(path: path, operation: "fsync", errno: Glibc.errno) }
        try POSIXIO.fsyncDirectory(containing: path)
    }

    /// Performs one request, blocking until it is done.
    public func perform(_ request: DiskRequest) -> DiskCompletion {
        switch request {
        case .read(let offset, let length):
            guard isValid(offset, length) else { return .read(.failure(.outOfRange(offset: offset, length: length))) }
            guard enter() else { return .read(.failure(.ioError(offset: offset))) }
            defer { leave() }
            return .read(Self.read(fd, offset: offset, length: length).mapError { _ in .ioError(offset: offset) })
        case .write(let offset, let bytes):
            guard isValid(offset, bytes.count) else { return .written(.failure(.outOfRange(offset: offset, length: bytes.count))) }
            guard enter() else { return .written(.failure(.ioError(offset: offset))) }
            defer { leave() }
            let code = bytes.withUnsafeBytes { POSIXIO.pwriteFully(fd, $0, offset: offset) }
            return .written(code == 0 ? .success(()) : .failure(.ioError(offset: offset)))
        case .sync:
            guard !syncFailed.load(ordering: .acquiring), enter() else { return .synced(.failure(.ioError(offset: 0))) }
            defer { leave() }
            guard POSIXIO.fdatasync(fd) == 0 else {
                syncFailed.store(true, ordering: .releasing)
                return .synced(.failure(.ioError(offset: 0)))
            }
            return .synced(.success(()))
        }
    }

    /// Performs a read or write only if it can complete without blocking (the page cache
    /// holds the data, or takes the write at once): `preadv2`/`pwritev2` with RWF_NOWAIT.
    /// Returns nil when the request would block or is short, or the kernel lacks support;
    /// the caller then runs `perform` on a thread pool (repeating a write is harmless: same
    /// bytes, same place). Syncs always return nil. Errors other than "would block" also
    /// return nil, so the blocking path reports them.
    public func performWithoutBlocking(_ request: DiskRequest) -> DiskCompletion? {
        switch request {
        case .read(let offset, let length):
            guard nowaitReads.load(ordering: .relaxed), length > 0, isValid(offset, length), enter() else { return nil }
            defer { leave() }
            var done = -1
            let bytes = [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
                done = ctorus_pread_nowait(fd, buffer.baseAddress, length, offset)
                count = done == length ? length : 0
            }
            if done == length { return .read(.success(bytes)) }
            if done < 0 && (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) { nowaitReads.store(false, ordering: .relaxed) }
            return nil
        case .write(let offset, let bytes):
            guard nowaitWrites.load(ordering: .relaxed), !bytes.isEmpty, isValid(offset, bytes.count), enter() else { return nil }
            defer { leave() }
            let done = bytes.withUnsafeBytes { ctorus_pwrite_nowait(fd, $0.baseAddress, $0.count, offset) }
            if done == bytes.count { return .written(.success(())) }
            if done < 0 && (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) { nowaitWrites.store(false, ordering: .relaxed) }
            return nil
        case .sync:
            return nil
        }
    }

    /// Reads `length` bytes at `offset` (no alignment required), for boot-time reads.
    public func readSync(offset: UInt64, length: Int) throws -> [UInt8] {
        guard length >= 0, offset <= geometry.capacityBytes, UInt64(length) <= geometry.capacityBytes - offset else {
            throw FileDiskError(path: path, operation: "read", errno: EINVAL,
                                message: "range \(offset)+\(length) is outside the disk (\(geometry.capacityBytes) bytes)")
        }
        guard enter() else { throw FileDiskError(path: path, operation: "read", errno: EBADF, message: "the disk is closed") }
        defer { leave() }
        switch Self.read(fd, offset: offset, length: length) {
        case .success(let bytes): return bytes
        case .failure(let error): throw FileDiskError(path: path, operation: "read at \(offset)", errno: error.code)
        }
    }

    /// Closes the file (and releases its lock) once in-flight requests finish. Idempotent;
    /// a concurrent second call waits for the first.
    public func close() {
        let old = state.bitwiseOr(Self.closingBit, ordering: .acquiringAndReleasing).oldValue
        if old & Self.closingBit != 0 {
            while state.load(ordering: .acquiring) & Self.closedBit == 0 { usleep(100) }
            return
        }
        while state.load(ordering: .acquiring) / Self.user != 0 { usleep(100) }
        _ = Glibc.close(fd)
        state.bitwiseOr(Self.closedBit, ordering: .releasing)
    }

    // MARK: - Internals

    private func isValid(_ offset: UInt64, _ length: Int) -> Bool {
        let sector = UInt64(geometry.sectorSize)
        return length >= 0 && offset % sector == 0 && UInt64(length) % sector == 0
            && offset <= geometry.capacityBytes && UInt64(length) <= geometry.capacityBytes - offset
    }

    private func enter() -> Bool {
        let old = state.wrappingAdd(Self.user, ordering: .acquiring).oldValue
        if old & Self.closingBit != 0 {
            state.wrappingSubtract(Self.user, ordering: .releasing)
            return false
        }
        return true
    }

    private func leave() { state.wrappingSubtract(Self.user, ordering: .releasing) }

    private struct OSError: Error { var code: Int32 }

    private static func read(_ fd: Int32, offset: UInt64, length: Int) -> Result<[UInt8], OSError> {
        var code: Int32 = 0
        let bytes = [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
            code = POSIXIO.preadFully(fd, UnsafeMutableRawBufferPointer(buffer), offset: offset)
            count = code == 0 ? length : 0
        }
        return code == 0 ? .success(bytes) : .failure(OSError(code: code))
    }
}

/// Small blocking POSIX helpers shared by the runtime's file code (EINTR-safe).
enum POSIXIO {
    static func errorText(_ code: Int32) -> String {
        guard let text = strerror(code) else { return "error \(code)" }
        return String(cString: text)
    }

    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o644) -> Int32 {
        var fd: Int32
        repeat { fd = Glibc.open(path, flags, mode) } while fd < 0 && errno == EINTR
        return fd
    }

    static func fsync(_ fd: Int32) -> Int32 {
        var rc: Int32
        repeat { rc = Glibc.fsync(fd) } while rc != 0 && errno == EINTR
        return rc
    }

    static func fdatasync(_ fd: Int32) -> Int32 {
        var rc: Int32
        repeat { rc = Glibc.fdatasync(fd) } while rc != 0 && errno == EINTR
        return rc
    }

    /// Reads exactly `buffer.count` bytes at `offset`; returns 0 or an errno (EIO at end of file).
    static func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: UInt64) -> Int32 {
        guard let base = buffer.baseAddress else { return 0 }
        var done = 0
        while done < buffer.count {
            let n = pread(fd, base + done, buffer.count - done, off_t(offset) + off_t(done))
            if n > 0 {
                done += n
            } else if n == 0 {
                return EIO
            } else if errno != EINTR {
                return errno
            }
        }
        return 0
    }

    /// Writes all of `buffer` at `offset`; returns 0 or an errno.
    static func pwriteFully(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, offset: UInt64) -> Int32 {
        guard let base = buffer.baseAddress else { return 0 }
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, base + done, buffer.count - done, off_t(offset) + off_t(done))
            if n > 0 {
                done += n
            } else if n == 0 {
                return EIO
            } else if errno != EINTR {
                return errno
            }
        }
        return 0
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// Makes a file's creation, rename or removal in its directory durable.
    static func fsyncDirectory(containing path: String) throws {
        let dir = directory(of: path)
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw FileDiskError(path: dir, operation: "open directory", errno: errno) }
        defer { _ = Glibc.close(fd) }
        guard fsync(fd) == 0 else { throw FileDiskError(path: dir, operation: "fsync directory", errno: errno) }
    }

    /// `mkdir -p`, making each created directory durable in its parent.
    static func makeDirectories(_ path: String) throws {
        var st = stat()
        if stat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFDIR else {
                throw FileDiskError(path: path, operation: "mkdir", errno: ENOTDIR)
            }
            return
        }
        let parent = directory(of: path)
        if parent != path && parent != "." && parent != "/" { try makeDirectories(parent) }
        if mkdir(path, 0o755) != 0 && errno != EEXIST {
            throw FileDiskError(path: path, operation: "mkdir", errno: errno)
        }
        try fsyncDirectory(containing: path)
    }
}
