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

    public init(arch: String? = nil, mapFile: String? = nil, expect: String? = nil, layout: Layout? = nil, force: Bool = false) {
        self.arch = arch; self.mapFile = mapFile; self.expect = expect; self.layout = layout; self.force = force
    }
}

/// Reads, maps, verifies and writes: the `convert` command as a library call.
///
/// Checks before writing: the goldens when given, and for files with a Keras graph an independent
/// interpretation of that graph. A failed check throws ``ResNetError/parityFailed(reason:)`` and
/// writes nothing unless `force` is set. The file is written next to `output` under a temporary
/// name, read back and compared bit for bit, then renamed over `output`; a failure at any step
/// leaves no output and does not touch an existing one.
public func convert(input: String, output: String, options: ConversionOptions = .init(),
                    progress: ((String) -> Void)? = nil) throws -> ConversionReport {
    progress?("reading \(input)")
    let loaded = try loadModel(path: input, arch: options.arch, mapFile: options.mapFile)
    let model = loaded.model
    var checks: [ParityCheck] = []
    if let expect = options.expect {
        progress?("verifying against \(expect)")
        let goldens = try Goldens(path: expect, inputChannels: model.spec.inputChannels, override: options.layout)
        checks.append(try Verifier.checkGoldens(model, goldens: goldens))
    }
    if let graph = loaded.kerasGraph {
        progress?("interpreting the Keras graph for the self-check")
        checks.append(try Verifier.checkKerasGraph(graph, model: model, file: input, blockOutputs: loaded.kerasBlockOutputs))
    }
    var notes = loaded.notes
    if checks.isEmpty {
        notes.append("no numerical reference: pass --expect io.npz to verify against the source framework")
    }
    let failed = checks.filter { !$0.passed }
    if !failed.isEmpty && !options.force {
        throw ResNetError.parityFailed(reason: failed.map { "\($0.reference): \($0.detail)" }.joined(separator: "\n")
                                       + "\nno output written (use --force to write it anyway)")
    }

    progress?("writing \(output)")
    let provenance = RNWProvenance(sourceFormat: loaded.format, sourcePath: URL(fileURLWithPath: input).lastPathComponent,
                                   sourceSHA256: try sha256Hex(path: input), scheme: model.spec.family,
                                   unwrappingNotes: loaded.notes, toolVersion: toolVersion)
    let records = checks.compactMap { RNWParityRecord(check: $0) }
    let dir = (output as NSString).deletingLastPathComponent
    let staged = (dir.isEmpty ? "." : dir) + "/." + (output as NSString).lastPathComponent + ".verify-\(getpid())"
    try RNWWriter.write(model, to: staged, provenance: provenance, parity: records, metadata: [:])
    do {
        progress?("reading back")
        let back = try RNWReader(path: staged).model()
        try compareBitExact(model, back, file: output)
        guard rename(staged, output) == 0 else {
            throw ResNetError.io(file: output, reason: String(cString: strerror(errno)))
        }
    } catch {
        unlink(staged)
        throw error
    }
    checks.append(ParityCheck(reference: "read-back", passed: true, report: nil,
                              detail: "reopened \(output): spec and all \(model.tensors.count) tensors bit-identical"))
    return ConversionReport(input: input, output: output, format: loaded.format, family: model.spec.family,
                            classes: model.spec.classes, tensors: model.tensors.count, checks: checks,
                            passed: failed.isEmpty, forced: !failed.isEmpty, notes: notes)
}

/// The version written into provenance records.
public let toolVersion = "resnet-convert 0.1.0"

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
        guard t.shape == u.shape, t.data.withUnsafeBytes({ x in u.data.withUnsafeBytes { y in x.elementsEqual(y) } }) else {
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

/// Writes `data` to a temporary file next to `path` and renames it into place, so `path` is either
/// untouched or complete.
public func writeFileAtomically(_ data: Data, to path: String) throws {
    let dir = (path as NSString).deletingLastPathComponent
    let temp = (dir.isEmpty ? "." : dir) + "/." + (path as NSString).lastPathComponent + ".partial-\(getpid())"
    do {
        try data.write(to: URL(fileURLWithPath: temp), options: .withoutOverwriting)
    } catch {
        unlink(temp)
        throw ResNetError.io(file: path, reason: "\(error.localizedDescription)")
    }
    guard rename(temp, path) == 0 else {
        let reason = String(cString: strerror(errno))
        unlink(temp)
        throw ResNetError.io(file: path, reason: reason)
    }
}
