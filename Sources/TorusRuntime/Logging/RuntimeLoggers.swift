import Logging

/// The loggers of the runtime's parts, one label each (docs/runtime.md, "Logs"). Made on first
/// use, so after the command's `TorusLogging.bootstrap` chose the level and format.
enum RuntimeLoggers {
    /// Volumes served: opened, grown, deleted, writers fenced and replaced (`volume=NAME`).
    static let volume = TorusLogging.logger("volume")
    /// The garbage collector: passes, repair and rebalancing progress.
    static let gc = TorusLogging.logger("gc")
    /// The writer side of peer connections (`peer=` the node, `volume=` or `client=gc` who
    /// talks to it); the node side logs as `torus.node`.
    static let peer = TorusLogging.logger("peer")
    /// The placement ring as this server follows it.
    static let ring = TorusLogging.logger("ring")
    /// Requests to the metadata store that stall, lease keep-alives that fail.
    static let metadata = TorusLogging.logger("metadata")
    /// NBD connections (`address=` the client's, `volume=` its export).
    static let nbd = TorusLogging.logger("nbd")
    /// Requests on the admin socket of `torus up` that change something.
    static let admin = TorusLogging.logger("admin")
}
