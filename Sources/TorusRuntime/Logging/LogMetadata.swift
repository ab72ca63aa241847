import Logging
import NIOCore

/// The metadata keys torus lines use, so a filter written for one part works for all:
/// `node` (the storage node that logs), `peer` (the node at the other end of a peer
/// connection, or the ring member a line is about), `volume` (a volume's name), `client`
/// (`gc`: the collector's side of a peer connection), `address` (the other end's HOST:PORT,
/// e.g. an NBD client's; where a node listens on its own lines), `lease` (a writer's lease id).
public enum LogMetadata {
    /// `address=HOST:PORT` of a socket address (`unix:PATH` for a Unix socket, `-` for none).
    public static func address(_ address: SocketAddress?) -> Logger.MetadataValue {
        guard let address else { return "-" }
        switch address {
        case .v4, .v6: return "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
        case .unixDomainSocket: return "unix:\(address.pathname ?? "")"
        }
    }
}
