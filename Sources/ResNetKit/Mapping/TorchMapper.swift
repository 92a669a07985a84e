import Foundation

/// Maps the tensors of a PyTorch checkpoint onto the canonical ResNet.
///
/// The naming scheme is chosen by how many keys each built-in scheme maps (the report lists
/// every candidate's coverage), fixed by `arch`, or read from `mapFile` (a JSON table, see the
/// Mapping article). The architecture — blocks per stage, widths, basic or bottleneck blocks,
/// groups, classes, input channels, shortcut kind, conv bias — is read from the mapped names and
/// the tensor shapes; strides follow the scheme's convention. Every key must be mapped or
/// explicitly ignored.
///
/// - Parameters:
///   - ckpt: the decoded checkpoint (``readTorchCheckpoint(path:allowModuleRecords:weights:)``).
///   - arch: a torch preset from ``Presets/all``: the structure is fixed and the keys are checked against it.
///   - mapFile: a JSON naming table for a layout no built-in scheme knows.
/// - Returns: the model, where each canonical tensor came from, and what was chosen.
/// - Throws: ``ResNetError/mapping(file:reason:)`` listing unexpected and missing keys, or naming a
///   key whose shape does not fit; ``ResNetError/usage(_:)`` for an unknown preset.
public func mapTorchCheckpoint(_ ckpt: TorchCheckpoint, arch: String?, mapFile: String?) throws
    -> (model: ResNetModel, origins: [TensorOrigin], notes: [String]) {
    let file = ckpt.path
    var seen = Set<String>()
    for t in ckpt.tensors where !seen.insert(t.name).inserted {
        throw ResNetError.invalidInput(file: file, place: "state dict", reason: "key '\(t.name)' appears twice")
    }
    var notes: [String] = []
    let scheme: CompiledScheme
    var preset: TorchSchemes.Preset?
    if arch != nil && mapFile != nil {
        throw ResNetError.usage("--arch and --map cannot be used together: a map describes an unknown layout, a preset a known one")
    }
    if let arch {
        guard let p = TorchSchemes.presets.first(where: { $0.name == arch }),
              let s = TorchSchemes.builtIn.first(where: { $0.name == p.scheme }) else {
            let known = Presets.all.filter { $0.framework == "torch" }.map(\.name).joined(separator: ", ")
            throw ResNetError.usage("--arch \(arch) is not a PyTorch preset; \(file) is a PyTorch checkpoint (PyTorch presets: \(known))")
        }
        preset = p
        scheme = try CompiledScheme(s, file: file)
        notes.append("naming scheme '\(s.name)' from preset \(arch): \(coverage(scheme, ckpt))")
    } else if let mapFile {
        scheme = try CompiledScheme(try readTorchMap(path: mapFile), file: mapFile)
        notes.append("naming scheme '\(scheme.scheme.name)' from \(URL(fileURLWithPath: mapFile).lastPathComponent): \(coverage(scheme, ckpt))")
    } else {
        // Naming tables are the fast path; a layout none of them maps completely is recovered from
        // the names, order and shapes themselves.
        var tableFailure: ResNetError?
        var detected: (CompiledScheme, String, complete: Bool)?
        do { detected = try detectScheme(ckpt) } catch let e as ResNetError { tableFailure = e }
        if let (best, note, complete) = detected {
            if complete {
                do { return try mapWithScheme(ckpt, scheme: best, preset: nil, notes: [note], separateDamage: true) } catch let e as TableKeysMissing {
                    // Every key named as the table expects, yet some are absent: a damaged file, not another structure.
                    throw e.error
                } catch let e as ResNetError {
                    // Includes a block without shortcut weights: a structure of its own (parameter-free shortcut).
                    tableFailure = e
                }
            } else {
                tableFailure = .mapping(file: file, reason: note)
            }
        }
        do {
            let recovered = try recoverTorchStructure(ckpt.tensors.filter { !$0.name.hasSuffix("num_batches_tracked") }, file: file,
                                                      ordered: !ckpt.container.hasPrefix("safetensors"))
            var notes = recovered.notes
            if let tableFailure {
                // The table's advice (--map, --arch) does not apply once the structure is recovered.
                let reason = reasonOf(tableFailure, file: file).components(separatedBy: "; pass --").first!
                notes.insert("no naming table fits: \(reason)", at: 0)
            }
            return (recovered.model, recovered.origins, notes)
        } catch let recovery as ResNetError {
            throw ResNetError.mapping(file: file, reason: [tableFailure.map { "naming tables: " + reasonOf($0, file: file) },
                                                           "structure recovery: " + reasonOf(recovery, file: file).replacingOccurrences(of: "structure recovery: ", with: "")]
                .compactMap { $0 }.joined(separator: "; ") + "; pass --arch PRESET or --map FILE.json (see the Mapping article)")
        }
    }
    do {
        return try mapWithScheme(ckpt, scheme: scheme, preset: preset, notes: notes)
    } catch let ResNetError.mapping(f, reason) where preset != nil {
        // A wrong --arch: say which presets the file does fit.
        let fitting = TorchSchemes.presets.filter { $0.name != preset!.name }.filter { p in
            guard let s = TorchSchemes.builtIn.first(where: { $0.name == p.scheme }), let cs = try? CompiledScheme(s, file: file) else { return false }
            return (try? mapWithScheme(ckpt, scheme: cs, preset: p, notes: [])) != nil
        }.map(\.name)
        let hint = fitting.isEmpty ? "; no other preset fits either (without --arch the structure is recovered from the file)"
            : "; the file fits --arch \(fitting.joined(separator: " or "))"
        throw ResNetError.mapping(file: f, reason: reason + hint)
    }
}

/// The reason of a mapping error without the file prefix, for combining messages.
private func reasonOf(_ e: ResNetError, file: String) -> String {
    switch e {
    case let .mapping(_, reason): return reason
    case let .unsupported(_, place, reason), let .invalidInput(_, place, reason): return place.isEmpty ? reason : "\(place): \(reason)"
    default: return e.description
    }
}

/// A table that names every key of a file fails because keys it needs are absent, other than the
/// weights of a shortcut (whose absence is a parameter-free shortcut, a structure of its own).
private struct TableKeysMissing: Error {
    var error: ResNetError
}

/// - Parameter separateDamage: throw ``TableKeysMissing`` (instead of the plain mapping error) when
///   keys outside the shortcuts are missing.
private func mapWithScheme(_ ckpt: TorchCheckpoint, scheme: CompiledScheme, preset: TorchSchemes.Preset?, notes: [String],
                           separateDamage: Bool = false) throws
    -> (model: ResNetModel, origins: [TensorOrigin], notes: [String]) {
    let file = ckpt.path
    var notes = notes

    // Every key is mapped or ignored, or the mapping fails here, listing all of them.
    var modules: [String: TorchModuleRecord] = [:]
    var order: [String] = []
    var unexpected: [String] = []
    var ignored: [String] = []
    for t in ckpt.tensors {
        switch scheme.fate(of: t.name) {
        case .ignored: ignored.append(t.name)
        case .unmapped: unexpected.append(t.name)
        case let .mapped(rule, sourceModule, canonical, suffix):
            let role = scheme.rules[rule].role
            if var m = modules[canonical] {
                guard m.source == sourceModule, m.role == role else {
                    throw ResNetError.mapping(file: file, reason: "'\(m.source)' and '\(sourceModule)' both map to canonical module '\(canonical)'")
                }
                m.params[suffix] = t
                modules[canonical] = m
            } else {
                modules[canonical] = TorchModuleRecord(canonical: canonical, source: sourceModule, role: role, params: [suffix: t])
                order.append(canonical)
            }
        }
    }
    if !ignored.isEmpty {
        let nbt = ignored.filter { $0.hasSuffix("num_batches_tracked") }.count
        let other = ignored.filter { !$0.hasSuffix("num_batches_tracked") }
        var parts: [String] = []
        if nbt > 0 { parts.append("\(nbt) num_batches_tracked") }
        if !other.isEmpty { parts.append(other.joined(separator: ", ")) }
        notes.append("ignored keys: \(parts.joined(separator: "; "))")
    }

    var builder = TorchArchitectureBuilder(scheme: scheme, modules: modules, file: file)
    builder.unexpected = unexpected
    let family = preset?.name ?? "torch-\(scheme.scheme.name)"
    let built: TorchArchitectureBuilder.Built
    do { built = try builder.build(family: family) } catch let e as ResNetError where separateDamage && builder.missingOutsideShortcuts {
        throw TableKeysMissing(error: e)
    }
    if let preset { try check(built.model.spec, against: preset, builder: builder) }
    notes += built.notes
    return (built.model, built.origins, notes)
}

/// "m of n keys mapped", n counting the keys the scheme does not ignore.
private func coverage(_ scheme: CompiledScheme, _ ckpt: TorchCheckpoint) -> String {
    var mapped = 0, considered = 0
    for t in ckpt.tensors {
        switch scheme.fate(of: t.name) {
        case .mapped: mapped += 1; considered += 1
        case .unmapped: considered += 1
        case .ignored: break
        }
    }
    return "\(mapped) of \(considered) keys mapped"
}

/// Reads a `--map` JSON naming table.
func readTorchMap(path: String) throws -> TorchScheme {
    let data = try InputFile.contents(path, limit: 1 << 20) { _ in
        ResNetError.invalidInput(file: path, place: "", reason: "a naming table larger than 1 MiB is not plausible")
    }
    do {
        return try JSONDecoder().decode(TorchScheme.self, from: data)
    } catch let DecodingError.keyNotFound(key, ctx) {
        throw ResNetError.invalidInput(file: path, place: placeOf(ctx.codingPath + [key]), reason: "required field '\(key.stringValue)' is missing")
    } catch let DecodingError.dataCorrupted(ctx) {
        throw ResNetError.invalidInput(file: path, place: placeOf(ctx.codingPath), reason: ctx.debugDescription)
    } catch let DecodingError.typeMismatch(_, ctx) {
        throw ResNetError.invalidInput(file: path, place: placeOf(ctx.codingPath), reason: ctx.debugDescription)
    } catch {
        throw ResNetError.invalidInput(file: path, place: "", reason: "not a naming table: \(error)")
    }
}

private func placeOf(_ path: [CodingKey]) -> String {
    path.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(in: CharacterSet(charactersIn: "."))
}

/// Picks the built-in scheme that maps the most keys; a tie at the top is an error.
func detectScheme(_ ckpt: TorchCheckpoint) throws -> (CompiledScheme, String, complete: Bool) {
    let file = ckpt.path
    let schemes = try TorchSchemes.builtIn.map { try CompiledScheme($0, file: file) }
    var scored: [(scheme: CompiledScheme, mapped: Int)] = []
    var ignoredCount = 0
    for s in schemes {
        var mapped = 0, ignored = 0
        for t in ckpt.tensors {
            switch s.fate(of: t.name) {
            case .mapped: mapped += 1
            case .ignored: ignored += 1
            case .unmapped: break
            }
        }
        ignoredCount = max(ignoredCount, ignored)
        scored.append((s, mapped))
    }
    let total = ckpt.tensors.count - ignoredCount
    let ranked = scored.sorted { $0.mapped > $1.mapped }
    func describe(_ x: (scheme: CompiledScheme, mapped: Int)) -> String { "\(x.scheme.scheme.name) \(x.mapped)/\(total)" }
    guard let best = ranked.first, best.mapped > 0 else {
        let sample = firstItems(ckpt.tensors.map(\.name), 8)
        throw ResNetError.mapping(file: file, reason: "no built-in naming scheme maps any key (keys start: \(sample)); pass --map FILE.json with a naming table, see the Mapping article")
    }
    // Keys no scheme maps at all: a tie below full coverage is really these keys fitting nowhere.
    let unmappedByAll = ckpt.tensors.filter { t in schemes.allSatisfy { if case .unmapped = $0.fate(of: t.name) { return true } else { return false } } }.map(\.name)
    let tied = ranked.filter { $0.mapped == best.mapped }
    if tied.count > 1 {
        if !unmappedByAll.isEmpty {
            throw ResNetError.mapping(file: file, reason: "\(unmappedByAll.count) of \(total) keys fit no naming scheme (\(listed(unmappedByAll))); the closest, \(tied.map { $0.scheme.scheme.name }.joined(separator: ", ")), map \(best.mapped)")
        }
        throw ResNetError.mapping(file: file, reason: "naming schemes \(tied.map { $0.scheme.scheme.name }.joined(separator: ", ")) each map all \(best.mapped) keys; pass --arch PRESET or --map FILE.json to choose")
    }
    let others = ranked.dropFirst().filter { $0.mapped > 0 }.map(describe)
    let note = "naming scheme '\(best.scheme.scheme.name)' detected: \(best.mapped) of \(total) keys mapped"
        + (others.isEmpty ? "" : " (others: \(others.joined(separator: ", ")))")
    if best.mapped < total {
        let missed = ckpt.tensors.filter { if case .unmapped = best.scheme.fate(of: $0.name) { return true } else { return false } }.map(\.name)
        return (best.scheme, "the closest naming scheme, '\(best.scheme.scheme.name)', maps \(best.mapped) of \(total) keys; it does not map \(listed(missed))", false)
    }
    return (best.scheme, note, true)
}

/// Checks a built spec against the structure a preset fixes.
private func check(_ spec: ResNetSpec, against preset: TorchSchemes.Preset, builder: TorchArchitectureBuilder) throws {
    var problems: [String] = []
    let found = spec.stages.map { $0.blocks.count }
    if found != preset.blocks {
        // Say which blocks are extra or absent, by their source names.
        var extra: [String] = [], absent: [String] = []
        for s in 0..<max(found.count, preset.blocks.count) {
            let have = s < found.count ? found[s] : 0, want = s < preset.blocks.count ? preset.blocks[s] : 0
            for b in min(have, want)..<max(have, want) {
                let name = builder.sourceBlockName(stage: s + 1, block: b)
                if have > want { extra.append(name) } else { absent.append(name) }
            }
        }
        var msg = "blocks per stage are \(found.map(String.init).joined(separator: "-")), the preset needs \(preset.blocks.map(String.init).joined(separator: "-"))"
        if !extra.isEmpty { msg += "; unexpected blocks: \(listed(extra))" }
        if !absent.isEmpty { msg += "; missing blocks: \(listed(absent))" }
        problems.append(msg)
    }
    for stage in spec.stages {
        for block in stage.blocks {
            let convs = block.residual.compactMap { op -> ConvOp? in if case let .conv(c) = op { return c } else { return nil } }
            if convs.count != (preset.bottleneck ? 3 : 2) {
                problems.append("\(block.name) has \(convs.count) convolutions, a \(preset.bottleneck ? "bottleneck" : "basic") block has \(preset.bottleneck ? 3 : 2)")
            }
            let groups = convs.map(\.groups).max() ?? 1
            if groups != preset.groups {
                problems.append("\(block.name) has groups \(groups), the preset needs \(preset.groups)")
            }
            let hasWeights = block.shortcut.contains { $0.moduleName != nil }
            if preset.parameterFreeShortcuts && hasWeights {
                problems.append("\(block.name) has shortcut weights; the preset uses option A shortcuts (none)")
            }
        }
    }
    if !problems.isEmpty {
        throw ResNetError.mapping(file: builder.file, reason: "does not fit preset \(preset.name): \(problems.prefix(6).joined(separator: "; "))\(problems.count > 6 ? "; and \(problems.count - 6) more" : "")")
    }
}

/// A list for a message, cut after 24 entries.
func listed(_ items: [String]) -> String { firstItems(items, 24) }

/// One canonical module and the source tensors that fill it.
struct TorchModuleRecord: Sendable {
    var canonical: String
    /// Source module name (key without the parameter suffix).
    var source: String
    var role: TorchModuleRole
    /// Parameter suffix → tensor.
    var params: [String: SourceTensor]
}

/// Builds the canonical spec from canonical module names and shapes, following a convention.
struct TorchArchitectureBuilder {
    let scheme: CompiledScheme
    var modules: [String: TorchModuleRecord]
    let file: String
    /// Source keys no rule maps (filled by the caller), plus modules no ResNet part uses.
    var unexpected: [String] = []
    var missing: [String] = []
    /// Some missing key is not a shortcut weight.
    var missingOutsideShortcuts = false
    private var used = Set<String>()
    private var tensors: [String: Tensor] = [:]
    private var origins: [TensorOrigin] = []
    /// Final block name → canonical name it had in the table (`blocks.4` for flat schemes).
    private var tableBlockName: [String: String] = [:]

    init(scheme: CompiledScheme, modules: [String: TorchModuleRecord], file: String) {
        self.scheme = scheme; self.modules = modules; self.file = file
    }

    private var convention: TorchConvention { scheme.scheme.convention }
    private var eps: Double { scheme.scheme.bnEpsilon ?? 1e-5 }   // PyTorch's BatchNorm2d default

    // MARK: Names and messages

    /// The source name of a canonical module, for messages.
    func sourceName(_ canonical: String) -> String {
        if let m = modules[canonical] { return m.source }
        var table = canonical
        for (final, original) in tableBlockName where canonical.hasPrefix(final + ".") {
            table = original + canonical.dropFirst(final.count)
        }
        return scheme.sourceModule(forCanonical: table) ?? "(canonical \(canonical))"
    }

    /// A block's source name prefix, e.g. `stage_3.5`, for messages.
    func sourceBlockName(stage: Int, block: Int) -> String {
        let conv1 = sourceName("layer\(stage).\(block).conv1")
        guard let dot = conv1.lastIndex(of: "."), !conv1.hasPrefix("(") else { return conv1 }
        return conv1[..<dot] + ".*"
    }

    private mutating func markMissing(_ canonical: String, _ suffixes: [String], shortcut: Bool = false) {
        if !shortcut { missingOutsideShortcuts = true }
        let src = sourceName(canonical)
        for s in suffixes { missing.append("\(src).\(s)") }
    }

    private func failure(_ extra: String? = nil) -> ResNetError {
        var parts: [String] = []
        if let extra { parts.append(extra) }
        if !unexpected.isEmpty { parts.append("unexpected keys (no rule of scheme '\(scheme.scheme.name)' maps them): \(listed(unexpected))") }
        if !missing.isEmpty { parts.append("missing keys: \(listed(missing))") }
        return .mapping(file: file, reason: parts.joined(separator: "; "))
    }

    private func shapeError(_ key: String, _ shape: [Int], _ expected: String) -> ResNetError {
        .mapping(file: file, reason: "\(key) has shape \(shape), expected \(expected)")
    }

    // MARK: Modules → ops

    private func module(_ canonical: String, role: TorchModuleRole) throws -> TorchModuleRecord? {
        guard let m = modules[canonical] else { return nil }
        guard m.role == role else {
            throw ResNetError.mapping(file: file, reason: "'\(m.source)' maps to '\(canonical)' as \(m.role.rawValue), but that position holds a \(role.rawValue)")
        }
        return m
    }

    private mutating func record(_ m: TorchModuleRecord, canonical: String, suffix: String, shape: [Int]) {
        guard let t = m.params[suffix] else { return }
        tensors["\(canonical).\(suffix)"] = t.tensor
        origins.append(TensorOrigin(canonical: "\(canonical).\(suffix)", source: t.name, sourceDType: t.sourceDType, shape: shape, transform: ""))
    }

    /// A convolution; groups from the weight's input-channel axis. Missing weight ends the build.
    private mutating func conv(_ name: String, inChannels: Int, stride: Int) throws -> ConvOp {
        guard let m = try module(name, role: .conv) else {
            markMissing(name, ["weight"])
            throw failure("\(name) (conv) has no weight")
        }
        used.insert(name)
        guard let w = m.params["weight"] else {
            markMissing(name, ["weight"])
            throw failure()
        }
        let key = w.name, s = w.tensor.shape
        guard s.count == 4, s.allSatisfy({ $0 > 0 }) else { throw shapeError(key, s, "(out, in/groups, kh, kw)") }
        guard inChannels % s[1] == 0 else {
            throw shapeError(key, s, "an input-channel axis that divides the \(inChannels) channels reaching it")
        }
        let groups = inChannels / s[1]
        guard s[0] % groups == 0 else { throw shapeError(key, s, "out channels divisible by groups \(groups)") }
        guard s[2] % 2 == 1, s[3] % 2 == 1 else {
            throw ResNetError.unsupported(file: file, place: key, reason: "even kernel \(s[2])x\(s[3]): the schemes pad by kernel/2, which needs odd kernels")
        }
        if let b = m.params["bias"], b.tensor.shape != [s[0]] { throw shapeError(b.name, b.tensor.shape, "[\(s[0])]") }
        let op = ConvOp(name: name, inChannels: inChannels, outChannels: s[0], kernel: [s[2], s[3]], stride: [stride, stride],
                        padding: .explicit(top: s[2] / 2, bottom: s[2] / 2, left: s[3] / 2, right: s[3] / 2),
                        groups: groups, bias: m.params["bias"] != nil)
        record(m, canonical: name, suffix: "weight", shape: s)
        record(m, canonical: name, suffix: "bias", shape: [s[0]])
        return op
    }

    /// A BatchNorm over `channels`; weight and bias together or neither (`affine=False`).
    private mutating func batchNorm(_ name: String, channels: Int) throws -> BatchNormOp? {
        guard let m = try module(name, role: .batchNorm) else {
            markMissing(name, ["weight", "bias", "running_mean", "running_var"])
            return nil
        }
        used.insert(name)
        let affine = m.params["weight"] != nil || m.params["bias"] != nil
        let needed = (affine ? ["weight", "bias"] : []) + ["running_mean", "running_var"]
        let absent = needed.filter { m.params[$0] == nil }
        if !absent.isEmpty { markMissing(name, absent); return nil }
        for s in needed {
            let t = m.params[s]!
            guard t.tensor.shape == [channels] else { throw shapeError(t.name, t.tensor.shape, "[\(channels)] (the channels reaching it)") }
            record(m, canonical: name, suffix: s, shape: [channels])
        }
        return BatchNormOp(name: name, channels: channels, epsilon: eps, scale: affine, center: affine)
    }

    // MARK: Build

    struct Built {
        var model: ResNetModel
        var origins: [TensorOrigin]
        var notes: [String]
    }

    private struct BlockModules {
        var convs: [Int: String] = [:]     // n → canonical module
        var bns: [Int: String] = [:]
        var downsample: [Int: String] = [:]
    }

    mutating func build(family: String) throws -> Built {
        // Sort the canonical modules into stem, blocks and head.
        typealias Slot = WritableKeyPath<BlockModules, [Int: String]>
        let stagedPatterns: [(NamePattern, Slot)] = [
            (try! NamePattern("layer{s}.{b}.conv{n}"), \.convs), (try! NamePattern("layer{s}.{b}.bn{n}"), \.bns),
            (try! NamePattern("layer{s}.{b}.downsample.{k}"), \.downsample),
        ]
        let flatPatterns: [(NamePattern, Slot)] = [
            (try! NamePattern("blocks.{i}.conv{n}"), \.convs), (try! NamePattern("blocks.{i}.bn{n}"), \.bns),
            (try! NamePattern("blocks.{i}.downsample.{k}"), \.downsample),
        ]
        let deep = try! NamePattern("conv1.{k}")
        var stemDeep: [Int: String] = [:]
        var stagedBlocks: [[Int]: BlockModules] = [:]
        var flatBlocks: [Int: BlockModules] = [:]
        var flatSuffix: [String: String] = [:]   // flat canonical name → part after `blocks.{i}.`
        for name in modules.keys.sorted() {
            if name == "conv1" || name == "bn1" || name == "fc" { continue }
            if let v = deep.match(name) { stemDeep[v["k"]!] = name; continue }
            var placed = false
            for (p, slot) in stagedPatterns {
                guard let v = p.match(name) else { continue }
                stagedBlocks[[v["s"]!, v["b"]!], default: BlockModules()][keyPath: slot][v["n"] ?? v["k"]!] = name
                placed = true; break
            }
            if !placed {
                for (p, slot) in flatPatterns {
                    guard let v = p.match(name) else { continue }
                    flatBlocks[v["i"]!, default: BlockModules()][keyPath: slot][v["n"] ?? v["k"]!] = name
                    flatSuffix[name] = String(name.dropFirst("blocks.\(v["i"]!).".count))
                    placed = true; break
                }
            }
            if !placed {
                // Mapped to a canonical name no ResNet part has.
                unexpected += modules[name]!.params.values.map(\.name).sorted()
                used.insert(name)
            }
        }
        if !stagedBlocks.isEmpty && !flatBlocks.isEmpty {
            throw failure("the table mixes `layer{s}.{b}` and flat `blocks.{i}` canonical names")
        }

        // Flat block lists: a new stage starts where a block changes the channel count. The
        // modules are renamed to `layer{s}.{b}` so the rest of the build sees one form.
        if !flatBlocks.isEmpty {
            let indices = flatBlocks.keys.sorted()
            for (expected, i) in indices.enumerated() where expected != i {
                throw failure("flat block \(sourceName("blocks.\(expected).conv1")) is missing (blocks \(indices.map(String.init).joined(separator: ", ")) are present)")
            }
            var stage = 0, block = 0
            for i in indices {
                let bm = flatBlocks[i]!
                let inC = bm.convs[1].flatMap { modules[$0]?.params["weight"]?.tensor.shape }.flatMap { $0.count == 4 ? $0[1] : nil }
                let outC = bm.convs.keys.max().flatMap { bm.convs[$0] }.flatMap { modules[$0]?.params["weight"]?.tensor.shape.first }
                if i == 0 { stage = 1; block = 0 } else if let inC, let outC, inC != outC { stage += 1; block = 0 } else { block += 1 }
                tableBlockName["layer\(stage).\(block)"] = "blocks.\(i)"
                var renamed = BlockModules()
                for slot: Slot in [\.convs, \.bns, \.downsample] {
                    for (n, old) in bm[keyPath: slot] {
                        let new = "layer\(stage).\(block).\(flatSuffix[old]!)"
                        modules[new] = modules.removeValue(forKey: old).map { var r = $0; r.canonical = new; return r }
                        renamed[keyPath: slot][n] = new
                    }
                }
                stagedBlocks[[stage, block]] = renamed
            }
        }
        var stages: [[BlockModules]] = []
        let stageNumbers = Set(stagedBlocks.keys.map { $0[0] }).sorted()
        for (k, s) in stageNumbers.enumerated() where s != k + 1 {
            throw failure("stage \(k + 1) (\(sourceName("layer\(k + 1).0.conv1")) …) is missing; stages found: \(stageNumbers.map(String.init).joined(separator: ", "))")
        }
        // Block numbers grouped by stage in one pass (a filter per stage is quadratic in the stage count).
        var blocksOf: [Int: [Int]] = [:]
        for key in stagedBlocks.keys { blocksOf[key[0], default: []].append(key[1]) }
        for s in stageNumbers {
            let bs = (blocksOf[s] ?? []).sorted()
            for (k, b) in bs.enumerated() where b != k {
                throw failure("block \(sourceName("layer\(s).\(k).conv1")) is missing in stage \(s); blocks found: \(bs.map(String.init).joined(separator: ", "))")
            }
            stages.append(bs.map { stagedBlocks[[s, $0]]! })
        }
        guard !stages.isEmpty else { throw failure("no residual blocks were mapped") }

        // Stem.
        var stem: [Op] = []
        let stemConvNames = stemDeep.keys.sorted().map { stemDeep[$0]! } + (modules["conv1"] != nil || stemDeep.isEmpty ? ["conv1"] : [])
        if modules["conv1"] != nil && !stemDeep.isEmpty {
            throw failure("both a plain stem conv '\(sourceName("conv1"))' and a deep stem '\(sourceName(stemDeep.values.sorted()[0]))' are mapped")
        }
        guard let first = stemConvNames.first, let fw = modules[first]?.params["weight"]?.tensor.shape, fw.count == 4 else {
            markMissing("conv1", ["weight"])
            throw failure("the stem convolution is missing")
        }
        let inputChannels = fw[1]
        var channels = inputChannels
        for (j, name) in stemConvNames.enumerated() {
            guard let m = modules[name] else { continue }
            if m.role == .batchNorm {
                if let b = try batchNorm(name, channels: channels) { stem.append(.batchNorm(b)) }
                stem.append(.relu)
            } else {
                let stride = (j == 0 && convention != .cifar) ? 2 : 1
                let c = try conv(name, inChannels: channels, stride: stride)
                stem.append(.conv(c)); channels = c.outChannels
            }
        }
        switch convention {
        case .torchvision, .cifar:
            if let b = try batchNorm("bn1", channels: channels) { stem.append(.batchNorm(b)) }
            stem.append(.relu)
        case .seed:
            break   // no stem BN: a mapped `bn1` stays unused and is reported as unexpected
        }
        switch convention {
        case .torchvision: stem.append(.maxPool(PoolOp(kernel: [3, 3], stride: [2, 2], padding: .symmetric(1))))
        case .seed: stem.append(.maxPool(PoolOp(kernel: [3, 3], stride: [2, 2], padding: .valid)))
        case .cifar: break
        }
        let stemWidth = channels

        // Blocks.
        var outStages: [Stage] = []
        var kinds = Set<Int>(), groupSet = Set<Int>()
        for (si, blocks) in stages.enumerated() {
            var outBlocks: [Block] = []
            for (bi, bm) in blocks.enumerated() {
                let name = "layer\(si + 1).\(bi)"
                let convNs = bm.convs.keys.sorted()
                guard convNs == Array(1...max(1, convNs.count)), (2...3).contains(convNs.count) else {
                    throw failure("block \(sourceBlockName(stage: si + 1, block: bi)) has convolutions \(convNs.map { "conv\($0)" }.joined(separator: ", ")); a basic block has conv1-2, a bottleneck conv1-3")
                }
                kinds.insert(convNs.count)
                if convention != .torchvision && convNs.count == 3 {
                    throw ResNetError.unsupported(file: file, place: sourceBlockName(stage: si + 1, block: bi), reason: "bottleneck blocks are only known in the torchvision convention")
                }
                let stride = (si > 0 && bi == 0) ? 2 : 1
                // Where the stride sits: conv2 of a bottleneck (torchvision v1.5), else conv1.
                let strideConv = convNs.count == 3 ? 2 : 1
                let inC = channels
                var residual: [Op] = []
                for n in convNs {
                    let c = try conv(bm.convs[n]!, inChannels: channels, stride: n == strideConv ? stride : 1)
                    groupSet.insert(c.groups)
                    residual.append(.conv(c)); channels = c.outChannels
                    let bnName = bm.bns[n] ?? "\(name).bn\(n)"
                    switch convention {
                    case .torchvision, .cifar:
                        if let b = try batchNorm(bnName, channels: channels) { residual.append(.batchNorm(b)) }
                        if n != convNs.last { residual.append(.relu) }
                    case .seed:
                        residual.append(.relu)
                        if let b = try batchNorm(bnName, channels: channels) { residual.append(.batchNorm(b)) }
                    }
                }
                let outC = channels
                // Shortcut.
                var shortcut: [Op] = []
                let needs = stride != 1 || inC != outC
                let ds = bm.downsample
                if !ds.isEmpty {
                    let allowed: Set<Int> = convention == .seed ? [0] : [0, 1]
                    for (k, t) in ds where !allowed.contains(k) { unexpected += modules[t]!.params.values.map(\.name).sorted() }
                    let dsConv = ds[0] ?? "\(name).downsample.0"
                    let c = try conv(dsConv, inChannels: inC, stride: stride)
                    guard c.outChannels == outC else {
                        throw shapeError(modules[dsConv]!.params["weight"]!.name, modules[dsConv]!.params["weight"]!.tensor.shape, "\(outC) output channels to match the residual branch")
                    }
                    shortcut.append(.conv(c))
                    if convention == .seed {
                        shortcut.append(.relu)
                    } else {
                        let dsBN = ds[1] ?? "\(name).downsample.1"
                        if let b = try batchNorm(dsBN, channels: outC) { shortcut.append(.batchNorm(b)) }
                    }
                } else if needs {
                    guard convention == .cifar, let kind = scheme.scheme.shortcutWithoutWeights else {
                        markMissing("\(name).downsample.0", ["weight"], shortcut: true)
                        if convention != .seed { markMissing("\(name).downsample.1", ["weight", "bias", "running_mean", "running_var"], shortcut: true) }
                        throw failure("block \(sourceBlockName(stage: si + 1, block: bi)) changes the shape (\(inC)→\(outC) channels, stride \(stride)) but has no shortcut weights")
                    }
                    guard outC >= inC else {
                        throw ResNetError.unsupported(file: file, place: sourceBlockName(stage: si + 1, block: bi), reason: "a parameter-free shortcut cannot reduce \(inC) channels to \(outC)")
                    }
                    if stride != 1 {
                        switch kind {
                        case .subsamplePad: shortcut.append(.subsample(stride: stride))
                        case .avgPoolPad: shortcut.append(.avgPool(PoolOp(kernel: [stride, stride], stride: [stride, stride])))
                        }
                    }
                    let pad = outC - inC
                    if pad > 0 { shortcut.append(.channelPad(before: pad / 2, after: pad - pad / 2)) }
                }
                let post: [Op] = convention == .seed ? [] : [.relu]
                outBlocks.append(Block(name: name, residual: residual, shortcut: shortcut, post: post))
            }
            outStages.append(Stage(blocks: outBlocks))
        }

        // Head.
        var head: [Op] = []
        if let k = scheme.scheme.headPool {
            head += [.avgPool(PoolOp(kernel: [k, k], stride: [k, k])), .flatten(.chw)]
        } else {
            head.append(.globalAvgPool)
        }
        guard let fc = try module("fc", role: .linear), let w = fc.params["weight"] else {
            markMissing("fc", ["weight", "bias"])
            throw failure("the classifier is missing")
        }
        used.insert("fc")
        guard w.tensor.shape.count == 2, w.tensor.shape[1] == channels, w.tensor.shape[0] > 0 else {
            throw shapeError(w.name, w.tensor.shape, "(classes, \(channels))")
        }
        let classes = w.tensor.shape[0]
        if let b = fc.params["bias"], b.tensor.shape != [classes] { throw shapeError(b.name, b.tensor.shape, "[\(classes)]") }
        head.append(.dense(DenseOp(name: "fc", inFeatures: channels, outFeatures: classes, bias: fc.params["bias"] != nil)))
        record(fc, canonical: "fc", suffix: "weight", shape: w.tensor.shape)
        record(fc, canonical: "fc", suffix: "bias", shape: [classes])

        // Anything mapped but not used by the structure is unexpected.
        for (name, m) in modules where !used.contains(name) {
            unexpected += m.params.values.map(\.name).sorted()
        }
        if !unexpected.isEmpty || !missing.isEmpty {
            unexpected = Array(Set(unexpected)).sorted()
            throw failure()
        }

        let spec = ResNetSpec(family: family, inputChannels: inputChannels, classes: classes, inputSize: scheme.scheme.inputSize,
                              stem: stem, stages: outStages, head: head)
        let model = ResNetModel(spec: spec, tensors: tensors)
        try model.validate(file: file)
        let rank = Dictionary(spec.parameters.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        origins.sort { rank[$0.canonical, default: .max] < rank[$1.canonical, default: .max] }

        var notes: [String] = []
        let counts = outStages.map { String($0.blocks.count) }.joined(separator: "-")
        let kind = kinds == [3] ? "bottleneck" : kinds == [2] ? "basic" : "mixed basic/bottleneck"
        let widths = outStages.map { stage -> String in
            if case let .conv(c)? = stage.blocks.last?.residual.last(where: { if case .conv = $0 { return true } else { return false } }) { return String(c.outChannels) }
            return "?"
        }.joined(separator: "-")
        let groups = groupSet.sorted().map(String.init).joined(separator: "/")
        let bias = spec.allOps.contains { if case let .conv(c) = $0 { return c.bias } else { return false } }
        notes.append("architecture (\(convention.rawValue) convention): stem width \(stemWidth), \(outStages.count) stages of \(counts) \(kind) blocks, widths \(widths), groups \(groups), \(classes) classes, \(inputChannels) input channels\(bias ? ", conv bias" : "")")
        notes.append(shortcutNote(spec))
        if let k = scheme.scheme.headPool { notes.append("head: AvgPool2d(\(k)) before the classifier (equals global pooling only for input \(scheme.scheme.inputSize.map { "\($0[0])x\($0[1])" } ?? "of the training size"))") }
        return Built(model: model, origins: origins, notes: notes)
    }
}
