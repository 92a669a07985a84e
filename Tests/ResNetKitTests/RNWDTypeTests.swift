import Foundation
import Testing
@testable import ResNetKit

// Storage dtypes, BN folding and the tolerance policy. Reference conversions come from Swift's own
// Float16 (the compiler's IEEE conversion), never from numbers typed in here.


@Test func everyFloat16ValueSurvivesWideningAndNarrowing() {
    for h in 0...UInt16.max {
        let f = float16Value(h)
        #expect(f.isNaN == Float16(bitPattern: h).isNaN)
        if f.isNaN {
            #expect(float16Value(float16Bits(f)).isNaN)
        } else {
            #expect(f == Float(Float16(bitPattern: h)), "widening \(h)")
            #expect(float16Bits(f) == h, "narrowing back \(h)")
        }
    }
}

@Test func float16NarrowingMatchesTheCompilersRoundToNearestEven() {
    var rng = SplitMix64(state: 7)
    var checked = 0
    // Random bit patterns cover every exponent; the scaled ones crowd the binary16 range, where
    // normal/subnormal/overflow rounding happens, and the midpoints test ties to even.
    for i in 0..<400_000 {
        let x: Float
        switch i % 3 {
        case 0: x = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))
        case 1: x = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0x8FFF_FFFF | 0x3000_0000)
        default:
            let h = UInt16(truncatingIfNeeded: rng.next()) & 0x7BFF
            x = (float16Value(h) + float16Value(h + 1)) / 2   // exact midpoint in float32
        }
        if x.isNaN { continue }
        #expect(float16Bits(x) == Float16(x).bitPattern, "x = \(x) (bits \(String(x.bitPattern, radix: 16)))")
        checked += 1
    }
    #expect(checked > 300_000)
}

@Test func bfloat16NarrowingIsNearestWithTiesToEven() {
    var rng = SplitMix64(state: 11)
    for _ in 0..<200_000 {
        let x = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))
        guard x.isFinite else { continue }
        let b = bfloat16Bits(x)
        let y = bfloat16Value(b)
        // The two bfloat16 neighbours of x are the truncation and the next one up in magnitude.
        let down = bfloat16Value(UInt16(x.bitPattern >> 16))
        let up = bfloat16Value(UInt16(x.bitPattern >> 16) + 1)
        // IEEE rounds past the largest finite value as if the next step were 2^128.
        let upValue = up.isInfinite ? (up < 0 ? -0x1p128 : 0x1p128) : Double(up)
        let dDown = abs(Double(x) - Double(down)), dUp = abs(Double(x) - upValue)
        #expect(y == (dDown < dUp ? down : dUp < dDown ? up : ((x.bitPattern >> 16) & 1 == 0 ? down : up)), "x = \(x)")
    }
    #expect(bfloat16Value(bfloat16Bits(.nan)).isNaN)
    #expect(bfloat16Value(bfloat16Bits(.infinity)) == .infinity)
    #expect(bfloat16Value(bfloat16Bits(-Float.greatestFiniteMagnitude)) == -.infinity)   // rounds past the largest bfloat16
}

@Test func int8KeepsEachChannelsPeakAndErrsAtMostHalfAStep() throws {
    var rng = SplitMix64(state: 3)
    let shape = [5, 3, 3, 3]
    var data = (0..<135).map { _ in Float.random(in: -2...2, using: &rng) }
    for i in 27..<54 { data[i] = 0 }            // an all-zero output channel
    for i in 54..<81 { data[i] *= 1e-3 }        // a channel at another scale
    let t = Tensor(shape: shape, data: data)
    let q = try quantizeInt8(t, name: "w", file: "test")
    #expect(q.scales.count == 5)
    #expect(q.scales[1] == 0)
    let back = try storedModelTensor(t, dtype: .int8)
    for o in 0..<5 {
        let row = (o * 27)..<((o + 1) * 27)
        let peak = row.map { abs(data[$0]) }.max()!
        if peak > 0 { #expect(row.map { abs(Int(q.values[$0])) }.max() == 127, "channel \(o) uses the full range") }
        for i in row {
            #expect(abs(Double(back[i]) - Double(data[i])) <= Double(q.scales[o]) / 2 * (1 + 1e-6), "element \(i)")
            #expect(q.values[i] != -128)
        }
    }
}

@Test func int8RefusesNonFiniteWeights() {
    #expect(throws: ResNetError.self) { try quantizeInt8(Tensor(shape: [2, 2], data: [1, .nan, 0, 1]), name: "w", file: "t") }
    #expect(throws: ResNetError.self) { try quantizeInt8(Tensor(shape: [1, 2], data: [.infinity, 1]), name: "w", file: "t") }
}

/// One tensor through the same encode/decode path a file takes.
private func storedModelTensor(_ t: Tensor, dtype: DType) throws -> [Float] {
    let e = try encodeTensor(t, name: "w", dtype: dtype, file: "test")
    return e.bytes.withUnsafeBytes { decodeTensor($0, dtype: e.dtype, shape: e.shape, scales: e.scales) }
}

// MARK: - Small models

/// A model with conv→BN (foldable, with and without conv bias and BN scale/center), conv→ReLU→BN
/// (not foldable), a pre-activation BN and a projection shortcut.
private func foldSpec() -> ResNetSpec {
    ResNetSpec(
        family: "fold-test", inputChannels: 3, classes: 4, inputSize: [9, 9],
        stem: [
            .conv(ConvOp(name: "conv1", inChannels: 3, outChannels: 6, kernel: [3, 3], stride: [2, 2], padding: .same, bias: true)),
            .batchNorm(BatchNormOp(name: "bn1", channels: 6, epsilon: 1.001e-5)),
            .relu,
        ],
        stages: [Stage(blocks: [Block(
            name: "layer1.0",
            pre: [.batchNorm(BatchNormOp(name: "layer1.0.prebn", channels: 6, epsilon: 1e-3)), .relu],
            residual: [
                .conv(ConvOp(name: "layer1.0.conv1", inChannels: 6, outChannels: 8, kernel: [3, 3], padding: .symmetric(1), groups: 2, bias: false)),
                .relu,
                .batchNorm(BatchNormOp(name: "layer1.0.bn1", channels: 8, epsilon: 1e-5)),
                .conv(ConvOp(name: "layer1.0.conv2", inChannels: 8, outChannels: 8, kernel: [1, 1], padding: .valid, bias: false)),
                .batchNorm(BatchNormOp(name: "layer1.0.bn2", channels: 8, epsilon: 1e-3, scale: false, center: false)),
            ],
            shortcut: [
                .conv(ConvOp(name: "layer1.0.downsample.0", inChannels: 6, outChannels: 8, kernel: [1, 1], padding: .valid, bias: false)),
                .batchNorm(BatchNormOp(name: "layer1.0.downsample.1", channels: 8, epsilon: 1e-5, scale: true, center: false)),
            ],
            post: [.relu])])],
        head: [.globalAvgPool, .dense(DenseOp(name: "fc", inFeatures: 8, outFeatures: 4, bias: true))])
}

private func randomFoldModel(_ spec: ResNetSpec, seed: UInt64) -> ResNetModel {
    var rng = SplitMix64(state: seed)
    var tensors: [String: Tensor] = [:]
    for p in spec.parameters {
        let n = p.shape.reduce(1, *)
        let values: [Float] = (0..<n).map { _ in
            p.name.hasSuffix("running_var") ? Float.random(in: 0.5...2, using: &rng) : Float.random(in: -1...1, using: &rng)
        }
        tensors[p.name] = Tensor(shape: p.shape, data: values)
    }
    return ResNetModel(spec: spec, tensors: tensors)
}

@Test func foldingRemovesOnlyBatchNormsThatDirectlyFollowAConvAndKeepsTheFunction() throws {
    let model = randomFoldModel(foldSpec(), seed: 5)
    let (folded, names) = try model.foldingBatchNorm()
    #expect(names == ["bn1", "layer1.0.bn2", "layer1.0.downsample.1"])
    let kept = folded.spec.allOps.compactMap { op -> String? in if case let .batchNorm(b) = op { return b.name } else { return nil } }
    #expect(kept == ["layer1.0.prebn", "layer1.0.bn1"])
    #expect(folded.spec.parameters.contains { $0.name == "layer1.0.conv2.bias" })
    #expect(folded.tensors["bn1.running_mean"] == nil)

    let x = Verifier.deterministicInput(shape: [2, 3, 9, 9], seed: 99)
    for engine in ForwardEngine.allCases {
        let a = try forward(model, input: x, engine: engine)
        let b = try forward(folded, input: x, engine: engine)
        let report = try ParityReport(output: b, reference: a)
        #expect(report.passed, "\(engine): \(report.text)")
    }
}

@Test func writingAtEachDtypeReadsBackAsTheStoredModel() throws {
    let dir = try Paths.temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let model = randomFoldModel(foldSpec(), seed: 8)
    for dtype in [DType.float32, .float16, .bfloat16, .int8] {
        let path = dir.appendingPathComponent("m.\(dtype.rawValue).rnw").path
        try RNWWriter.write(model, to: path, dtype: dtype)
        let reader = try RNWReader(path: path)
        #expect(reader.manifest.formatMinor == (dtype == .float32 ? 0 : 1), "a float32-only file stays readable by 1.0 readers")
        let expected = try storedModel(model, dtype: dtype)
        let back = try reader.model()
        for (name, t) in expected.tensors {
            #expect(back.tensors[name]?.data.map(\.bitPattern) == t.data.map(\.bitPattern), "\(dtype.rawValue) \(name)")
            let stored = reader.entry(named: name)!.dtype
            let narrowed = name.hasSuffix(".weight") && !name.contains("bn") && !name.hasSuffix("downsample.1.weight")
            #expect(stored == (narrowed ? dtype : .float32), "\(name) stored as \(stored.rawValue)")
        }
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        testLog("fold-test model at \(dtype.rawValue): \(size) bytes")
    }
}

@Test func aFlippedScaleOrInt8DataByteIsCaught() throws {
    let dir = try Paths.temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let path = dir.appendingPathComponent("q.rnw").path
    try RNWWriter.write(randomFoldModel(foldSpec(), seed: 9), to: path, dtype: .int8)
    let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    let reader = try RNWReader(path: path)
    let entry = reader.entry(named: "conv1.weight")!
    #expect(entry.dtype == .int8)
    // The scales live in the manifest: find the first one's bytes there.
    let scaleBytes = withUnsafeBytes(of: entry.scales[0].bitPattern.littleEndian) { Array($0) }
    let manifestEnd = 40 + Int(readLE(original.withUnsafeBytes { $0 }, 16, as: UInt64.self))
    let at = (40..<manifestEnd).first { i in Array(original[i..<(i + 4)]) == scaleBytes }
    #expect(at != nil)
    for position in [at ?? 40, Int(entry.offset), Int(entry.offset + entry.length) - 1] {
        var bytes = original
        bytes[position] ^= 0x10
        #expect(throws: ResNetError.self) { try bytes.withUnsafeBytes { try parseRNW($0, file: "q.rnw", verifyChecksums: true) } }
    }
}

@Test func negativeOrNonFiniteScalesAreRefused() throws {
    let spec = ResNetSpec(family: "s", inputChannels: 1, classes: 2, stem: [],
                          stages: [], head: [.flatten(.chw), .dense(DenseOp(name: "fc", inFeatures: 1, outFeatures: 2, bias: false))])
    let model = ResNetModel(spec: spec, tensors: ["fc.weight": Tensor(shape: [2, 1], data: [1, -2])])
    let encoded = try encodeModel(model, dtype: .int8, file: "t")
    for bad: Float in [-1, .nan, .infinity] {
        var tensors = encoded
        tensors[0].scales[1] = bad
        let (header, manifest, entries) = try RNWWriter.layout(spec: spec, tensors: tensors, provenance: nil, parity: [], metadata: [:], file: "t")
        var bytes = header + manifest
        bytes += [UInt8](repeating: 0, count: Int(entries[0].offset) - bytes.count) + tensors[0].bytes
        #expect(throws: ResNetError.self) { try bytes.withUnsafeBytes { try parseRNW($0, file: "t", verifyChecksums: true) } }
    }
}

// MARK: - Tolerance policy

@Test func narrowFloatBoundsGrowWithDepthAndUnitRoundoff() {
    let spec = foldSpec()
    let d = TolerancePolicy.weightDepth(spec)
    #expect(d == 4)   // conv1, then the block's longer branch (2 convs), then fc
    let f16 = TolerancePolicy.forStorage(.float16, spec: spec), bf16 = TolerancePolicy.forStorage(.bfloat16, spec: spec)
    #expect(f16.maxRelativeError == 2 * 0x1p-11)
    #expect(bf16.maxRelativeError == 2 * 0x1p-8)
    #expect(TolerancePolicy.forStorage(.float32, spec: spec) == .float32)
}

@Test func int8PolicyJudgesTopOneAndCosine() throws {
    let policy = TolerancePolicy.forStorage(.int8, spec: foldSpec())
    let ref = Tensor(shape: [2, 3], data: [0.1, 0.5, 0.2, 0.7, 0.1, 0.3])
    #expect(try policy.compare(output: Tensor(shape: [2, 3], data: [0.11, 0.49, 0.2, 0.69, 0.1, 0.31]), reference: ref).passed)
    // One row's winner changes: 50% top-1 agreement.
    #expect(try !policy.compare(output: Tensor(shape: [2, 3], data: [0.1, 0.5, 0.2, 0.29, 0.1, 0.3]), reference: ref).passed)
    // Same winners and every error under 0.1, but the cosine is about 0.982.
    let skewed = try policy.compare(output: Tensor(shape: [2, 3], data: [0.01, 0.5, 0.29, 0.7, 0.19, 0.21]), reference: ref)
    #expect(skewed.maxRelativeError <= policy.maxRelativeError && skewed.top1Agreement == [true, true])
    #expect(!skewed.passed)
}
