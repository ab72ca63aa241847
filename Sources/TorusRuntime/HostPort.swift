/// A TCP endpoint written `HOST:PORT`: the one parser behind `--nbd`, `--listen`, `--metrics`
/// and the CLI's hints. IPv6 literals go in brackets (`[::1]:10809`); an unbracketed `::1:10809`
/// is still read as before (the port follows the last colon).
public struct HostPort: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Why a text is not a `HOST:PORT`.
    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case missingPort(String)
        case missingHost(String)
        case badPort(String)
        case portOutOfRange(String)

        public var description: String {
            switch self {
            case .missingPort: return "no port"
            case .missingHost: return "no host"
            case .badPort(let port): return "port '\(port)' is not a number"
            case .portOutOfRange(let port): return "port \(port) is not between 0 and 65535"
            }
        }
    }

    /// Reads `HOST:PORT` or `[IPv6]:PORT`; the port is 0 to 65535 (0: any free port).
    public init(parsing text: String) throws(ParseError) {
        let hostText: Substring, portText: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            hostText = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw .missingPort(text) }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw .missingPort(text) }
            hostText = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !hostText.isEmpty else { throw .missingHost(text) }
        guard !portText.isEmpty else { throw .missingPort(text) }
        guard portText.allSatisfy({ $0.isASCII && $0.isNumber }) else { throw .badPort(String(portText)) }
        guard let port = Int(portText), port <= 65535 else { throw .portOutOfRange(String(portText)) }
        self.host = String(hostText)
        self.port = port
    }

    /// `HOST:PORT`, with brackets around an IPv6 host.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
