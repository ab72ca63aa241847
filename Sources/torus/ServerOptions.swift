import ArgumentParser
import NIOCore
import TorusRuntime

#if canImport(Glibc)
import Glibc
#endif

// Options shared by the commands that serve: `torus up`, `torus nbd serve` and `torus node`.

let peerTLSHelp = ArgumentHelp(
    "Directory with ca-cert.pem, peer-cert.pem and peer-key.pem: mutual TLS with the storage nodes. Required on a cluster made with `torus init --tls`, refused on one made with --insecure.",
    discussion: "`torus init --tls DIR` writes such a directory; `torus certs issue --ca DIR --role peer --out OUT` issues more certificates of the same CA (one per host, say).")

let metricsHelp = ArgumentHelp("Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9100): NBD requests, repair, rebalancing, garbage collection, scrubbing, node usage. Off by default.")

/// `--metrics HOST:PORT`: installs the Prometheus backend and listens, before anything is
/// measured; exits with a clear message when the address is unusable.
func serveMetrics(_ address: String?, group: EventLoopGroup) throws {
    guard let address else { return }
    do {
        let channel = try TorusMetrics.serve(address, group: group).wait()
        serverLog.info("metrics on http://\(channel.localAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? address)/metrics")
    } catch {
        serverLog.error("cannot serve metrics on \(address): \(error)")
        throw ExitCode(1)
    }
}

/// The collector's knobs, shared by `torus up` and `torus nbd serve`.
struct MaintenanceOptions: ParsableArguments {
    @Option(name: .customLong("gc-interval"), help: "Time between passes of the collector, which deletes garbage and copies blocks short of copies (e.g. 60s, 5m); 0 turns it off.")
    var gcInterval = "60s"
    @Option(name: .customLong("gc-grace"), help: "Garbage is deleted once it has been unreachable this long (read-only clients may still read a head this old).")
    var gcGrace = "30s"
    @Option(name: .customLong("repair-grace"), help: "A node silent this long counts as lost: the blocks it held are copied to other nodes. A node back sooner keeps its copies (nothing is copied for it).")
    var repairGrace = "10m"
    @Option(name: .customLong("repair-rate"), help: "Most bytes per second the repair and rebalancing copy to each node (e.g. 64MiB); 0: unthrottled.")
    var repairRate = "64MiB"
    @Option(name: .customLong("ring-settle"), help: "After a ring change (a node joined, is drained or removed), how long before old copies of moved blocks are deleted and a drain is declared done: every server must have learned the new ring by then.")
    var ringSettle = "30s"
    @Option(name: .customLong("scrub-rate"), help: "torus up: bytes per second each node verifies against checksums in the background; a bad copy is dropped and copied back. 0: off.")
    var scrubRate = "4MiB"

    func apply(to config: inout VolumeServer.Configuration) throws {
        let interval = try parseDuration(gcInterval, what: "--gc-interval")
        config.gcInterval = interval.value == 0 ? nil : interval
        config.gcGrace = try parseDuration(gcGrace, what: "--gc-grace")
        config.repairGrace = try parseDuration(repairGrace, what: "--repair-grace")
        config.repairBytesPerSecond = repairRate == "0" ? 0 : try parseSize(repairRate, what: "--repair-rate")
        config.ringSettle = try parseDuration(ringSettle, what: "--ring-settle")
        config.scrubBytesPerSecond = scrubRate == "0" ? 0 : try parseSize(scrubRate, what: "--scrub-rate")
    }
}

struct WriteCacheOptions: ParsableArguments {
    @Option(name: .customLong("cache-size"), help: ArgumentHelp(
        "Cache of each volume's writer: written blocks until their replicas stored them durably, and recently used blocks.",
        discussion: "Written blocks reach their replicas at once but are synced to disk only by a FLUSH or FUA write, after --sync-delay, or when unsynced blocks fill three quarters of the cache; until then the writer keeps them, so a replica that crashes first gets them again. A working set bigger than the cache is written at the speed of the replicas' disks, with pauses of a second or more while a sync writes the backlog; --durable-writes trades throughput for a steady pace."))
    var cacheSize = "1GiB"
    @Option(name: .customLong("sync-delay"), help: "Written blocks are synced to the replicas' disks at least this often even without a FLUSH (e.g. 5s, 500ms).")
    var syncDelay = "5s"
    @Option(name: .customLong("writeback-delay"), help: "A written block waits this long in the writer's cache before it is sent to its replicas, so a block rewritten meanwhile is sent once; a FLUSH, a FUA write or a cache half full of written blocks sends sooner (e.g. 5s, 500ms, 0).")
    var writebackDelay = "5s"
    @Flag(name: .customLong("durable-writes"), help: "Sync every written block on its replicas before taking more (the mode before deferred syncing): a steadier tail when writes outrun the disks, but several times fewer small random writes.")
    var durableWrites = false

    func apply(to config: inout VolumeServer.Configuration) throws {
        config.cacheBytes = try parseCacheSize(cacheSize)
        config.syncDelay = try parseDuration(syncDelay, what: "--sync-delay")
        guard config.syncDelay >= .milliseconds(10) else { throw ValidationError("--sync-delay must be at least 10ms") }
        config.writebackDelay = try parseDuration(writebackDelay, what: "--writeback-delay")
        guard config.writebackDelay <= .seconds(600) else { throw ValidationError("--writeback-delay must be at most 10m") }
        config.durableWrites = durableWrites
    }
}

/// `--etcd-user`: the user of an etcd with auth enabled, for every command that reads etcd. The
/// password stays out of argv (and `ps`): TORUS_ETCD_PASSWORD or TORUS_ETCD_PASSWORD_FILE.
struct EtcdUserOption: ParsableArguments {
    @Option(name: .customLong("etcd-user"), help: ArgumentHelp(
        "User of an etcd with authentication enabled (default: TORUS_ETCD_USER).",
        discussion: "The password comes from TORUS_ETCD_PASSWORD, or the first line of the file TORUS_ETCD_PASSWORD_FILE names."))
    var user: String?

    /// Hands the user to the etcd client (`EtcdAuth.fromEnvironment`) before any command runs.
    func validate() throws {
        guard let user else { return }
        guard !user.isEmpty else { throw ValidationError("--etcd-user must not be empty") }
        setenv(EtcdAuth.environmentNames.user, user, 1)
    }
}
