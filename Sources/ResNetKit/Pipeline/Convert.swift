import Foundation

/// What `convert` did: the checks it ran and what it wrote.
public struct ConversionReport: Sendable, Codable {
    public var input: String
    public var output: String?
    public var format: String
    public var family: String
    public var classes: Int
    public var tensors: Int
    /// Every parity check, in the order they ran.
    public var checks: [ParityCheck]
    /// True when every check passed (read-back included).
    public var passed: Bool
    /// True when the output was written although a check failed (`--force`).
    public var forced: Bool
    public var notes: [String]
}

/// Options of a conversion.
public struct ConversionOptions: Sendable {
    /// Preset for weights-only files, or to fix a PyTorch structure.
    public var arch: String?
    /// JSON naming table for a PyTorch layout no built-in scheme knows.
    public var mapFile: String?
    /// Goldens to verify against.
    public var expect: String?
    /// Layout of the goldens' input when the file does not say.
    public var layout: Layout?
    /// Write even when a parity check fails.
    public var force: Bool
    /// Skip the forward-pass checks (goldens, graph self-check). A streamed conversion (float32, no
    /// folding) also skips reading the tensor data back; its header and manifest are still reopened
    /// and checked, and the stored checksums come from the bytes written. Others still read back. For timing
    /// the I/O path: the report then says nothing was verified numerically.
    public var skipVerification: Bool = false
    /// Storage dtype of conv and dense weights: f32, f16, bf16 or int8 (see ``RNWWriter``).
    public var dtype: DType
    /// Fold each BatchNorm that directly follows a conv into that conv before writing.
    public var foldBatchNorm: Bool
    /// PyTorch checkpoints: the entry holding the weights, as a dotted path (`state_dict_ema`); nil chooses automatically.
    public var weights: String?
    /// Whether an existing `output` is replaced (the default, atomically and only after every
    /// check passed). When false an existing output is refused (``ResNetError/io(file:reason:)``)
    /// before anything is read, and the commit never replaces a file that appeared meanwhile.
    public var replaceExisting: Bool = true

    /// Creates options; the defaults write float32, unfolded, and refuse on failed parity.
    public init(arch: String? = nil, mapFile: String? = nil, expect: String? = nil, layout: Layout? = nil, force: Bool = false,
                dtype: DType = .float32, foldBatchNorm: Bool = false, skipVerification: Bool = false, weights: String? = nil,
                replaceExisting: Bool = true) {
        self.skipVerification = skipVerification
        self.replaceExisting = replaceExisting
        self.weights = weights
        self.arch = arch; self.mapFile = mapFile; self.expect = expect; self.layout = layout; self.force = force
        self.dtype = dtype; self.foldBatchNorm = foldBatchNorm
    }
}

/// Reads, maps, verifies and writes: the `convert` command as a library call.
///
/// Checks before writing: the goldens when given, and for files with a Keras graph an independent
/// interpretation of that graph. A failed check throws ``ResNetError/parityFailed(reason:)`` and
/// writes nothing unless `force` is set. The file is written unnamed in `output`'s directory
/// (``AtomicOutput``), read back and compared bit for bit (a streamed `skipVerification` conversion reopens its
/// header and manifest only, see ``ConversionOptions/skipVerification``), then put in place at
/// `output`; a failure at any step leaves no output and does not touch an existing one.
public func convert(input: String, output: String, options: ConversionOptions = .init(),
                    progress: ((String) -> Void)? = nil) throws -> ConversionReport {
    // The forward pass, the folding and the dtype encoders work on in-memory models: their errors
    // name the input file (the goldens file is named where their input is run).
    try refuseExistingOutput(output, replace: options.replaceExisting)
    return try AtomicOutput.$replacesExisting.withValue(options.replaceExisting) {
        try namingFiles(model: input, input: input) {
            try convertFile(input: input, output: output, options: options, progress: progress)
        }
    }
}

/// Refuses an existing `output` up front when it may not be replaced, before any work is done.
func refuseExistingOutput(_ output: String, replace: Bool) throws {
    var st = stat()
    if !replace && lstat(output, &st) == 0 {
        throw ResNetError.io(file: output, reason: AtomicOutput.existsReason)
    }
}

private func convertFile(input: String, output: String, options: ConversionOptions,
                         progress: ((String) -> Void)?) throws -> ConversionReport {
    // The provenance hash reads the whole file once more; on the second core it costs no wall time.
    PhaseTrace.mark("convert start")
    let sourceHash = InBackground { let h = try sha256Hex(path: input); PhaseTrace.mark("sha done"); return h }
    // --no-verify at float32 streams tensor by tensor when the input allows (see StreamConvert.swift).
    if let streamed = try convertStreaming(input: input, output: output, options: options, sourceHash: sourceHash, progress: progress) {
        return streamed
    }
    progress?("reading \(input)")
    var loaded = try loadModel(path: input, arch: options.arch, mapFile: options.mapFile, weights: options.weights)
    var checks: [ParityCheck] = []
    var goldens: Goldens?
    if let expect = options.expect, !options.skipVerification {
        goldens = try Goldens(path: expect, inputChannels: loaded.model.spec.inputChannels, override: options.layout)
    }
    if !options.skipVerification {
        loaded = try settleStructure(loaded, goldens: goldens, arch: options.arch, progress: progress)
    }
    let source = loaded.model
    if let g = goldens {
        progress?("verifying against \(g.path)")
        checks.append(try Verifier.checkGoldens(source, goldens: g, aliases: Verifier.layerAliases(loaded)))
    }
    if let graph = loaded.kerasGraph, !options.skipVerification {
        progress?("interpreting the Keras graph for the self-check")
        checks.append(try Verifier.checkKerasGraph(graph, model: source, file: input, blockOutputs: loaded.kerasBlockOutputs))
    }
    var notes = loaded.notes
    if options.skipVerification {
        notes.append("--no-verify: no forward-pass check was run; only the read-back of the written file")
    } else if checks.isEmpty {
        notes.append("no numerical reference: pass --expect io.npz to verify against the source framework")
    }

    // What will be stored: optionally folded, then narrowed exactly as the writer and reader do.
    var transformed = source
    if options.foldBatchNorm {
        let result = try source.foldingBatchNorm()
        transformed = result.model
        notes.append("--fold-bn: folded \(result.folded.count) BatchNorm op(s) into the conv before each")
    }
    let model = try storedModel(transformed, dtype: options.dtype)
    if (options.foldBatchNorm || options.dtype != .float32) && !options.skipVerification {
        // Parity is measured again on the model a reader will get, against the same references.
        let policy = TolerancePolicy.forStorage(options.dtype, spec: model.spec)
        let label = [options.foldBatchNorm ? "bn folded" : nil, options.dtype != .float32 ? options.dtype.rawValue : nil]
            .compactMap { $0 }.joined(separator: ", ")
        if let g = goldens {
            progress?("verifying the stored model (\(label)) against \(g.path)")
            var c = try Verifier.checkGoldens(model, goldens: g, policy: policy)
            c.reference = "golden \(URL(fileURLWithPath: g.path).lastPathComponent) (\(g.layout.rawValue)), stored model (\(label))"
            checks.append(c)
        }
        if let graph = loaded.kerasGraph {
            progress?("self-checking the stored model (\(label)) against the Keras graph")
            var c = try Verifier.checkKerasGraph(graph, model: model, file: input, policy: policy)
            c.reference = "keras graph self-check, stored model (\(label))"
            checks.append(c)
        }
    }
    let failed = checks.filter { !$0.passed }
    if !failed.isEmpty && !options.force {
        throw ResNetError.parityFailed(reason: failed.map { "\($0.reference): \($0.detail)" }.joined(separator: "\n")
                                       + "\nno output written (use --force to write it anyway)")
    }

    progress?("writing \(output)")
    let provenance = RNWProvenance(sourceFormat: loaded.format, sourcePath: URL(fileURLWithPath: input).lastPathComponent,
                                   sourceSHA256: try sourceHash.value(), scheme: model.spec.family,
                                   unwrappingNotes: loaded.notes, toolVersion: toolVersion)
    let records = checks.compactMap { RNWParityRecord(check: $0) }
    var metadata: [String: String] = [:]
    if options.dtype != .float32 { metadata["dtype"] = options.dtype.rawValue }
    if options.foldBatchNorm { metadata["bn_folded"] = "true" }
    let out = try AtomicOutput(destination: output)
    defer { out.discard() }
    // The writer narrows `transformed` itself; re-narrowing the already narrowed `model` could move an
    // int8 scale by an ulp.
    try RNWWriter.write(transformed, into: out, dtype: options.dtype, provenance: provenance, parity: records, metadata: metadata)
    progress?("reading back")
    // `model` already went through the dtype's encode/decode, so the file must reproduce it bit for bit.
    let back = try RNWReader(path: out.path).model()
    try compareBitExact(model, back, file: output)
    try out.commit()
    checks.append(ParityCheck(reference: "read-back", passed: true, report: nil,
                              detail: "reopened \(output): spec and all \(model.tensors.count) tensors bit-identical to the verified model"))
    return ConversionReport(input: input, output: output, format: loaded.format, family: model.spec.family,
                            classes: model.spec.classes, tensors: model.tensors.count, checks: checks,
                            passed: failed.isEmpty, forced: !failed.isEmpty, notes: notes)
}

/// Runs `work` on its own thread; `value()` waits for it.
final class InBackground<T>: @unchecked Sendable {
    private var result: Result<T, Error>?
    private let done = DispatchSemaphore(value: 0)

    init(_ work: @escaping @Sendable () throws -> T) {
        let thread = Thread { [self] in
            result = Result { try work() }
            done.signal()
        }
        thread.start()
    }

    func value() throws -> T {
        done.wait()
        done.signal()   // later calls return at once
        return try result!.get()
    }
}

/// The version of this library and its command-line tool: `--version` prints it, and every file
/// written records it (``toolVersion``).
public let resnetConvertVersion = "0.1.0"

/// The tool and its version as written into provenance records.
public let toolVersion = "resnet-convert \(resnetConvertVersion)"

/// Requires `b` to hold exactly the spec and bits of `a`.
func compareBitExact(_ a: ResNetModel, _ b: ResNetModel, file: String) throws {
    guard a.spec == b.spec else {
        throw ResNetError.parityFailed(reason: "read-back of \(file): the stored spec differs from the one written")
    }
    guard Set(a.tensors.keys) == Set(b.tensors.keys) else {
        throw ResNetError.parityFailed(reason: "read-back of \(file): tensor names differ")
    }
    for (name, t) in a.tensors {
        let u = b.tensors[name]!
        guard t.shape == u.shape, t.data.count == u.data.count,
              t.data.withUnsafeBytes({ x in u.data.withUnsafeBytes { y in x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 } }) else {
            throw ResNetError.parityFailed(reason: "read-back of \(file): tensor \(name) differs from what was written")
        }
    }
}

extension RNWParityRecord {
    init?(check: ParityCheck) {
        guard let r = check.report else { return nil }
        self.init(passed: r.passed, reference: check.reference, maxAbsError: r.maxAbsError, maxRelError: r.maxRelativeError,
                  cosine: r.cosine, top1Agreement: r.top1Agreement.isEmpty ? 1 : Double(r.top1Agreement.filter { $0 }.count) / Double(r.top1Agreement.count),
                  tolerance: r.tolerance, policy: r.toleranceNote)
    }
}

/// Writes `data` to `path` through ``AtomicOutput``, so `path` is either untouched or complete.
public func writeFileAtomically(_ data: Data, to path: String) throws {
    try AtomicOutput.write(data, to: path)
}
