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
    /// The canonical point it was compared with when the golden used another framework's name
    /// (`maxpool` → `stem.maxpool`, `layer1` → `layer1.2`); nil when the names agree.
    public var comparedWith: String? = nil
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
    /// Per-layer golden names with no equivalent point in the canonical model; listed, never a failure.
    public var notCompared: [String] = []

    public init(reference: String, passed: Bool, report: ParityReport?, detail: String) {
        self.reference = reference; self.passed = passed; self.report = report; self.detail = detail
    }

    init(reference: String, report: ParityReport, layers: [LayerComparison] = [], notCompared: [String] = []) {
        self.init(reference: reference, passed: report.passed, report: report, detail: report.text)
        self.layers = layers
        self.notCompared = notCompared
        self.firstDivergentLayer = layers.first { !$0.passed }?.name
        if let first = firstDivergentLayer {
            passed = false
            detail += "\n  first divergent layer: \(first.displayed)"
        }
        if !notCompared.isEmpty {
            detail += "\n  not compared (no equivalent point in the model): \(notCompared.map(\.displayed).joined(separator: ", "))"
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
    ///
    /// A per-layer golden may be named by the source framework's own modules: each name is resolved
    /// to an equivalent point of the canonical model by ``layerPoint(for:spec:aliases:)``. A name
    /// with no equivalent is listed in ``ParityCheck/notCompared``, never a failure.
    ///
    /// - Parameter model: the canonical model to run.
    /// - Parameter goldens: the source framework's input, output and optional `layer:` activations.
    /// - Parameter policy: the tolerance for the final output.
    /// - Parameter aliases: source-module name → canonical point, for the file the model came from
    ///   (``layerAliases(_:)``); empty resolves canonical, torchvision and keras.applications names only.
    public static func checkGoldens(_ model: ResNetModel, goldens: Goldens, policy: TolerancePolicy = .float32,
                                    aliases: [String: String] = [:]) throws -> ParityCheck {
        var points: [(golden: String, point: String)] = []
        var notCompared: [String] = []
        if policy == .float32 {
            for (name, _) in goldens.layers {
                if let point = layerPoint(for: name, spec: model.spec, aliases: aliases) { points.append((name, point)) } else { notCompared.append(name) }
            }
        }
        let wanted = Set(points.map(\.point))
        // A point may be reported more than once (a deep stem's ReLUs); the last report is its output.
        var captured: [String: Tensor] = [:]
        var order: [String] = []
        let out: Tensor
        do {
            out = try forward(model, input: goldens.input, capture: wanted.isEmpty ? nil : { name, t in
                guard wanted.contains(name) else { return }
                if captured[name] == nil { order.append(name) }
                captured[name] = t
            })
        } catch let e as ResNetError where e.namesPlaceholder {
            // The model was read and checked before; what the forward pass cannot do here is run
            // it on this input (its size or shape): the goldens file is named, with the reason.
            throw ResNetError.invalidInput(file: goldens.path, place: "input", reason: "the model cannot run on this input: \(e.withoutFile)")
        }
        let references = Dictionary(goldens.layers.map { ($0.name, $0.tensor) }, uniquingKeysWith: { a, _ in a })
        var layers: [LayerComparison] = []
        let rank = Dictionary(order.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        for (golden, point) in points.sorted(by: { rank[$0.point, default: .max] < rank[$1.point, default: .max] }) {
            guard let ours = captured[point] else { notCompared.append(golden); continue }
            var c = compareLayer(golden, ours: ours, reference: references[golden]!)
            if point != golden { c.comparedWith = point }
            layers.append(c)
        }
        // (2, 10) and (2, 1, 1, 10) are the same numbers; a different count is a real mismatch.
        let ref = goldens.output.count == out.count ? goldens.output.reshaped(out.shape) : goldens.output
        let report: ParityReport
        do {
            report = policy == .float32
                ? try ParityReport(output: out, reference: ref, tolerance: float32Tolerance,
                                   toleranceNote: "float32 weights vs float32 goldens from the source framework")
                : try policy.compare(output: out, reference: ref)
        } catch let ResNetError.parityFailed(reason) {
            throw ResNetError.parityFailed(reason: "\(goldens.path): \(reason)")   // e.g. an output of another shape
        }
        let at = policy == .float32 ? "" : " at \(policy.dtype.rawValue)"
        return ParityCheck(reference: "golden \(URL(fileURLWithPath: goldens.path).lastPathComponent) (\(goldens.layout.rawValue))\(at)",
                           report: report, layers: layers, notCompared: notCompared)
    }

    /// The canonical point (a name ``forward(_:input:engine:capture:)`` reports) equivalent to a
    /// per-layer golden named `name`, or nil when the model has none.
    ///
    /// In order: a canonical module or block name (`conv1`, `bn1`, `layer2.1`, `fc`); `aliases`; then
    /// the names torchvision and keras.applications give points without weights: `relu` /
    /// `conv1_relu` (the stem after its last ReLU), `maxpool` / `pool1_pool` (after the stem's max
    /// pool), `layerN` (stage N's output, its last block), `avgpool` / `avg_pool` (after global
    /// pooling; (N, C, 1, 1) and (N, C) hold the same numbers), `flatten`, `post_relu` (the head's ReLU).
    public static func layerPoint(for name: String, spec: ResNetSpec, aliases: [String: String] = [:]) -> String? {
        var modules = Set<String>()
        for op in spec.stem + spec.head { if let m = op.moduleName { modules.insert(m) } }
        let blocks = spec.stages.flatMap { $0.blocks.map(\.name) }
        if modules.contains(name) || blocks.contains(name) { return name }
        if let a = aliases[name] { return a }
        func has(_ ops: [Op], _ kind: String) -> Bool { ops.contains { ForwardRunner.positionalName($0) == kind } }
        switch name {
        case "relu", "conv1_relu", "act1": return has(spec.stem, "relu") ? "stem.relu" : nil
        case "maxpool", "pool1_pool": return has(spec.stem, "maxpool") ? "stem.maxpool" : nil
        case "avgpool", "avg_pool", "global_pool": return has(spec.head, "avgpool") ? "head.avgpool" : nil
        case "flatten": return has(spec.head, "flatten") ? "head.flatten" : nil
        case "post_relu": return has(spec.head, "relu") ? "head.relu" : nil
        default: break
        }
        // torchvision `layerN`: the stage's output is its last block's.
        if name.hasPrefix("layer"), let n = Int(name.dropFirst("layer".count)), n >= 1, n <= spec.stages.count,
           let last = spec.stages[n - 1].blocks.last {
            return last.name
        }
        return nil
    }

    /// Source-framework names of the points of `loaded`'s model, for per-layer goldens hooked on the
    /// source modules: a PyTorch module whose tensors became a stem or head module (`linear` → `fc`,
    /// `conv` → `conv1`); the module holding all of a block's tensors (`features.0.1` → `layer1.1`);
    /// the module holding all of a stage's (`conv2` → `layer1.2`); a Keras layer ending a block
    /// (`conv2_block3_out` → `layer1.2`).
    public static func layerAliases(_ loaded: LoadedModel) -> [String: String] {
        var aliases: [String: String] = [:]
        let spec = loaded.model.spec
        var sourceOf: [String: String] = [:]
        for o in loaded.mapping where !o.source.contains("/") { sourceOf[o.canonical] = o.source }
        func parentModule(_ tensor: String) -> String? {
            guard let dot = tensor.lastIndex(of: ".") else { return nil }
            return String(tensor[..<dot])
        }
        func commonPrefix(_ names: [String]) -> String? {
            let split = names.map { $0.split(separator: ".").dropLast().map(String.init) }
            guard var prefix = split.first else { return nil }
            for s in split.dropFirst() {
                var k = 0
                while k < min(prefix.count, s.count) && prefix[k] == s[k] { k += 1 }
                prefix = Array(prefix.prefix(k))
            }
            return prefix.isEmpty ? nil : prefix.joined(separator: ".")
        }
        for op in spec.stem + spec.head {
            guard let module = op.moduleName else { continue }
            let sources = op.parameters.compactMap { sourceOf[$0.name] }.compactMap(parentModule)
            if let first = sources.first, sources.allSatisfy({ $0 == first }), first != module { aliases[first] = module }
        }
        for stage in spec.stages {
            var stageSources: [String] = []
            for block in stage.blocks {
                let sources = (block.pre + block.residual + block.shortcut + block.post).flatMap(\.parameters).compactMap { sourceOf[$0.name] }
                stageSources += sources
                if let prefix = commonPrefix(sources), prefix != block.name { aliases[prefix] = block.name }
            }
            if stage.blocks.count > 1, let last = stage.blocks.last, let prefix = commonPrefix(stageSources), aliases[prefix] == nil {
                aliases[prefix] = last.name
            }
        }
        for (canonical, path) in loaded.kerasBlockOutputs {
            aliases[path] = canonical
            if let leaf = path.split(separator: "/").last { aliases[String(leaf)] = canonical }
        }
        return aliases
    }

    /// Interprets the source Keras graph on the source weights (NHWC, HWIO; independent code)
    /// and compares it with the canonical model on the same deterministic input: a wrong mapping
    /// shows here even without goldens.
    ///
    /// - Parameters:
    ///   - graph: the source file's Keras layer graph, with its weights.
    ///   - model: the canonical model mapped from the same file.
    ///   - file: the source file, named in the result.
    ///   - batch: images in the deterministic input.
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
