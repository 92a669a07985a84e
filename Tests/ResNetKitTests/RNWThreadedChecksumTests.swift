import Foundation
import Testing
@testable import ResNetKit

/// Files above 8 MB of tensors have their checksums computed on several threads; the small
/// fixtures elsewhere never reach that path, so these tests build a 12 MB file.
@Suite struct RNWThreadedChecksumTests {
    /// Stem conv + BN, one basic block of two 3x3 convolutions at 384 channels (5.3 MB each), dense head.
    static func wideSpec() -> ResNetSpec {
        let c = 384
        return spec(
            channels: 3,
            stem: [.conv(ConvOp(name: "conv1", inChannels: 3, outChannels: c, kernel: [3, 3], stride: [2, 2], padding: .symmetric(1), bias: false)),
                   .batchNorm(BatchNormOp(name: "bn1", channels: c, epsilon: 1e-5)), .relu],
            stages: [Stage(blocks: [Block(
                name: "layer1.0",
                residual: [
                    .conv(ConvOp(name: "layer1.0.conv1", inChannels: c, outChannels: c, kernel: [3, 3], padding: .symmetric(1), bias: false)),
                    .batchNorm(BatchNormOp(name: "layer1.0.bn1", channels: c, epsilon: 1e-5)), .relu,
                    .conv(ConvOp(name: "layer1.0.conv2", inChannels: c, outChannels: c, kernel: [3, 3], padding: .symmetric(1), bias: false)),
                    .batchNorm(BatchNormOp(name: "layer1.0.bn2", channels: c, epsilon: 1e-5)),
                ],
                post: [.relu])])],
            head: [.globalAvgPool, .dense(DenseOp(name: "fc", inFeatures: c, outFeatures: 10, bias: true))],
            classes: 10)
    }

    static func image() throws -> (model: ResNetModel, bytes: Data) {
        let model = randomModel(wideSpec(), seed: 42)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rnw-threaded-\(UUID().uuidString).rnw").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try RNWWriter.write(model, to: path)
        return (model, try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    @Test func aLargeFileIsVerifiedAndReadBitForBit() throws {
        let (model, bytes) = try Self.image()
        let total = model.tensors.values.reduce(0) { $0 + $1.count * 4 }
        #expect(total > 8 << 20, "the file must be large enough for the threaded path")
        let reader = try RNWReader(data: bytes, name: "wide.rnw")
        let back = try reader.model()
        for (name, t) in model.tensors {
            #expect(back.tensors[name].map { bitIdentical($0, t) } == true, "\(name) differs")
        }
    }

    @Test func aFlippedByteInAnyTensorNamesThatTensor() throws {
        let (_, bytes) = try Self.image()
        let entries = try RNWReader(data: bytes, name: "wide.rnw").manifest.tensors
        for e in entries {
            var damaged = bytes
            damaged[Int(e.offset + e.length / 2)] ^= 0x10
            do {
                _ = try RNWReader(data: damaged, name: "wide.rnw")
                Issue.record("flip inside \(e.name) was not detected")
            } catch let error as ResNetError {
                #expect(error.exitCode == 3)
                #expect(error.description.contains("tensor \(e.name) bytes"), "\(error)")
            }
        }
    }

    @Test func withTwoDamagedTensorsTheFirstInManifestOrderIsNamed() throws {
        let (_, bytes) = try Self.image()
        let entries = try RNWReader(data: bytes, name: "wide.rnw").manifest.tensors
        // The largest and the smallest tensor land on different threads; the report must not
        // depend on which thread finishes first.
        let big = entries.max { $0.length < $1.length }!
        let small = entries.min { $0.length < $1.length }!
        var damaged = bytes
        for e in [big, small] { damaged[Int(e.offset)] ^= 0x01 }
        let first = entries.first { $0.name == big.name || $0.name == small.name }!
        #expect(throws: ResNetError.self) { _ = try RNWReader(data: damaged, name: "wide.rnw") }
        do { _ = try RNWReader(data: damaged, name: "wide.rnw") } catch let error as ResNetError {
            #expect(error.description.contains("tensor \(first.name) bytes"), "\(error)")
        }
    }
}

/// `readModel(at:)` and `loadModel(path:)` hash while they copy (`RNWReader.openAndRead`); a
/// flipped byte must still stop them, naming the tensor.
@Suite struct RNWReadWhileHashingTests {
    @Test func aFlippedByteStopsEveryPathBasedReader() throws {
        let (model, bytes) = try RNWThreadedChecksumTests.image()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rnw-hash-copy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = dir.appendingPathComponent("good.rnw")
        try bytes.write(to: good)
        let back = try RNWReader.readModel(at: good.path)
        #expect(back.tensors.allSatisfy { name, t in model.tensors[name].map { bitIdentical($0, t) } == true })
        #expect(try loadModel(path: good.path).model.tensors.count == model.tensors.count)

        let entries = try RNWReader(data: bytes, name: "good.rnw").manifest.tensors
        for e in entries {
            var damaged = bytes
            damaged[Int(e.offset + e.length - 1)] ^= 0x80
            let path = dir.appendingPathComponent("bad.rnw").path
            try damaged.write(to: URL(fileURLWithPath: path))
            for (label, read) in [("readModel(at:)", { _ = try RNWReader.readModel(at: path) }),
                                  ("loadModel(path:)", { _ = try loadModel(path: path) })] as [(String, () throws -> Void)] {
                do {
                    try read()
                    Issue.record("\(label): flip in \(e.name) was not detected")
                } catch let error as ResNetError {
                    #expect(error.exitCode == 3)
                    #expect(error.description.contains("tensor \(e.name) bytes"), "\(label): \(error)")
                }
            }
        }
    }
}

/// The copying hash must equal the plain one and copy exactly, at every length around the
/// 32-byte stripe and 8/4-byte tail boundaries and at every misalignment.
@Test func theCopyingHashEqualsXXHash64AndCopiesExactly() {
    var rng = SplitMix64(state: 99)
    let data = (0..<(1 << 16) + 7).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    data.withUnsafeBytes { all in
        for misalign in 0..<4 {
            for n in Array(0..<300) + [4095, 4096, 65_531] {
                let src = UnsafeRawBufferPointer(rebasing: all[misalign..<(misalign + n)])
                var out = [UInt8](repeating: 0xEE, count: n + 8)
                let sum = out.withUnsafeMutableBytes { xxHash64Copying(src, to: $0.baseAddress! + 3) }
                #expect(sum == xxHash64(src), "length \(n), offset \(misalign)")
                #expect(Array(out[3..<(3 + n)]) == Array(src), "copy, length \(n), offset \(misalign)")
                #expect(out[0..<3].allSatisfy { $0 == 0xEE } && out[(3 + n)...].allSatisfy { $0 == 0xEE }, "wrote outside, length \(n)")
            }
        }
    }
}
