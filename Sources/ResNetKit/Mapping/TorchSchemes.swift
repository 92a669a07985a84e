import Foundation

// Naming schemes for PyTorch state dicts, as data: each row maps a source module name pattern
// onto a canonical module name pattern and says what the module is. A tensor key is
// `<module>.<parameter>`; the parameter suffix (`weight`, `bias`, `running_mean`, `running_var`)
// is carried over unchanged, because PyTorch's layouts (conv OIHW, linear (out, in)) are the
// canonical ones. How the named modules are wired together is the scheme's `convention`.

/// What a state-dict module is; decides which parameter suffixes it may have.
enum TorchModuleRole: String, Codable, Sendable, Hashable {
    case conv
    case batchNorm = "batch_norm"
    case linear

    var suffixes: [String] {
        switch self {
        case .conv, .linear: return ["weight", "bias"]
        case .batchNorm: return ["weight", "bias", "running_mean", "running_var"]
        }
    }
}

/// How the modules of a scheme are wired: stem, where the stride sits, the order of conv, BN and
/// ReLU in a block, what the shortcut and the head are.
enum TorchConvention: String, Codable, Sendable, Hashable {
    /// torchvision ResNet v1.5 (and timm's ResNets): 7x7/2 stem conv (or a deep stem), BN, ReLU,
    /// max pool 3/2 pad 1; conv-BN-ReLU blocks, stride on conv2 of a bottleneck (conv1 of a basic
    /// block) in the first block of stages 2+, 1x1 conv + BN projection, ReLU after the add;
    /// global average pool and `fc`.
    case torchvision
    /// The CIFAR ResNets of He et al. (2016): 3x3/1 stem conv, BN, ReLU, no pool; basic blocks with
    /// the stride on conv1; projection or parameter-free shortcut; global average pool and `fc`.
    case cifar
    /// The seed write-up's PyTorch model: 7x7/2 stem conv with bias, max pool 3/2 without padding,
    /// no stem BN or ReLU; blocks conv(bias)-ReLU-BN twice, shortcut 1x1/2 conv(bias)-ReLU, no ReLU
    /// after the add; global average pool and `classifier`.
    case seed
}

/// The shortcut of a block that changes shape but has no shortcut weights.
enum ParameterFreeShortcut: String, Codable, Sendable, Hashable {
    /// The paper's option A: keep every 2nd pixel (`x[:, :, ::2, ::2]`), add zero channels split
    /// evenly before and after.
    case subsamplePad = "subsample-pad"
    /// `avg_pool2d(2, 2)`, then zero channels split evenly before and after.
    case avgPoolPad = "avgpool-pad"
}

/// One row of a naming scheme.
struct TorchNameRule: Codable, Sendable, Hashable {
    /// Source module pattern, e.g. `stage_{s}.{b}.conv_{n}`; `{s+1}` reads a number one larger than `s`.
    var source: String
    /// Canonical module pattern, e.g. `layer{s}.{b}.conv{n}`.
    var canonical: String
    var role: TorchModuleRole
}

/// A naming scheme: the table plus the convention that wires the named modules.
struct TorchScheme: Codable, Sendable, Hashable {
    var name: String
    var summary: String
    var convention: TorchConvention
    /// For blocks that change shape without shortcut weights (CIFAR convention only).
    var shortcutWithoutWeights: ParameterFreeShortcut?
    /// A fixed `AvgPool2d(k)` before the classifier instead of global average pooling.
    var headPool: Int?
    /// The input size the models of this layout are made for, when known ([H, W]).
    var inputSize: [Int]?
    /// BatchNorm epsilon; PyTorch's default 1e-5 when absent.
    var bnEpsilon: Double?
    var modules: [TorchNameRule]
    /// Key patterns (`*` matches anything) that are deliberately not used.
    var ignore: [String]?

    enum CodingKeys: String, CodingKey {
        case name, summary, convention, modules, ignore
        case shortcutWithoutWeights = "shortcut_without_weights"
        case headPool = "head_pool"
        case inputSize = "input_size"
        case bnEpsilon = "bn_epsilon"
    }

    init(name: String, summary: String, convention: TorchConvention, shortcutWithoutWeights: ParameterFreeShortcut? = nil,
         headPool: Int? = nil, inputSize: [Int]? = nil, bnEpsilon: Double? = nil, modules: [TorchNameRule], ignore: [String]? = nil) {
        self.name = name; self.summary = summary; self.convention = convention
        self.shortcutWithoutWeights = shortcutWithoutWeights; self.headPool = headPool; self.inputSize = inputSize
        self.bnEpsilon = bnEpsilon; self.modules = modules; self.ignore = ignore
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        summary = try c.decodeIfPresent(String.self, forKey: .summary) ?? "user-supplied map"
        convention = try c.decode(TorchConvention.self, forKey: .convention)
        shortcutWithoutWeights = try c.decodeIfPresent(ParameterFreeShortcut.self, forKey: .shortcutWithoutWeights)
        headPool = try c.decodeIfPresent(Int.self, forKey: .headPool)
        inputSize = try c.decodeIfPresent([Int].self, forKey: .inputSize)
        bnEpsilon = try c.decodeIfPresent(Double.self, forKey: .bnEpsilon)
        modules = try c.decode([TorchNameRule].self, forKey: .modules)
        ignore = try c.decodeIfPresent([String].self, forKey: .ignore)
    }
}

// MARK: - Built-in schemes

private func rule(_ source: String, _ canonical: String, _ role: TorchModuleRole) -> TorchNameRule {
    TorchNameRule(source: source, canonical: canonical, role: role)
}

/// torchvision's own block names, which are also the canonical ones.
private let torchvisionBlocks = [
    rule("layer{s}.{b}.conv{n}", "layer{s}.{b}.conv{n}", .conv),
    rule("layer{s}.{b}.bn{n}", "layer{s}.{b}.bn{n}", .batchNorm),
    rule("layer{s}.{b}.downsample.0", "layer{s}.{b}.downsample.0", .conv),
    rule("layer{s}.{b}.downsample.1", "layer{s}.{b}.downsample.1", .batchNorm),
]

enum TorchSchemes {
    /// Keys no scheme uses: BN's batch counter only matters for training.
    static let alwaysIgnored = ["*.num_batches_tracked", "num_batches_tracked"]

    /// The built-in schemes, in the order the detection report lists them.
    static let builtIn: [TorchScheme] = [
        TorchScheme(
            name: "torchvision",
            summary: "torchvision resnet18-152, wide_resnet50_2/101_2, resnext (groups from conv2's shape); also timm's resnet*/resnext* with the plain stem",
            convention: .torchvision,
            modules: [rule("conv1", "conv1", .conv), rule("bn1", "bn1", .batchNorm)] + torchvisionBlocks + [rule("fc", "fc", .linear)]),
        TorchScheme(
            name: "timm-deep-stem",
            summary: "timm ResNets with the deep stem (conv1 = 3x3/2 conv, BN, ReLU, 3x3 conv, BN, ReLU, 3x3 conv), e.g. resnet50c",
            convention: .torchvision,
            modules: [
                rule("conv1.0", "conv1.0", .conv), rule("conv1.1", "conv1.1", .batchNorm),
                rule("conv1.3", "conv1.3", .conv), rule("conv1.4", "conv1.4", .batchNorm),
                rule("conv1.6", "conv1.6", .conv), rule("bn1", "bn1", .batchNorm),
            ] + torchvisionBlocks + [rule("fc", "fc", .linear)]),
        TorchScheme(
            name: "cifar-akamaster",
            summary: "CIFAR ResNet-20..1202 as in akamaster/pytorch_resnet_cifar10: option A (no shortcut weights) or option B (`shortcut.0/1`), classifier `linear`",
            convention: .cifar, shortcutWithoutWeights: .subsamplePad, inputSize: [32, 32],
            modules: [
                rule("conv1", "conv1", .conv), rule("bn1", "bn1", .batchNorm),
                rule("layer{s}.{b}.conv{n}", "layer{s}.{b}.conv{n}", .conv),
                rule("layer{s}.{b}.bn{n}", "layer{s}.{b}.bn{n}", .batchNorm),
                rule("layer{s}.{b}.shortcut.0", "layer{s}.{b}.downsample.0", .conv),
                rule("layer{s}.{b}.shortcut.1", "layer{s}.{b}.downsample.1", .batchNorm),
                rule("linear", "fc", .linear),
            ]),
        TorchScheme(
            name: "cifar-stage",
            summary: "CIFAR ResNet with `conv_1`/`bn_1`/`stage_{s}.{b}.conv_{n}` names and a `downsample` projection (EhanW/advrob-cifar10)",
            convention: .cifar, shortcutWithoutWeights: .subsamplePad, inputSize: [32, 32],
            modules: [
                rule("conv_1", "conv1", .conv), rule("bn_1", "bn1", .batchNorm),
                rule("stage_{s}.{b}.conv_{n}", "layer{s}.{b}.conv{n}", .conv),
                rule("stage_{s}.{b}.bn_{n}", "layer{s}.{b}.bn{n}", .batchNorm),
                rule("stage_{s}.{b}.downsample.0", "layer{s}.{b}.downsample.0", .conv),
                rule("stage_{s}.{b}.downsample.1", "layer{s}.{b}.downsample.1", .batchNorm),
                rule("fc", "fc", .linear),
            ]),
        TorchScheme(
            name: "cifar-flat-avgpool",
            summary: "CIFAR ResNet with a flat `convs.{i}` block list, conv bias everywhere, avg_pool2d(2) + zero-channel shortcut and AvgPool2d(8) before `fc` (atreides-K/Basic-Image-Classification-ML)",
            convention: .cifar, shortcutWithoutWeights: .avgPoolPad, headPool: 8, inputSize: [32, 32],
            modules: [
                rule("conv0", "conv1", .conv), rule("bn0", "bn1", .batchNorm),
                rule("convs.{i}.conv{n}", "blocks.{i}.conv{n}", .conv),
                rule("convs.{i}.bn{n}", "blocks.{i}.bn{n}", .batchNorm),
                rule("fc", "fc", .linear),
            ]),
        TorchScheme(
            name: "seed",
            summary: "the seed write-up's PyTorch ResNet: `conv{2..5}.{b}.layer{1,2}.{0: conv, 2: BN}`, `shortcut.0`, `classifier`",
            convention: .seed,
            modules: [
                rule("conv1", "conv1", .conv),
                rule("conv{s+1}.{b}.layer{n}.0", "layer{s}.{b}.conv{n}", .conv),
                rule("conv{s+1}.{b}.layer{n}.2", "layer{s}.{b}.bn{n}", .batchNorm),
                rule("conv{s+1}.{b}.shortcut.0", "layer{s}.{b}.downsample.0", .conv),
                rule("classifier", "fc", .linear),
            ]),
    ]

    /// `--arch` presets for torch files: a scheme plus the structure it must have.
    struct Preset: Sendable {
        var name: String
        var scheme: String
        var blocks: [Int]
        var bottleneck: Bool
        var groups: Int
        /// CIFAR option A: the shortcuts that change shape must have no weights.
        var parameterFreeShortcuts: Bool = false
    }

    static let presets: [Preset] = [
        Preset(name: "torchvision-resnet18", scheme: "torchvision", blocks: [2, 2, 2, 2], bottleneck: false, groups: 1),
        Preset(name: "torchvision-resnet34", scheme: "torchvision", blocks: [3, 4, 6, 3], bottleneck: false, groups: 1),
        Preset(name: "torchvision-resnet50", scheme: "torchvision", blocks: [3, 4, 6, 3], bottleneck: true, groups: 1),
        Preset(name: "torchvision-resnet101", scheme: "torchvision", blocks: [3, 4, 23, 3], bottleneck: true, groups: 1),
        Preset(name: "torchvision-resnet152", scheme: "torchvision", blocks: [3, 8, 36, 3], bottleneck: true, groups: 1),
        Preset(name: "torchvision-wide_resnet50_2", scheme: "torchvision", blocks: [3, 4, 6, 3], bottleneck: true, groups: 1),
        Preset(name: "torchvision-wide_resnet101_2", scheme: "torchvision", blocks: [3, 4, 23, 3], bottleneck: true, groups: 1),
        Preset(name: "torchvision-resnext50_32x4d", scheme: "torchvision", blocks: [3, 4, 6, 3], bottleneck: true, groups: 32),
        Preset(name: "torchvision-resnext101_32x8d", scheme: "torchvision", blocks: [3, 4, 23, 3], bottleneck: true, groups: 32),
        Preset(name: "cifar-resnet20", scheme: "cifar-akamaster", blocks: [3, 3, 3], bottleneck: false, groups: 1, parameterFreeShortcuts: true),
        Preset(name: "cifar-resnet32", scheme: "cifar-akamaster", blocks: [5, 5, 5], bottleneck: false, groups: 1, parameterFreeShortcuts: true),
        Preset(name: "cifar-resnet44", scheme: "cifar-akamaster", blocks: [7, 7, 7], bottleneck: false, groups: 1, parameterFreeShortcuts: true),
        Preset(name: "cifar-resnet56", scheme: "cifar-akamaster", blocks: [9, 9, 9], bottleneck: false, groups: 1, parameterFreeShortcuts: true),
        Preset(name: "cifar-resnet110", scheme: "cifar-akamaster", blocks: [18, 18, 18], bottleneck: false, groups: 1, parameterFreeShortcuts: true),
        Preset(name: "seed-torch", scheme: "seed", blocks: [3, 4, 6, 3], bottleneck: false, groups: 1),
    ]
}

// MARK: - Patterns

/// A module name pattern: literal text and numeric placeholders `{s}`, `{b}`, `{n}`, `{i}`, `{k}`,
/// optionally with an offset (`{s+1}` matches the text `2` for s = 1).
struct NamePattern: Sendable, Hashable {
    enum Piece: Sendable, Hashable {
        case literal(String)
        case number(Character, offset: Int)
    }

    static let placeholders: Set<Character> = ["s", "b", "n", "i", "k"]

    let text: String
    let pieces: [Piece]

    /// Parses `text`; the error string says what is wrong with it.
    init(_ text: String) throws(PatternError) {
        self.text = text
        var pieces: [Piece] = []
        var literal = ""
        var it = text.makeIterator()
        while let ch = it.next() {
            if ch == "}" { throw PatternError("'}' without '{' in '\(text)'") }
            guard ch == "{" else { literal.append(ch); continue }
            var inner = ""
            var closed = false
            while let c = it.next() {
                if c == "}" { closed = true; break }
                inner.append(c)
            }
            guard closed else { throw PatternError("unclosed '{' in '\(text)'") }
            guard let name = inner.first, Self.placeholders.contains(name) else {
                throw PatternError("unknown placeholder '{\(inner)}' in '\(text)' (use {s}, {b}, {n}, {i} or {k}, optionally {s+1})")
            }
            var offset = 0
            let rest = inner.dropFirst()
            if !rest.isEmpty {
                guard let sign = rest.first, sign == "+" || sign == "-", let v = Int(rest.dropFirst()), (0...1000).contains(v) else {
                    throw PatternError("cannot read placeholder '{\(inner)}' in '\(text)'")
                }
                offset = sign == "+" ? v : -v
            }
            if !literal.isEmpty {
                if case .number = pieces.last, literal.first!.isNumber {
                    throw PatternError("a digit right after a placeholder is ambiguous in '\(text)'")
                }
                pieces.append(.literal(literal)); literal = ""
            } else if case .number = pieces.last {
                throw PatternError("two placeholders need text between them in '\(text)'")
            }
            pieces.append(.number(name, offset: offset))
        }
        if !literal.isEmpty {
            if case .number = pieces.last, literal.first!.isNumber {
                throw PatternError("a digit right after a placeholder is ambiguous in '\(text)'")
            }
            pieces.append(.literal(literal))
        }
        guard !pieces.isEmpty else { throw PatternError("empty pattern") }
        self.pieces = pieces
    }

    /// The placeholders used.
    var names: Set<Character> {
        Set(pieces.compactMap { if case let .number(n, _) = $0 { return n } else { return nil } })
    }

    /// The placeholder values when `name` matches the whole pattern, else nil. Numbers are plain
    /// decimals without leading zeros; a placeholder used twice must read the same value.
    func match(_ name: String) -> [Character: Int]? {
        var rest = Substring(name)
        var values: [Character: Int] = [:]
        for piece in pieces {
            switch piece {
            case let .literal(l):
                guard rest.hasPrefix(l) else { return nil }
                rest = rest.dropFirst(l.count)
            case let .number(p, offset):
                let digits = rest.prefix { $0.isASCII && $0.isNumber }
                guard !digits.isEmpty, digits.count <= 9, digits == "0" || digits.first != "0", let x = Int(digits) else { return nil }
                let v = x - offset
                guard v >= 0 else { return nil }
                if let prev = values[p], prev != v { return nil }
                values[p] = v
                rest = rest.dropFirst(digits.count)
            }
        }
        return rest.isEmpty ? values : nil
    }

    /// The name this pattern gives for `values`, or nil when a placeholder has no value.
    func render(_ values: [Character: Int]) -> String? {
        var out = ""
        for piece in pieces {
            switch piece {
            case let .literal(l): out += l
            case let .number(p, offset):
                guard let v = values[p] else { return nil }
                out += String(v + offset)
            }
        }
        return out
    }
}

/// Why a name pattern cannot be used.
struct PatternError: Error, Sendable {
    var message: String
    init(_ message: String) { self.message = message }
}

/// `*` matches any run of characters (including dots); everything else matches itself.
func globMatches(_ pattern: String, _ text: String) -> Bool {
    let p = Array(pattern), t = Array(text)
    var pi = 0, ti = 0, star = -1, mark = 0
    while ti < t.count {
        if pi < p.count, p[pi] == "*" { star = pi; mark = ti; pi += 1 }
        else if pi < p.count, p[pi] == t[ti] { pi += 1; ti += 1 }
        else if star >= 0 { pi = star + 1; mark += 1; ti = mark }
        else { return false }
    }
    while pi < p.count, p[pi] == "*" { pi += 1 }
    return pi == p.count
}

// MARK: - Compiled schemes and key classification

/// A scheme with parsed patterns.
struct CompiledScheme: Sendable {
    struct Rule: Sendable {
        var source: NamePattern
        var canonical: NamePattern
        var role: TorchModuleRole
    }

    let scheme: TorchScheme
    let rules: [Rule]

    /// Parses every pattern; `file` and the rule index appear in errors (a user map is a file).
    init(_ scheme: TorchScheme, file: String) throws {
        self.scheme = scheme
        var rules: [Rule] = []
        for (i, r) in scheme.modules.enumerated() {
            do {
                let s = try NamePattern(r.source), c = try NamePattern(r.canonical)
                guard c.names.isSubset(of: s.names) else {
                    throw PatternError("canonical '\(r.canonical)' uses placeholders the source '\(r.source)' does not read")
                }
                rules.append(Rule(source: s, canonical: c, role: r.role))
            } catch let e as PatternError {
                throw ResNetError.invalidInput(file: file, place: "scheme '\(scheme.name)' modules[\(i)]", reason: e.message)
            }
        }
        guard !rules.isEmpty else {
            throw ResNetError.invalidInput(file: file, place: "scheme '\(scheme.name)'", reason: "the scheme has no module rules")
        }
        if let k = scheme.headPool, !(1...64).contains(k) {
            throw ResNetError.invalidInput(file: file, place: "scheme '\(scheme.name)' head_pool", reason: "\(k) is not a pooling size between 1 and 64")
        }
        if let e = scheme.bnEpsilon, !(e > 0 && e < 1) {
            throw ResNetError.invalidInput(file: file, place: "scheme '\(scheme.name)' bn_epsilon", reason: "\(e) is not in (0, 1)")
        }
        if let s = scheme.inputSize, s.count != 2 || !s.allSatisfy({ (1...65_536).contains($0) }) {
            throw ResNetError.invalidInput(file: file, place: "scheme '\(scheme.name)' input_size", reason: "\(s) is not [H, W]")
        }
        self.rules = rules
    }

    /// What happens to one state-dict key under this scheme.
    enum Fate: Sendable {
        case mapped(rule: Int, sourceModule: String, canonicalModule: String, suffix: String)
        case ignored
        case unmapped
    }

    func fate(of key: String) -> Fate {
        if TorchSchemes.alwaysIgnored.contains(where: { globMatches($0, key) }) { return .ignored }
        if (scheme.ignore ?? []).contains(where: { globMatches($0, key) }) { return .ignored }
        guard let dot = key.lastIndex(of: ".") else { return .unmapped }
        let module = String(key[..<dot]), suffix = String(key[key.index(after: dot)...])
        for (i, r) in rules.enumerated() {
            guard let values = r.source.match(module) else { continue }
            guard r.role.suffixes.contains(suffix), let canonical = r.canonical.render(values) else { return .unmapped }
            return .mapped(rule: i, sourceModule: module, canonicalModule: canonical, suffix: suffix)
        }
        return .unmapped
    }

    /// The source module name a canonical module would have under this scheme, for messages about
    /// missing tensors; nil when no rule produces that canonical name.
    func sourceModule(forCanonical canonical: String) -> String? {
        for r in rules {
            if let values = r.canonical.match(canonical), let s = r.source.render(values) { return s }
        }
        return nil
    }
}
