import Foundation
import Testing
import ResNetKit  // deliberately not @testable: everything here must work through the public API

/// The package root, from this file's path, so the tests run from any working directory.
private let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
private let fixtures = root.appendingPathComponent("fixtures")

private func scratch() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("public-api-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

@Test func aLoaderOpensASourceFileConvertsItAndRunsTheStoredModel() throws {
    let dir = try scratch()
    defer { try? FileManager.default.removeItem(at: dir) }
    let h5 = fixtures.appendingPathComponent("keras/kapp-resnet-v1/tfkeras2.model.h5").path
    let io = fixtures.appendingPathComponent("keras/kapp-resnet-v1/io.npz").path

    // Open any supported file: the canonical model, its spec and where each tensor came from.
    let loaded = try loadModel(path: h5)
    #expect(loaded.model.spec.classes == 10)
    #expect(loaded.mapping.contains { $0.canonical == "conv1.weight" })

    // Convert and write at a narrow dtype with BN folded; parity is re-measured at that dtype.
    let out = dir.appendingPathComponent("m.rnw").path
    let report = try convert(input: h5, output: out, options: ConversionOptions(expect: io, dtype: .float16, foldBatchNorm: true))
    #expect(report.passed)
    #expect(report.checks.contains { $0.reference.contains("stored model") && $0.passed })

    // Open the .rnw: spec, tensors by canonical name, the recorded parity.
    let file = try RNWReader(path: out)
    #expect(file.manifest.formatMajor == UInt32(RNWFormatVersion.major))
    #expect(file.manifest.parity.count == report.checks.count - 1)   // read-back is reported, not stored
    #expect(file.spec.allOps.allSatisfy { if case .batchNorm = $0 { return false } else { return true } })
    #expect(file.entry(named: "conv1.weight")?.dtype == .float16)
    #expect(file.entry(named: "conv1.bias")?.dtype == .float32)
    let bias = try file.tensor(named: "conv1.bias")
    let direct = try file.withFloat32Bytes(named: "conv1.bias") { Array($0.bindMemory(to: Float.self)) }
    #expect(direct == bias.data)
    #expect(try file.withFloat32Bytes(named: "conv1.weight") { _ in 0 } == nil, "a float16 tensor is not handed out as float32 bytes")

    // Run the forward pass on the goldens and judge it by the float16 policy.
    let goldens = try Goldens(path: io, inputChannels: file.spec.inputChannels)
    let output = try forward(try file.model(), input: goldens.input)
    let policy = TolerancePolicy.forStorage(.float16, spec: file.spec)
    #expect(try policy.compare(output: output, reference: goldens.output.reshaped(output.shape)).passed)

    // The same model, written directly by the library.
    let (folded, _) = try loaded.model.foldingBatchNorm()
    let direct8 = dir.appendingPathComponent("d.rnw").path
    try RNWWriter.write(folded, to: direct8, dtype: .int8)
    let readBack = try RNWReader.readModel(at: direct8)
    let expected = try storedModel(folded, dtype: .int8)
    #expect(readBack.tensors == expected.tensors)

    // inspect works on both kinds of file.
    #expect(try inspectFile(path: out).tensors.count == file.manifest.tensors.count)
}

@Test func aDamagedFileIsAnInvalidInputErrorWithExitCodeThree() throws {
    let dir = try scratch()
    defer { try? FileManager.default.removeItem(at: dir) }
    var bytes = try Data(contentsOf: fixtures.appendingPathComponent("rnw/seed-keras.v1.1.f16.rnw"))
    bytes[bytes.count - 3] ^= 0x01
    let path = dir.appendingPathComponent("bad.rnw").path
    try bytes.write(to: URL(fileURLWithPath: path))
    do {
        _ = try RNWReader(path: path)
        Issue.record("a flipped byte was not detected")
    } catch let error as ResNetError {
        #expect(error.exitCode == 3)
        #expect(error.description.contains("checksum"))
    }
}

@Test func readLimitsAreSetThroughThePublicAPI() throws {
    let pth = fixtures.appendingPathComponent("torch/tv-resnet18-mini/tv-resnet18-mini.pth").path
    var tight = ReadLimits.standard
    tight.maxTensorBytes = try #require(ReadLimits.parseByteCount("1K"))
    #expect(throws: ResNetError.self) { _ = try loadModel(path: pth, limits: tight) }
    #expect(throws: ResNetError.self) { try tight.apply { _ = try loadModel(path: pth) } }
    _ = try loadModel(path: pth)
}
