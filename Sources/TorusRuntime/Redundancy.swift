/// What the collector's last pass (`/torus/maintenance/status`) says of the copies: the one
/// word `torus status` and the gRPC API's cluster status give.
public enum Redundancy: String, Sendable {
    /// No pass recorded yet.
    case unknown
    /// A repair is copying blocks now.
    case repairing
    /// Nothing short, but some silent nodes are still inside the repair grace.
    case waiting
    /// Every committed block has all its copies.
    case full
    /// Some committed blocks are short of copies.
    case short
    /// The last pass could not read every volume or node.
    case incomplete

    public init(maintenance m: [String: String]) {
        guard m["time"].flatMap({ Int($0) }) != nil else { self = .unknown; return }
        if m["repairing"] == "true" { self = .repairing; return }
        let short = Int(m["short"] ?? "") ?? -1
        let complete = m["last-pass-complete"] == "true" && m["nodes-skipped"] != nil && m["volumes-skipped"] == "0"
        if short == 0 && complete {
            self = (m["nodes-resting"] ?? "0") != "0" ? .waiting : .full
        } else {
            self = short > 0 ? .short : .incomplete
        }
    }
}
