// swift-tools-version:6.0
// libFuzzer harnesses for the ResNetKit readers; built and run by run.sh, never by the main
// package's `swift test`. See README.md.
import Foundation
import PackageDescription

// A path dependency's identity is its directory name, which differs between checkouts.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../..").standardizedFileURL
let rootIdentity = root.lastPathComponent.lowercased()

let harnesses = ["fuzz-torch", "fuzz-pickle", "fuzz-npy", "fuzz-keras-config", "fuzz-rnw"]

let package = Package(
    name: "resnet-fuzz",
    dependencies: [.package(path: root.path)],
    targets: harnesses.map { name in
        .executableTarget(
            name: name,
            dependencies: [.product(name: "ResNetKit", package: rootIdentity)],
            path: "Sources/\(name)",
            // No main: libFuzzer's runtime supplies it and calls LLVMFuzzerTestOneInput.
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        )
    }
)
