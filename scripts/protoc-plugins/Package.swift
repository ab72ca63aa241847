// swift-tools-version:6.1
// Builds the protoc plugins that generate the gRPC API's Swift code (scripts/gen-proto.sh).
// A package of its own so the main build never compiles them.
import PackageDescription

let package = Package(
    name: "protoc-plugins",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", exact: "2.4.1"),
    ],
    targets: []
)
