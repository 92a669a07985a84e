import Foundation
import Testing
import ResNetKit

// MARK: - helpers

/// Deterministic generator (SplitMix64) so random specs and weights are the same on every run.
struct SeededRandom {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    mutating func float() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
    mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
    mutating func pick<T>(_ items: [T]) -> T { items[int(0...(items.count - 1))] }
    mutating func tensor(_ shape: [Int]) -> Tensor { Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in float() }) }
    /// A random tensor from a copy of this generator (for one-off tensors in expressions).
    func tensorCopy(_ shape: [Int]) -> Tensor { var copy = self; return copy.tensor(shape) }
}

/// The error `body` throws, if it is a ResNetError.
func thrownError(_ body: () throws -> Any) -> ResNetError? {
    do { _ = try body(); return nil } catch let e as ResNetError { return e } catch { return nil }
}

func isMapping(_ e: ResNetError?) -> Bool { if case .mapping? = e { return true }; return false }
func isInvalidInput(_ e: ResNetError?) -> Bool { if case .invalidInput? = e { return true }; return false }

/// A small ResNet that uses every op and every shortcut kind: identity, pre-activation with a
/// grouped dilated bottleneck, 1x1 conv projection, option A (subsample + channel padding),
/// average-pool + channel padding, and a 1x1 max-pool shortcut after zero padding. Input 3x12x12.
func smallResNet() -> ResNetSpec {
    let stem: [Op] = [conv("conv1", 3, 8, k: 3, padding: .same), bn("bn1", 8), .relu,
                      .maxPool(PoolOp(kernel: [3, 3], stride: [2, 2], padding: .same))]                    // 12 -> 6
    let identity = Block(name: "layer1.0",
                         residual: [conv("layer1.0.conv1", 8, 8, k: 3, padding: .symmetric(1)), bn("layer1.0.bn1", 8), .relu,
                                    conv("layer1.0.conv2", 8, 8, k: 3, padding: .symmetric(1)), bn("layer1.0.bn2", 8)],
                         post: [.relu])
    let preact = Block(name: "layer1.1", pre: [bn("layer1.1.preact", 8, eps: 1.001e-5), .relu],
                       residual: [conv("layer1.1.conv1", 8, 4, k: 1, padding: .valid), bn("layer1.1.bn1", 4, eps: 1e-3), .relu,
                                  conv("layer1.1.conv2", 4, 4, k: 3, d: 2, padding: .symmetric(2), groups: 2), bn("layer1.1.bn2", 4), .relu,
                                  conv("layer1.1.conv3", 4, 8, k: 1, padding: .valid, bias: true)])
    let projection = Block(name: "layer2.0",
                           residual: [conv("layer2.0.conv1", 8, 16, k: 3, s: 2, padding: .same, bias: true), bn("layer2.0.bn1", 16), .relu,
                                      conv("layer2.0.conv2", 16, 16, k: 3, padding: .symmetric(1)), bn("layer2.0.bn2", 16)],
                           shortcut: [conv("layer2.0.downsample.0", 8, 16, k: 1, s: 2, padding: .valid), bn("layer2.0.downsample.1", 16)],
                           post: [.relu])                                                                      // 6 -> 3
    let optionA = Block(name: "layer2.1",
                        residual: [conv("layer2.1.conv1", 16, 24, k: 3, s: 2, padding: .symmetric(1)), bn("layer2.1.bn1", 24)],
                        shortcut: [.subsample(stride: 2), .channelPad(before: 4, after: 4)], post: [.relu])   // 3 -> 2
    let avgShortcut = Block(name: "layer2.2",
                            residual: [conv("layer2.2.conv1", 24, 32, k: 3, s: 2, padding: .same), bn("layer2.2.bn1", 32)],
                            shortcut: [.avgPool(PoolOp(kernel: [2, 2], stride: [2, 2])), .channelPad(before: 4, after: 4)],
                            post: [.relu])                                                                     // 2 -> 1
    let maxShortcut = Block(name: "layer2.3",
                            residual: [.zeroPad(top: 1, bottom: 1, left: 1, right: 1), conv("layer2.3.conv1", 32, 32, k: 3, padding: .valid),
                                       bn("layer2.3.bn1", 32)],
                            shortcut: [.maxPool(PoolOp(kernel: [1, 1], stride: [1, 1]))], post: [.relu])
    return spec(channels: 3, stem: stem,
                stages: [Stage(blocks: [identity, preact]), Stage(blocks: [projection, optionA, avgShortcut, maxShortcut])],
                head: [.globalAvgPool, .dense(DenseOp(name: "fc", inFeatures: 32, outFeatures: 10, bias: true))], classes: 10)
}

/// Random tensors for every parameter of `spec`; BN variances are kept positive.
func randomModel(_ spec: ResNetSpec, seed: UInt64) -> ResNetModel {
    var rng = SeededRandom(seed)
    var tensors: [String: Tensor] = [:]
    for p in spec.parameters {
        var t = rng.tensor(p.shape)
        if p.name.hasSuffix("running_var") { t.data = t.data.map { 0.5 + abs($0) } }
        if p.name.hasSuffix(".weight"), p.shape.count == 4 {
            // Scale conv weights by fan-in so activations stay near unit size through deep specs.
            let fanIn = Float(p.shape[1] * p.shape[2] * p.shape[3])
            t.data = t.data.map { $0 * (3 / fanIn).squareRoot() }
        }
        tensors[p.name] = t
    }
    return ResNetModel(spec: spec, tensors: tensors)
}

func spec(channels: Int, stem: [Op], stages: [Stage] = [], head: [Op] = [], classes: Int = 0) -> ResNetSpec {
    ResNetSpec(family: "test", inputChannels: channels, classes: classes, stem: stem, stages: stages, head: head)
}

func conv(_ name: String, _ cin: Int, _ cout: Int, k: Int, s: Int = 1, d: Int = 1, padding: Padding, groups: Int = 1, bias: Bool = false) -> Op {
    .conv(ConvOp(name: name, inChannels: cin, outChannels: cout, kernel: [k, k], stride: [s, s], dilation: [d, d],
                 padding: padding, groups: groups, bias: bias))
}

func bn(_ name: String, _ c: Int, eps: Double = 1e-5) -> Op { .batchNorm(BatchNormOp(name: name, channels: c, epsilon: eps)) }

/// Value at (n, c, h, w) of an NCHW tensor.
func at(_ t: Tensor, _ n: Int, _ c: Int, _ h: Int, _ w: Int) -> Float {
    t.data[((n * t.shape[1] + c) * t.shape[2] + h) * t.shape[3] + w]
}

func expectClose(_ a: Tensor, _ b: Tensor, relative: Double, _ comment: Comment? = nil) throws {
    let report = try ParityReport(output: a, reference: b, tolerance: relative)
    #expect(report.passed, "\(comment?.description ?? "")\n\(report.text)")
}

// MARK: - mathematical properties of single ops

@Suite("Reference and fast forward passes")
struct ForwardTests {
    @Test("an identity 1x1 kernel reproduces its input", arguments: ForwardEngine.allCases)
    func identityPointwiseConv(engine: ForwardEngine) throws {
        var rng = SeededRandom(1)
        let x = rng.tensor([2, 4, 5, 6])
        var w = Tensor(zeros: [4, 4, 1, 1])
        for c in 0..<4 { w.data[c * 4 + c] = 1 }
        let m = ResNetModel(spec: spec(channels: 4, stem: [conv("conv1", 4, 4, k: 1, padding: .valid)]), tensors: ["conv1.weight": w])
        #expect(try forward(m, input: x, engine: engine) == x)
    }

    @Test("a 3x3 delta kernel with same padding reproduces its input", arguments: ForwardEngine.allCases)
    func deltaKernelSame(engine: ForwardEngine) throws {
        var rng = SeededRandom(2)
        let x = rng.tensor([2, 3, 7, 6])
        var w = Tensor(zeros: [3, 3, 3, 3])
        for c in 0..<3 { w.data[((c * 3 + c) * 3 + 1) * 3 + 1] = 1 }
        let m = ResNetModel(spec: spec(channels: 3, stem: [conv("conv1", 3, 3, k: 3, padding: .same)]), tensors: ["conv1.weight": w])
        let y = try forward(m, input: x, engine: engine)
        if engine == .reference {
            #expect(y == x)
        } else {
            // The fast path runs this layer through Winograd, whose transforms round: equal up to float rounding.
            try expectClose(y, x, relative: 1e-6)
        }
    }

    /// A single-tap kernel at (kh, kw) makes out[oh, ow] = x[oh*2 - PT + kh, ow*2 - PL + kw] (0 in padding),
    /// which exposes where TF `same` puts its padding.
    func tapConv(input: Tensor, tap: (Int, Int), engine: ForwardEngine) throws -> Tensor {
        var w = Tensor(zeros: [1, 1, 3, 3])
        w.data[tap.0 * 3 + tap.1] = 1
        let m = ResNetModel(spec: spec(channels: 1, stem: [conv("conv1", 1, 1, k: 3, s: 2, padding: .same)]), tensors: ["conv1.weight": w])
        return try forward(m, input: input, engine: engine)
    }

    @Test("TF same with stride 2 on an even input pads 0 before and 1 after", arguments: ForwardEngine.allCases)
    func sameStride2EvenInput(engine: ForwardEngine) throws {
        let x = Tensor(shape: [1, 1, 6, 6], data: (0..<36).map { Float($0 + 1) })   // x[h, w] = 6h + w + 1, never 0
        let topLeft = try tapConv(input: x, tap: (0, 0), engine: engine)
        #expect(topLeft.shape == [1, 1, 3, 3])
        for oh in 0..<3 { for ow in 0..<3 { #expect(at(topLeft, 0, 0, oh, ow) == x.data[(2 * oh) * 6 + 2 * ow]) } }
        // The bottom-right tap of the last window reads row/column 6: the one padded cell after.
        let bottomRight = try tapConv(input: x, tap: (2, 2), engine: engine)
        #expect(at(bottomRight, 0, 0, 2, 2) == 0)
        #expect(at(bottomRight, 0, 0, 1, 1) == x.data[4 * 6 + 4])
    }

    @Test("TF same with stride 2 on an odd input pads 1 on each side", arguments: ForwardEngine.allCases)
    func sameStride2OddInput(engine: ForwardEngine) throws {
        let x = Tensor(shape: [1, 1, 7, 7], data: (0..<49).map { Float($0 + 1) })
        let topLeft = try tapConv(input: x, tap: (0, 0), engine: engine)
        #expect(topLeft.shape == [1, 1, 4, 4])
        #expect(at(topLeft, 0, 0, 0, 0) == 0)
        #expect(at(topLeft, 0, 0, 1, 1) == x.data[1 * 7 + 1])
        let bottomRight = try tapConv(input: x, tap: (2, 2), engine: engine)
        #expect(at(bottomRight, 0, 0, 3, 3) == 0)
        #expect(at(bottomRight, 0, 0, 2, 2) == x.data[5 * 7 + 5])
    }

    @Test("convolution bias is added once per output channel", arguments: ForwardEngine.allCases)
    func convBias(engine: ForwardEngine) throws {
        let x = Tensor(zeros: [1, 2, 3, 3])
        let m = ResNetModel(spec: spec(channels: 2, stem: [conv("c", 2, 3, k: 3, padding: .symmetric(1), bias: true)]),
                            tensors: ["c.weight": SeededRandom(3).tensorCopy([3, 2, 3, 3]), "c.bias": Tensor(shape: [3], data: [1, -2, 0.5])])
        let y = try forward(m, input: x, engine: engine)
        for c in 0..<3 { for p in 0..<9 { #expect(y.data[c * 9 + p] == [1, -2, 0.5][c]) } }
    }

    @Test("batch norm uses running statistics and its own epsilon")
    func batchNormKnownStatistics() throws {
        var rng = SeededRandom(4)
        let x = rng.tensor([2, 3, 2, 2])
        let mean: [Float] = [0.5, -1, 2], variance: [Float] = [4, 0.25, 0.001], gamma: [Float] = [2, -1, 0.5], beta: [Float] = [0.1, 0, -3]
        let eps = 1e-3
        let m = ResNetModel(spec: spec(channels: 3, stem: [bn("bn1", 3, eps: eps)]), tensors: [
            "bn1.running_mean": Tensor(shape: [3], data: mean), "bn1.running_var": Tensor(shape: [3], data: variance),
            "bn1.weight": Tensor(shape: [3], data: gamma), "bn1.bias": Tensor(shape: [3], data: beta)])
        let y = try forward(m, input: x)
        var expected = x
        for i in 0..<x.count {
            let c = (i / 4) % 3
            expected.data[i] = Float((Double(x.data[i]) - Double(mean[c])) / (Double(variance[c]) + eps).squareRoot() * Double(gamma[c]) + Double(beta[c]))
        }
        try expectClose(y, expected, relative: 1e-6)

        // scale = false and center = false: no gamma/beta tensors, gamma = 1 and beta = 0.
        let plain = ResNetModel(spec: spec(channels: 3, stem: [.batchNorm(BatchNormOp(name: "bn1", channels: 3, epsilon: eps, scale: false, center: false))]),
                                tensors: ["bn1.running_mean": Tensor(shape: [3], data: mean), "bn1.running_var": Tensor(shape: [3], data: variance)])
        let z = try forward(plain, input: x)
        for i in 0..<x.count {
            let c = (i / 4) % 3
            let e = (Double(x.data[i]) - Double(mean[c])) / (Double(variance[c]) + eps).squareRoot()
            #expect(abs(Double(z.data[i]) - e) <= 1e-5 * max(1, abs(e)))
        }
    }

    @Test("relu clamps negatives to zero and keeps positives")
    func reluValues() throws {
        let x = Tensor(shape: [1, 1, 1, 4], data: [-2, -0.5, 0, 3])
        let y = try forward(ResNetModel(spec: spec(channels: 1, stem: [.relu]), tensors: [:]), input: x)
        #expect(y.data == [0, 0, 0, 3])
    }

    @Test("average pooling with and without counting the padding")
    func avgPoolCountIncludePad() throws {
        let ones = Tensor(shape: [1, 1, 4, 4], data: [Float](repeating: 1, count: 16))
        func pool(_ p: PoolOp) throws -> Tensor {
            try forward(ResNetModel(spec: spec(channels: 1, stem: [.avgPool(p)]), tensors: [:]), input: ones)
        }
        let included = try pool(PoolOp(kernel: [3, 3], stride: [1, 1], padding: .symmetric(1), countIncludePad: true))
        #expect(abs(at(included, 0, 0, 0, 0) - 4 / 9) < 1e-6)      // corner: 4 real cells of 9
        #expect(abs(at(included, 0, 0, 0, 1) - 6 / 9) < 1e-6)      // edge: 6 of 9
        #expect(at(included, 0, 0, 1, 1) == 1)
        let excluded = try pool(PoolOp(kernel: [3, 3], stride: [1, 1], padding: .symmetric(1), countIncludePad: false))
        #expect(excluded.data.allSatisfy { abs($0 - 1) < 1e-6 })
        // TF `same` never counts padding, even when the flag says to.
        let same = try pool(PoolOp(kernel: [3, 3], stride: [2, 2], padding: .same, countIncludePad: true))
        #expect(same.shape == [1, 1, 2, 2])
        #expect(same.data.allSatisfy { abs($0 - 1) < 1e-6 })
    }

    @Test("max pooling never picks a padded cell")
    func maxPoolPaddingIsMinusInfinity() throws {
        let negative = Tensor(shape: [1, 2, 4, 4], data: (0..<32).map { -Float($0) - 1 })
        for padding in [Padding.symmetric(1), .same] {
            let y = try forward(ResNetModel(spec: spec(channels: 2, stem: [.maxPool(PoolOp(kernel: [3, 3], stride: [2, 2], padding: padding))]), tensors: [:]),
                                input: negative)
            #expect(y.data.allSatisfy { $0 < 0 })
            #expect(at(y, 0, 0, 0, 0) == -1)
        }
    }

    @Test("subsample, channel padding and zero padding keep the right cells")
    func shortcutOpsShapesAndValues() throws {
        let x = Tensor(shape: [1, 2, 5, 5], data: (0..<50).map { Float($0 + 1) })
        let sub = try forward(ResNetModel(spec: spec(channels: 2, stem: [.subsample(stride: 2)]), tensors: [:]), input: x)
        #expect(sub.shape == [1, 2, 3, 3])
        for c in 0..<2 { for h in 0..<3 { for w in 0..<3 { #expect(at(sub, 0, c, h, w) == at(x, 0, c, 2 * h, 2 * w)) } } }

        let padded = try forward(ResNetModel(spec: spec(channels: 2, stem: [.subsample(stride: 2), .channelPad(before: 1, after: 2)]), tensors: [:]), input: x)
        #expect(padded.shape == [1, 5, 3, 3])
        for h in 0..<3 { for w in 0..<3 {
            #expect(at(padded, 0, 0, h, w) == 0)
            #expect(at(padded, 0, 1, h, w) == at(sub, 0, 0, h, w))
            #expect(at(padded, 0, 2, h, w) == at(sub, 0, 1, h, w))
            #expect(at(padded, 0, 3, h, w) == 0 && at(padded, 0, 4, h, w) == 0)
        } }

        let zp = try forward(ResNetModel(spec: spec(channels: 2, stem: [.zeroPad(top: 1, bottom: 2, left: 0, right: 3)]), tensors: [:]), input: x)
        #expect(zp.shape == [1, 2, 8, 8])
        #expect(at(zp, 0, 1, 1, 0) == at(x, 0, 1, 0, 0))
        #expect(at(zp, 0, 1, 0, 0) == 0 && at(zp, 0, 1, 6, 0) == 0 && at(zp, 0, 1, 1, 5) == 0)
        #expect(zp.data.reduce(0, +) == x.data.reduce(0, +))
    }

    @Test("global average pooling and both flatten orders")
    func poolingAndFlatten() throws {
        let x = Tensor(shape: [1, 2, 2, 3], data: (0..<12).map(Float.init))
        let gap = try forward(ResNetModel(spec: spec(channels: 2, stem: [.globalAvgPool]), tensors: [:]), input: x)
        #expect(gap.shape == [1, 2] && gap.data == [2.5, 8.5])
        let chw = try forward(ResNetModel(spec: spec(channels: 2, stem: [.flatten(.chw)]), tensors: [:]), input: x)
        #expect(chw.shape == [1, 12] && chw.data == x.data)
        let hwc = try forward(ResNetModel(spec: spec(channels: 2, stem: [.flatten(.hwc)]), tensors: [:]), input: x)
        #expect(hwc.data == [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11])
    }

    @Test("softmax rows sum to one and stay finite for large logits")
    func softmaxStable() throws {
        let x = Tensor(shape: [2, 3, 1, 1], data: [1000, 1001, 999, -3, 0, 2])
        let y = try forward(ResNetModel(spec: spec(channels: 3, stem: [.globalAvgPool, .softmax]), tensors: [:]), input: x)
        for r in 0..<2 {
            let row = Array(y.data[(r * 3)..<(r * 3 + 3)])
            #expect(row.allSatisfy { $0.isFinite && $0 > 0 })
            #expect(abs(row.reduce(0, +) - 1) < 1e-6)
        }
        #expect(abs(Double(y.data[1] / y.data[0]) - exp(1.0)) < 1e-5)
    }

    @Test("dense computes W x + b", arguments: ForwardEngine.allCases)
    func denseValues(engine: ForwardEngine) throws {
        let x = Tensor(shape: [2, 3, 1, 1], data: [1, 2, 3, -1, 0, 1])
        let m = ResNetModel(spec: spec(channels: 3, stem: [.flatten(.chw), .dense(DenseOp(name: "fc", inFeatures: 3, outFeatures: 2, bias: true))]),
                            tensors: ["fc.weight": Tensor(shape: [2, 3], data: [1, 0, -1, 0.5, 0.5, 0.5]), "fc.bias": Tensor(shape: [2], data: [10, 20])])
        #expect(try forward(m, input: x, engine: engine).data == [8, 23, 8, 20])
    }

    // MARK: - whole specs

    @Test("batch rows are computed independently", arguments: ForwardEngine.allCases)
    func batchRowsIndependent(engine: ForwardEngine) throws {
        let m = randomModel(smallResNet(), seed: 7)
        var rng = SeededRandom(8)
        let x = rng.tensor([3, 3, 12, 12])
        let batch = try forward(m, input: x, engine: engine)
        for n in 0..<3 {
            let row = Tensor(shape: [1, 3, 12, 12], data: Array(x.data[(n * 432)..<((n + 1) * 432)]))
            let alone = try forward(m, input: row, engine: engine)
            try expectClose(alone, Tensor(shape: [1, 10], data: Array(batch.data[(n * 10)..<((n + 1) * 10)])), relative: 1e-6)
        }
    }

    @Test("capture sees stem modules, weightless stem and head points, every block and the head in order")
    func captureNames() throws {
        var names: [String] = []
        let m = randomModel(smallResNet(), seed: 9)
        let y = try forward(m, input: SeededRandom(10).tensorCopy([1, 3, 12, 12])) { name, t in
            names.append(name)
            if name == "fc" { #expect(t.shape == [1, 10]) }
        }
        #expect(names == ["conv1", "bn1", "stem.relu", "stem.maxpool", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer2.2", "layer2.3",
                          "head.avgpool", "fc"])
        #expect(y.shape == [1, 10])
    }

    @Test("the fast path agrees with the reference on a small ResNet with every shortcut kind")
    func fastMatchesReferenceSmallResNet() throws {
        let m = randomModel(smallResNet(), seed: 11)
        let x = SeededRandom(12).tensorCopy([2, 3, 12, 12])
        try expectClose(try forward(m, input: x, engine: .fast), try forward(m, input: x, engine: .reference), relative: 1e-5)
    }

    @Test("the fast path agrees with the reference on random conv stacks", arguments: 0..<12)
    func fastMatchesReferenceRandom(seed: Int) throws {
        var rng = SeededRandom(UInt64(100 + seed))
        var ops: [Op] = []
        var channels = rng.pick([1, 2, 3, 4])
        let inputChannels = channels
        let inputSize = rng.int(5...11)
        var (height, width) = (inputSize, inputSize)
        for i in 0..<rng.int(2...4) {
            let groups = rng.pick([1, 1, 2, 3])
            let cin = channels * groups
            let cout = groups * rng.int(1...3)
            let k = rng.pick([1, 2, 3, 5]), s = rng.pick([1, 2]), d = rng.pick([1, 1, 2])
            let padding = rng.pick([Padding.valid, .same, .symmetric(1), .explicit(top: 0, bottom: 2, left: 1, right: 0)])
            let (pt, pb) = padding.resolve(axis: 0, input: height, kernel: k, stride: s, dilation: d)
            let (pl, pr) = padding.resolve(axis: 1, input: width, kernel: k, stride: s, dilation: d)
            let span = (k - 1) * d + 1
            guard height + pt + pb >= span, width + pl + pr >= span else { break }
            if cin != channels { ops.append(conv("expand\(i)", channels, cin, k: 1, padding: .valid, bias: true)) }
            ops.append(conv("conv\(i)", cin, cout, k: k, s: s, d: d, padding: padding, groups: groups, bias: rng.int(0...1) == 1))
            ops.append(bn("bn\(i)", cout))
            ops.append(.relu)
            channels = cout
            height = (height + pt + pb - span) / s + 1
            width = (width + pl + pr - span) / s + 1
        }
        ops.append(rng.pick([Op.globalAvgPool, .flatten(.hwc), .flatten(.chw)]))
        let features = ops.last == .globalAvgPool ? channels : channels * height * width
        ops.append(.dense(DenseOp(name: "fc", inFeatures: features, outFeatures: 5, bias: true)))
        let m = randomModel(spec(channels: inputChannels, stem: ops), seed: UInt64(200 + seed))
        let x = rng.tensor([2, inputChannels, inputSize, inputSize])
        try expectClose(try forward(m, input: x, engine: .fast), try forward(m, input: x, engine: .reference), relative: 1e-5,
                        "seed \(seed): \(ops)")
    }

    // MARK: - errors

    @Test("an input with the wrong channel count or rank is invalid input, not a crash")
    func badInput() throws {
        let m = randomModel(smallResNet(), seed: 20)
        let nhwc = thrownError { try forward(m, input: Tensor(zeros: [1, 12, 12, 3])) }
        #expect(isInvalidInput(nhwc) && nhwc!.description.contains("3 input channels"))
        #expect(isInvalidInput(thrownError { try forward(m, input: Tensor(zeros: [3, 12, 12])) }))
        #expect(isInvalidInput(thrownError { try forward(m, input: Tensor(zeros: [1, 3, 0, 12])) }))
    }

    @Test("a conv whose input channels do not match the activation is a mapping error")
    func channelMismatch() throws {
        let s = spec(channels: 3, stem: [conv("a", 3, 8, k: 1, padding: .valid), conv("b", 4, 8, k: 1, padding: .valid)])
        let e = thrownError { try forward(randomModel(s, seed: 21), input: Tensor(zeros: [1, 3, 4, 4])) }
        #expect(isMapping(e) && e!.description.contains("expects 4 input channels, activation has 8"))
    }

    @Test("a missing or misshapen tensor is a mapping error naming it")
    func missingTensor() throws {
        var m = randomModel(smallResNet(), seed: 22)
        m.tensors["layer2.0.downsample.1.running_var"] = nil
        let missing = thrownError { try forward(m, input: Tensor(zeros: [1, 3, 12, 12]), engine: .reference) }
        #expect(isMapping(missing) && missing!.description.contains("missing tensor layer2.0.downsample.1.running_var"))
        m = randomModel(smallResNet(), seed: 22)
        m.tensors["fc.weight"] = Tensor(zeros: [32, 10])
        let wrong = thrownError { try forward(m, input: Tensor(zeros: [1, 3, 12, 12])) }
        #expect(isMapping(wrong) && wrong!.description.contains("fc.weight has shape [32, 10]"))
    }

    @Test("a spatial size that would become zero is a mapping error")
    func spatialSizeTooSmall() throws {
        let s = spec(channels: 1, stem: [conv("c", 1, 1, k: 5, padding: .valid)])
        let e = thrownError { try forward(randomModel(s, seed: 23), input: Tensor(zeros: [1, 1, 3, 3])) }
        #expect(isMapping(e) && e!.description.contains("<= 0"))
        let pool = spec(channels: 1, stem: [.maxPool(PoolOp(kernel: [2, 2], stride: [2, 2]))])
        #expect(isMapping(thrownError { try forward(randomModel(pool, seed: 23), input: Tensor(zeros: [1, 1, 1, 1])) }))
    }

    @Test("residual and shortcut shapes that differ are a mapping error")
    func branchMismatch() throws {
        let block = Block(name: "layer1.0", residual: [conv("layer1.0.conv1", 2, 4, k: 1, padding: .valid)])
        let s = spec(channels: 2, stem: [], stages: [Stage(blocks: [block])])
        let e = thrownError { try forward(randomModel(s, seed: 24), input: Tensor(zeros: [1, 2, 3, 3])) }
        #expect(isMapping(e) && e!.description.contains("layer1.0"))
    }

    @Test("hostile spec numbers are refused before any allocation", arguments: [
        Op.zeroPad(top: Int.max, bottom: 1, left: 0, right: 0),
        .zeroPad(top: -1, bottom: 0, left: 0, right: 0),
        .subsample(stride: 0),
        .channelPad(before: 1 << 40, after: 0),
        .conv(ConvOp(name: "c", inChannels: 2, outChannels: 2, kernel: [1, 1], stride: [0, 1], padding: .valid, bias: false)),
        .conv(ConvOp(name: "c", inChannels: 2, outChannels: 2, kernel: [1], padding: .valid, bias: false)),
        .conv(ConvOp(name: "c", inChannels: 2, outChannels: 3, kernel: [1, 1], padding: .valid, groups: 2, bias: false)),
        .conv(ConvOp(name: "c", inChannels: 2, outChannels: 2, kernel: [1, 1], padding: .explicit(top: 0, bottom: 1 << 62, left: 0, right: 0), bias: false)),
        .maxPool(PoolOp(kernel: [2, 2], stride: [1, 1], padding: .symmetric(2))),
        .batchNorm(BatchNormOp(name: "b", channels: 2, epsilon: -.infinity)),
    ])
    func hostileNumbers(op: Op) throws {
        var tensors: [String: Tensor] = [:]
        // Op.parameters itself indexes kernel[0] and kernel[1], so only ask it about well-formed kernels.
        let wellFormed: Bool
        if case let .conv(c) = op { wellFormed = c.kernel.count == 2 } else { wellFormed = true }
        if wellFormed {
            for p in op.parameters where p.shape.allSatisfy({ $0 >= 0 && $0 < 100 }) { tensors[p.name] = Tensor(zeros: p.shape) }
        }
        let m = ResNetModel(spec: spec(channels: 2, stem: [op]), tensors: tensors)
        for engine in ForwardEngine.allCases {
            #expect(isMapping(thrownError { try forward(m, input: Tensor(zeros: [1, 2, 4, 4]), engine: engine) }), "\(op)")
        }
    }
}
