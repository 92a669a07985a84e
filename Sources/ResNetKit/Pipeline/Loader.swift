import Foundation

/// The kinds of files `resnet-convert` reads, recognised by their first bytes, never by name.
public enum InputFormat: String, Sendable, Codable {
    case hdf5
    case zip
    case torchLegacy = "torch-legacy"
    case rnw
    case safetensors
    case unknown

    /// Looks at the first bytes of the file.
    public static func detect(path: String) throws -> InputFormat {
        // Every reader starts here: a directory, FIFO, device or socket is refused by kind (a FIFO
        // opened for reading would block until a writer came).
        let h = FileHandle(fileDescriptor: try InputFile.open(path), closeOnDealloc: true)
        defer { try? h.close() }
        let head = [UInt8]((try? h.read(upToCount: 8)) ?? Data())
        if head.starts(with: [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) { return .hdf5 }
        if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) || head.starts(with: [0x50, 0x4B, 0x05, 0x06]) { return .zip }
        if head.starts(with: [0x80, 0x02, 0x8A, 0x0A]) { return .torchLegacy }   // pickle proto 2, then the torch magic number as LONG1
        if head.starts(with: RNWHeader.magic) { return .rnw }
        // safetensors: a u64 little-endian header length, then the JSON header's '{'.
        if head.count == 8, (try? h.read(upToCount: 1)) == Data([UInt8(ascii: "{")]) { return .safetensors }
        // HDF5 allows a user block: the signature may sit at 512, 1024, … (the HDF5 reader checks that).
        if head.count == 8 && head.allSatisfy({ $0 == 0 }) { return .hdf5 }
        return .unknown
    }
}

/// A weight file read and mapped onto the canonical ResNet.
public struct LoadedModel: Sendable {
    /// The file it came from.
    public var path: String
    /// Human-readable format and variant, e.g. `keras-h5-model (Keras 2.4.0)`.
    public var format: String
    /// The canonical model.
    public var model: ResNetModel
    /// For Keras files: the source layer graph with the source weights, for the graph self-check.
    public var kerasGraph: KerasGraph?
    /// For Keras files: canonical block name → Keras layer producing that block's output.
    public var kerasBlockOutputs: [(canonical: String, kerasPath: String)] = []
    /// Where every canonical tensor came from in the source file; for a `.rnw`, each stored
    /// tensor under its own name with its stored dtype.
    public var mapping: [TensorOrigin]
    /// What was chosen while reading (preset, unwrapping, ignored entries).
    public var notes: [String]
    /// The parity record stored in the file, for `.rnw` inputs.
    public var storedParity: [RNWParityRecord]
    /// Where the weights of a `.rnw` input came from, as its writer recorded; nil for other inputs.
    public var storedProvenance: RNWProvenance? = nil
    /// The narrowest dtype the weights went through: float32 for source files, the conv/dense
    /// weight dtype for a `.rnw`. Parity of the model is judged by this dtype's ``TolerancePolicy``.
    public var storageDType: DType = .float32
    /// Structures the file's weights allow when they cannot tell them apart, the first being
    /// `model`'s. Empty when the file determines the structure. ``convert(input:output:options:progress:)``
    /// and the CLI's `verify` (through ``settleStructure(_:goldens:arch:progress:)``) choose among them by parity with goldens, else by BatchNorm plausibility.
    public var candidates: [StructureCandidate] = []
}

/// Reads any supported weight file and maps it onto the canonical ResNet.
///
/// - Parameters:
///   - path: a Keras `.h5` / `.keras` / `.weights.h5` file or a `.rnw` file.
///   - arch: a preset name (``Presets/all``), needed for Keras weights-only files; for PyTorch
///     files it fixes the structure instead of detecting it.
///   - mapFile: a JSON naming table for a PyTorch layout no built-in scheme knows.
///   - weights: PyTorch checkpoints only: the entry holding the weights, as a dotted path
///     (``readTorchCheckpoint(path:allowModuleRecords:weights:)``); nil chooses automatically.
///   - limits: resource limits for reading the file; nil keeps those in force (``ReadLimits/apply(_:)``,
///     else ``ReadLimits/standard``).
public func loadModel(path: String, arch: String? = nil, mapFile: String? = nil, weights: String? = nil,
                      limits: ReadLimits? = nil) throws -> LoadedModel {
    if let limits { return try limits.apply { try loadModel(path: path, arch: arch, mapFile: mapFile, weights: weights) } }
    // Spec checks and encoders below work on in-memory models: their errors name this file.
    return try namingFiles(model: path, input: path) { try readModel(path: path, arch: arch, mapFile: mapFile, weights: weights) }
}

private func readModel(path: String, arch: String?, mapFile: String?, weights: String?) throws -> LoadedModel {
    let format = try InputFormat.detect(path: path)
    if weights != nil && format != .zip && format != .torchLegacy {
        throw ResNetError.usage("--weights applies to PyTorch checkpoints only; \(path) is not one")
    }
    if mapFile != nil && format != .zip && format != .torchLegacy && format != .safetensors {
        throw ResNetError.usage("--map applies to PyTorch checkpoints only; \(path) is not one")
    }
    switch format {
    case .hdf5:
        return try loadKeras(try readKerasFile(path: path), arch: arch)
    case .zip:
        if try zipHasMember(path: path, named: "config.json") {
            if mapFile != nil { throw ResNetError.usage("--map applies to PyTorch checkpoints only; \(path) is a Keras file") }
            if weights != nil { throw ResNetError.usage("--weights applies to PyTorch checkpoints only; \(path) is a Keras file") }
            return try loadKeras(try readKerasFile(path: path), arch: arch)
        }
        return try loadTorch(try readTorchCheckpoint(path: path, weights: weights), arch: arch, mapFile: mapFile)
    case .torchLegacy:
        return try loadTorch(try readTorchCheckpoint(path: path, weights: weights), arch: arch, mapFile: mapFile)
    case .safetensors:
        return try loadTorch(try readSafeTensors(path: path), arch: arch, mapFile: mapFile)
    case .rnw:
        let (file, model) = try RNWReader.openAndRead(path: path)
        let entries = file.manifest.tensors
        let mapping = entries.map { TensorOrigin(canonical: $0.name, source: $0.name, sourceDType: $0.dtype, shape: $0.shape, transform: "") }
        // Narrowest first: a file with any int8 weight is judged as int8.
        let storage = [DType.int8, .bfloat16, .float16].first { d in entries.contains { $0.dtype == d } } ?? .float32
        var notes: [String] = []
        if storage != .float32 { notes.append("conv and dense weights stored as \(storage.rawValue); read back as float32") }
        if file.manifest.metadata["bn_folded"] == "true" { notes.append("BatchNorm folded into the preceding convs") }
        var loaded = LoadedModel(path: path, format: "rnw \(file.manifest.formatMajor).\(file.manifest.formatMinor)", model: model,
                                 kerasGraph: nil, mapping: mapping, notes: notes, storedParity: file.manifest.parity)
        loaded.storageDType = storage
        loaded.storedProvenance = file.manifest.provenance
        return loaded
    case .unknown:
        throw ResNetError.invalidInput(file: path, place: "first bytes", reason: "not a Keras HDF5 file, a .keras zip, a PyTorch archive, a safetensors file or a .rnw file")
    }
}

private func zipHasMember(path: String, named: String) throws -> Bool {
    let image = try MappedFile(path: path)
    return try checkedZipDirectory(image.bytes, file: path, plainSizeWithinFile: false).contains { $0.name == named }
}

func loadTorch(_ ckpt: TorchCheckpoint, arch: String?, mapFile: String?) throws -> LoadedModel {
    if let arch, Presets.all.contains(where: { $0.name == arch && $0.framework != "torch" }) {
        throw ResNetError.usage("--arch \(arch) is a Keras preset; \(ckpt.path) is a PyTorch checkpoint")
    }
    let mapped = try mapTorchCheckpoint(ckpt, arch: arch, mapFile: mapFile)
    let notes = ckpt.notes + mapped.notes
    // The reader's notes already name what it ignored and why.
    let dtypes = Set(ckpt.tensors.map(\.sourceDType)).map(\.rawValue).sorted()
    var loaded = LoadedModel(path: ckpt.path, format: "\(ckpt.container), \(dtypes.joined(separator: "/"))", model: mapped.model,
                             kerasGraph: nil, mapping: mapped.origins, notes: notes, storedParity: [])
    // A preset or a map fixes the structure; otherwise what the weights cannot show is left open.
    if arch == nil && mapFile == nil {
        if ckpt.modules.isEmpty, let conventional = conventionalStem(loaded.model.spec) {
            loaded.model = ResNetModel(spec: conventional.spec, tensors: loaded.model.tensors)
            loaded.notes.append(conventional.note)
        }
        let (candidates, note) = applyRecordedStructure(structureCandidates(of: loaded.model, mapping: mapped.origins), modules: ckpt.modules)
        if let note { loaded.notes.append(note) }
        if let first = candidates.first, first.model.spec != loaded.model.spec {
            loaded.model = first.model
            loaded.notes.append("module tree: read as \(first.summary)")
        }
        loaded.candidates = candidates.count > 1 ? candidates : []
    }
    return loaded
}

func loadKeras(_ k: KerasFile, arch: String?) throws -> LoadedModel {
    let readings = try kerasReadings(k, arch: arch)
    var notes = readings.notes
    let family = readings.family
    let graphs = readings.graphs
    let version = k.kerasVersion.map { " (Keras \($0))" } ?? ""
    var candidates: [StructureCandidate] = []
    var first: KerasGraphWalker.Result?
    for g in graphs {
        let result = try KerasGraphWalker(graph: g.graph, file: k.path).walk(family: family)
        if first == nil { first = result }
        candidates.append(StructureCandidate(model: result.model, mapping: result.sources, choices: g.choices))
    }
    guard let result = first else {
        throw ResNetError.mapping(file: k.path, reason: "no structure to read")   // every branch above yields one
    }
    if candidates.count > 1 {
        notes.append("\(candidates.count) structures fit the weights (\(candidates[0].summary) first); the choice is settled by parity or BatchNorm plausibility")
    }
    var loaded = LoadedModel(path: k.path, format: k.kind.rawValue + version, model: result.model, kerasGraph: graphs[0].graph,
                             mapping: result.sources, notes: notes, storedParity: [])
    loaded.kerasBlockOutputs = result.blockOutputs
    loaded.candidates = candidates.count > 1 ? candidates : []
    return loaded
}
