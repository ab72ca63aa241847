import Glibc
import TorusCore

// The on-disk format of `EmbeddedMetadataStore` (all integers little-endian):
//
//   file    = header record*
//   header  = "TMJL" version:u8 (=1) 0:u8 0:u8 0:u8                       (8 bytes)
//   record  = length:u32 crc:u32 payload[length]     crc = CRC32C(length bytes ++ payload)
//   payload = kind:u8 now:u64 body                    now = journal-clock time used to apply it
//     kind 1  request        body = MetaRequest (below)
//     kind 2  expireLeases   body = empty
//     kind 3  renewLeases    body = empty   (keepalive, at `now`, every lease alive at `now`)
//     kind 4  snapshot       body = revision:i64 nextAutoLeaseID:i64 digest:u64
//                                   leaseCount:u32 (id:i64 ttl:i64 expiry:u64)*
//                                   kvCount:u32 (key:str value:bytes create:i64 mod:i64 version:i64 lease:i64)*
//
//   MetaRequest = 1 txn: compares:u32 compare* success:u32 op* failure:u32 op*
//               | 2 leaseGrant ttl:i64 id:i64 | 3 keepAlive id:i64 | 4 revoke id:i64 | 5 timeToLive id:i64
//   compare     = key:str result:u8 (0 = 1 ≠ 2 < 3 >) target:u8 operand
//                 (1 value:bytes | 2 version | 3 createRevision | 4 modRevision | 5 lease, each :i64)
//   op          = 1 range key:str prefix:u8 | 2 put key:str value:bytes lease:i64 | 3 delete key:str prefix:u8
//   str, bytes  = length:u32 raw[length]   (str is UTF-8)

/// A full copy of the replicated metadata state (see `MetadataSnapshotRestore`).
struct MetadataSnapshot: Hashable, Sendable {
    struct Lease: Hashable, Sendable {
        var id: Int64
        var ttlSeconds: Int64
        var expiry: Instant
    }

    var revision: Int64
    /// The state machine's next automatically assigned lease id.
    var nextAutoLeaseID: Int64
    /// `MetadataStateMachine.digest()` of the state, checked after restoring.
    var digest: UInt64
    var leases: [Lease]
    /// Every key/value, sorted by key bytes.
    var kvs: [MetaKeyValue]
}

/// One journal record.
enum MetadataJournalRecord: Hashable, Sendable {
    case request(MetaRequest, now: Instant)
    case expireLeases(now: Instant)
    case renewLeases(now: Instant)
    case snapshot(MetadataSnapshot, now: Instant)

    var now: Instant {
        switch self {
        case .request(_, let now), .expireLeases(let now), .renewLeases(let now), .snapshot(_, let now): return now
        }
    }
}

/// Encoding and framing of journal records.
enum MetadataJournalCodec {
    static let header: [UInt8] = Array("TMJL".utf8) + [1, 0, 0, 0]
    static let headerSize = 8
    static let version: UInt8 = 1
    static let frameHeaderSize = 8
    /// Records above this are treated as corrupt lengths.
    static let maxRecordBytes = 1 << 30

    struct DecodeError: Error { var reason: String }

    static func frame(_ record: MetadataJournalRecord) -> [UInt8] {
        var w = ByteWriter(capacity: 128)
        w.u32(0)
        w.u32(0)
        switch record {
        case .request(let request, let now):
            w.u8(1); w.u64(now.nanoseconds); encode(request, &w)
        case .expireLeases(let now):
            w.u8(2); w.u64(now.nanoseconds)
        case .renewLeases(let now):
            w.u8(3); w.u64(now.nanoseconds)
        case .snapshot(let s, let now):
            w.u8(4); w.u64(now.nanoseconds)
            i64(s.revision, &w); i64(s.nextAutoLeaseID, &w); w.u64(s.digest)
            w.u32(UInt32(s.leases.count))
            for lease in s.leases { i64(lease.id, &w); i64(lease.ttlSeconds, &w); w.u64(lease.expiry.nanoseconds) }
            w.u32(UInt32(s.kvs.count))
            for kv in s.kvs {
                bytes(Array(kv.key.utf8), &w); bytes(kv.value, &w)
                for n in [kv.createRevision, kv.modRevision, kv.version, kv.lease] { i64(n, &w) }
            }
        }
        var out = w.bytes
        let length = UInt32(out.count - frameHeaderSize)
        for i in 0..<4 { out[i] = UInt8(truncatingIfNeeded: length >> (8 * UInt32(i))) }
        let crc = CRC32C.checksum(out[frameHeaderSize...], continuing: CRC32C.checksum(out[0..<4]))
        for i in 0..<4 { out[4 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
        return out
    }

    /// Splits `file` (header included) into record payloads, stopping at the first incomplete
    /// or checksum-failing record. Returns the payloads with their file offsets and the end of
    /// the valid prefix.
    static func scan(_ file: [UInt8]) -> (records: [(offset: Int, payload: ArraySlice<UInt8>)], validEnd: Int) {
        var records: [(offset: Int, payload: ArraySlice<UInt8>)] = []
        var position = headerSize
        while file.count - position >= frameHeaderSize {
            var r = ByteReader(file[position..<(position + frameHeaderSize)])
            let length = Int(r.u32()!), crc = r.u32()!
            let start = position + frameHeaderSize
            guard length >= 9, length <= maxRecordBytes, length <= file.count - start else { break }
            let payload = file[start..<(start + length)]
            guard CRC32C.checksum(payload, continuing: CRC32C.checksum(file[position..<(position + 4)])) == crc else { break }
            records.append((position, payload))
            position = start + length
        }
        return (records, position)
    }

    static func decode(_ payload: ArraySlice<UInt8>) throws(DecodeError) -> MetadataJournalRecord {
        var r = Reader(ByteReader(payload))
        let kind = try r.u8()
        let now = Instant(nanoseconds: try r.u64())
        let record: MetadataJournalRecord
        switch kind {
        case 1: record = .request(try decodeRequest(&r), now: now)
        case 2: record = .expireLeases(now: now)
        case 3: record = .renewLeases(now: now)
        case 4:
            let revision = try r.i64(), nextAuto = try r.i64(), digest = try r.u64()
            var leases: [MetadataSnapshot.Lease] = []
            for _ in 0..<(try r.count()) {
                leases.append(.init(id: try r.i64(), ttlSeconds: try r.i64(), expiry: Instant(nanoseconds: try r.u64())))
            }
            var kvs: [MetaKeyValue] = []
            for _ in 0..<(try r.count()) {
                kvs.append(MetaKeyValue(key: try r.string(), value: try r.bytes(), createRevision: try r.i64(),
                                        modRevision: try r.i64(), version: try r.i64(), lease: try r.i64()))
            }
            record = .snapshot(MetadataSnapshot(revision: revision, nextAutoLeaseID: nextAuto, digest: digest,
                                                leases: leases, kvs: kvs), now: now)
        default: throw DecodeError(reason: "unknown record kind \(kind)")
        }
        guard r.reader.remaining == 0 else { throw DecodeError(reason: "\(r.reader.remaining) trailing bytes in record") }
        return record
    }

    // MARK: - Requests

    private static func encode(_ request: MetaRequest, _ w: inout ByteWriter) {
        switch request {
        case .txn(let txn):
            w.u8(1)
            w.u32(UInt32(txn.compares.count))
            for c in txn.compares {
                bytes(Array(c.key.utf8), &w)
                switch c.result {
                case .equal: w.u8(0)
                case .notEqual: w.u8(1)
                case .less: w.u8(2)
                case .greater: w.u8(3)
                }
                switch c.target {
                case .value(let v): w.u8(1); bytes(v, &w)
                case .version(let n): w.u8(2); i64(n, &w)
                case .createRevision(let n): w.u8(3); i64(n, &w)
                case .modRevision(let n): w.u8(4); i64(n, &w)
                case .lease(let n): w.u8(5); i64(n, &w)
                }
            }
            for branch in [txn.success, txn.failure] {
                w.u32(UInt32(branch.count))
                for op in branch {
                    switch op {
                    case .range(let key, let prefix): w.u8(1); bytes(Array(key.utf8), &w); w.u8(prefix ? 1 : 0)
                    case .put(let key, let value, let lease): w.u8(2); bytes(Array(key.utf8), &w); bytes(value, &w); i64(lease, &w)
                    case .delete(let key, let prefix): w.u8(3); bytes(Array(key.utf8), &w); w.u8(prefix ? 1 : 0)
                    }
                }
            }
        case .leaseGrant(let ttl, let id): w.u8(2); i64(ttl, &w); i64(id, &w)
        case .leaseKeepAlive(let id): w.u8(3); i64(id, &w)
        case .leaseRevoke(let id): w.u8(4); i64(id, &w)
        case .leaseTimeToLive(let id): w.u8(5); i64(id, &w)
        }
    }

    private static func decodeRequest(_ r: inout Reader) throws(DecodeError) -> MetaRequest {
        switch try r.u8() {
        case 1:
            var compares: [MetaCompare] = []
            for _ in 0..<(try r.count()) {
                let key = try r.string()
                let result: MetaCompareResult
                switch try r.u8() {
                case 0: result = .equal
                case 1: result = .notEqual
                case 2: result = .less
                case 3: result = .greater
                case let other: throw DecodeError(reason: "unknown compare result \(other)")
                }
                let target: MetaCompareTarget
                switch try r.u8() {
                case 1: target = .value(try r.bytes())
                case 2: target = .version(try r.i64())
                case 3: target = .createRevision(try r.i64())
                case 4: target = .modRevision(try r.i64())
                case 5: target = .lease(try r.i64())
                case let other: throw DecodeError(reason: "unknown compare target \(other)")
                }
                compares.append(MetaCompare(key: key, result: result, target: target))
            }
            var branches: [[MetaOp]] = []
            for _ in 0..<2 {
                var ops: [MetaOp] = []
                for _ in 0..<(try r.count()) {
                    switch try r.u8() {
                    case 1: ops.append(.range(key: try r.string(), prefix: try r.bool()))
                    case 2: ops.append(.put(key: try r.string(), value: try r.bytes(), lease: try r.i64()))
                    case 3: ops.append(.delete(key: try r.string(), prefix: try r.bool()))
                    case let other: throw DecodeError(reason: "unknown txn op \(other)")
                    }
                }
                branches.append(ops)
            }
            return .txn(MetaTxn(compares: compares, success: branches[0], failure: branches[1]))
        case 2: return .leaseGrant(ttlSeconds: try r.i64(), id: try r.i64())
        case 3: return .leaseKeepAlive(id: try r.i64())
        case 4: return .leaseRevoke(id: try r.i64())
        case 5: return .leaseTimeToLive(id: try r.i64())
        case let other: throw DecodeError(reason: "unknown request kind \(other)")
        }
    }

    private static func i64(_ n: Int64, _ w: inout ByteWriter) { w.u64(UInt64(bitPattern: n)) }

    private static func bytes(_ b: [UInt8], _ w: inout ByteWriter) {
        w.u32(UInt32(b.count))
        w.raw(b)
    }

    /// A `ByteReader` whose reads throw instead of returning nil.
    private struct Reader {
        var reader: ByteReader
        init(_ reader: ByteReader) { self.reader = reader }

        mutating func u8() throws(DecodeError) -> UInt8 {
            guard let v = reader.u8() else { throw DecodeError(reason: "record ends early") }
            return v
        }
        mutating func u64() throws(DecodeError) -> UInt64 {
            guard let v = reader.u64() else { throw DecodeError(reason: "record ends early") }
            return v
        }
        mutating func i64() throws(DecodeError) -> Int64 { Int64(bitPattern: try u64()) }
        mutating func bool() throws(DecodeError) -> Bool {
            switch try u8() {
            case 0: return false
            case 1: return true
            case let other: throw DecodeError(reason: "bad boolean \(other)")
            }
        }
        /// An element count, bounded by the bytes left so garbage cannot allocate gigabytes.
        mutating func count() throws(DecodeError) -> Int {
            guard let n = reader.u32(), Int(n) <= reader.remaining else { throw DecodeError(reason: "bad count") }
            return Int(n)
        }
        mutating func bytes() throws(DecodeError) -> [UInt8] {
            guard let n = reader.u32(), let raw = reader.raw(Int(n)) else { throw DecodeError(reason: "record ends early") }
            return Array(raw)
        }
        mutating func string() throws(DecodeError) -> String {
            let raw = try bytes()
            guard let s = String(validating: raw, as: UTF8.self) else { throw DecodeError(reason: "key is not UTF-8") }
            return s
        }
    }
}

/// The journal file: an open descriptor and the length of its valid prefix. Not thread-safe
/// (the store serializes access). Every append is followed by `fdatasync`.
struct MetadataJournalFile: Sendable {
    let path: String
    private(set) var fd: Int32
    private(set) var size: UInt64

    var temporaryPath: String { path + ".tmp" }

    /// Opens an existing journal and reads all of it.
    static func open(path: String) throws -> (MetadataJournalFile, contents: [UInt8]) {
        let fd = POSIXIO.open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw FileDiskError(path: path, operation: "open", errno: errno) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let code = errno
            _ = Glibc.close(fd)
            throw FileDiskError(path: path, operation: "fstat", errno: code)
        }
        var code: Int32 = 0
        let contents = [UInt8](unsafeUninitializedCapacity: Int(st.st_size)) { buffer, count in
            code = POSIXIO.preadFully(fd, UnsafeMutableRawBufferPointer(buffer), offset: 0)
            count = code == 0 ? buffer.count : 0
        }
        guard code == 0 else {
            _ = Glibc.close(fd)
            throw FileDiskError(path: path, operation: "read", errno: code)
        }
        return (MetadataJournalFile(path: path, fd: fd, size: UInt64(contents.count)), contents)
    }

    /// Atomically replaces (or creates) the journal at `path` with the header and `records`.
    static func create(path: String, records: [[UInt8]]) throws -> MetadataJournalFile {
        let file = try prepare(path: path, records: records)
        do {
            try file.install()
        } catch {
            file.close()
            throw error
        }
        return file
    }

    /// Writes the header and `records` to `path.tmp` and fsyncs it; `install()` renames it over
    /// `path`. On failure nothing is left behind.
    static func prepare(path: String, records: [[UInt8]]) throws -> MetadataJournalFile {
        let tmp = path + ".tmp"
        _ = unlink(tmp)
        let fd = POSIXIO.open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC)
        guard fd >= 0 else { throw FileDiskError(path: tmp, operation: "create", errno: errno) }
        var size: UInt64 = 0
        do {
            for chunk in [MetadataJournalCodec.header] + records {
                let code = chunk.withUnsafeBytes { POSIXIO.pwriteFully(fd, $0, offset: size) }
                guard code == 0 else { throw FileDiskError(path: tmp, operation: "write", errno: code) }
                size += UInt64(chunk.count)
            }
            guard POSIXIO.fsync(fd) == 0 else { throw FileDiskError(path: tmp, operation: "fsync", errno: errno) }
        } catch {
            _ = Glibc.close(fd)
            _ = unlink(tmp)
            throw error
        }
        return MetadataJournalFile(path: path, fd: fd, size: size)
    }

    /// Renames a prepared file over `path`, then fsyncs the directory. A rename failure changes
    /// nothing (`renamed` false); a directory-sync failure leaves the rename possibly not durable.
    func install() throws(InstallError) {
        guard rename(temporaryPath, path) == 0 else {
            let code = errno
            _ = unlink(temporaryPath)
            throw InstallError(error: FileDiskError(path: path, operation: "rename", errno: code), renamed: false)
        }
        do {
            try POSIXIO.fsyncDirectory(containing: path)
        } catch {
            throw InstallError(error: error as? FileDiskError ?? FileDiskError(path: path, operation: "fsync directory", errno: EIO),
                               renamed: true)
        }
    }

    struct InstallError: Error {
        var error: FileDiskError
        var renamed: Bool
    }

    /// Appends one framed record and makes it durable. On failure the journal must not be used
    /// again (its tail is unknown); reopening the store recovers.
    mutating func append(_ frame: [UInt8]) throws {
        let code = frame.withUnsafeBytes { POSIXIO.pwriteFully(fd, $0, offset: size) }
        guard code == 0 else { throw FileDiskError(path: path, operation: "write", errno: code) }
        guard POSIXIO.fdatasync(fd) == 0 else { throw FileDiskError(path: path, operation: "fdatasync", errno: errno) }
        size += UInt64(frame.count)
    }

    /// Cuts the file to `length` bytes (dropping a torn tail) durably.
    mutating func truncate(to length: UInt64) throws {
        guard ftruncate(fd, off_t(length)) == 0 else { throw FileDiskError(path: path, operation: "ftruncate", errno: errno) }
        guard POSIXIO.fsync(fd) == 0 else { throw FileDiskError(path: path, operation: "fsync", errno: errno) }
        size = length
    }

    func close() { _ = Glibc.close(fd) }
}
