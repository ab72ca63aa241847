import Testing
@testable import TorusCore

/// Runs a `ByteRangeAdapter` on a volume client in an `InstantCluster`.
private final class AdapterHarness {
    let cl = InstantCluster(nodes: 3, replication: 2, volumeBytes: 256 << 10)
    var adapter: ByteRangeAdapter
    var replies: [UInt64: Result<[UInt8], VolumeError>] = [:]
    var pendingOps: Set<OpID> = []
    let client = NodeID(100)

    init() {
        adapter = ByteRangeAdapter(sectorSize: 4096, volumeSize: 256 << 10, firstOpID: 1_000_000)
        cl.addClient(client)
    }

    func handle(_ outputs: [ByteRangeAdapter.Output]) {
        for o in outputs {
            switch o {
            case .submit(let op, let vop):
                pendingOps.insert(op)
                cl.handle(client, cl.clients[client]!.submit(op, vop, now: cl.now))
            case .complete(let id, let r):
                replies[id] = r.map { $0.flatMap { $0 } }  // read parts joined
            }
        }
    }

    /// Submits all requests at once (so overlapping writes are in flight together), then runs
    /// the cluster until every reply is in.
    func run(_ requests: [(UInt64, ByteRangeAdapter.Request)]) {
        for (id, r) in requests { handle(adapter.request(id, r)) }
        var guardSteps = 0
        while requests.contains(where: { replies[$0.0] == nil }) && guardSteps < 10_000 {
            guardSteps += 1
            cl.run(seconds: 5) { pendingOps.contains { cl.results[$0] != nil } }
            for op in pendingOps.sorted() where cl.results[op] != nil {
                pendingOps.remove(op)
                let r = cl.results.removeValue(forKey: op)!
                handle(adapter.opCompleted(op, r))
            }
        }
    }
}

@Suite("byte-range adapter")
struct ByteRangeAdapterTests {
    @Test("unaligned writes, zeroes and trims read back exactly like a byte array")
    func matchesByteModel() {
        let h = AdapterHarness()
        var model = [UInt8](repeating: 0, count: 256 << 10)
        var random = SeededRandom(seed: 11)
        var nextID: UInt64 = 1
        for _ in 0..<30 {
            // A batch of concurrent writes, some overlapping: applied in arrival order.
            var batch: [(UInt64, ByteRangeAdapter.Request)] = []
            for _ in 0..<6 {
                let offset = random.below(UInt64(model.count - 20000))
                let length = Int(random.below(12000)) + 1
                let kind = random.below(10)
                let request: ByteRangeAdapter.Request
                if kind < 7 {
                    let data = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                    // In one to a few chunks cut anywhere, as the NBD server may hand them over.
                    var chunks: [[UInt8]] = []
                    var rest = data[...]
                    while !rest.isEmpty {
                        let n = random.next() % 2 == 0 ? rest.count : 1 + Int(random.next() % UInt64(rest.count))
                        chunks.append(Array(rest.prefix(n)))
                        rest = rest.dropFirst(n)
                    }
                    request = .write(offset: offset, chunks: chunks.isEmpty ? [[]] : chunks, fua: kind == 0)
                    model.replaceSubrange(Int(offset)..<(Int(offset) + length), with: data)
                } else if kind < 9 {
                    request = .writeZeroes(offset: offset, length: length, fua: kind == 8)
                    model.replaceSubrange(Int(offset)..<(Int(offset) + length), with: repeatElement(0, count: length))
                } else {
                    request = .trim(offset: offset, length: length, fua: false)
                    let lo = (Int(offset) + 4095) / 4096 * 4096, hi = (Int(offset) + length) / 4096 * 4096
                    if lo < hi { model.replaceSubrange(lo..<hi, with: repeatElement(0, count: hi - lo)) }
                }
                batch.append((nextID, request))
                nextID += 1
            }
            h.run(batch)
            for (id, _) in batch { #expect(h.replies[id].map { if case .success = $0 { true } else { false } } == true) }
            // Then reads of random byte ranges.
            var reads: [(UInt64, ByteRangeAdapter.Request)] = []
            var expected: [UInt64: [UInt8]] = [:]
            for _ in 0..<4 {
                let offset = random.below(UInt64(model.count - 9000))
                let length = Int(random.below(9000)) + 1
                reads.append((nextID, .read(offset: offset, length: length)))
                expected[nextID] = Array(model[Int(offset)..<(Int(offset) + length)])
                nextID += 1
            }
            h.run(reads)
            for (id, _) in reads {
                guard case .success(let got) = h.replies[id] else {
                    Issue.record("read \(id) failed: \(String(describing: h.replies[id]))")
                    return
                }
                let same = got == expected[id]
                if !same {
                    let first = zip(got, expected[id]!).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? -1
                    Issue.record("read \(id) differs from the byte model (length \(got.count), first difference at byte \(first))")
                    return
                }
            }
        }
        #expect(h.adapter.requestsInFlight == 0)
    }

    @Test("out-of-range and empty requests are answered without touching the volume")
    func edges() {
        let h = AdapterHarness()
        h.run([(1, .read(offset: (256 << 10) - 10, length: 11)), (2, .write(offset: 5, data: [], fua: false)),
               (3, .flush)])
        #expect(h.replies[1] == .failure(.outOfRange(offset: (256 << 10) - 10, length: 11, volumeSize: 256 << 10)))
        #expect(h.replies[2] == .success([]))
        #expect(h.replies[3] == .success([]))
    }
}
