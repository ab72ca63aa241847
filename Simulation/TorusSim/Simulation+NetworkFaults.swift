import TorusCore

/// Faults of the network and the metadata store: partitions (both ways or one), swizzle-clog,
/// a lossy or slow network, and a metadata store that is down or slow.
extension Simulation {
    /// Cuts a node from the writers' host: both ways, or only one direction.
    func applyPartition(_ node: Int?, duration: Nanoseconds?) {
        let n = slots[pickNode(node)].id
        let id = nextFaultID
        nextFaultID += 1
        let mode = faultRandom.below(3)
        // Between the node and the host of the writers (every volume's).
        for w in vols.map(\.clientID) {
            if mode != 1 { network.block(w, n, fault: id) }
            if mode != 2 { network.block(n, w, fault: id) }
        }
        traceEvent(.partition, UInt64(n.raw), mode)
        queue.push(now + lasting(duration, .milliseconds(100), .seconds(3)), .heal(.partition(id)))
    }

    /// The node hears the writer but its replies are lost (or the other way round).
    func applyOneWayPartition(_ node: Int?, duration: Nanoseconds?) {
        let n = slots[pickNode(node)].id
        let id = nextFaultID
        nextFaultID += 1
        let repliesLost = faultRandom.chance(0.5)
        for w in vols.map(\.clientID) {
            if repliesLost { network.block(n, w, fault: id) } else { network.block(w, n, fault: id) }
        }
        traceEvent(.oneWayPartition, UInt64(n.raw), repliesLost ? 1 : 0)
        queue.push(now + lasting(duration, .milliseconds(100), .seconds(3)), .heal(.partition(id)))
    }

    /// Clogs a random subset one node at a time, then unclogs them in a random order.
    func applySwizzleClog(duration: Nanoseconds?) {
        let d = lasting(duration, .seconds(1), .seconds(6))
        var order = Array(slots.indices)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(faultRandom.below(UInt64(i + 1)))) }
        let subset = Array(order.prefix(1 + Int(faultRandom.below(UInt64(slots.count)))))
        let step = Nanoseconds(d.value / UInt64(2 * subset.count))
        traceEvent(.swizzleClog, UInt64(subset.count), d.value)
        var ids: [UInt64] = []
        for (i, n) in subset.enumerated() {
            let id = nextFaultID
            nextFaultID += 1
            ids.append(id)
            queue.push(now + step * UInt64(i), .clog(slots[n].id, fault: id))
        }
        for i in stride(from: ids.count - 1, to: 0, by: -1) { ids.swapAt(i, Int(faultRandom.below(UInt64(i + 1)))) }
        for (j, id) in ids.enumerated() {
            queue.push(now + Nanoseconds(d.value / 2) + step * UInt64(j + 1), .heal(.partition(id)))
        }
    }

    /// lossy-network (drops and duplicates) or slow-network (longer hops), one at a time.
    func applyNetworkFault(_ kind: FaultKind, duration: Nanoseconds?) {
        guard networkFault == nil else { return }
        networkFault = (network.dropProbability, network.duplicateProbability, network.latencyMax)
        if kind == .lossyNetwork {
            network.dropProbability = max(network.dropProbability, 0.2)
            network.duplicateProbability = max(network.duplicateProbability, 0.1)
        } else {
            network.latencyMax = max(network.latencyMax, .milliseconds(50))
        }
        traceEvent(.networkFault, kind == .lossyNetwork ? 1 : 2)
        queue.push(now + lasting(duration, .seconds(1), .seconds(5)), .heal(.network))
    }

    func applyMetadataOutage(duration: Nanoseconds?) {
        guard store.available else { return }
        traceEvent(.metadataOutage)
        store.available = false
        queue.push(now + lasting(duration, .milliseconds(200), .seconds(3)), .heal(.metadata))
    }

    func applyMetadataSlow(duration: Nanoseconds?) {
        traceEvent(.metadataSlow, options.metadataSlowMax.value)
        metadataSlow = options.metadataSlowMax
        queue.push(now + lasting(duration, .seconds(1), .seconds(10)), .heal(.metadataSpeed))
    }
}
