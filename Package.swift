// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "torus",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "TorusCore", targets: ["TorusCore"]),
        .library(name: "TorusSim", targets: ["TorusSim"]),
        .library(name: "TorusNBD", targets: ["TorusNBD"]),
        .executable(name: "torus-sim", targets: ["torus-sim"]),
        .executable(name: "torus", targets: ["torus"]),
        .executable(name: "torus-fuzz", targets: ["torus-fuzz"]),
        .executable(name: "torus-fuse", targets: ["torus-fuse"]),
    ],
    // `GRPC` adds the gRPC API and the CSI driver to `torus` (`swift build --traits GRPC`). Off by
    // default: gRPC's HTTP/2 transport takes minutes to build on two cores.
    traits: [.trait(name: "GRPC", description: "the gRPC API (torus nbd serve --grpc) and the CSI driver (torus csi)")],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
    ],
    targets: [
        // The storage core: deterministic state machines, no I/O.
        // Optimized in debug builds too: `swift test` runs every scenario file through the
        // simulator, which is 10-20x slower unoptimized. Preconditions stay on (-O keeps them;
        // the core uses no assert()).
        .target(name: "TorusCore", dependencies: ["CTorusCRC"], path: "Sources/TorusCore",
                swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug)),
                                // Dynamic exclusivity checks cost the simulator ~3%; debug builds
                                // (every test) keep them. Cross-module optimization lets the
                                // simulator and the runtime specialize and inline the core's
                                // generics and small accessors (~10% on the soak scenario).
                                .unsafeFlags(["-enforce-exclusivity=unchecked", "-cross-module-optimization"], .when(configuration: .release))]),
        // CRC-32C through ISA-L (Debian libisal-dev; pure computation, no I/O).
        .target(name: "CTorusCRC", path: "Sources/CTorusCRC", linkerSettings: [.linkedLibrary("isal")]),
        // Non-blocking positioned file I/O (preadv2/pwritev2 with RWF_NOWAIT) for the runtime.
        .target(name: "CTorusSys", path: "Sources/CTorusSys"),
        // libcurl (Debian libcurl4-openssl-dev) with fixed-argument wrappers, for the etcd client.
        .systemLibrary(name: "CCurl", path: "Sources/CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        // The NBD server protocol as a sans-I/O state machine (one per connection).
        .target(name: "TorusNBD", path: "Sources/TorusNBD"),
        // Production drivers: file disks, the embedded metadata store, the etcd client, the peer transport, the NBD server, the volume server.
        .target(
            name: "TorusRuntime",
            dependencies: [
                "TorusCore", "TorusNBD", "CTorusSys", "CCurl",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/TorusRuntime"
        ),
        // The gRPC API and the CSI driver (proto/; generated code from scripts/gen-proto.sh).
        // Empty unless the GRPC trait is on: every file is inside `#if GRPC`.
        .target(
            name: "TorusAPI",
            dependencies: [
                "TorusRuntime", "TorusCore",
                .product(name: "GRPCCore", package: "grpc-swift-2", condition: .when(traits: ["GRPC"])),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport", condition: .when(traits: ["GRPC"])),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf", condition: .when(traits: ["GRPC"])),
                .product(name: "SwiftProtobuf", package: "swift-protobuf", condition: .when(traits: ["GRPC"])),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/TorusAPI"
        ),
        // The `torus` command line.
        .executableTarget(
            name: "torus",
            dependencies: [
                "TorusRuntime", "TorusCore", "TorusNBD", "TorusAPI",
                // The CSI driver (Sources/torus/CSI), with the GRPC trait only.
                .product(name: "GRPCCore", package: "grpc-swift-2", condition: .when(traits: ["GRPC"])),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport", condition: .when(traits: ["GRPC"])),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf", condition: .when(traits: ["GRPC"])),
                .product(name: "SwiftProtobuf", package: "swift-protobuf", condition: .when(traits: ["GRPC"])),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/torus"
        ),
        // An NBD export as a file through FUSE, for `torus attach`'s loop device (libfuse3 and
        // libnbd, Debian libfuse3-dev and libnbd-dev); unlike nbdfuse it follows a resize.
        .executableTarget(name: "torus-fuse", path: "Sources/torus-fuse",
                          cSettings: [.define("_FILE_OFFSET_BITS", to: "64")],
                          linkerSettings: [.linkedLibrary("fuse3"), .linkedLibrary("nbd"), .linkedLibrary("pthread")]),
        // Mutation fuzzing of the parsers (docs/fuzzing.md).
        .executableTarget(
            name: "torus-fuzz",
            dependencies: ["TorusRuntime", "TorusNBD", "TorusScenario", "TorusCore",
                           .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "NIOCore", package: "swift-nio")],
            path: "Sources/torus-fuzz"
        ),
        // The deterministic, fault-injecting simulator that drives the core.
        .target(name: "TorusSim", dependencies: ["TorusCore"], path: "Simulation/TorusSim",
                swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug)),
                                .unsafeFlags(["-enforce-exclusivity=unchecked", "-cross-module-optimization"], .when(configuration: .release))]),
        // Scenario files (YAML, read with Yams) for the simulator.
        .target(name: "TorusScenario", dependencies: ["TorusSim", "TorusCore", "Yams"], path: "Simulation/TorusScenario"),
        .executableTarget(
            name: "torus-sim",
            dependencies: ["TorusSim", "TorusScenario", "TorusCore", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Simulation/torus-sim",
            // mimalloc (Debian libmimalloc-dev) replaces glibc's malloc in the simulator only:
            // a run allocates a few small buffers per event, and glibc's allocator was a tenth
            // of the soak scenario's time (docs/simulation.md, "Speed"). Allocation order and
            // addresses never reach a trace, so traces stay the same.
            linkerSettings: [.linkedLibrary("mimalloc")]
        ),
        .testTarget(name: "TorusCoreTests", dependencies: ["TorusCore", "CTorusCRC"], path: "Tests/TorusCoreTests"),
        .testTarget(
            name: "TorusRuntimeTests",
            dependencies: [
                "TorusRuntime", "TorusCore", "TorusSim",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/TorusRuntimeTests"
        ),
        .testTarget(name: "TorusNBDTests", dependencies: ["TorusNBD"], path: "Tests/TorusNBDTests"),
        .testTarget(name: "SimulationTests", dependencies: ["TorusSim", "TorusCore", "TorusScenario"], path: "Tests/SimulationTests"),
    ],
    swiftLanguageModes: [.v6]
)
