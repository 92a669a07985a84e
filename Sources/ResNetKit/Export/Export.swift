import Foundation

/// The formats `export` writes, chosen by the output's extension.
public enum ExportFormat: String, Sendable, Codable, CaseIterable {
    case pth
    case safetensors
    case h5
    case onnx

    /// The format for an output path, or nil for an extension no writer has.
    public init?(path: String) {
        let ext = (path as NSString).pathExtension.lowercased()
        switch ext {
        case "pth", "pt": self = .pth
        case "safetensors": self = .safetensors
        case "h5": self = .h5
        case "onnx": self = .onnx
        default: return nil
        }
    }
}

/// Options of an export.
public struct ExportOptions: Sendable {
    /// How to read the input (see ``loadModel(path:arch:mapFile:weights:limits:)``).
    public var arch: String?
    public var mapFile: String?
    /// ONNX and full-model Keras `.h5`: the input's spatial size [H, W] (ONNX resolves TF `same`
    /// padding for it; Keras declares it in the InputLayer); the spec's own input size when nil.
    public var inputSize: [Int]?
    /// ONNX only: a fixed batch size; nil writes a symbolic `N`.
    public var batch: Int?
    /// PyTorch checkpoints: the entry holding the weights, as a dotted path; nil chooses automatically.
    public var weights: String?
    /// Whether an existing `output` is replaced (the default, atomically after the read-back);
    /// see ``ConversionOptions/replaceExisting``.
    public var replaceExisting: Bool = true

    public init(arch: String? = nil, mapFile: String? = nil, inputSize: [Int]? = nil, batch: Int? = nil, weights: String? = nil,
                replaceExisting: Bool = true) {
        self.arch = arch; self.mapFile = mapFile; self.inputSize = inputSize; self.batch = batch; self.weights = weights
        self.replaceExisting = replaceExisting
    }
}

/// What `export` wrote and how it was checked.
public struct ExportReport: Sendable, Codable {
    public var input: String
    public var output: String
    public var format: String
    /// The naming layout written, e.g. `torchvision names` or `keras.applications ResNet v1 layer names`.
    public var layout: String
    public var tensors: Int
    /// The read-back check, in words.
    public var check: String
    public var notes: [String]
}

/// Reads any supported file, writes it as `output` in the format its extension names, reads the
/// written file back with this library's own reader and compares every canonical tensor bit for
/// bit before the file appears under its name.
///
/// - Throws: ``ResNetError/unsupported(file:place:reason:)`` (exit 3) when the model has no
///   layout in the target format; ``ResNetError/parityFailed(reason:)`` when the read-back differs.
public func exportModel(input: String, output: String, options: ExportOptions = .init(),
                        progress: ((String) -> Void)? = nil) throws -> ExportReport {
    // Errors about the in-memory model name the file it was read from.
    try refuseExistingOutput(output, replace: options.replaceExisting)
    return try AtomicOutput.$replacesExisting.withValue(options.replaceExisting) {
        try namingFiles(model: input, input: input) {
            try exportFile(input: input, output: output, options: options, progress: progress)
        }
    }
}

private func exportFile(input: String, output: String, options: ExportOptions,
                        progress: ((String) -> Void)?) throws -> ExportReport {
    guard let format = ExportFormat(path: output) else {
        throw ResNetError.usage("\(output): cannot tell the export format from the extension: use .pth, .safetensors, .h5 or .onnx")
    }
    progress?("reading \(input)")
    let loaded = try loadModel(path: input, arch: options.arch, mapFile: options.mapFile, weights: options.weights)
    let model = loaded.model
    try model.validate(file: input)
    let out = try AtomicOutput(destination: output)
    defer { out.discard() }
    let staged = out.path
    var result: (layout: String, check: String, notes: [String])
    let kept = keptDTypes(loaded)
    var notes = loaded.notes
    progress?("writing \(output)")
    switch format {
    case .pth, .safetensors, .onnx:
        notes += kept.notes
        let metadata = try exportMetadata(loaded, input: input, dtypes: kept.dtypes)
        if format == .onnx {
            result = try exportONNX(model, to: staged, display: output, inputSize: options.inputSize, batch: options.batch,
                                    dtypes: kept.dtypes, metadata: metadata)
        } else {
            result = try exportTorchLayout(model, to: staged, format: format, display: output, dtypes: kept.dtypes, metadata: metadata)
        }
    case .h5:
        if kept.dtypes.values.contains(where: { $0 != .float32 }) || kept.widenedInt8 {
            notes.append("Keras .h5 weights are written as float32 (the values are those stored, widened exactly)")
        }
        result = try exportKerasWeights(model, to: staged, display: output, inputSize: options.inputSize)
    }
    try out.commit()
    return ExportReport(input: input, output: output, format: format.rawValue, layout: result.layout,
                        tensors: model.tensors.count, check: result.check, notes: notes + result.notes)
}

/// The dtype each canonical tensor is exported at: float16 or bfloat16 where the source stored it
/// so and every value converts back exactly (so nothing is rounded twice), float32 otherwise.
/// int8 has no quantised form in these formats that every loader reads: it widens, with a note.
func keptDTypes(_ loaded: LoadedModel) -> (dtypes: [String: DType], notes: [String], widenedInt8: Bool) {
    var dtypes: [String: DType] = [:]
    var int8 = 0
    var kept: [DType: Int] = [:]
    for origin in loaded.mapping {
        guard let t = loaded.model.tensors[origin.canonical] else { continue }
        switch origin.sourceDType {
        case .float16, .bfloat16:
            let d = origin.sourceDType
            let exact = t.data.allSatisfy { v in
                v.isNaN || (d == .float16 ? float16Value(float16Bits(v)) : bfloat16Value(bfloat16Bits(v))).bitPattern == v.bitPattern
            }
            if exact { dtypes[origin.canonical] = d; kept[d, default: 0] += 1 }
        case .int8:
            int8 += 1
        default:
            break
        }
    }
    var notes: [String] = []
    for (d, n) in kept.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
        notes.append("\(n) tensor(s) kept as \(d.rawValue), as stored in the source")
    }
    if int8 > 0 {
        notes.append("\(int8) int8 tensor(s) widened to float32 (quantised value × per-channel scale): these formats have no per-channel int8 weights that every loader reads")
    }
    return (dtypes, notes, int8 > 0)
}

/// Provenance written into an export's metadata (safetensors `__metadata__`, ONNX
/// `metadata_props`, the `.pth` state dict's `_metadata["resnet_convert"]`): the input's name and
/// SHA-256, the tool version, the architecture, and for a `.rnw` input the provenance and parity
/// record it carries; the preprocessing when the source declared it.
func exportMetadata(_ loaded: LoadedModel, input: String, dtypes: [String: DType]) throws -> [String: String] {
    var m: [String: String] = [
        "tool_version": toolVersion,
        "source_file": URL(fileURLWithPath: input).lastPathComponent,
        "source_sha256": try sha256Hex(path: input),
        "source_format": loaded.format,
        "architecture": loaded.model.spec.family,
    ]
    let narrow = Set(dtypes.values).map(\.rawValue).sorted()
    m["weights_dtype"] = narrow.isEmpty ? "float32" : "\(narrow.joined(separator: "/")) where the source stored them so, float32 otherwise"
    if let p = loaded.storedProvenance {
        m["rnw_source_file"] = p.sourcePath
        m["rnw_source_sha256"] = p.sourceSHA256
        m["rnw_source_format"] = p.sourceFormat
        m["rnw_written_by"] = p.toolVersion
    }
    if !loaded.storedParity.isEmpty {
        // Non-finite errors are not JSON numbers: they are written as strings.
        func number(_ v: Double) -> Any { v.isFinite ? v : String(v) }
        let records: [[String: Any]] = loaded.storedParity.map { r in
            ["passed": r.passed, "reference": r.reference, "max_abs_error": number(r.maxAbsError),
             "max_rel_error": number(r.maxRelError), "cosine": number(r.cosine), "top1_agreement": number(r.top1Agreement),
             "tolerance": number(r.tolerance), "policy": r.policy]
        }
        let data = try JSONSerialization.data(withJSONObject: records, options: [.sortedKeys])
        m["parity"] = String(decoding: data, as: UTF8.self)
    }
    if let pre = loaded.model.spec.preprocessing, !pre.isEmpty { m["preprocessing"] = pre }
    return m
}

/// Same structure: everything but the provenance fields (family, input size, preprocessing note).
func sameStructure(_ a: ResNetSpec, _ b: ResNetSpec) -> Bool {
    a.inputChannels == b.inputChannels && a.classes == b.classes && a.stem == b.stem && a.stages == b.stages && a.head == b.head
}

/// Bit-for-bit equality of two float32 tensors.
func bitIdentical(_ a: Tensor, _ b: Tensor) -> Bool {
    a.shape == b.shape && a.data.withUnsafeBytes { x in b.data.withUnsafeBytes { y in x.elementsEqual(y) } }
}

/// Requires `back` to hold every tensor of `model`, bit for bit (canonical names on both sides).
func requireSameTensors(_ model: ResNetModel, _ back: [String: Tensor], file: String) throws {
    let missing = model.tensors.keys.filter { back[$0] == nil }.sorted()
    let extra = back.keys.filter { model.tensors[$0] == nil }.sorted()
    guard missing.isEmpty, extra.isEmpty else {
        throw ResNetError.parityFailed(reason: "read-back of \(file): missing \(listed(missing)); unexpected \(listed(extra))")
    }
    for (name, t) in model.tensors where !bitIdentical(t, back[name]!) {
        throw ResNetError.parityFailed(reason: "read-back of \(file): tensor \(name) differs from what was written")
    }
}

// MARK: - PyTorch names (.pth, .safetensors)

/// The PyTorch state-dict names for `model`: a built-in scheme whose PyTorch model has exactly
/// this structure (proven by mapping the names back), else the canonical names themselves.
func torchNames(for model: ResNetModel, file: String) throws -> (names: [String: String], scheme: String?) {
    let canonicalModules = Set(model.spec.allOps.compactMap(\.moduleName))
    for name in ["torchvision", "seed", "cifar-akamaster", "cifar-flat-avgpool"] {
        guard let s = TorchSchemes.builtIn.first(where: { $0.name == name }) else { continue }
        let compiled = try CompiledScheme(s, file: file)
        var modules: [String: String] = [:]
        for m in canonicalModules {
            guard let src = compiled.sourceModule(forCanonical: m) else { break }
            modules[m] = src
        }
        guard modules.count == canonicalModules.count else { continue }
        var names: [String: String] = [:]
        for p in model.spec.parameters {
            let dot = p.name.lastIndex(of: ".")!
            names[p.name] = modules[String(p.name[..<dot])]! + p.name[dot...]
        }
        // The scheme must give back this very structure, or its PyTorch class would compute something else.
        let probe = TorchCheckpoint(path: file, container: "probe", tensors: model.spec.parameters.map {
            SourceTensor(name: names[$0.name]!, sourceDType: .float32, tensor: model.tensors[$0.name]!)
        }, notes: [], ignored: [])
        if let mapped = try? mapTorchCheckpoint(probe, arch: nil, mapFile: nil), sameStructure(mapped.model.spec, model.spec) {
            return (names, name)
        }
    }
    return (Dictionary(uniqueKeysWithValues: model.spec.parameters.map { ($0.name, $0.name) }), nil)
}

/// Writes `.pth` or `.safetensors` with PyTorch names (plus `num_batches_tracked` for every BN,
/// so `load_state_dict(strict=True)` accepts it) and reads it back.
func exportTorchLayout(_ model: ResNetModel, to path: String, format: ExportFormat, display: String,
                       dtypes: [String: DType] = [:], metadata: [String: String] = [:]) throws
    -> (layout: String, check: String, notes: [String]) {
    let (names, scheme) = try torchNames(for: model, file: display)
    var raw: [RawTensor] = []
    for op in model.spec.allOps {
        for p in op.parameters {
            raw.append(try RawTensor(name: names[p.name]!, model.tensors[p.name]!, dtype: dtypes[p.name] ?? .float32, file: display))
        }
        if case let .batchNorm(b) = op, let src = names["\(b.name).running_var"] {
            raw.append(RawTensor(name: String(src.dropLast("running_var".count)) + "num_batches_tracked", int64: 0))
        }
    }
    let data: Data
    if format == .pth {
        data = try torchArchiveBytes(raw, metadata: metadata)
    } else {
        data = try safeTensorsBytes(raw, metadata: metadata.merging(["format": "pt"]) { _, pt in pt })
    }
    try writeWholeFile(data, to: path, display: display)

    // Read back with our own reader: every tensor under its written name, bit for bit.
    var ckpt = format == .pth ? try readTorchCheckpoint(path: path) : try readSafeTensors(path: path)
    ckpt.path = display
    let inverse = Dictionary(uniqueKeysWithValues: names.map { ($0.value, $0.key) })
    var back: [String: Tensor] = [:]
    for t in ckpt.tensors {
        guard let canonical = inverse[t.name], t.sourceDType == dtypes[canonical] ?? .float32 else {
            throw ResNetError.parityFailed(reason: "read-back of \(display): unexpected entry \(t.name) (\(t.sourceDType.rawValue))")
        }
        back[canonical] = t.tensor
    }
    try requireSameTensors(model, back, file: display)
    var check = "reopened \(display): all \(model.tensors.count) tensors bit-identical under their PyTorch names"
        + (dtypes.isEmpty ? "" : " and stored dtypes")
    var notes: [String] = []
    let layout: String
    if let scheme {
        // And the names alone describe the structure again.
        let mapped = try mapTorchCheckpoint(ckpt, arch: nil, mapFile: nil)
        guard sameStructure(mapped.model.spec, model.spec) else {
            throw ResNetError.parityFailed(reason: "read-back of \(display): the '\(scheme)' names map to a different structure")
        }
        try requireSameTensors(model, mapped.model.tensors, file: display)
        check += "; mapped back through the '\(scheme)' scheme to the same structure"
        layout = scheme == "seed" ? "the seed PyTorch model's module names" : "\(scheme) names"
    } else {
        layout = "canonical (torchvision-style) names"
        notes.append("no PyTorch model class this tool knows has this structure (\(model.spec.family)); the names are the canonical ones and a module built from the spec is needed to load them")
    }
    return (layout, check, notes)
}
