import Foundation

// Structure recovery for PyTorch state dicts that no naming table describes.
//
// The evidence is what a state dict carries: key order (module registration order), the dotted name
// tree, and tensor shapes. The name tree says which modules belong together (a residual block is the
// deepest numbered subtree holding two or more convolutions; a block's second container, or the only
// container beside its direct modules, is its shortcut); shapes say how channels chain; gaps in a
// Sequential's indices say a parameter-free module (ReLU, pooling) sits there. What the evidence cannot
// tell (stem stride and max pool, where a bottleneck strides, option A's zero-channel split, …) is left
// to ``structureVariations(of:)`` and settled by measurement.

/// One module of a state dict: the tensors that share a key prefix.
struct StateDictModule {
    enum Kind: String { case conv, batchNorm = "batch norm", linear }
    var path: String
    var components: [String]
    var kind: Kind
    var params: [String: SourceTensor]
    /// Position of the module's first key in the file.
    var order: Int

    var weightShape: [Int] { params["weight"]?.tensor.shape ?? params["running_mean"]?.tensor.shape ?? [] }
    /// Output channels (conv, linear) or channels (batch norm).
    var channels: Int { weightShape.first ?? 0 }
}

private func isIndex(_ s: String) -> Bool { !s.isEmpty && s.utf8.allSatisfy { $0 >= 48 && $0 <= 57 } }

/// Groups state-dict keys into modules and says what each module is, from its parameter names and shapes.
func stateDictModules(_ tensors: [SourceTensor], file: String) throws -> [StateDictModule] {
    var byPath: [String: Int] = [:]
    var modules: [StateDictModule] = []
    var unknown: [String] = []
    for (i, t) in tensors.enumerated() {
        guard let dot = t.name.lastIndex(of: ".") else { unknown.append(t.name); continue }
        let path = String(t.name[..<dot]), suffix = String(t.name[t.name.index(after: dot)...])
        guard ["weight", "bias", "running_mean", "running_var"].contains(suffix) else { unknown.append(t.name); continue }
        if let k = byPath[path] {
            modules[k].params[suffix] = t
        } else {
            byPath[path] = modules.count
            modules.append(StateDictModule(path: path, components: path.split(separator: ".", omittingEmptySubsequences: false).map(String.init),
                                           kind: .conv, params: [suffix: t], order: i))
        }
    }
    if !unknown.isEmpty {
        throw ResNetError.mapping(file: file, reason: "keys that are not the weight, bias or running statistics of a conv, batch norm or linear layer: \(listed(unknown))")
    }
    for k in modules.indices {
        let m = modules[k]
        func bad(_ why: String) -> ResNetError { .mapping(file: file, reason: "module '\(m.path)': \(why)") }
        if let mean = m.params["running_mean"]?.tensor.shape, let v = m.params["running_var"]?.tensor.shape {
            guard mean.count == 1, v == mean, mean[0] > 0 else { throw bad("running statistics of shapes \(mean) and \(v)") }
            for s in ["weight", "bias"] { if let t = m.params[s], t.tensor.shape != mean { throw bad("\(s) has shape \(t.tensor.shape), the running statistics \(mean)") } }
            modules[k].kind = .batchNorm
        } else if let w = m.params["weight"]?.tensor.shape {
            guard m.params["running_mean"] == nil, m.params["running_var"] == nil else { throw bad("running_mean without running_var") }
            if let b = m.params["bias"], b.tensor.shape != [w.first ?? -1] { throw bad("bias has shape \(b.tensor.shape), weight \(w)") }
            guard w.allSatisfy({ $0 > 0 }) else { throw bad("weight has shape \(w)") }
            switch w.count {
            case 4: modules[k].kind = .conv
            case 2: modules[k].kind = .linear
            default: throw bad("a \(w.count)-D weight \(w) is neither a 2-D convolution (4-D) nor a linear layer (2-D)")
            }
        } else {
            throw bad("a bias without a weight")
        }
    }
    return modules
}

/// A structure recovered from a state dict, with the tensors renamed to canonical names.
struct RecoveredStructure {
    var model: ResNetModel
    var origins: [TensorOrigin]
    var notes: [String]
}

/// Recovers a canonical ResNet from a state dict's names, order and shapes (see the file header).
///
/// - Parameter ordered: whether the file keeps registration order (pickled state dicts do; safetensors
///   files list tensors by name, so their order is rebuilt from the names: numbered siblings by
///   number, a conv before the batch norm of the same number).
func recoverTorchStructure(_ tensors: [SourceTensor], file: String, family: String = "torch-recovered", ordered: Bool = true) throws -> RecoveredStructure {
    var modules = try stateDictModules(tensors, file: file)
    if !ordered {
        // Each key is computed once, not once per comparison.
        let keyed = modules.map { (key: naturalKey($0), module: $0) }.sorted { a, b in
            for (p, q) in zip(a.key, b.key) where p != q { return p < q }
            return a.key.count < b.key.count
        }
        modules = keyed.map(\.module)
        for i in modules.indices { modules[i].order = i }
    }
    // Blocks are numbered subtrees (`layer1.0`, `blocks.3`); failing that, subtrees whose names end
    // in a number (`stack1`).
    var r = TorchRecovery(modules: modules, file: file, suffixedNames: false, ordered: ordered)
    do { return try r.build(family: family) } catch let first {
        var s = TorchRecovery(modules: modules, file: file, suffixedNames: true, ordered: ordered)
        guard let alternative = try? s.build(family: family) else { throw first }
        return alternative
    }
}

/// Sort key rebuilding registration order from names: per dotted component, its trailing number,
/// then conv before batch norm before linear, then the text.
private func naturalKey(_ m: StateDictModule) -> [NaturalPart] {
    m.components.enumerated().map { k, c in
        let digits = c.reversed().prefix { $0.isNumber }
        let number = Int(String(digits.reversed())) ?? -1
        let rank: Int
        switch m.kind { case .conv: rank = 0; case .batchNorm: rank = 1; case .linear: rank = 2 }
        let word = String(c.dropLast(digits.count))
        // Words that name a kind rank by kind so `conv1` < `bn1` < `conv2`; other words by text.
        let kindWord = ["conv", "bn", "norm", "convolution", "normalization", "batchnorm"].contains(word.lowercased())
        // The kind decides only between siblings (`conv1` < `bn1`), not for the subtrees above them.
        let last = k == m.components.count - 1
        return NaturalPart(number: number, rank: kindWord ? (last ? rank : 0) : 3, word: kindWord ? "" : word)
    }
}

private struct NaturalPart: Comparable {
    var number: Int, rank: Int, word: String
    static func < (a: Self, b: Self) -> Bool { (a.word, a.number, a.rank) < (b.word, b.number, b.rank) }
}

private struct TorchRecovery {
    var modules: [StateDictModule]
    let file: String
    var tensors: [String: Tensor] = [:]
    var origins: [TensorOrigin] = []
    var notes: [String] = []

    /// Whether names ending in a number (`stack1`) count as numbered for finding blocks.
    let suffixedNames: Bool
    /// Every path prefix as a node of a trie, and each module's ancestors (its first 1 ..< count
    /// components) as nodes, shallowest first, by module path: prefixes are counted and looked up
    /// without building their strings, which for a key of thousands of components is quadratic.
    let trie: PathTrie
    let ancestry: [String: [Int]]

    init(modules: [StateDictModule], file: String, suffixedNames: Bool, ordered: Bool) {
        self.modules = modules; self.file = file; self.suffixedNames = suffixedNames
        var trie = PathTrie()
        var ancestry: [String: [Int]] = [:]
        for m in modules { ancestry[m.path] = trie.ancestors(m.components) }
        self.trie = trie; self.ancestry = ancestry
        if !ordered {
            // Names alone do not say that the stem comes first and the classifier last: modules
            // outside every block go before the blocks, linear layers after them.
            let index = blockIndex(blockPrefixNodes())
            let blockPaths = Set(modules.filter { block(of: $0, in: index) != nil }.map(\.path))
            let inBlock = { (m: StateDictModule) in blockPaths.contains(m.path) }
            let reordered = modules.filter { !inBlock($0) && $0.kind != .linear } + modules.filter(inBlock) + modules.filter { !inBlock($0) && $0.kind == .linear }
            self.modules = reordered.enumerated().map { var m = $1; m.order = $0; return m }
        }
    }

    func numbered(_ c: String) -> Bool { suffixedNames ? (c.last?.isNumber ?? false) : isIndex(c) }

    func fail(_ why: String) -> ResNetError { .mapping(file: file, reason: "structure recovery: \(why)") }

    // MARK: Grouping by names

    /// Block prefixes as trie nodes: the deepest numbered subtrees that hold at least two convolutions,
    /// in file order. Linear in the keys' total length.
    func blockPrefixNodes() -> [Int] {
        var convs: [Int: Int] = [:]
        var firstOrder: [Int: Int] = [:]
        for m in modules where m.kind == .conv {
            for (k, node) in (ancestry[m.path] ?? []).enumerated() where numbered(m.components[k]) {
                convs[node, default: 0] += 1
                if firstOrder[node] == nil { firstOrder[node] = m.order }
            }
        }
        let qualifying = Set(convs.filter { $0.value >= 2 }.keys)
        // A qualifying prefix with a qualifying descendant is not the deepest. Walking up from each
        // stops at a node already marked, whose ancestors are then marked too: each node once.
        var hasQualifyingDescendant = Set<Int>()
        for q in qualifying {
            var node = trie.parent[q]
            while node >= 0, hasQualifyingDescendant.insert(node).inserted { node = trie.parent[node] }
        }
        let deepest = qualifying.subtracting(hasQualifyingDescendant)
        // A block's first module may be a batch norm that precedes its first conv.
        for m in modules where m.kind != .conv {
            for node in ancestry[m.path] ?? [] where deepest.contains(node) {
                firstOrder[node] = min(firstOrder[node] ?? .max, m.order)
            }
        }
        return deepest.sorted { (firstOrder[$0, default: .max], $0) < (firstOrder[$1, default: .max], $1) }
    }

    /// Block number by trie node.
    func blockIndex(_ nodes: [Int]) -> [Int: Int] {
        Dictionary(nodes.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// The index of the block holding `m`, by a lookup per ancestor of its path, deepest first.
    func block(of m: StateDictModule, in index: [Int: Int]) -> Int? {
        for node in (ancestry[m.path] ?? []).reversed() {
            if let b = index[node] { return b }
        }
        return nil
    }

    // MARK: Recording tensors

    mutating func take(_ m: StateDictModule, as canonical: String) {
        for (suffix, t) in m.params {
            tensors["\(canonical).\(suffix)"] = t.tensor
            origins.append(TensorOrigin(canonical: "\(canonical).\(suffix)", source: t.name, sourceDType: t.sourceDType, shape: t.tensor.shape, transform: ""))
        }
    }

    mutating func conv(_ m: StateDictModule, as name: String, inChannels: Int, stride: Int) throws -> ConvOp {
        let s = m.weightShape
        guard inChannels % s[1] == 0 else {
            throw fail("'\(m.path)' takes \(s[1]) input channels per group, which does not divide the \(inChannels) channels reaching it")
        }
        let groups = inChannels / s[1]
        guard s[0] % groups == 0 else { throw fail("'\(m.path)' has \(s[0]) outputs, not divisible by its \(groups) groups") }
        guard s[2] % 2 == 1, s[3] % 2 == 1 else {
            throw ResNetError.unsupported(file: file, place: m.path, reason: "even kernel \(s[2])x\(s[3]): PyTorch's `padding=k//2` convention needs odd kernels")
        }
        take(m, as: name)
        return ConvOp(name: name, inChannels: inChannels, outChannels: s[0], kernel: [s[2], s[3]], stride: [stride, stride],
                      padding: .explicit(top: s[2] / 2, bottom: s[2] / 2, left: s[3] / 2, right: s[3] / 2),
                      groups: groups, bias: m.params["bias"] != nil)
    }

    mutating func batchNorm(_ m: StateDictModule, as name: String, channels: Int) throws -> BatchNormOp {
        guard m.channels == channels else { throw fail("'\(m.path)' normalises \(m.channels) channels, but \(channels) reach it") }
        let affine = m.params["weight"] != nil || m.params["bias"] != nil
        guard !affine || (m.params["weight"] != nil && m.params["bias"] != nil) else { throw fail("'\(m.path)' has only one of weight and bias") }
        take(m, as: name)
        return BatchNormOp(name: name, channels: channels, epsilon: 1e-5, scale: affine, center: affine)
    }

    // MARK: Build

    mutating func build(family: String) throws -> RecoveredStructure {
        let prefixNodes = blockPrefixNodes()
        let prefixes = prefixNodes.map { trie.path($0) }
        guard !prefixes.isEmpty else {
            throw fail("no residual blocks: no numbered module holds two or more convolutions (modules: \(listed(modules.map(\.path))))")
        }
        // Every module belongs to one block, or comes before the first (stem) or after the last (head).
        var blockOf: [Int: Int] = [:]   // module index → block index
        let index = blockIndex(prefixNodes)
        for (i, m) in modules.enumerated() {
            if let b = block(of: m, in: index) { blockOf[i] = b }
        }
        let firstBlockModule = modules.indices.first { blockOf[$0] != nil }!
        let lastBlockModule = modules.indices.last { blockOf[$0] != nil }!
        var stemModules: [StateDictModule] = [], headModules: [StateDictModule] = []
        var blockModules = [[StateDictModule]](repeating: [], count: prefixes.count)
        for (i, m) in modules.enumerated() {
            if let b = blockOf[i] { blockModules[b].append(m) }
            else if i < firstBlockModule { stemModules.append(m) }
            else if i > lastBlockModule { headModules.append(m) }
            else { throw fail("'\(m.path)' sits between residual blocks but belongs to none") }
        }
        // Blocks must not interleave in the file.
        var seen = Set<Int>(), last = -1
        for i in firstBlockModule...lastBlockModule {
            guard let b = blockOf[i] else { continue }
            if b != last {
                guard !seen.contains(b) else { throw fail("the modules of block '\(prefixes[b])' are not contiguous in the file") }
                seen.insert(b); last = b
            }
        }

        // Pre-activation: the residual branch starts with a batch norm (of the channels entering it).
        let splits = try blockModules.enumerated().map { try split($1, prefix: prefixes[$0]) }
        let preActivation = splits.contains { $0.residual.first?.kind == .batchNorm }

        // Stem.
        let stemConvs = stemModules.filter { $0.kind == .conv }
        guard let firstConv = stemConvs.first else {
            throw fail("no stem convolution before the first block '\(prefixes[0])'")
        }
        guard stemModules.allSatisfy({ $0.kind != .linear }) else { throw fail("a linear layer before the first block") }
        let inputChannels = firstConv.weightShape[1]
        var channels = inputChannels
        var stem: [Op] = []
        let deep = stemConvs.count > 1
        let bigKernel = firstConv.weightShape[2] >= 5
        var k = 0
        for (j, m) in stemModules.enumerated() {
            switch m.kind {
            case .conv:
                let name = deep ? "conv1.\(3 * k)" : "conv1"
                let c = try conv(m, as: name, inChannels: channels, stride: k == 0 && (deep || bigKernel) ? 2 : 1)
                stem.append(.conv(c)); channels = c.outChannels
                let followedByBN = j + 1 < stemModules.count && stemModules[j + 1].kind == .batchNorm
                if !followedByBN && !preActivation { stem.append(.relu) }
                k += 1
            case .batchNorm:
                guard j > 0, stemModules[j - 1].kind == .conv else { throw fail("stem batch norm '\(m.path)' does not follow a convolution") }
                let name = (deep && k < stemConvs.count) ? "conv1.\(3 * (k - 1) + 1)" : "bn1"
                stem.append(.batchNorm(try batchNorm(m, as: name, channels: channels)))
                stem.append(.relu)
            case .linear: break
            }
        }
        if deep || bigKernel { stem.append(.maxPool(PoolOp(kernel: [3, 3], stride: [2, 2], padding: .symmetric(1)))) }
        let stemWidth = channels

        // Stages: by the blocks' parent names when there are several, else where the channels change.
        let parents = prefixes.map { p -> String in p.split(separator: ".").dropLast().joined(separator: ".") }
        let distinctParents = Set(parents)
        var stages: [Stage] = []
        var blocks: [Block] = []
        var kinds = Set<Int>()
        for b in blockModules.indices {
            var (residualModules, shortcutModules) = splits[b]
            let inC = channels
            if shortcutModules.isEmpty { (residualModules, shortcutModules) = separateDirectShortcut(residualModules, inChannels: inC) }
            let residualOut = residualModules.last { $0.kind == .conv }?.channels ?? inC
            let newStage: Bool
            if distinctParents.count > 1 { newStage = b == 0 || parents[b] != parents[b - 1] }
            else { newStage = b == 0 || residualOut != inC }
            if newStage && b > 0 { stages.append(Stage(blocks: blocks)); blocks = [] }
            let name = "layer\(stages.count + 1).\(blocks.count)"
            let stride = (stages.count > 0 && blocks.isEmpty) ? 2 : 1
            var block = try buildBlock(name: name, residual: residualModules, shortcut: shortcutModules, inChannels: inC,
                                       stride: stride, preActivation: preActivation, source: prefixes[b])
            kinds.insert(block.residual.filter { if case .conv = $0 { return true } else { return false } }.count)
            channels = residualOut
            if block.name.isEmpty { block.name = name }
            blocks.append(block)
        }
        stages.append(Stage(blocks: blocks))

        // Head: an optional final batch norm (pre-activation networks), global pooling, one linear layer.
        var head: [Op] = []
        var linears: [StateDictModule] = []
        for m in headModules {
            switch m.kind {
            case .batchNorm:
                guard linears.isEmpty, !head.contains(where: { if case .batchNorm = $0 { return true } else { return false } }) else {
                    throw fail("head batch norm '\(m.path)' after the classifier or a second one")
                }
                head.append(.batchNorm(try batchNorm(m, as: "post_bn", channels: channels)))
                head.append(.relu)
            case .linear: linears.append(m)
            case .conv: throw ResNetError.unsupported(file: file, place: m.path, reason: "a convolution after the last residual block")
            }
        }
        guard linears.count == 1, let fc = linears.first else {
            throw linears.isEmpty ? fail("no classifier (linear layer) after the last block")
                : ResNetError.unsupported(file: file, place: linears[1].path, reason: "\(linears.count) linear layers in the head; one classifier is supported")
        }
        let fw = fc.weightShape
        guard fw[1] == channels else {
            throw ResNetError.unsupported(file: file, place: fc.path, reason: "the classifier takes \(fw[1]) features but the last block gives \(channels) channels; only global average pooling before it is recovered (pass --map for a fixed pooling)")
        }
        head.append(.globalAvgPool)
        head.append(.dense(DenseOp(name: "fc", inFeatures: channels, outFeatures: fw[0], bias: fc.params["bias"] != nil)))
        take(fc, as: "fc")

        let spec = ResNetSpec(family: family, inputChannels: inputChannels, classes: fw[0], stem: stem, stages: stages, head: head)
        let model = ResNetModel(spec: spec, tensors: tensors)
        try model.validate(file: file)
        let rank = Dictionary(spec.parameters.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        origins.sort { rank[$0.canonical, default: .max] < rank[$1.canonical, default: .max] }

        let counts = stages.map { String($0.blocks.count) }.joined(separator: "-")
        let kind = kinds == [3] ? "bottleneck" : kinds == [2] ? "basic" : "mixed"
        notes.append("architecture recovered from names, order and shapes (no naming table fits): stem \(stemConvs.count) conv\(stemConvs.count == 1 ? "" : "s") of width \(stemWidth), "
                     + "\(stages.count) stages of \(counts) \(preActivation ? "pre-activation " : "")\(kind) blocks, \(fw[0]) classes, \(inputChannels) input channels")
        notes.append(shortcutNote(spec))
        return RecoveredStructure(model: model, origins: origins, notes: notes)
    }

    /// Splits a block's modules into the residual branch and the shortcut: of the two groups a block
    /// has (its direct children such as `conv1, bn1, …`, and each container such as `downsample.*`,
    /// `net.*`, `layer.*`, `shortcut.*`), the one with more convolutions is the residual branch.
    func split(_ bm: [StateDictModule], prefix: String) throws -> (residual: [StateDictModule], shortcut: [StateDictModule]) {
        let depth = prefix.split(separator: ".").count
        var direct: [StateDictModule] = []
        var containers: [(String, [StateDictModule])] = []
        var containerIndex: [String: Int] = [:]
        for m in bm {
            let rel = Array(m.components.dropFirst(depth))
            if rel.count <= 1 { direct.append(m); continue }
            if let i = containerIndex[rel[0]] {
                containers[i].1.append(m)
            } else {
                containerIndex[rel[0]] = containers.count
                containers.append((rel[0], [m]))
            }
        }
        func convs(_ ms: [StateDictModule]) -> Int { ms.filter { $0.kind == .conv }.count }
        if !direct.isEmpty {
            guard containers.count <= 1 else {
                throw fail("block '\(prefix)' has direct modules and containers \(containers.map(\.0).joined(separator: ", ")); which is the shortcut is not clear")
            }
            guard let container = containers.first else { return (direct, []) }
            // `conv1, bn1, conv2, bn2` beside `downsample.*`, or `net.*` beside a bare `downsample` conv.
            guard convs(direct) != convs(container.1) else {
                throw fail("block '\(prefix)' has \(convs(direct)) convolutions as direct children and \(convs(container.1)) in '\(container.0)'; which is the shortcut is not clear")
            }
            return convs(direct) > convs(container.1) ? (direct, container.1) : (container.1, direct)
        }
        switch containers.count {
        case 1: return (containers[0].1, [])
        case 2:
            let (a, b) = (containers[0].1, containers[1].1)
            guard convs(a) != convs(b) else {
                throw fail("block '\(prefix)' has two containers (\(containers[0].0), \(containers[1].0)) with \(convs(a)) convolutions each; which is the shortcut is not clear")
            }
            return convs(a) > convs(b) ? (a, b) : (b, a)
        default:
            throw fail("block '\(prefix)' has \(containers.count) containers (\(containers.map(\.0).joined(separator: ", "))); a residual block has a branch and at most one shortcut")
        }
    }

    /// A projection registered as a direct child beside the branch (`conv1, bn1, conv2, bn2, shortcut`):
    /// after the branch's convolutions, a conv that reads the block's input channels rather than the
    /// channels the branch has reached is the shortcut, with the batch norm that follows it.
    func separateDirectShortcut(_ ms: [StateDictModule], inChannels inC: Int) -> ([StateDictModule], [StateDictModule]) {
        var channels = inC, convs = 0
        for (i, m) in ms.enumerated() where m.kind == .conv {
            let w = m.weightShape
            if convs >= 2, w[1] == inC, channels != inC {
                var shortcut = [m]
                if i + 1 < ms.count, ms[i + 1].kind == .batchNorm, ms[i + 1].channels == w[0] { shortcut.append(ms[i + 1]) }
                let rest = ms.enumerated().filter { j, _ in j < i || j >= i + shortcut.count }.map(\.1)
                return (rest, shortcut)
            }
            convs += 1; channels = w[0]
        }
        return (ms, [])
    }

    /// The index of a module inside its container, when the container is a Sequential.
    private func sequentialIndex(_ m: StateDictModule, depth: Int) -> Int? {
        guard m.components.count > depth else { return nil }
        return Int(m.components[depth])
    }

    mutating func buildBlock(name: String, residual rms: [StateDictModule], shortcut sms: [StateDictModule], inChannels inC: Int,
                             stride: Int, preActivation: Bool, source: String) throws -> Block {
        // Residual branch: post-activation conv [BN] ReLU … conv [BN]; pre-activation [BN ReLU] conv ….
        let convCount = rms.filter { $0.kind == .conv }.count
        guard (2...3).contains(convCount) else {
            throw ResNetError.unsupported(file: file, place: source, reason: "a residual branch with \(convCount) convolutions; basic (2) and bottleneck (3) blocks are recovered")
        }
        // Stride on conv1 for basic blocks, on the first conv with a kernel larger than 1 in a bottleneck (v1.5).
        let convs = rms.filter { $0.kind == .conv }
        let strideAt = convCount == 3 ? (convs.firstIndex { $0.weightShape[2] > 1 } ?? 0) : 0
        var ops: [Op] = []
        var channels = inC
        var n = 0
        let pre = rms.first?.kind == .batchNorm
        for (j, m) in rms.enumerated() {
            switch m.kind {
            case .conv:
                n += 1
                let c = try conv(m, as: "\(name).conv\(n)", inChannels: channels, stride: n - 1 == strideAt ? stride : 1)
                ops.append(.conv(c)); channels = c.outChannels
                if !pre {
                    let nextIsBN = j + 1 < rms.count && rms[j + 1].kind == .batchNorm
                    if !nextIsBN && n < convCount { ops.append(.relu) }
                }
            case .batchNorm:
                if pre {
                    guard j + 1 < rms.count, rms[j + 1].kind == .conv else {
                        throw fail("\(source): in a pre-activation branch, batch norm '\(m.path)' is not followed by a convolution")
                    }
                    ops.append(.batchNorm(try batchNorm(m, as: "\(name).bn\(n + 1)", channels: channels)))
                    ops.append(.relu)
                } else {
                    guard j > 0, rms[j - 1].kind == .conv else {
                        throw fail("\(source): batch norm '\(m.path)' does not follow a convolution")
                    }
                    ops.append(.batchNorm(try batchNorm(m, as: "\(name).bn\(n)", channels: channels)))
                    if n < convCount { ops.append(.relu) }
                }
            case .linear:
                throw ResNetError.unsupported(file: file, place: m.path, reason: "a linear layer inside a residual block (squeeze-and-excitation is not supported)")
            }
        }
        let outC = channels

        // Shortcut.
        var shortcut: [Op] = []
        var blockPre: [Op] = []
        var residual = ops
        if !sms.isEmpty {
            let depth = sms[0].components.count - 1
            var index = 0          // canonical position, as a Sequential counts it (parameter-free modules too)
            var c = inC
            for (j, m) in sms.enumerated() {
                if let at = sequentialIndex(m, depth: depth) {
                    // A gap before the first module, where a stride is to be taken, is a pooling (ResNet-D).
                    if at > index, m.kind == .conv, shortcut.isEmpty, stride > 1 {
                        shortcut.append(.avgPool(PoolOp(kernel: [stride, stride], stride: [stride, stride],
                                                        padding: .explicit(top: 0, bottom: stride - 1, left: 0, right: stride - 1), countIncludePad: false)))
                    }
                    index = max(index, at)
                }
                switch m.kind {
                case .conv:
                    let pooled = shortcut.contains { if case .avgPool = $0 { return true } else { return false } }
                    let conv = try self.conv(m, as: "\(name).downsample.\(index)", inChannels: c, stride: pooled ? 1 : stride)
                    shortcut.append(.conv(conv)); c = conv.outChannels
                case .batchNorm:
                    shortcut.append(.batchNorm(try batchNorm(m, as: "\(name).downsample.\(index)", channels: c)))
                    // BN then conv in a shortcut is the pre-activation order: a ReLU sits between them.
                    if j + 1 < sms.count, sms[j + 1].kind == .conv { shortcut.append(.relu); index += 1 }
                case .linear:
                    throw ResNetError.unsupported(file: file, place: m.path, reason: "a linear layer in a shortcut")
                }
                index += 1
            }
            guard c == outC else { throw fail("\(source): the shortcut gives \(c) channels, the residual branch \(outC)") }
            // Pre-activation with a conv-only projection: the projection reads the pre-activated input
            // (the common implementation); the raw input is a variation.
            if pre, case .conv? = shortcut.first, residual.count >= 2, case .batchNorm = residual[0] {
                blockPre = Array(residual[0...1]); residual.removeFirst(2)
            }
        } else if stride != 1 || inC != outC {
            guard outC >= inC else {
                throw ResNetError.unsupported(file: file, place: source, reason: "a parameter-free shortcut cannot reduce \(inC) channels to \(outC)")
            }
            if stride != 1 { shortcut.append(.subsample(stride: stride)) }
            let pad = outC - inC
            if pad > 0 { shortcut.append(.channelPad(before: pad / 2, after: pad - pad / 2)) }
        }
        return Block(name: name, pre: blockPre, residual: residual, shortcut: shortcut, post: pre ? [] : [.relu])
    }
}

/// Path prefixes shared as nodes: node `n` is component `component[n]` below node `parent[n]`
/// (-1: the root). Building a module's ancestors costs its key's length, not the square of it.
struct PathTrie {
    private(set) var parent: [Int] = []
    private(set) var component: [String] = []
    private var child: [Edge: Int] = [:]
    private struct Edge: Hashable { let parent: Int; let component: String }

    /// The nodes of the first 1 ..< count components, shallowest first.
    mutating func ancestors(_ components: [String]) -> [Int] {
        var out: [Int] = []
        var node = -1
        for c in components.dropLast() {
            let e = Edge(parent: node, component: c)
            if let n = child[e] {
                node = n
            } else {
                child[e] = parent.count
                node = parent.count
                parent.append(e.parent)
                component.append(c)
            }
            out.append(node)
        }
        return out
    }

    /// The dotted path of a node.
    func path(_ node: Int) -> String {
        var parts: [String] = []
        var n = node
        while n >= 0 { parts.append(component[n]); n = parent[n] }
        return parts.reversed().joined(separator: ".")
    }
}
