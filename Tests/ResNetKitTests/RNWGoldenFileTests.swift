import Foundation
import Testing
@testable import ResNetKit

// The committed golden .rnw files (fixtures/rnw), one per format version and dtype: every later
// reader must keep reading them. Each was written by `resnet-convert` from a committed Keras fixture,
// so the tests can compare with the source model and with that fixture's framework goldens.

private struct Golden {
    var file: String
    var major: UInt32, minor: UInt32
    var dtype: DType
    var folded: Bool
    var source: String      // relative to fixtures/keras
    var goldens: String
}

private let goldenFiles: [Golden] = [
    Golden(file: "seed-keras.v1.0.f32.rnw", major: 1, minor: 0, dtype: .float32, folded: false,
           source: "seed-keras/tfkeras2.model.h5", goldens: "seed-keras/io.npz"),
    Golden(file: "seed-keras.v1.1.f16.rnw", major: 1, minor: 1, dtype: .float16, folded: false,
           source: "seed-keras/tfkeras2.model.h5", goldens: "seed-keras/io.npz"),
    Golden(file: "seed-keras.v1.1.bf16.rnw", major: 1, minor: 1, dtype: .bfloat16, folded: false,
           source: "seed-keras/tfkeras2.model.h5", goldens: "seed-keras/io.npz"),
    Golden(file: "seed-keras.v1.1.int8.rnw", major: 1, minor: 1, dtype: .int8, folded: false,
           source: "seed-keras/tfkeras2.model.h5", goldens: "seed-keras/io.npz"),
    Golden(file: "kapp-resnet-v1.v1.1.f16.bnfold.rnw", major: 1, minor: 1, dtype: .float16, folded: true,
           source: "kapp-resnet-v1/tfkeras2.model.h5", goldens: "kapp-resnet-v1/io.npz"),
]

private func goldenPath(_ g: Golden) -> String { Paths.fixtures.appendingPathComponent("rnw/\(g.file)").path }

@Test(arguments: goldenFiles.map(\.file))
func aCommittedGoldenFileReadsAsItsSourceModelAtItsDtype(_ name: String) throws {
    let g = goldenFiles.first { $0.file == name }!
    let reader = try RNWReader(path: goldenPath(g))
    #expect(reader.manifest.formatMajor == g.major && reader.manifest.formatMinor == g.minor)
    let allPassed = reader.manifest.parity.allSatisfy { $0.passed }
    #expect(allPassed, "the file records passing parity checks")

    // Tensors: exactly the source model after the same folding and narrowing, bit for bit.
    let sourcePath = Paths.fixtures.appendingPathComponent("keras/\(g.source)").path
    var source = try loadModel(path: sourcePath).model
    if g.folded { source = try source.foldingBatchNorm().model }
    #expect(reader.spec == source.spec)
    let expected = try storedModel(source, dtype: g.dtype)
    let back = try reader.model()
    for (tensorName, t) in expected.tensors {
        #expect(back.tensors[tensorName]?.data.map(\.bitPattern) == t.data.map(\.bitPattern), "\(tensorName)")
    }

    // Outputs: within the dtype's tolerance of the framework goldens.
    let goldens = try Goldens(path: Paths.fixtures.appendingPathComponent("keras/\(g.goldens)").path,
                              inputChannels: reader.spec.inputChannels)
    let policy = TolerancePolicy.forStorage(g.dtype, spec: reader.spec)
    let check = try Verifier.checkGoldens(back, goldens: goldens, policy: policy)
    #expect(check.passed, "\(check.detail)")
}

@Test func singleByteFlipsAcrossACommittedFileAreAllCaught() throws {
    let path = Paths.fixtures.appendingPathComponent("rnw/seed-keras.v1.1.int8.rnw").path
    let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    let manifestEnd = 40 + Int(original.withUnsafeBytes { readLE($0, 16, as: UInt64.self) })
    let reader = try RNWReader(path: path)
    let dataStart = Int(reader.manifest.tensors.map(\.offset).min()!)
    // Every header byte, every 7th manifest byte, every 97th byte after the manifest (padding
    // included), and the last byte.
    var positions = Array(0..<40) + Array(stride(from: 40, to: manifestEnd, by: 7))
    positions += Array(stride(from: manifestEnd, to: original.count, by: 97)) + [original.count - 1]
    var regions: [String: Int] = [:]
    for position in positions {
        for mask: UInt8 in [0x01, 0x80] {
            var bytes = original
            bytes[position] ^= mask
            do {
                _ = try bytes.withUnsafeBytes { try parseRNW($0, file: "golden.rnw", verifyChecksums: true) }
                Issue.record("flip of bit \(mask) at byte \(position) was not detected")
            } catch let error as ResNetError {
                guard case let .invalidInput(_, place, _) = error else {
                    // A flip in the version bytes may name a newer version: refused, still exit code 3.
                    #expect(position < 40 && error.exitCode == 3, "byte \(position): \(error)")
                    continue
                }
                let region = position < 40 ? "header" : position < manifestEnd ? "manifest" : position < dataStart ? "padding" : "tensor"
                regions[region, default: 0] += 1
                if position >= dataStart {
                    #expect(place.hasPrefix("tensor ") || place.hasPrefix("padding"), "byte \(position) reported at \(place)")
                }
            }
        }
    }
    testLog("byte-flip sweep of \(positions.count) positions × 2 bits: \(regions.sorted { $0.key < $1.key })")
    #expect(regions["header", default: 0] > 0 && regions["manifest", default: 0] > 0 && regions["tensor", default: 0] > 0)
}

// MARK: - tools/rnw.py

/// A python3 that can import numpy, or nil after printing why the test is skipped.
private func pythonWithNumpy() -> String? {
    for candidate in ["/usr/bin/env"] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: candidate)
        p.arguments = ["python3", "-c", "import numpy"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { continue }
        p.waitUntilExit()
        if p.terminationStatus == 0 { return candidate }
    }
    print("SKIPPED: tools/rnw.py test needs python3 with numpy on PATH (not required for CI)")
    return nil
}

@Test(arguments: goldenFiles.map(\.file))
func theNumpyReaderReadsACommittedGoldenFileBitForBit(_ name: String) throws {
    guard let env = pythonWithNumpy() else { return }
    let g = goldenFiles.first { $0.file == name }!
    let dir = try Paths.temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let npz = dir.appendingPathComponent("t.npz").path
    let p = Process()
    p.executableURL = URL(fileURLWithPath: env)
    p.arguments = ["python3", Paths.packageRoot.appendingPathComponent("tools/rnw.py").path, goldenPath(g), "--npz", npz]
    let err = Pipe()
    p.standardError = err
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    #expect(p.terminationStatus == 0, "rnw.py failed: \(message)")
    guard p.terminationStatus == 0 else { return }

    let arrays = try NPZ.read(path: npz)
    let reader = try RNWReader(path: goldenPath(g))
    #expect(Set(arrays.names) == Set(reader.manifest.tensors.map(\.name)))
    for e in reader.manifest.tensors {
        let theirs = arrays[e.name]?.tensor
        let ours = try reader.tensor(named: e.name)
        #expect(theirs?.shape == ours.shape, "\(e.name)")
        #expect(theirs?.data.map(\.bitPattern) == ours.data.map(\.bitPattern), "\(e.name) differs between rnw.py and RNWReader")
    }
}

@Test func theNumpyReaderRefusesAFlippedByte() throws {
    guard let env = pythonWithNumpy() else { return }
    let dir = try Paths.temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: goldenPath(goldenFiles[3]))))
    for position in [5, 100, original.count - 1] {
        var bytes = original
        bytes[position] ^= 0x04
        let path = dir.appendingPathComponent("flip\(position).rnw").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: env)
        p.arguments = ["python3", Paths.packageRoot.appendingPathComponent("tools/rnw.py").path, path]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 3, "rnw.py accepted a flip at byte \(position)")
    }
}
