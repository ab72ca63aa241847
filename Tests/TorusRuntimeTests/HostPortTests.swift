import Testing
import TorusRuntime

@Test func hostPortReadsHostAndPort() throws {
    #expect(try HostPort(parsing: "127.0.0.1:10809") == HostPort(host: "127.0.0.1", port: 10809))
    #expect(try HostPort(parsing: "localhost:0") == HostPort(host: "localhost", port: 0))
    #expect(try HostPort(parsing: "node-3.example:65535") == HostPort(host: "node-3.example", port: 65535))
    #expect(try HostPort(parsing: "127.0.0.1:9100").description == "127.0.0.1:9100")
}

@Test func hostPortWithoutPortIsRefused() {
    #expect(throws: HostPort.ParseError.missingPort("127.0.0.1")) { try HostPort(parsing: "127.0.0.1") }
    #expect(throws: HostPort.ParseError.missingPort("127.0.0.1:")) { try HostPort(parsing: "127.0.0.1:") }
    #expect(throws: HostPort.ParseError.missingPort("[::1]")) { try HostPort(parsing: "[::1]") }
    #expect(throws: HostPort.ParseError.missingHost(":10809")) { try HostPort(parsing: ":10809") }
}

@Test func hostPortWithBadPortIsRefused() {
    #expect(throws: HostPort.ParseError.badPort("http")) { try HostPort(parsing: "example:http") }
    #expect(throws: HostPort.ParseError.badPort("-1")) { try HostPort(parsing: "example:-1") }
    #expect(throws: HostPort.ParseError.badPort("+80")) { try HostPort(parsing: "example:+80") }
}

@Test func hostPortOutOfRangeIsRefused() {
    #expect(throws: HostPort.ParseError.portOutOfRange("65536")) { try HostPort(parsing: "127.0.0.1:65536") }
    #expect(throws: HostPort.ParseError.portOutOfRange("99999999999999999999")) {
        try HostPort(parsing: "127.0.0.1:99999999999999999999")
    }
    #expect("\(HostPort.ParseError.portOutOfRange("65536"))" == "port 65536 is not between 0 and 65535")
    #expect("\(HostPort.ParseError.missingPort("x"))" == "no port")
}

@Test func hostPortReadsIPv6() throws {
    #expect(try HostPort(parsing: "[::1]:10809") == HostPort(host: "::1", port: 10809))
    #expect(try HostPort(parsing: "[fe80::1%eth0]:9100") == HostPort(host: "fe80::1%eth0", port: 9100))
    #expect(HostPort(host: "::1", port: 10809).description == "[::1]:10809")
    // Unbracketed, the port follows the last colon (as the parsers before this one read it).
    #expect(try HostPort(parsing: "::1:10809") == HostPort(host: "::1", port: 10809))
}
