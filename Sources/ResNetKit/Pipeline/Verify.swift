import Foundation

/// Memory order of an image batch.
public enum Layout: String, Sendable, Codable, CaseIterable {
    case nchw = "NCHW"
    case nhwc = "NHWC"
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

    public init(reference: String, passed: Bool, report: ParityReport?, detail: String) {
        self.reference = reference; self.passed = passed; self.report = report; self.detail = detail
    }

    init(reference: String, report: ParityReport) {
        self.init(reference: reference, passed: report.passed, report: report, detail: report.text)
    }
}

/// Reference goldens: an input batch and the source framework's output for it.
public struct Goldens: Sendable {
    public var path: String
    /// Input in NCHW, whatever the file's layout was.
    public var input: Tensor
    public var output: Tensor
    public var layout: Layout

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
    }
}

/// Verification steps, shared by `convert` and `verify`.
public enum Verifier {
    /// The float32 tolerance: max |error| ≤ 1e-4 × max(1, max |reference|).
    public static let float32Tolerance = ParityReport.defaultTolerance

    /// Runs the canonical model on the goldens' input and compares with their output under
    /// `policy` (float32 unless the model's weights went through a narrower storage dtype).
    public static func checkGoldens(_ model: ResNetModel, goldens: Goldens, policy: TolerancePolicy = .float32) throws -> ParityCheck {
        let out = try forward(model, input: goldens.input)
        // (2, 10) and (2, 1, 1, 10) are the same numbers; a different count is a real mismatch.
        let ref = goldens.output.count == out.count ? goldens.output.reshaped(out.shape) : goldens.output
        let report = policy == .float32
            ? try ParityReport(output: out, reference: ref, tolerance: float32Tolerance,
                               toleranceNote: "float32 weights vs float32 goldens from the source framework")
            : try policy.compare(output: out, reference: ref)
        let at = policy == .float32 ? "" : " at \(policy.dtype.rawValue)"
        return ParityCheck(reference: "golden \(URL(fileURLWithPath: goldens.path).lastPathComponent) (\(goldens.layout.rawValue))\(at)", report: report)
    }

    /// Interprets the source Keras graph on the source weights (NHWC, HWIO; independent code)
    /// and compares it with the canonical model on the same deterministic input: a wrong mapping
    /// shows here even without goldens.
    /// `policy` applies when `model` went through a narrower storage dtype than the graph's weights.
    public static func checkKerasGraph(_ graph: KerasGraph, model: ResNetModel, file: String, batch: Int = 2,
                                       policy: TolerancePolicy = .float32) throws -> ParityCheck {
        let size = model.spec.inputSize ?? [64, 64]
        let nhwc = deterministicInput(shape: [batch, size[0], size[1], model.spec.inputChannels], seed: 20240601)
        let theirs = try interpretKerasGraph(graph, input: nhwc, file: file)
        let ours = try forward(model, input: nhwc.permuted([0, 3, 1, 2]))
        let ref = theirs.count == ours.count ? theirs.reshaped(ours.shape) : theirs
        let report = policy == .float32
            ? try ParityReport(output: ours, reference: ref, tolerance: float32Tolerance,
                               toleranceNote: "canonical forward vs an independent interpretation of the Keras graph, both float32")
            : try policy.compare(output: ours, reference: ref)
        let at = policy == .float32 ? "" : " at \(policy.dtype.rawValue)"
        return ParityCheck(reference: "keras graph self-check (\(batch)x\(size[0])x\(size[1])x\(model.spec.inputChannels) normal input)\(at)", report: report)
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
