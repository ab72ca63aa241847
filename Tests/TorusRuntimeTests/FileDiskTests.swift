import Dispatch
import Glibc
import Synchronization
import Testing
import TorusCore
@testable import TorusRuntime

/// A fresh directory under /tmp, removed (with its contents) by `remove()`.
struct ScratchDirectory {
    let path: String

    init(_ label: String) {
        var template = Array("/tmp/torus-rt-\(label)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(cString: made!)
    }

    func remove() { Self.removeTree(path) }

    private static func removeTree(_ path: String) {
        if let dir = opendir(path) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
                }
                if name == "." || name == ".." { continue }
                removeTree(path + "/" + name)
            }
            closedir(dir)
            rmdir(path)
        } else {
            unlink(path)
        }
    }
}

func scratchFileSize(_ path: String) -> Int64 {
    var st = stat()
    return stat(path, &st) == 0 ? Int64(st.st_size) : -1
}

private func pattern(_ seed: UInt8, count: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
}

@Suite("FileDisk")
struct FileDiskTests {
    @Test("a new disk file is created at exactly the capacity and reads as zeros")
    func createsPreallocated() throws {
        let dir = ScratchDirectory("create")
        defer { dir.remove() }
        let disk = try FileDisk(path: dir.path + "/disk", capacityBytes: 1 << 20)
        defer { disk.close() }
        #expect(scratchFileSize(dir.path + "/disk") == 1 << 20)
        #expect(disk.geometry == DiskGeometry(sectorSize: 4096, capacityBytes: 1 << 20))
        guard case .read(.success(let bytes)) = disk.perform(.read(offset: 8192, length: 4096)) else {
            Issue.record("read failed"); return
        }
        #expect(bytes == [UInt8](repeating: 0, count: 4096))
    }

    @Test("written sectors read back after a sync")
    func roundTrip() throws {
        let dir = ScratchDirectory("roundtrip")
        defer { dir.remove() }
        let disk = try FileDisk(path: dir.path + "/disk", capacityBytes: 1 << 20)
        defer { disk.close() }
        let data = pattern(7, count: 3 * 4096)
        guard case .written(.success) = disk.perform(.write(offset: 4096, bytes: data)) else { Issue.record("write failed"); return }
        guard case .synced(.success) = disk.perform(.sync) else { Issue.record("sync failed"); return }
        guard case .read(.success(let back)) = disk.perform(.read(offset: 4096, length: data.count)) else {
            Issue.record("read failed"); return
        }
        #expect(back == data)
        #expect(try disk.readSync(offset: 4096 + 10, length: 5) == Array(data[10..<15]))
        guard case .read(.success(let empty)) = disk.perform(.read(offset: 0, length: 0)) else { Issue.record("empty read failed"); return }
        #expect(empty.isEmpty)
    }

    @Test("non-blocking reads and writes return the right bytes or decline, never wrong data")
    func nonBlocking() throws {
        let dir = ScratchDirectory("nowait")
        defer { dir.remove() }
        let disk = try FileDisk(path: dir.path + "/disk", capacityBytes: 1 << 20)
        defer { disk.close() }
        let data = pattern(9, count: 2 * 4096)
        guard case .written(.success) = disk.perform(.write(offset: 8192, bytes: data)) else { Issue.record("write failed"); return }
        // Just written, so in the page cache: a non-blocking read either serves it exactly or declines.
        var served = 0
        for _ in 0..<10 {
            switch disk.performWithoutBlocking(.read(offset: 8192, length: data.count)) {
            case .read(.success(let back))?: #expect(back == data); served += 1
            case nil: break
            case let other?: Issue.record("unexpected completion \(other)")
            }
        }
        // A non-blocking write, when taken, is visible to a normal read.
        let more = pattern(10, count: 4096)
        if let done = disk.performWithoutBlocking(.write(offset: 65536, bytes: more)) {
            guard case .written(.success) = done else { Issue.record("non-blocking write failed: \(done)"); return }
            guard case .read(.success(let back)) = disk.perform(.read(offset: 65536, length: 4096)) else { Issue.record("read failed"); return }
            #expect(back == more)
        }
        // Out of range, misaligned and syncs always go the blocking way (which reports errors).
        func declined(_ c: DiskCompletion?) -> Bool { if case .none = c { return true } else { return false } }
        #expect(declined(disk.performWithoutBlocking(.read(offset: 1 << 20, length: 4096))))
        #expect(declined(disk.performWithoutBlocking(.read(offset: 100, length: 4096))))
        #expect(declined(disk.performWithoutBlocking(.sync)))
        #if os(Linux)
        #expect(served > 0, "RWF_NOWAIT reads of cached data should be served on Linux")
        #endif
    }

    @Test("out-of-range and misaligned requests fail with outOfRange instead of trapping")
    func outOfRange() throws {
        let dir = ScratchDirectory("range")
        defer { dir.remove() }
        let disk = try FileDisk(path: dir.path + "/disk", capacityBytes: 64 * 1024)
        defer { disk.close() }
        let end: UInt64 = 64 * 1024
        guard case .read(.failure(.outOfRange(offset: end, length: 4096))) = disk.perform(.read(offset: end, length: 4096)) else {
            Issue.record("read past the end did not fail"); return
        }
        guard case .written(.failure(.outOfRange)) = disk.perform(.write(offset: end - 4096, bytes: [UInt8](repeating: 1, count: 8192))) else {
            Issue.record("write across the end did not fail"); return
        }
        guard case .read(.failure(.outOfRange)) = disk.perform(.read(offset: .max - 100, length: 4096)) else {
            Issue.record("overflowing offset did not fail"); return
        }
        guard case .read(.failure(.outOfRange)) = disk.perform(.read(offset: 0, length: -4096)) else {
            Issue.record("negative length did not fail"); return
        }
        guard case .written(.failure(.outOfRange)) = disk.perform(.write(offset: 100, bytes: [UInt8](repeating: 1, count: 4096))) else {
            Issue.record("misaligned write did not fail"); return
        }
        #expect(throws: FileDiskError.self) { try disk.readSync(offset: end - 1, length: 2) }
    }

    @Test("reopening an existing disk file keeps its data")
    func reopenKeepsData() throws {
        let dir = ScratchDirectory("reopen")
        defer { dir.remove() }
        let path = dir.path + "/disk"
        let data = pattern(42, count: 8192)
        do {
            let disk = try FileDisk(path: path, capacityBytes: 256 * 1024)
            _ = disk.perform(.write(offset: 128 * 1024, bytes: data))
            _ = disk.perform(.sync)
            disk.close()
        }
        let disk = try FileDisk(path: path, capacityBytes: 256 * 1024)
        defer { disk.close() }
        #expect(try disk.readSync(offset: 128 * 1024, length: data.count) == data)
    }

    @Test("an existing file of another size is refused with the path in the message and left untouched")
    func sizeMismatchRefused() throws {
        let dir = ScratchDirectory("mismatch")
        defer { dir.remove() }
        let path = dir.path + "/disk"
        try FileDisk(path: path, capacityBytes: 64 * 1024).close()
        do {
            _ = try FileDisk(path: path, capacityBytes: 128 * 1024)
            Issue.record("size mismatch was accepted")
        } catch {
            #expect("\(error)".contains(path))
            #expect("\(error)".contains("65536"))
        }
        #expect(scratchFileSize(path) == 64 * 1024)
    }

    @Test("a disk file that is already open is refused, and close is idempotent")
    func exclusiveAndClose() throws {
        let dir = ScratchDirectory("lock")
        defer { dir.remove() }
        let path = dir.path + "/disk"
        let disk = try FileDisk(path: path, capacityBytes: 64 * 1024)
        #expect(throws: FileDiskError.self) { _ = try FileDisk(path: path, capacityBytes: 64 * 1024) }
        disk.close()
        disk.close()
        guard case .read(.failure(.ioError)) = disk.perform(.read(offset: 0, length: 4096)) else {
            Issue.record("read after close did not fail"); return
        }
        guard case .synced(.failure(.ioError)) = disk.perform(.sync) else { Issue.record("sync after close did not fail"); return }
        try FileDisk(path: path, capacityBytes: 64 * 1024).close()
    }

    @Test("a missing parent directory is reported with the path and errno text")
    func openErrorHasPath() {
        let path = "/tmp/torus-rt-does-not-exist-\(getpid())/sub/disk"
        do {
            _ = try FileDisk(path: path, capacityBytes: 4096)
            Issue.record("open succeeded")
        } catch let error as FileDiskError {
            #expect(error.path == path)
            #expect(error.errno == ENOENT)
            #expect(error.description.contains("No such file or directory"))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test("concurrent requests from several threads keep every sector consistent")
    func concurrentPerform() throws {
        let dir = ScratchDirectory("concurrent")
        defer { dir.remove() }
        let sector = 4096, threads = 8, sectorsPerThread = 32
        let disk = try FileDisk(path: dir.path + "/disk", capacityBytes: UInt64(threads * sectorsPerThread * sector))
        defer { disk.close() }
        let failures = AtomicTestCounter()
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            for round in 0..<4 {
                for i in 0..<sectorsPerThread {
                    // Threads interleave their sectors across the whole file.
                    let offset = UInt64((i * threads + t) * sector)
                    let data = pattern(UInt8(truncatingIfNeeded: t * 16 + round), count: sector)
                    guard case .written(.success) = disk.perform(.write(offset: offset, bytes: data)),
                          case .read(.success(let back)) = disk.perform(.read(offset: offset, length: sector)),
                          back == data else { failures.add(); continue }
                }
                if case .synced(.failure) = disk.perform(.sync) { failures.add() }
            }
        }
        #expect(failures.value == 0)
        for t in 0..<threads {
            for i in 0..<sectorsPerThread {
                let back = try disk.readSync(offset: UInt64((i * threads + t) * sector), length: sector)
                #expect(back == pattern(UInt8(truncatingIfNeeded: t * 16 + 3), count: sector))
            }
        }
    }
}

final class AtomicTestCounter: Sendable {
    private let count = Atomic<Int>(0)
    func add() { count.wrappingAdd(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
