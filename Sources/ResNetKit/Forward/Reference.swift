// The reference forward pass over `ResNetSpec`: float32 on CPU, one plain function per op.
//
// Dimension legend (every shape comment below uses these letters)
//   N       batch
//   C       input channels              H, W     input height, width
//   O       output channels             OH, OW   output height, width
//   G       convolution groups          Cg = C / G, Og = O / G  channels per group
//   KH, KW  kernel height, width        SH, SW   stride          DH, DW  dilation
//   PT, PB, PL, PR  padding top, bottom, left, right, resolved for this input size
//   F       features of a flat activation (after flatten or global pooling)
//   K       outputs of a dense layer / classes
//
// Activations are row-major NCHW until `flatten` or `globalAvgPool`, then (N, F):
//   x[n, c, h, w] = data[((n * C + c) * H + h) * W + w]
// Conv weights are OIHW: w[o, i, kh, kw] = data[((o * Cg + i) * KH + kh) * KW + kw].
// Dense weights are (K, F): w[k, f] = data[k * F + f].
//
// The op functions trust their geometry; `ForwardRunner` checks every shape, size and tensor
// before calling them, because the spec and the tensors come from files.

import Foundation

/// Which implementation runs the convolutions and dense layers.
public enum ForwardEngine: String, Sendable, Codable, CaseIterable {
    /// Plain loops, one function per op: the definition the fast path is tested against.
    case reference
    /// OpenBLAS `sgemm` through a prepared ``ForwardPlan`` (or unfused im2col when capturing);
    /// the default, because full-size models must run in well under a second.
    case fast
}

/// Runs `model` on `input` (N, C, H, W) and returns its output, usually (N, classes).
///
/// - Parameters:
///   - model: the canonical model.
///   - input: a float32 batch laid out (N, C, H, W).
///   - engine: `.fast` (default) or `.reference`; both follow the same op semantics. Without `capture`,
///     `.fast` runs a ``ForwardPlan`` (BN folded, ReLU and additions fused, NHWC), cached for the last
///     model seen; with `capture` it runs the unfused im2col path, because a folded conv has no
///     separate batch-norm output to report.
///   - capture: called with module outputs as they are produced: named stem ops (`conv1`, `bn1`),
///     whole blocks (`layer1.0`, …, as in `Block.name`) and named head ops (`fc`); weightless stem and
///     head ops by position: `stem.relu`, `stem.maxpool`, `stem.avgpool`, `head.relu`, `head.avgpool`
///     (global or windowed pooling), `head.flatten`, `head.softmax`. A name may be reported more than
///     once (a deep stem's ReLUs); the last report is the output of the last op of that kind.
/// - Throws: `ResNetError.invalidInput` when the input does not fit the model, and
///   `ResNetError.mapping` when the spec or its tensors are inconsistent (missing tensor, wrong shape,
///   channel mismatch, a spatial size that would become zero or negative).
public func forward(_ model: ResNetModel, input: Tensor, engine: ForwardEngine = .fast,
                    capture: ((String, Tensor) -> Void)? = nil) throws -> Tensor {
    if engine == .fast, capture == nil {
        return try ForwardPlan.cached(for: model).run(input)
    }
    let runner = ForwardRunner(tensors: model.tensors, engine: engine, capture: capture)
    return try runner.run(model.spec, input: input)
}

// MARK: - Geometry shared by convolution and pooling

/// The resolved geometry of a sliding window (convolution or pooling) for one input size.
struct WindowGeometry: Equatable {
    var N = 0, C = 0, H = 0, W = 0
    var O = 0, G = 1            // pooling: O = C
    var KH = 1, KW = 1, SH = 1, SW = 1, DH = 1, DW = 1
    var PT = 0, PB = 0, PL = 0, PR = 0
    var OH = 0, OW = 0
}

// MARK: - Op functions (reference)

/// Direct convolution.
/// - input: (N, C, H, W);  weight: (O, Cg, KH, KW);  bias: (O) or nil
/// - returns: (N, O, OH, OW)
func conv2dForward(input: [Float], weight: [Float], bias: [Float]?, _ g: WindowGeometry) -> [Float] {
    let Cg = g.C / g.G, Og = g.O / g.G
    var out = [Float](repeating: 0, count: g.N * g.O * g.OH * g.OW)
    for n in 0..<g.N {
        for o in 0..<g.O {
            let group = o / Og
            for oh in 0..<g.OH {
                for ow in 0..<g.OW {
                    var sum: Float = bias?[o] ?? 0
                    for i in 0..<Cg {
                        let c = group * Cg + i                          // input channel
                        for kh in 0..<g.KH {
                            let h = oh * g.SH - g.PT + kh * g.DH        // input row; outside = zero padding
                            if h < 0 || h >= g.H { continue }
                            for kw in 0..<g.KW {
                                let w = ow * g.SW - g.PL + kw * g.DW
                                if w < 0 || w >= g.W { continue }
                                sum += input[((n * g.C + c) * g.H + h) * g.W + w]
                                     * weight[((o * Cg + i) * g.KH + kh) * g.KW + kw]
                            }
                        }
                    }
                    out[((n * g.O + o) * g.OH + oh) * g.OW + ow] = sum
                }
            }
        }
    }
    return out
}

/// Inference batch normalisation with the running statistics, computed as TF and PyTorch do:
/// `inv = 1 / sqrt(var + eps)` in float32, then `y = (x - mean) * inv * gamma + beta`.
/// - input: (N, C, HW) — HW is 1 for a flat (N, C) activation
/// - mean, variance: (C);  gamma: (C) or nil (scale = false → 1);  beta: (C) or nil (center = false → 0)
/// - returns: (N, C, HW)
func batchNormForward(input: [Float], N: Int, C: Int, HW: Int, mean: [Float], variance: [Float],
               gamma: [Float]?, beta: [Float]?, epsilon: Float) -> [Float] {
    var out = [Float](repeating: 0, count: input.count)
    for c in 0..<C {
        let inv = 1 / (variance[c] + epsilon).squareRoot()
        let scale = inv * (gamma?[c] ?? 1)
        let shift = beta?[c] ?? 0
        for n in 0..<N {
            let base = (n * C + c) * HW
            for p in 0..<HW {
                out[base + p] = (input[base + p] - mean[c]) * scale + shift
            }
        }
    }
    return out
}

/// max(x, 0), elementwise; any shape.
func reluForward(_ input: [Float]) -> [Float] {
    var out = input
    for i in 0..<out.count where out[i] < 0 { out[i] = 0 }   // NaN stays NaN, as in the frameworks
    return out
}

/// Max pooling; padded cells are -inf, so they never win.
/// - input: (N, C, H, W);  returns: (N, C, OH, OW)
func maxPoolForward(input: [Float], _ g: WindowGeometry) -> [Float] {
    var out = [Float](repeating: 0, count: g.N * g.C * g.OH * g.OW)
    for n in 0..<g.N {
        for c in 0..<g.C {
            for oh in 0..<g.OH {
                for ow in 0..<g.OW {
                    var best = -Float.infinity
                    for kh in 0..<g.KH {
                        let h = oh * g.SH - g.PT + kh
                        if h < 0 || h >= g.H { continue }
                        for kw in 0..<g.KW {
                            let w = ow * g.SW - g.PL + kw
                            if w < 0 || w >= g.W { continue }
                            let v = input[((n * g.C + c) * g.H + h) * g.W + w]
                            if v > best || v.isNaN { best = v }          // NaN propagates, as in the frameworks
                        }
                    }
                    out[((n * g.C + c) * g.OH + oh) * g.OW + ow] = best
                }
            }
        }
    }
    return out
}

/// Average pooling. With `countIncludePad` the divisor is always KH·KW (PyTorch default);
/// without it, only real input cells are counted (Keras / TF `same`).
/// - input: (N, C, H, W);  returns: (N, C, OH, OW)
func avgPoolForward(input: [Float], _ g: WindowGeometry, countIncludePad: Bool) -> [Float] {
    var out = [Float](repeating: 0, count: g.N * g.C * g.OH * g.OW)
    for n in 0..<g.N {
        for c in 0..<g.C {
            for oh in 0..<g.OH {
                for ow in 0..<g.OW {
                    var sum: Float = 0
                    var cells = 0
                    for kh in 0..<g.KH {
                        let h = oh * g.SH - g.PT + kh
                        if h < 0 || h >= g.H { continue }
                        for kw in 0..<g.KW {
                            let w = ow * g.SW - g.PL + kw
                            if w < 0 || w >= g.W { continue }
                            sum += input[((n * g.C + c) * g.H + h) * g.W + w]
                            cells += 1
                        }
                    }
                    let divisor = countIncludePad ? g.KH * g.KW : cells
                    out[((n * g.C + c) * g.OH + oh) * g.OW + ow] = sum / Float(divisor)
                }
            }
        }
    }
    return out
}

/// Spatial zero padding.
/// - input: (N, C, H, W);  returns: (N, C, top + H + bottom, left + W + right)
func zeroPadForward(input: [Float], N: Int, C: Int, H: Int, W: Int,
             top: Int, bottom: Int, left: Int, right: Int) -> [Float] {
    let OH = top + H + bottom, OW = left + W + right
    var out = [Float](repeating: 0, count: N * C * OH * OW)
    for n in 0..<N {
        for c in 0..<C {
            for h in 0..<H {
                for w in 0..<W {
                    out[((n * C + c) * OH + (h + top)) * OW + (w + left)] = input[((n * C + c) * H + h) * W + w]
                }
            }
        }
    }
    return out
}

/// Keeps rows and columns 0, s, 2s, … (`x[:, :, ::s, ::s]`).
/// - input: (N, C, H, W);  returns: (N, C, ceil(H / s), ceil(W / s))
func subsampleForward(input: [Float], N: Int, C: Int, H: Int, W: Int, stride s: Int) -> [Float] {
    let OH = (H + s - 1) / s, OW = (W + s - 1) / s
    var out = [Float](repeating: 0, count: N * C * OH * OW)
    for n in 0..<N {
        for c in 0..<C {
            for oh in 0..<OH {
                for ow in 0..<OW {
                    out[((n * C + c) * OH + oh) * OW + ow] = input[((n * C + c) * H + oh * s) * W + ow * s]
                }
            }
        }
    }
    return out
}

/// Adds zero channels before and after the existing ones.
/// - input: (N, C, HW);  returns: (N, before + C + after, HW)
func channelPadForward(input: [Float], N: Int, C: Int, HW: Int, before: Int, after: Int) -> [Float] {
    let OC = before + C + after
    var out = [Float](repeating: 0, count: N * OC * HW)
    for n in 0..<N {
        for c in 0..<C {
            for p in 0..<HW {
                out[(n * OC + (c + before)) * HW + p] = input[(n * C + c) * HW + p]
            }
        }
    }
    return out
}

/// Mean over the spatial positions.
/// - input: (N, C, HW);  returns: (N, C)
func globalAvgPoolForward(input: [Float], N: Int, C: Int, HW: Int) -> [Float] {
    var out = [Float](repeating: 0, count: N * C)
    for n in 0..<N {
        for c in 0..<C {
            var sum: Float = 0
            for p in 0..<HW { sum += input[(n * C + c) * HW + p] }
            out[n * C + c] = sum / Float(HW)
        }
    }
    return out
}

/// Flattens pixel-major, as Keras flattens NHWC: out[n, (h * W + w) * C + c] = x[n, c, h, w].
/// (Channel-major flattening is the NCHW memory order itself and needs no function.)
/// - input: (N, C, H, W);  returns: (N, H·W·C)
func flattenHWCForward(input: [Float], N: Int, C: Int, H: Int, W: Int) -> [Float] {
    var out = [Float](repeating: 0, count: input.count)
    for n in 0..<N {
        for c in 0..<C {
            for h in 0..<H {
                for w in 0..<W {
                    out[n * (H * W * C) + (h * W + w) * C + c] = input[((n * C + c) * H + h) * W + w]
                }
            }
        }
    }
    return out
}

/// Fully connected layer.
/// - input: (N, F);  weight: (K, F);  bias: (K) or nil;  returns: (N, K)
func denseForward(input: [Float], weight: [Float], bias: [Float]?, N: Int, F: Int, K: Int) -> [Float] {
    var out = [Float](repeating: 0, count: N * K)
    for n in 0..<N {
        for k in 0..<K {
            var sum: Float = bias?[k] ?? 0
            for f in 0..<F { sum += input[n * F + f] * weight[k * F + f] }
            out[n * K + k] = sum
        }
    }
    return out
}

/// Softmax over the last axis; subtracting the row maximum keeps exp() from overflowing.
/// - input: (N, K);  returns: (N, K)
func softmaxForward(input: [Float], N: Int, K: Int) -> [Float] {
    var out = [Float](repeating: 0, count: N * K)
    input.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBufferPointer { dst in softmaxRows(src.baseAddress!, dst.baseAddress!, N: N, K: K) }
    }
    return out
}

/// The softmax both forward paths use. `src` and `dst` may be the same buffer.
/// - src, dst: (N, K)
func softmaxRows(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, N: Int, K: Int) {
    for n in 0..<N {
        var maxValue = -Float.infinity
        for k in 0..<K { maxValue = max(maxValue, src[n * K + k]) }
        var sum: Float = 0
        for k in 0..<K {
            let e = Float(exp(Double(src[n * K + k] - maxValue)))
            dst[n * K + k] = e
            sum += e
        }
        for k in 0..<K { dst[n * K + k] /= sum }
    }
}

/// Elementwise sum of the residual and shortcut branches; same shape on both sides.
func residualAddForward(_ a: [Float], _ b: [Float]) -> [Float] {
    var out = a
    for i in 0..<out.count { out[i] += b[i] }
    return out
}

// MARK: - Running a spec: every check happens here, before an op function sees the data

/// Walks a spec, checks each op against the activation it receives, and dispatches to the
/// reference or fast op functions.
struct ForwardRunner {
    let tensors: [String: Tensor]
    let engine: ForwardEngine
    let capture: ((String, Tensor) -> Void)?
    /// Called with every batch-norm op and the activation it receives, before normalising it. The
    /// plausibility check compares these batch statistics with the running ones; throwing stops the run.
    var observeBatchNorm: ((BatchNormOp, Tensor) throws -> Void)? = nil

    /// Bounds on spec numbers. They keep all index arithmetic far from overflow and stop a hostile
    /// spec from asking for an absurd allocation.
    static let maxWindow = 1 << 16          // kernel, stride, dilation, padding
    static let maxChannels = 1 << 24
    static let maxElements = 1 << 31        // one activation: 8 GiB of float32

    func run(_ spec: ResNetSpec, input: Tensor) throws -> Tensor {
        if let v = spec.structuralViolation() { throw mapping("spec \(v)") }
        var x = try checkedInput(input, spec: spec)
        x = try runOps(spec.stem, x, place: "stem", captureNamed: true, positional: "stem")
        for (s, stage) in spec.stages.enumerated() {
            for (b, block) in stage.blocks.enumerated() {
                let name = block.name.isEmpty ? "stage \(s) block \(b)" : block.name
                x = try runBlock(block, x, place: name)
                capture?(name, x)
            }
        }
        return try runOps(spec.head, x, place: "head", captureNamed: true, positional: "head")
    }

    func checkedInput(_ input: Tensor, spec: ResNetSpec) throws -> Tensor {
        func bad(_ reason: String) -> ResNetError { .invalidInput(file: "input", place: "input tensor", reason: reason) }
        guard input.shape.count == 4 else { throw bad("expected (N, C, H, W), got shape \(input.shape)") }
        guard input.shape.allSatisfy({ $0 > 0 }) else { throw bad("every dimension must be positive, got \(input.shape)") }
        let count = try checkedElementCount(input.shape) { bad($0) }
        guard count == input.data.count else { throw bad("shape \(input.shape) needs \(count) values, tensor holds \(input.data.count)") }
        guard input.shape[1] == spec.inputChannels else {
            throw bad("model expects \(spec.inputChannels) input channels, input has \(input.shape[1]) (shape \(input.shape); is it NHWC?)")
        }
        return input
    }

    private func runBlock(_ block: Block, _ x: Tensor, place: String) throws -> Tensor {
        let forked = try runOps(block.pre, x, place: "\(place) pre", captureNamed: false)
        let residual = try runOps(block.residual, forked, place: "\(place) residual", captureNamed: false)
        let shortcut = try runOps(block.shortcut, forked, place: "\(place) shortcut", captureNamed: false)
        guard residual.shape == shortcut.shape else {
            throw mapping("\(place): residual branch gives shape \(residual.shape) but shortcut gives \(shortcut.shape); they cannot be added")
        }
        let sum = Tensor(shape: residual.shape, data: residualAddForward(residual.data, shortcut.data))
        return try runOps(block.post, sum, place: "\(place) post", captureNamed: false)
    }

    private func runOps(_ ops: [Op], _ x: Tensor, place: String, captureNamed: Bool, positional: String? = nil) throws -> Tensor {
        var x = x
        for (i, op) in ops.enumerated() {
            let at = op.moduleName.map { "\(place) op \(i) (\($0))" } ?? "\(place) op \(i)"
            if case let .batchNorm(b) = op, let observeBatchNorm { try observeBatchNorm(b, x) }
            x = try apply(op, x, place: at)
            if captureNamed, let name = op.moduleName { capture?(name, x) }
            if let positional, let capture, let kind = Self.positionalName(op) { capture("\(positional).\(kind)", x) }
        }
        return x
    }

    /// Weightless stem and head ops are reported as `stem.relu`, `stem.maxpool`, `head.avgpool`, …,
    /// because other frameworks name these points (torchvision's `relu`, `maxpool`, `avgpool`) and
    /// per-layer goldens may carry them. A repeated kind (a deep stem's ReLUs) is reported each time;
    /// the last report is the output of the last such op.
    static func positionalName(_ op: Op) -> String? {
        switch op {
        case .relu: return "relu"
        case .maxPool: return "maxpool"
        case .avgPool: return "avgpool"
        case .globalAvgPool: return "avgpool"
        case .flatten: return "flatten"
        case .softmax: return "softmax"
        default: return nil
        }
    }

    // MARK: one op

    private func apply(_ op: Op, _ x: Tensor, place: String) throws -> Tensor {
        switch op {
        case let .conv(c):
            let g = try convGeometry(c, x.shape, place: place)
            let weight = try tensor("\(c.name).weight", shape: [c.outChannels, c.inChannels / c.groups, c.kernel[0], c.kernel[1]], place: place)
            let bias = c.bias ? try tensor("\(c.name).bias", shape: [c.outChannels], place: place) : nil
            let out: [Float]
            switch engine {
            case .reference: out = conv2dForward(input: x.data, weight: weight.data, bias: bias?.data, g)
            case .fast: out = try conv2dForwardFast(input: x.data, weight: weight.data, bias: bias?.data, g, place: place)
            }
            return Tensor(shape: [g.N, g.O, g.OH, g.OW], data: out)

        case let .batchNorm(b):
            guard x.shape.count == 4 || x.shape.count == 2 else { throw mapping("\(place): batch norm needs (N, C, H, W) or (N, C), got \(x.shape)") }
            guard x.shape[1] == b.channels else { throw mapping("\(place): batch norm has \(b.channels) channels, activation has \(x.shape[1]) (shape \(x.shape))") }
            guard b.epsilon.isFinite, b.epsilon >= 0 else { throw mapping("\(place): epsilon \(b.epsilon) is not a finite non-negative number") }
            let mean = try tensor("\(b.name).running_mean", shape: [b.channels], place: place)
            let variance = try tensor("\(b.name).running_var", shape: [b.channels], place: place)
            let gamma = b.scale ? try tensor("\(b.name).weight", shape: [b.channels], place: place) : nil
            let beta = b.center ? try tensor("\(b.name).bias", shape: [b.channels], place: place) : nil
            let eps = Float(b.epsilon)
            if let c = variance.data.indices.first(where: { !(variance.data[$0] + eps > 0) }) {
                throw mapping("\(place): \(b.name).running_var[\(c)] = \(variance.data[c]) with epsilon \(b.epsilon) gives a non-positive variance")
            }
            let HW = x.shape.count == 4 ? x.shape[2] * x.shape[3] : 1
            let out = batchNormForward(input: x.data, N: x.shape[0], C: b.channels, HW: HW, mean: mean.data, variance: variance.data,
                                gamma: gamma?.data, beta: beta?.data, epsilon: eps)
            return Tensor(shape: x.shape, data: out)

        case .relu:
            return Tensor(shape: x.shape, data: reluForward(x.data))

        case let .maxPool(p):
            let g = try poolGeometry(p, x.shape, kind: "max pool", place: place)
            return Tensor(shape: [g.N, g.C, g.OH, g.OW], data: maxPoolForward(input: x.data, g))

        case let .avgPool(p):
            let g = try poolGeometry(p, x.shape, kind: "average pool", place: place)
            // TF/Keras `same` average pooling never counts the padding, whatever the flag says.
            let includePad = p.countIncludePad && p.padding != .same
            return Tensor(shape: [g.N, g.C, g.OH, g.OW], data: avgPoolForward(input: x.data, g, countIncludePad: includePad))

        case let .zeroPad(top, bottom, left, right):
            let (N, C, H, W) = try nchw(x.shape, "zero padding", place: place)
            for (v, side) in [(top, "top"), (bottom, "bottom"), (left, "left"), (right, "right")] {
                try checkRange(v, 0...Self.maxWindow, "zero padding \(side)", place: place)
            }
            let shape = [N, C, top + H + bottom, left + W + right]
            _ = try checkedElementCount(shape) { mapping("\(place): \($0)") }
            return Tensor(shape: shape, data: zeroPadForward(input: x.data, N: N, C: C, H: H, W: W, top: top, bottom: bottom, left: left, right: right))

        case let .subsample(s):
            let (N, C, H, W) = try nchw(x.shape, "subsample", place: place)
            try checkRange(s, 1...Self.maxWindow, "subsample stride", place: place)
            let shape = [N, C, (H + s - 1) / s, (W + s - 1) / s]
            return Tensor(shape: shape, data: subsampleForward(input: x.data, N: N, C: C, H: H, W: W, stride: s))

        case let .channelPad(before, after):
            let (N, C, H, W) = try nchw(x.shape, "channel padding", place: place)
            try checkRange(before, 0...Self.maxChannels, "channel padding before", place: place)
            try checkRange(after, 0...Self.maxChannels, "channel padding after", place: place)
            let shape = [N, before + C + after, H, W]
            _ = try checkedElementCount(shape) { mapping("\(place): \($0)") }
            return Tensor(shape: shape, data: channelPadForward(input: x.data, N: N, C: C, HW: H * W, before: before, after: after))

        case .globalAvgPool:
            let (N, C, H, W) = try nchw(x.shape, "global average pool", place: place)
            return Tensor(shape: [N, C], data: globalAvgPoolForward(input: x.data, N: N, C: C, HW: H * W))

        case let .flatten(order):
            if x.shape.count == 2 { return x }      // already flat (Keras Flatten after global pooling)
            let (N, C, H, W) = try nchw(x.shape, "flatten", place: place)
            switch order {
            case .chw: return Tensor(shape: [N, C * H * W], data: x.data)
            case .hwc: return Tensor(shape: [N, C * H * W], data: flattenHWCForward(input: x.data, N: N, C: C, H: H, W: W))
            }

        case let .dense(d):
            guard x.shape.count == 2 else {
                throw mapping("\(place): dense needs a flat (N, features) activation, got \(x.shape); the spec lacks flatten or global pooling")
            }
            guard x.shape[1] == d.inFeatures else {
                throw mapping("\(place): dense expects \(d.inFeatures) input features, activation has \(x.shape[1])")
            }
            try checkRange(d.outFeatures, 1...Self.maxChannels, "dense outFeatures", place: place)
            let weight = try tensor("\(d.name).weight", shape: [d.outFeatures, d.inFeatures], place: place)
            let bias = d.bias ? try tensor("\(d.name).bias", shape: [d.outFeatures], place: place) : nil
            let (N, F, K) = (x.shape[0], d.inFeatures, d.outFeatures)
            _ = try checkedElementCount([N, K]) { mapping("\(place): \($0)") }
            let out: [Float]
            switch engine {
            case .reference: out = denseForward(input: x.data, weight: weight.data, bias: bias?.data, N: N, F: F, K: K)
            case .fast: out = try denseForwardFast(input: x.data, weight: weight.data, bias: bias?.data, N: N, F: F, K: K, place: place)
            }
            return Tensor(shape: [N, K], data: out)

        case .softmax:
            guard x.shape.count == 2 else { throw mapping("\(place): softmax needs (N, classes), got \(x.shape)") }
            return Tensor(shape: x.shape, data: softmaxForward(input: x.data, N: x.shape[0], K: x.shape[1]))
        }
    }

    // MARK: checks

    func mapping(_ reason: String) -> ResNetError { .mapping(file: "model", reason: reason) }

    func checkRange(_ v: Int, _ range: ClosedRange<Int>, _ what: String, place: String) throws {
        guard range.contains(v) else { throw mapping("\(place): \(what) is \(v), must be in \(range.lowerBound)...\(range.upperBound)") }
    }

    func nchw(_ shape: [Int], _ what: String, place: String) throws -> (Int, Int, Int, Int) {
        guard shape.count == 4 else { throw mapping("\(place): \(what) needs an (N, C, H, W) activation, got \(shape)") }
        return (shape[0], shape[1], shape[2], shape[3])
    }

    /// The canonical tensor `name`, which must exist with exactly `shape`.
    func tensor(_ name: String, shape: [Int], place: String) throws -> Tensor {
        guard let t = tensors[name] else { throw mapping("\(place): missing tensor \(name) (shape \(shape))") }
        guard t.shape == shape else { throw mapping("\(place): tensor \(name) has shape \(t.shape), the spec needs \(shape)") }
        let count = try checkedElementCount(shape) { mapping("\(place): tensor \(name): \($0)") }
        guard t.data.count == count else {
            throw mapping("\(place): tensor \(name) holds \(t.data.count) values for shape \(shape)")
        }
        return t
    }

    /// Output size of a window along one axis; throws when it would be zero or negative.
    private func outputSize(input: Int, before: Int, after: Int, kernel: Int, stride: Int, dilation: Int,
                            axis: String, what: String, place: String) throws -> Int {
        let span = (kernel - 1) * dilation + 1
        let padded = input + before + after
        guard padded >= span else {
            throw mapping("\(place): \(what) window spans \(span) \(axis) cells but the padded input has only \(padded) (input \(input), padding \(before)+\(after)); the spatial size would become <= 0")
        }
        return (padded - span) / stride + 1
    }

    private func resolvePadding(_ padding: Padding, H: Int, W: Int, kernel: [Int], stride: [Int], dilation: [Int],
                                what: String, place: String) throws -> (Int, Int, Int, Int) {
        let (pt, pb) = padding.resolve(axis: 0, input: H, kernel: kernel[0], stride: stride[0], dilation: dilation[0])
        let (pl, pr) = padding.resolve(axis: 1, input: W, kernel: kernel[1], stride: stride[1], dilation: dilation[1])
        for (v, side) in [(pt, "top"), (pb, "bottom"), (pl, "left"), (pr, "right")] {
            try checkRange(v, 0...Self.maxWindow, "\(what) padding \(side)", place: place)
        }
        return (pt, pb, pl, pr)
    }

    private func checkPair(_ v: [Int], _ what: String, place: String) throws {
        guard v.count == 2 else { throw mapping("\(place): \(what) must have 2 values (height, width), has \(v)") }
        try checkRange(v[0], 1...Self.maxWindow, what, place: place)
        try checkRange(v[1], 1...Self.maxWindow, what, place: place)
    }

    func convGeometry(_ c: ConvOp, _ shape: [Int], place: String) throws -> WindowGeometry {
        let (N, C, H, W) = try nchw(shape, "convolution", place: place)
        try checkPair(c.kernel, "kernel", place: place)
        try checkPair(c.stride, "stride", place: place)
        try checkPair(c.dilation, "dilation", place: place)
        try checkRange(c.outChannels, 1...Self.maxChannels, "outChannels", place: place)
        try checkRange(c.groups, 1...Self.maxChannels, "groups", place: place)
        guard C == c.inChannels else {
            throw mapping("\(place): convolution expects \(c.inChannels) input channels, activation has \(C) (shape \(shape))")
        }
        guard c.inChannels % c.groups == 0, c.outChannels % c.groups == 0 else {
            throw mapping("\(place): groups \(c.groups) must divide both inChannels \(c.inChannels) and outChannels \(c.outChannels)")
        }
        let (pt, pb, pl, pr) = try resolvePadding(c.padding, H: H, W: W, kernel: c.kernel, stride: c.stride, dilation: c.dilation,
                                                  what: "convolution", place: place)
        var g = WindowGeometry(N: N, C: C, H: H, W: W, O: c.outChannels, G: c.groups,
                               KH: c.kernel[0], KW: c.kernel[1], SH: c.stride[0], SW: c.stride[1],
                               DH: c.dilation[0], DW: c.dilation[1], PT: pt, PB: pb, PL: pl, PR: pr)
        g.OH = try outputSize(input: H, before: pt, after: pb, kernel: g.KH, stride: g.SH, dilation: g.DH, axis: "row", what: "convolution", place: place)
        g.OW = try outputSize(input: W, before: pl, after: pr, kernel: g.KW, stride: g.SW, dilation: g.DW, axis: "column", what: "convolution", place: place)
        _ = try checkedElementCount([N, g.O, g.OH, g.OW]) { mapping("\(place): \($0)") }
        _ = try checkedElementCount([c.inChannels / c.groups, g.KH, g.KW, g.OH, g.OW]) { mapping("\(place): im2col buffer: \($0)") }
        return g
    }

    func poolGeometry(_ p: PoolOp, _ shape: [Int], kind: String, place: String) throws -> WindowGeometry {
        let (N, C, H, W) = try nchw(shape, kind, place: place)
        try checkPair(p.kernel, "\(kind) kernel", place: place)
        try checkPair(p.stride, "\(kind) stride", place: place)
        let (pt, pb, pl, pr) = try resolvePadding(p.padding, H: H, W: W, kernel: p.kernel, stride: p.stride, dilation: [1, 1],
                                                  what: kind, place: place)
        // A window made only of padding has no maximum and no real cells to average.
        guard pt < p.kernel[0], pb < p.kernel[0], pl < p.kernel[1], pr < p.kernel[1] else {
            throw mapping("\(place): \(kind) padding (\(pt), \(pb), \(pl), \(pr)) must be smaller than the kernel \(p.kernel) on every side")
        }
        var g = WindowGeometry(N: N, C: C, H: H, W: W, O: C, G: C, KH: p.kernel[0], KW: p.kernel[1],
                               SH: p.stride[0], SW: p.stride[1], PT: pt, PB: pb, PL: pl, PR: pr)
        g.OH = try outputSize(input: H, before: pt, after: pb, kernel: g.KH, stride: g.SH, dilation: 1, axis: "row", what: kind, place: place)
        g.OW = try outputSize(input: W, before: pl, after: pr, kernel: g.KW, stride: g.SW, dilation: 1, axis: "column", what: kind, place: place)
        return g
    }
}

/// Product of `shape` with overflow and size checks; `fail` turns a reason into the caller's error.
func checkedElementCount(_ shape: [Int], _ fail: (String) -> ResNetError) throws -> Int {
    var count = 1
    for d in shape {
        guard d >= 0 else { throw fail("negative dimension in shape \(shape)") }
        let (p, overflow) = count.multipliedReportingOverflow(by: d)
        guard !overflow, p <= ForwardRunner.maxElements else {
            throw fail("shape \(shape) has more than \(ForwardRunner.maxElements) elements")
        }
        count = p
    }
    return count
}
