import Foundation

/// Memory order of an image batch.
public enum Layout: String, Sendable, Codable, CaseIterable {
    case nchw = "NCHW"
    case nhwc = "NHWC"
}

/// The comparison of one intermediate activation (a canonical module's output).
public struct LayerComparison: Sendable, Codable {
    /// Canonical module name: `conv1`, `layer3.1` (a whole block), `fc`.
    public var name: String
    public var maxAbsError: Double
    /// max |error| / max(1, max |reference|) for this activation.
    public var maxRelError: Double
    public var tolerance: Double
    public var passed: Bool
    /// Why it failed when it is not a numeric disagreement (a missing module, a shape mismatch, NaN).
    public var problem: String?
}

/// One parity check: what the model was compared with, and the result.
public struct ParityCheck: Sendable, Codable {
    /// `golden io.npz`, `keras graph self-check` or `read-back`.
    public var reference: String
    public var passed: Bool
    /// The numbers, for checks that compare outputs.
    public var report: ParityReport?
    /// The verdict in words.
    public var detail: String
    /// Per-layer comparisons in model order, when the reference has intermediate activations.
    public var layers: [LayerComparison] = []
    /// The first canonical module whose output leaves tolerance; nil when none does.
    public var firstDivergentLayer: String?

    public init(reference: String, passed: Bool, report: ParityReport?, detail: String) {
        self.reference = reference; self.passed = passed; self.report = report; self.detail = detail
    }

    init(reference: String, report: ParityReport, layers: [LayerComparison] = []) {
        self.init(reference: reference, passed: report.passed, report: report, detail: report.text)
        self.layers = layers
        self.firstDivergentLayer = layers.first { !$0.passed }?.name
        if let first = firstDivergentLayer {
            passed = false
            detail += "\n  first divergent layer: \(first)"
        }
    }
}

/// Reference goldens: an input batch and the source framework's output for it.
public struct Goldens: Sendable {
    public var path: String
    /// Input in NCHW, whatever the file's layout was.
    public var input: Tensor
    public var output: Tensor
    public var layout: Layout
    /// Intermediate activations `layer:<canonical module>` in NCHW (4-D ones converted), in file order.
    public var layers: [(name: String, tensor: Tensor)]

    /// Reads `input`, `output` and optional `layout` from an `io.npz`. The layout comes from
    /// `override`, else the file, else the input shape and the model's channel count; an
    /// ambiguous shape is refused.
    public init(path: String, inputChannels: Int, override: Layout? = nil) throws {
        let npz = try NPZ.read(path: path)
        guard let inputArray = npz["input"], let x = inputArray.tensor else {
            throw ResNetError.invalidInput(file: path, place: "input", reason: "no float array named 'input'")
        }
        guard let outputArray = npz["output"], let y = outputArray.tensor else {
            throw ResNetError.invalidInput(file: path, place: "output", reason: "no float array named 'output'")
        }
        guard x.shape.count == 4 else {
            throw ResNetError.invalidInput(file: path, place: "input", reason: "input must be 4-D (batch, …), has shape \(x.shape)")
        }
        var layout = override
        if layout == nil, let s = npz["layout"]?.string {
            guard let l = Layout(rawValue: s.uppercased()) else {
                throw ResNetError.invalidInput(file: path, place: "layout", reason: "layout '\(s)' is neither NCHW nor NHWC")
            }
            layout = l
        }
        if layout == nil {
            let c1 = x.shape[1] == inputChannels, c3 = x.shape[3] == inputChannels
            if c1 && !c3 { layout = .nchw } else if c3 && !c1 { layout = .nhwc } else {
                throw ResNetError.usage("\(path): cannot tell whether input \(x.shape) is NCHW or NHWC for a \(inputChannels)-channel model; pass --layout nchw|nhwc")
            }
        }
        let nchw = layout == .nhwc ? x.permuted([0, 3, 1, 2]) : x
        guard nchw.shape[1] == inputChannels else {
            throw ResNetError.invalidInput(file: path, place: "input", reason: "input \(x.shape) in \(layout!.rawValue) has \(nchw.shape[1]) channels, the model takes \(inputChannels)")
        }
        self.path = path
        self.input = nchw
        self.output = y
        self.layout = layout!
        var layers: [(String, Tensor)] = []
        for name in npz.names where name.hasPrefix("layer:") {
            guard let t = npz[name]?.tensor else {
                throw ResNetError.invalidInput(file: path, place: name, reason: "per-layer golden is not a float array")
            }
            layers.append((String(name.dropFirst("layer:".count)), t.shape.count == 4 && layout == .nhwc ? t.permuted([0, 3, 1, 2]) : t))
        }
        self.layers = layers
    }
}

/// Verification steps, shared by `convert` and `verify`.
public enum Verifier {
    /// The float32 tolerance: max |error| ≤ 1e-4 × max(1, max |reference|).
    public static let float32Tolerance = ParityReport.defaultTolerance

    /// Runs the canonical model on the goldens' input and compares with their output under
    /// `policy` (float32 unless the model's weights went through a narrower storage dtype), and each
    /// `layer:` activation the goldens carry under the float32 layer tolerance.
    public static func checkGoldens(_ model: ResNetModel, goldens: Goldens, policy: TolerancePolicy = .float32) throws -> ParityCheck {
        var captured: [(String, Tensor)] = []
        let wanted = policy == .float32 ? Set(goldens.layers.map(\.name)) : []
        let out = try forward(model, input: goldens.input, capture: wanted.isEmpty ? nil : { name, t in
            if wanted.contains(name) { captured.append((name, t)) }
        })
        let references = Dictionary(goldens.layers.map { ($0.name, $0.tensor) }, uniquingKeysWith: { a, _ in a })
        var layers = captured.map { compareLayer($0.0, ours: $0.1, reference: references[$0.0]!) }
        for name in wanted.sorted() where !captured.contains(where: { $0.0 == name }) {
            layers.append(LayerComparison(name: name, maxAbsError: .nan, maxRelError: .nan, tolerance: float32Tolerance, passed: false,
                                          problem: "the goldens have layer:\(name) but the model has no module of that name"))
        }
        // (2, 10) and (2, 1, 1, 10) are the same numbers; a different count is a real mismatch.
        let ref = goldens.output.count == out.count ? goldens.output.reshaped(out.shape) : goldens.output
        let report = policy == .float32
            ? try ParityReport(output: out, reference: ref, tolerance: float32Tolerance,
                               toleranceNote: "float32 weights vs float32 goldens from the source framework")
            : try policy.compare(output: out, reference: ref)
        let at = policy == .float32 ? "" : " at \(policy.dtype.rawValue)"
        return ParityCheck(reference: "golden \(URL(fileURLWithPath: goldens.path).lastPathComponent) (\(goldens.layout.rawValue))\(at)", report: report, layers: layers)
    }

    /// Interprets the source Keras graph on the source weights (NHWC, HWIO; independent code)
    /// and compares it with the canonical model on the same deterministic input: a wrong mapping
    /// shows here even without goldens.
    ///
    /// - Parameters:
    ///   - blockOutputs: canonical block → Keras layer producing its output; each block is compared
    ///     too, so the first block that diverges is named.
    ///   - policy: applies when `model` went through a narrower storage dtype than the graph's weights.
    public static func checkKerasGraph(_ graph: KerasGraph, model: ResNetModel, file: String,
                                       blockOutputs: [(canonical: String, kerasPath: String)] = [], batch: Int = 2,
                                       policy: TolerancePolicy = .float32) throws -> ParityCheck {
        let size = model.spec.inputSize ?? [64, 64]
        let nhwc = deterministicInput(shape: [batch, size[0], size[1], model.spec.inputChannels], seed: 20240601)
        let paths = Dictionary(blockOutputs.map { ($0.kerasPath, $0.canonical) }, uniquingKeysWith: { a, _ in a })
        var theirBlocks: [String: Tensor] = [:]
        let theirs = try interpretKerasGraph(graph, input: nhwc, file: file, capture: paths.isEmpty ? nil : { node, t in
            if let name = paths[node.path], t.shape.count == 4 { theirBlocks[name] = t.permuted([0, 3, 1, 2]) }
        })
        var layers: [LayerComparison] = []
        let ours = try forward(model, input: nhwc.permuted([0, 3, 1, 2]), capture: paths.isEmpty ? nil : { name, t in
            if let ref = theirBlocks[name] { layers.append(compareLayer(name, ours: t, reference: ref)) }
        })
        let ref = theirs.count == ours.count ? theirs.reshaped(ours.shape) : theirs
        let report = policy == .float32
            ? try ParityReport(output: ours, reference: ref, tolerance: float32Tolerance,
                               toleranceNote: "canonical forward vs an independent interpretation of the Keras graph, both float32")
            : try policy.compare(output: ours, reference: ref)
        let at = policy == .float32 ? "" : " at \(policy.dtype.rawValue)"
        return ParityCheck(reference: "keras graph self-check (\(batch)x\(size[0])x\(size[1])x\(model.spec.inputChannels) normal input)\(at)", report: report, layers: policy == .float32 ? layers : [])
    }

    /// One activation against its reference, with the float32 tolerance relative to its own scale.
    static func compareLayer(_ name: String, ours: Tensor, reference: Tensor) -> LayerComparison {
        let ref = reference.count == ours.count && reference.shape != ours.shape ? reference.reshaped(ours.shape) : reference
        guard ref.shape == ours.shape else {
            return LayerComparison(name: name, maxAbsError: .nan, maxRelError: .nan, tolerance: float32Tolerance, passed: false,
                                   problem: "shape \(ours.shape), reference \(reference.shape)")
        }
        var maxAbs = 0.0, scale = 1.0, bad = false
        for i in 0..<ours.count {
            let a = Double(ours.data[i]), b = Double(ref.data[i])
            if !a.isFinite || !b.isFinite { bad = true; continue }
            maxAbs = max(maxAbs, abs(a - b))
            scale = max(scale, abs(b))
        }
        let rel = maxAbs / scale
        return LayerComparison(name: name, maxAbsError: maxAbs, maxRelError: rel, tolerance: float32Tolerance,
                               passed: !bad && rel <= float32Tolerance, problem: bad ? "NaN or Inf in the activation" : nil)
    }

    /// A reproducible standard-normal tensor (xorshift + Box–Muller); the same on every machine.
    public static func deterministicInput(shape: [Int], seed: UInt64) -> Tensor {
        var state = seed | 1
        func next() -> Double {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return (Double(state >> 11) + 0.5) / Double(1 << 53)
        }
        let n = shape.reduce(1, *)
        var data = [Float](repeating: 0, count: n)
        var i = 0
        while i < n {
            let u = next(), v = next()
            let r = (-2 * log(u)).squareRoot()
            data[i] = Float(r * cos(2 * .pi * v))
            if i + 1 < n { data[i + 1] = Float(r * sin(2 * .pi * v)) }
            i += 2
        }
        return Tensor(shape: shape, data: data)
    }
}
