import Foundation
import Testing
@testable import ResNetKit

// MARK: - Fixtures built here: a tiny but complete ResNet and random weights.

/// Deterministic generator so a failing case can be reproduced (shared by the .rnw tests).
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Stem conv+bn+relu, one stage of one basic block, head global-average-pool + dense.
private func tinySpec() -> ResNetSpec {
    ResNetSpec(
        family: "test-tiny", inputChannels: 3, classes: 5, inputSize: [8, 8], preprocessing: "none",
        stem: [
            .conv(ConvOp(name: "conv1", inChannels: 3, outChannels: 4, kernel: [3, 3], stride: [2, 2], padding: .same, bias: false)),
            .batchNorm(BatchNormOp(name: "bn1", channels: 4, epsilon: 1.001e-5)),
            .relu,
        ],
        stages: [Stage(blocks: [Block(
            name: "layer1.0",
            residual: [
                .conv(ConvOp(name: "layer1.0.conv1", inChannels: 4, outChannels: 4, kernel: [3, 3], padding: .symmetric(1), bias: true)),
                .batchNorm(BatchNormOp(name: "layer1.0.bn1", channels: 4, epsilon: 1e-5)),
                .relu,
                .conv(ConvOp(name: "layer1.0.conv2", inChannels: 4, outChannels: 4, kernel: [3, 3], padding: .symmetric(1), bias: false)),
                .batchNorm(BatchNormOp(name: "layer1.0.bn2", channels: 4, epsilon: 1e-3, scale: false)),
            ],
            post: [.relu])])],
        head: [.globalAvgPool, .dense(DenseOp(name: "fc", inFeatures: 4, outFeatures: 5, bias: true))])
}

/// Random weights drawn as raw bit patterns, so NaN payloads, infinities, subnormals and -0 are
/// all exercised by the bit-exact round trip.
private func tinyModel(seed: UInt64 = 1) -> ResNetModel {
    var rng = SplitMix64(state: seed)
    let spec = tinySpec()
    var tensors: [String: Tensor] = [:]
    for p in spec.parameters {
        let n = p.shape.reduce(1, *)
        tensors[p.name] = Tensor(shape: p.shape, data: (0..<n).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) })
    }
    return ResNetModel(spec: spec, tensors: tensors)
}

private let provenance = RNWProvenance(
    sourceFormat: "keras-h5", sourcePath: "/some/dir/model.h5", sourceSHA256: String(repeating: "ab", count: 32),
    scheme: "keras-applications", unwrappingNotes: ["none needed", "second note"], toolVersion: "test")
private let parity = [
    RNWParityRecord(passed: true, reference: "golden io.npz", maxAbsError: 1.5e-6, maxRelError: 2e-7, cosine: 0.9999999,
                    top1Agreement: 1, tolerance: 1e-4, policy: "float32 accumulation order differs"),
    RNWParityRecord(passed: true, reference: "read-back", maxAbsError: 0, maxRelError: 0, cosine: 1,
                    top1Agreement: 1, tolerance: 0, policy: "bit-exact"),
]

/// A fresh empty directory for one test.
private func scratchDirectory() throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("rnw-tests-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

private func writeTiny(to path: String, seed: UInt64 = 1) throws -> ResNetModel {
    let model = tinyModel(seed: seed)
    try RNWWriter.write(model, to: path, provenance: provenance, parity: parity, metadata: ["note": "hello", "a": "b"])
    return model
}

private func bits(_ t: Tensor?) -> [UInt32] { t?.data.map(\.bitPattern) ?? [] }

/// The error a whole in-memory image produces, or nil when it is accepted.
private func parseError(_ bytes: [UInt8], verifyChecksums: Bool = true) -> ResNetError? {
    do {
        _ = try bytes.withUnsafeBytes { try parseRNW($0, file: "image.rnw", verifyChecksums: verifyChecksums) }
        return nil
    } catch let e as ResNetError {
        return e
    } catch {
        Issue.record("unexpected error type: \(error)")
        return nil
    }
}

private func place(_ e: ResNetError?) -> String? {
    if case let .invalidInput(_, place, _)? = e { return place }
    return nil
}

// MARK: - Checksum

@Test func xxHash64MatchesLibxxhash() {
    // (length, XXH64 seed 0, XXH64 seed 0x9E3779B1) of bytes i*31+7, printed by libxxhash 0.8.1
    // through tools/bench/xxh64.
    let vectors: [(Int, UInt64, UInt64)] = [
        (0, 0xef46db3751d8e999, 0xac75fda2929b17ef), (1, 0xa96c7f0ce858bbb7, 0x84e535b36672440d),
        (3, 0x56e6957632a487f9, 0xd095a9239060f0a3), (4, 0xc60d15b1e3ff8f04, 0xd4e4b946fb0bfbb4),
        (7, 0xafbefc3d6c6f9a8e, 0x38386302628c52dc), (8, 0x3da5c7aa269683e0, 0x3748218f9083d1c1),
        (31, 0x4a74f3a1a39ad4a1, 0xb806f858c84789ea), (32, 0x8d57d6a4671cc43d, 0x8ef2e38dde10f162),
        (33, 0x62c9fd21ed857664, 0x5a653650552f822c), (63, 0x5c320a0d2707057f, 0xcdec73bbccfd2d50),
        (64, 0x7bbabbc45729d17e, 0x861fd034d84dab20), (100, 0xefa0ad2d3e70c151, 0x4ac13414471c7284),
        (1000, 0x99594f4828043d35, 0xf8735ce614aeb002),
    ]
    for (n, h0, h1) in vectors {
        let b = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        b.withUnsafeBytes { buffer in
            #expect(xxHash64(buffer) == h0, "length \(n), seed 0")
            #expect(xxHash64(buffer, seed: 0x9E37_79B1) == h1, "length \(n), seed 0x9E3779B1")
        }
    }
}

// MARK: - Round trip

@Test func roundTripIsBitExactAndKeepsTheManifest() throws {
    let dir = try scratchDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/tiny.rnw"
    let model = try writeTiny(to: path)

    let reader = try RNWReader(path: path)
    #expect(reader.spec == model.spec)
    let back = try reader.model()
    #expect(Set(back.tensors.keys) == Set(model.tensors.keys))
    for (name, t) in model.tensors {
        #expect(back.tensors[name]?.shape == t.shape, "\(name)")
        #expect(bits(back.tensors[name]) == bits(t), "\(name) not bit-exact")
    }
    #expect(reader.manifest.tensors.map(\.name) == model.spec.parameters.map(\.name))
    #expect(reader.manifest.provenance == provenance)
    #expect(reader.manifest.provenance?.sourcePath == "model.h5")
    #expect(reader.manifest.parity == parity)
    #expect(reader.manifest.metadata == ["note": "hello", "a": "b"])
    #expect(reader.manifest.formatMajor == UInt32(RNWFormatVersion.major))
}

@Test func layoutAlignsEveryTensorAndEndsAtTheLastOne() throws {
    let dir = try scratchDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/tiny.rnw"
    _ = try writeTiny(to: path)
    let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    #expect(Array(bytes[0..<8]) == [0x52, 0x4E, 0x57, 0x00, 0x0D, 0x0A, 0x1A, 0x0A])
    let reader = try RNWReader(path: path)
    let entries = reader.manifest.tensors
    #expect(entries.allSatisfy { $0.offset % 64 == 0 && $0.dtype == .float32 })
    #expect(zip(entries, entries.dropFirst()).allSatisfy { $0.offset + $0.length <= $1.offset })
    #expect(entries.last.map { $0.offset + $0.length } == UInt64(bytes.count))
}

@Test func oneTensorCanBeReadByName() throws {
    let dir = try scratchDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/tiny.rnw"
    let model = try writeTiny(to: path)
    let reader = try RNWReader(path: path)
    #expect(bits(try reader.tensor(named: "layer1.0.conv1.bias")) == bits(model.tensors["layer1.0.conv1.bias"]))
    #expect(reader.entry(named: "fc.weight")?.shape == [5, 4])
    #expect(reader.entry(named: "nope") == nil)
    #expect(throws: ResNetError.self) { try reader.tensor(named: "nope") }
}

@Test func writingTwiceGivesIdenticalBytesAndReplacesTheDestination() throws {
    let dir = try scratchDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let a = dir + "/a.rnw", b = dir + "/b.rnw"
    _ = try writeTiny(to: a, seed: 5)
    _ = try writeTiny(to: b, seed: 9)
    _ = try writeTiny(to: b, seed: 5)
    #expect(try Data(contentsOf: URL(fileURLWithPath: a)) == Data(contentsOf: URL(fileURLWithPath: b)))
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["a.rnw", "b.rnw"])
}

@Test func writerRefusesAModelThatDoesNotMatchItsSpec() throws {
    let dir = try scratchDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var model = tinyModel()
    model.tensors["fc.bias"] = Tensor(zeros: [6])
    #expect(throws: ResNetError.self) { try RNWWriter.write(model, to: dir + "/x.rnw") }
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
}

// MARK: - Atomicity

private func expectIOError(_ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected an I/O error")
    } catch let e as ResNetError {
        if case .io = e {} else { Issue.record("expected .io, got \(e)") }
        #expect(e.exitCode == 4)
    } catch {
        Issue.record("unexpected error \(error)")
    }
}

@Test func writingIntoAMissingDirectoryFailsWithoutCreatingAnything() throws {
    let dir = try scratchDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    expectIOError { _ = try writeTiny(to: dir + "/missing/out.rnw") }
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
}

@Test func failingHalfwayLeavesTheOldDestinationAndNoTemporaryFile() throws {
    let dir = try scratchDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/out.rnw"
    _ = try writeTiny(to: path, seed: 3)
    let before = try Data(contentsOf: URL(fileURLWithPath: path))
    for limit in [0, 10, 40, 100, 700, before.count - 1] {
        expectIOError {
            // Same manifest size as the existing file, so the last limit stops one byte short of the end.
            try RNWWriter.write(tinyModel(seed: 4), to: path, provenance: provenance, parity: parity,
                                metadata: ["note": "hello", "a": "b"], failAfterBytes: limit)
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before, "destination changed (fail after \(limit))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["out.rnw"], "temporary file left (fail after \(limit))")
    }
}

@Test func aDirectoryInTheWayIsLeftUntouched() throws {
    let dir = try scratchDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/out.rnw"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    try Data("keep".utf8).write(to: URL(fileURLWithPath: path + "/inside"))
    expectIOError { _ = try writeTiny(to: path) }
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["out.rnw"])
    #expect(try FileManager.default.contentsOfDirectory(atPath: path) == ["inside"])
}

@Test(.disabled(if: getuid() == 0, "root ignores directory permissions, so a read-only directory cannot make the write fail"))
func writingIntoAReadOnlyDirectoryFails() throws {
    let dir = try scratchDirectory()
    defer {
        chmod(dir, 0o755)
        try? FileManager.default.removeItem(atPath: dir)
    }
    let path = dir + "/out.rnw"
    _ = try writeTiny(to: path, seed: 3)
    let before = try Data(contentsOf: URL(fileURLWithPath: path))
    chmod(dir, 0o555)
    expectIOError { _ = try writeTiny(to: path, seed: 4) }
    #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["out.rnw"])
}

// MARK: - Damage is detected

private func tinyImage() throws -> (bytes: [UInt8], manifestEnd: Int, entries: [RNWTensorEntry]) {
    let dir = try scratchDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/tiny.rnw"
    _ = try writeTiny(to: path)
    let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    let manifestLength = bytes[16..<24].reversed().reduce(0) { $0 << 8 | Int($1) }
    return (bytes, 40 + manifestLength, try RNWReader(path: path).manifest.tensors)
}

@Test func everyFlippedByteIsReportedAsCorruptionOfItsRegion() throws {
    let (clean, manifestEnd, entries) = try tinyImage()
    #expect(parseError(clean) == nil)
    var counts = (header: 0, manifest: 0, tensor: 0, padding: 0)
    for position in 0..<clean.count {
        var bytes = clean
        bytes[position] ^= UInt8(1) << UInt8(position % 8)
        let p = place(parseError(bytes))
        guard let p else {
            Issue.record("flip at byte \(position) (bit \(position % 8)) not reported as invalid input")
            continue
        }
        if position < 40 {
            #expect(p.hasPrefix("header"), "byte \(position): \(p)")
            counts.header += 1
        } else if position < manifestEnd {
            #expect(p.hasPrefix("manifest"), "byte \(position): \(p)")
            counts.manifest += 1
        } else if let e = entries.first(where: { UInt64(position) >= $0.offset && UInt64(position) < $0.offset + $0.length }) {
            #expect(p.hasPrefix("tensor \(e.name) "), "byte \(position): \(p)")
            counts.tensor += 1
        } else {
            #expect(p.hasPrefix("padding"), "byte \(position): \(p)")
            counts.padding += 1
        }
    }
    // The sweep really covered every region.
    #expect(counts.header == 40 && counts.manifest > 100 && counts.tensor > 100 && counts.padding > 0)
}

@Test func aFlippedDataByteIsAcceptedOnlyWhenChecksumsAreSkipped() throws {
    let (clean, _, entries) = try tinyImage()
    var bytes = clean
    bytes[Int(entries[0].offset) + 5] ^= 0x10
    #expect(place(parseError(bytes))?.hasPrefix("tensor conv1.weight") == true)
    #expect(parseError(bytes, verifyChecksums: false) == nil)
}

@Test func aFlippedByteInAFileOnDiskIsRefused() throws {
    let dir = try scratchDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/tiny.rnw"
    _ = try writeTiny(to: path)
    var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    bytes[bytes.count - 3] ^= 0x40
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    #expect(throws: ResNetError.self) { try RNWReader(path: path) }
}

@Test func everyTruncationIsRefused() throws {
    let (clean, _, _) = try tinyImage()
    for length in 0..<clean.count {
        let e = parseError(Array(clean[0..<length]))
        #expect(place(e) != nil, "truncation to \(length) bytes not refused as invalid input: \(String(describing: e))")
    }
    let dir = try scratchDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    for length in [0, 7, 39, 41, clean.count - 1] {
        let path = dir + "/cut\(length).rnw"
        try Data(clean[0..<length]).write(to: URL(fileURLWithPath: path))
        #expect(throws: ResNetError.self, "\(length) bytes") { try RNWReader(path: path) }
    }
}

@Test func trailingBytesAreRefused() throws {
    let (clean, _, _) = try tinyImage()
    #expect(place(parseError(clean + [0])) == "end of file")
}

/// Rewrites header fields and recomputes the header checksum, as a genuine writer would.
private func withHeader(_ bytes: [UInt8], major: UInt16? = nil, flags: UInt32? = nil) -> [UInt8] {
    var b = bytes
    if let major { b[8] = UInt8(major & 0xFF); b[9] = UInt8(major >> 8) }
    if let flags { for i in 0..<4 { b[12 + i] = UInt8(truncatingIfNeeded: flags >> (8 * UInt32(i))) } }
    let sum = b.withUnsafeBytes { xxHash64(UnsafeRawBufferPointer(rebasing: $0[0..<32])) }
    for i in 0..<8 { b[32 + i] = UInt8(truncatingIfNeeded: sum >> (8 * UInt64(i))) }
    return b
}

@Test func aNewerMajorVersionIsRefusedNamingBothVersions() throws {
    let (clean, _, _) = try tinyImage()
    let e = parseError(withHeader(clean, major: RNWFormatVersion.major + 1))
    guard case let .unsupported(_, location, reason)? = e else {
        Issue.record("expected .unsupported, got \(String(describing: e))")
        return
    }
    #expect(location == "header")
    // A float32-only file is stamped with the oldest minor that describes it, not the newest.
    let fileMinor = UInt16(clean[10]) | UInt16(clean[11]) << 8
    #expect(reason.contains("\(RNWFormatVersion.major + 1).\(fileMinor)"))
    #expect(reason.contains("\(RNWFormatVersion.major).\(RNWFormatVersion.minor)"))
    #expect(place(parseError(withHeader(clean, major: 0))) == "header")
}

@Test func unknownFlagsAreRefused() throws {
    let (clean, _, _) = try tinyImage()
    guard case .unsupported? = parseError(withHeader(clean, flags: 1)) else {
        Issue.record("flags not refused")
        return
    }
}

@Test func wrongMagicIsRefused() throws {
    let (clean, _, _) = try tinyImage()
    let zip: [UInt8] = [0x50, 0x4B, 0x03, 0x04]
    for bad in [zip + clean.dropFirst(4), Array("RNW\0\n\r\u{1A}\n".utf8) + clean.dropFirst(8), zip] {
        let e = parseError(bad)
        #expect(place(e) == "header bytes 0..<8", "\(String(describing: e))")
        #expect(e.map { "\($0)" }?.contains("magic") == true)
    }
}

@Test func aHostileSpecIsRefusedNotCrashedOn() throws {
    // A conv with a one-element kernel would make ResNetSpec.parameters index out of range.
    var spec = tinySpec()
    spec.stem[0] = .conv(ConvOp(name: "conv1", inChannels: 3, outChannels: 4, kernel: [3], padding: .same, bias: false))
    let json = try JSONEncoder().encode(spec)
    let manifest = RNWManifest(formatMajor: 1, formatMinor: 0, specJSON: Array(json), tensors: [], provenance: nil,
                               parity: [], metadata: [:])
    let body = try packManifest(manifest, file: "x")
    let header = RNWHeader(major: 1, minor: 0, flags: 0, manifestLength: UInt64(body.count),
                           manifestChecksum: body.withUnsafeBytes { xxHash64($0) }).encoded()
    #expect(place(parseError(header + body)) == "manifest spec_json")
}
