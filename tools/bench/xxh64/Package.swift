// swift-tools-version:6.0
// Measures the Swift xxHash64 in Sources/ResNetKit/RNW/Checksum.swift against libxxhash's XXH64
// (Debian libxxhash-dev). Standalone so the main package needs no libxxhash.
//   cd tools/bench/xxh64 && swift run -c release
import PackageDescription

let package = Package(
    name: "xxh64-bench",
    targets: [
        .systemLibrary(name: "CXXHash", pkgConfig: "libxxhash", providers: [.apt(["libxxhash-dev"])]),
        .executableTarget(name: "xxh64-bench", dependencies: ["CXXHash"]),
    ]
)
