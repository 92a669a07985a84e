// swift-tools-version:6.0
import PackageDescription
import class Foundation.ProcessInfo

// The CLI links the Swift runtime and Foundation statically (start-up; see docs/decisions/static-runtime.md).
// Sanitizer builds need the shared runtime: ThreadSanitizer stops the statically linked CLI with an
// allocator CHECK failure in its own runtime. RESNET_CONVERT_SHARED_RUNTIME=1 (docs/CONTRIBUTING.md's
// sanitizer commands set it) links it dynamically.
let staticRuntime: [String] = ProcessInfo.processInfo.environment["RESNET_CONVERT_SHARED_RUNTIME"] == nil ? ["-static-stdlib"] : []

let package = Package(
    name: "resnet-convert",
    products: [
        .library(name: "ResNetKit", targets: ["ResNetKit"]),
        .executable(name: "resnet-convert", targets: ["resnet-convert"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", exact: "0.9.20"),
        // `swift package generate-documentation --target ResNetKit`; a plugin only, nothing is linked.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // libhdf5 (Debian libhdf5-dev). Only Sources/ResNetKit/Keras/HDF5.swift imports it.
        .systemLibrary(
            name: "CHDF5",
            pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev"])]
        ),
        // OpenBLAS (Debian libopenblas-dev), opened with dlopen on the first forward pass rather than
        // linked: its constructor starts worker threads, which every command paid for at start.
        .target(name: "COpenBLAS"),
        // protoc-c output for rnw.proto (committed; tools/regen-proto.sh regenerates it).
        // Only Sources/ResNetKit/RNW/RNWProto.swift imports it.
        .target(
            name: "CRNWProto",
            linkerSettings: [.linkedLibrary("protobuf-c")]
        ),
        // protoc-c output for tools/onnx-subset.proto (committed; tools/regen-proto.sh regenerates it).
        // Only Sources/ResNetKit/Export/ONNXProto.swift imports it.
        .target(
            name: "CONNXProto",
            linkerSettings: [.linkedLibrary("protobuf-c")]
        ),
        // SHA-256 compression on the x86 SHA extensions, for the source hash in provenance records.
        // Only Sources/ResNetKit/Tensor/SHA256.swift imports it (with a Swift fallback).
        .target(name: "CSHA256"),
        // Vector kernels built for AVX2/FMA or AVX-512 (the Swift code is built for baseline x86-64),
        // each called only after the CPU check in cpu.c, with a Swift fallback.
        .target(name: "CKernels"),
        // Linux file calls Swift's Glibc module hides (sync_file_range, O_TMPFILE) and the interrupt handler
        // that removes unfinished outputs. Imported by RNWStreamWriter.swift and Tensor/AtomicOutput.swift.
        .systemLibrary(name: "CLinuxIO"),
        // zlib: CRC-32 for zip members (3× our table-driven Swift version) and capped inflation of deflated
        // members. Only Tensor/CRC32.swift and Tensor/ZipImage.swift import it.
        .systemLibrary(name: "CZlibCRC"),
        .target(
            name: "ResNetKit",
            dependencies: [
                "CHDF5", "COpenBLAS", "CRNWProto", "CONNXProto", "CSHA256", "CKernels", "CLinuxIO", "CZlibCRC",
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
            ]
        ),
        .executableTarget(
            name: "resnet-convert",
            dependencies: [
                "ResNetKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            // The Swift runtime and Foundation linked in: resolving their ~31k symbol references
            // across a dozen shared libraries cost ~6 ms of every command's start (a 14 MB binary
            // becomes ~85 MB). System C libraries (libhdf5, OpenBLAS, libc) stay shared.
            swiftSettings: [.unsafeFlags(staticRuntime)],
            linkerSettings: [.unsafeFlags(staticRuntime)]
        ),
        .testTarget(name: "ResNetKitTests", dependencies: ["ResNetKit"]),
        .testTarget(name: "CLITests", dependencies: ["ResNetKit"]),
        // Imports ResNetKit without @testable: pins the public surface a loader relies on.
        .testTarget(name: "PublicAPITests", dependencies: ["ResNetKit"]),
        // Example loader: classify images from an .npy file with a .rnw model.
        .executableTarget(name: "resnet-classify-example", dependencies: ["ResNetKit"], path: "Examples/classify"),
        // Measures what checksum verification adds to opening a .rnw (see docs/BENCHMARKS.md).
        .executableTarget(name: "rnw-open-bench", dependencies: ["ResNetKit"], path: "tools/bench/open"),
    ]
)
