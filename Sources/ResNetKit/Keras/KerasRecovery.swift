import Foundation

/// Recovers the layer graph of a legacy Keras weights-only file (`save_weights` to `.h5`, no model
/// config) from the evidence the file carries, for files no preset fits.
///
/// Evidence used:
/// - the root `layer_names`, which lists *every* layer (weightless ones too) in the model's layer
///   order: by decreasing depth (longest path to the output), ties in the order a depth-first
///   walk from the output meets them. That order is topological, an `add` separates the layers of
///   consecutive blocks, and inside a block the two branches interleave only at equal depth;
/// - each weighted layer's class, read from its variables (Conv2D kernel [+ bias], BatchNormalization
///   gamma/beta/moving statistics, Dense kernel [+ bias]) and their shapes;
/// - the names of weightless layers (`activation_N`, `add_N`, `average_pooling2d_N`, `flatten_N`,
///   `dropout_N`, `zero_padding2d_N`, …), which say where ReLUs, additions, pools and flattening sit.
///
/// Inside a block, the residual branch is the chain of convolutions whose channels run from the
/// block input to the block output; a convolution left out of that chain, from the block input's
/// width to the output's, is the projection. The weights cannot tell everything: where a
/// downsampling block puts its stride, which of two same-shaped convolutions is the projection,
/// whether a projection reads the block input or its BN-ReLU pre-activation, and whether the Dense
/// ends in softmax. Those are enumerated as ``RecoveredKerasGraph`` candidates, default first, for
/// the caller to settle by parity or BatchNorm plausibility.
struct KerasWeightsRecovery {
    let file: String
    let order: [String]
    let weights: [String: [SourceTensor]]

    /// One layer as the evidence shows it.
    fileprivate enum Kind: Equatable {
        case conv(inC: Int, outC: Int, kh: Int, kw: Int, bias: Bool)
        case bn(c: Int, scale: Bool, center: Bool)
        case dense(inF: Int, outF: Int, bias: Bool)
        case relu, add, avgPool, maxPool, globalPool, flatten, zeroPad, softmax

        var isConv: Bool { if case .conv = self { return true }; return false }
    }

    fileprivate struct Item {
        var name: String
        var kind: Kind
        var vars: [SourceTensor]
    }

    /// The readings a block allows: which conv (if any) is the projection, and in which order the
    /// two branches were added (which decides how they interleave in the layer order).
    fileprivate struct BlockReading {
        var projection: Int?          // index into the block's items
        var shortcutFirst: Bool
        var shortcut: [Int]
        var residual: [Int]
    }

    fileprivate struct Block {
        var lead: [Item]              // ops after the previous add, before this block's fork
        var items: [Item]             // this block's branch items, in file order
        var readings: [BlockReading]
        var inC: Int
        var outC: Int
        var addName: String
    }

    init(file: KerasFile) throws {
        guard let order = file.layerOrder else {
            throw ResNetError.mapping(file: file.path, reason: "the file does not list its layers in order (only legacy save_weights files do), so the structure cannot be read from it")
        }
        self.file = file.path
        self.order = order
        var w: [String: [SourceTensor]] = [:]
        for g in file.layerWeights {
            // Keras 1 names variables `conv_1_W` without a layer prefix; the reader then files them under `conv_1/`.
            let layer = g.layer.hasSuffix("/") ? String(g.layer.dropLast()) : g.layer
            guard !layer.contains("/") else {
                throw ResNetError.mapping(file: file.path, reason: "layer \(layer.split(separator: "/")[0]) is a nested model; structures are read only from flat models")
            }
            w[layer] = g.variables
        }
        self.weights = w
    }

    private func fail(_ reason: String) -> ResNetError {
        .mapping(file: file, reason: "reading the structure from the layer order: \(reason)")
    }

    // MARK: Evidence → items

    /// The class of a layer without variables, from its generic name (`activation_3` → activation).
    private static func weightlessKind(_ name: String) -> Kind?? {
        var base = Substring(name.lowercased())
        if let u = base.lastIndex(of: "_"), Int(base[base.index(after: u)...]) != nil { base = base[..<u] }
        switch base.replacingOccurrences(of: "_", with: "") {
        case "input", "inputlayer": return .some(nil)
        case "dropout", "spatialdropout2d", "gaussiandropout", "gaussiannoise": return .some(nil)   // identity at inference
        case "activation", "relu": return .relu   // keras.io and keras.applications use ReLU between layers
        case "add", "merge": return .add
        case "averagepooling2d", "avgpool2d": return .avgPool
        case "maxpooling2d", "maxpool2d": return .maxPool
        case "globalaveragepooling2d", "globalavgpool2d": return .globalPool
        case "flatten": return .flatten
        case "zeropadding2d": return .zeroPad
        case "softmax": return .softmax
        default: return nil
        }
    }

    private func weightedKind(_ name: String, _ vars: [SourceTensor]) throws -> Kind {
        let shapes = vars.map(\.tensor.shape)
        guard shapes.allSatisfy({ $0.allSatisfy { $0 > 0 } }) else {
            throw fail("layer \(name) has an empty variable (shapes \(shapes))")
        }
        func base(_ v: SourceTensor) -> String {
            var b = Substring(v.name.split(separator: "/").last ?? "")
            if let c = b.firstIndex(of: ":") { b = b[..<c] }
            return String(b)
        }
        if shapes[0].count == 4, shapes.count <= 2 {
            let k = shapes[0]
            if shapes.count == 2 && shapes[1] != [k[3]] { throw fail("layer \(name): conv bias \(shapes[1]) does not match kernel \(k)") }
            return .conv(inC: k[2], outC: k[3], kh: k[0], kw: k[1], bias: shapes.count == 2)
        }
        if shapes[0].count == 2, shapes.count <= 2 {
            if shapes.count == 2 && shapes[1] != [shapes[0][1]] { throw fail("layer \(name): dense bias \(shapes[1]) does not match kernel \(shapes[0])") }
            return .dense(inF: shapes[0][0], outF: shapes[0][1], bias: shapes.count == 2)
        }
        if shapes.allSatisfy({ $0.count == 1 && $0 == shapes[0] }), (2...4).contains(shapes.count) {
            let names = vars.map(base)
            let scale = shapes.count == 4 || names.contains { $0.hasSuffix("gamma") }
            let center = shapes.count == 4 || names.contains { $0.hasSuffix("beta") }
            guard 2 + (scale ? 1 : 0) + (center ? 1 : 0) == shapes.count else {
                throw fail("layer \(name): \(shapes.count) BatchNormalization variables named \(names); cannot tell which are gamma and beta")
            }
            return .bn(c: shapes[0][0], scale: scale, center: center)
        }
        throw fail("layer \(name) has variables of shapes \(shapes), which are not those of a Conv2D, BatchNormalization or Dense")
    }

    private func items() throws -> [Item] {
        var out: [Item] = []
        for name in order {
            if let vars = weights[name], !vars.isEmpty {
                out.append(Item(name: name, kind: try weightedKind(name, vars), vars: vars))
                continue
            }
            guard let k = Self.weightlessKind(name) else {
                throw fail("layer \(name) has no variables and its name does not say what it does (known: activation, re_lu, add, average/max/global pooling, flatten, dropout, zero_padding2d, softmax, input)")
            }
            if let k { out.append(Item(name: name, kind: k, vars: [])) }
        }
        let known = Set(order)
        if let stray = weights.keys.sorted().first(where: { !known.contains($0) }) {
            throw fail("weight group \(stray) is not in layer_names")
        }
        return out
    }

    // MARK: Blocks

    /// Channels after a run of linear ops, starting from `c`; nil when a conv does not fit.
    private func channels(after items: [Item], from c: Int) -> Int? {
        var c = c
        for it in items {
            switch it.kind {
            case let .conv(i, o, _, _, _): guard i == c else { return nil }; c = o
            case let .bn(ch, _, _): guard ch == c else { return nil }
            default: break
            }
        }
        return c
    }

    /// Every reading of one block's items that the shapes and the layer order allow.
    private func readings(_ items: [Item], inC: Int) -> [BlockReading] {
        let n = items.count
        // Identity shortcut: every conv chains from the input width back to it.
        if channels(after: items, from: inC) == inC, items.contains(where: { $0.kind.isConv }) {
            return [BlockReading(projection: nil, shortcutFirst: true, shortcut: [], residual: Array(0..<n))]
        }
        // convsEvery2[i + 2] = convs at positions i, i - 2, i - 4, …: whether a shortcut's later
        // positions hold a conv is then one subtraction, and only the few projections that pass
        // it cost a pass over the block (else a block of n convolutions costs n²).
        var convsEvery2 = [Int](repeating: 0, count: n + 2)
        for i in 0..<n { convsEvery2[i + 2] = convsEvery2[i] + (items[i].kind.isConv ? 1 : 0) }
        var out: [BlockReading] = []
        for p in 0..<n {
            guard case let .conv(pi, po, _, _, _) = items[p].kind, pi == inC else { continue }
            for shortcutFirst in [true, false] {
                // Shortcut op j (of m) and residual op n_r - m + j share a depth; the one added
                // first is met first by the walk from the output, so the last 2m items alternate.
                let span = n - p + (shortcutFirst ? 0 : 1)
                guard span % 2 == 0, span >= 2 else { continue }
                let m = span / 2
                guard p + 2 * (m - 1) < n, convsEvery2[p + 2 * m] - convsEvery2[p + 2] == 0 else { continue }
                let sc = (0..<m).map { p + 2 * $0 }
                let scSet = Set(sc)
                let residual = (0..<n).filter { !scSet.contains($0) }
                guard sc.dropFirst().allSatisfy({ !items[$0].kind.isConv }), residual.count >= m,
                      let rc = channels(after: residual.map { items[$0] }, from: inC),
                      channels(after: sc.map { items[$0] }, from: inC) == rc, rc == po else { continue }
                out.append(BlockReading(projection: p, shortcutFirst: shortcutFirst, shortcut: sc, residual: residual))
            }
        }
        return out
    }

    private func blocks(_ all: [Item]) throws -> (stem: [Item], blocks: [Block], head: [Item], inC: Int) {
        guard let firstConv = all.first(where: { $0.kind.isConv }), case let .conv(inputC, _, _, _, _) = firstConv.kind else {
            throw fail("no convolution")
        }
        let adds = all.indices.filter { all[$0].kind == .add }
        guard !adds.isEmpty else { throw fail("no add layer, so no residual block") }
        // Stem: up to the first max pool before the first add, else up to the first ReLU after the first conv.
        let first = all[..<adds[0]]
        let convAt = first.firstIndex(where: { $0.kind.isConv }) ?? 0
        let stemEnd: Int
        if let pool = first.firstIndex(where: { $0.kind == .maxPool }) {
            stemEnd = pool + 1
        } else if let relu = first[convAt...].firstIndex(where: { $0.kind == .relu }) {
            stemEnd = relu + 1
        } else {
            throw fail("cannot tell where the stem ends (no ReLU or max pool before the first block)")
        }
        let stem = Array(all[..<stemEnd])
        guard var c = channels(after: stem, from: inputC) else { throw fail("the stem's channels do not chain") }
        var blocks: [Block] = []
        var start = stemEnd
        for a in adds {
            var lead: [Item] = []
            var i = start
            // A ReLU straight after an add belongs to that add (ResNet v1's post-activation).
            if !blocks.isEmpty { while i < a, all[i].kind == .relu { lead.append(all[i]); i += 1 } }
            let items = Array(all[i..<a])
            guard items.allSatisfy({ [.relu, .zeroPad].contains($0.kind) || $0.kind.isConv || { if case .bn = $0.kind { return true }; return false }($0) }) else {
                throw fail("block ending at \(all[a].name) holds layers other than convolutions, BatchNorms, ReLUs and zero padding")
            }
            let r = readings(items, inC: c)
            guard let r0 = r.first else {
                let convs = items.compactMap { it -> String? in
                    if case let .conv(ci, co, kh, kw, _) = it.kind { return "\(it.name) \(kh)x\(kw) \(ci)→\(co)" }
                    return nil
                }
                throw fail("the convolutions of the block ending at \(all[a].name) (\(convs.joined(separator: ", "))) form no residual branch from \(c) channels with an identity or projection shortcut")
            }
            let out = channels(after: r0.residual.map { items[$0] }, from: c)!
            blocks.append(Block(lead: lead, items: items, readings: r, inC: c, outC: out, addName: all[a].name))
            c = out
            start = a + 1
        }
        return (stem, blocks, Array(all[start...]), inputC)
    }

    // MARK: Candidates

    /// The open choices, each a flag; a flag is offered only when some block makes it matter.
    struct Options: Hashable {
        var softmax = true
        var strideOnFirstConv = true
        var shortcutFirst = true
        var projectionReadsInput = true
    }

    /// The recovered graphs, the default reading first.
    func candidates() throws -> [(graph: KerasGraph, choices: [String])] {
        let all = try items()
        let parts = try blocks(all)
        guard parts.head.contains(where: { if case .dense = $0.kind { return true }; return false }) else {
            throw fail("no Dense classifier after the last add")
        }
        let downsampling = downsamplingBlocks(parts.blocks)
        var dims: [(WritableKeyPath<Options, Bool>, String, String)] = [
            (\.softmax, "head: softmax", "head: logits"),
        ]
        if downsampling.contains(where: { b in
            let convs = parts.blocks[b].readings[0].residual.filter { parts.blocks[b].items[$0].kind.isConv }
            return firstSpatial(parts.blocks[b], convs) != convs.first
        }) {
            dims.append((\.strideOnFirstConv, "stride 2 on the first conv of each downsampling block",
                         "stride 2 on the first conv wider than 1x1 of each downsampling block"))
        }
        if parts.blocks.contains(where: { b in Set(b.readings.map(\.shortcutFirst)).count > 1 }) {
            dims.append((\.shortcutFirst, "projection: the earlier of two same-shaped convs (shortcut added first)",
                         "projection: the later of two same-shaped convs (residual added first)"))
        }
        if parts.blocks.contains(where: { b in
            guard let r = b.readings.first, r.projection != nil else { return false }
            return leadingPreactivation(b, r) > 0
        }) {
            dims.append((\.projectionReadsInput, "projection reads the block input (BN-ReLU inside the residual branch)",
                         "projection reads the BN-ReLU pre-activation"))
        }
        var out: [(KerasGraph, [String])] = []
        for mask in 0..<(1 << dims.count) {
            var o = Options()
            var choices: [String] = []
            for (d, dim) in dims.enumerated() {
                let alt = mask & (1 << d) != 0
                o[keyPath: dim.0] = !alt
                choices.append(alt ? dim.2 : dim.1)
            }
            out.append((try build(parts, downsampling: downsampling, options: o), choices))
        }
        return out
    }

    /// Blocks that start a new width after the first one: keras.io's CIFAR ResNets (and most
    /// ResNets) halve the resolution there, never in the first stage.
    private func downsamplingBlocks(_ blocks: [Block]) -> Set<Int> {
        var out = Set<Int>()
        for i in blocks.indices.dropFirst() where blocks[i].outC != blocks[i - 1].outC { out.insert(i) }
        return out
    }

    private func firstSpatial(_ b: Block, _ convs: [Int]) -> Int? {
        convs.first { if case let .conv(_, _, kh, kw, _) = b.items[$0].kind { return kh > 1 || kw > 1 }; return false }
    }

    /// Count of BN/ReLU items opening the residual branch before its first conv.
    private func leadingPreactivation(_ b: Block, _ r: BlockReading) -> Int {
        var k = 0
        for i in r.residual {
            if b.items[i].kind.isConv { break }
            k += 1
        }
        return k
    }

    private static let bnEpsilon = 1e-3   // Keras' BatchNormalization default; the weights do not record it

    private func build(_ parts: (stem: [Item], blocks: [Block], head: [Item], inC: Int), downsampling: Set<Int>,
                       options o: Options) throws -> KerasGraph {
        var b = PresetGraphBuilder()
        var x = b.input(channels: parts.inC)
        func linear(_ items: [Item], from: Int, strideOn: Int?) throws -> Int {
            var x = from
            var pending: Int?   // the last op was a ZeroPadding2D: the next conv/pool is `valid`
            for (k, it) in items.enumerated() {
                let padded = pending != nil
                switch it.kind {
                case let .conv(_, outC, kh, kw, bias):
                    guard kh == kw else { throw fail("conv \(it.name) has a \(kh)x\(kw) kernel; only square kernels are read from the layer order") }
                    let stride = k == strideOn ? 2 : 1
                    x = b.conv(x, outC, kh, strides: stride, padding: padded ? "valid" : "same", useBias: bias, name: it.name)
                    b.setWeights(x, it.vars)
                case let .bn(_, scale, center):
                    x = b.bn(x, eps: Self.bnEpsilon, scale: scale, center: center, name: it.name)
                    b.setWeights(x, it.vars)
                case .relu:
                    x = b.act(x, "relu", name: it.name)
                case .zeroPad:
                    // Pad by what the next window needs to keep its size ((k-1)/2; 1 before a 3x3 pool).
                    let next = items[(k + 1)...].first { $0.kind.isConv || $0.kind == .maxPool }
                    var p = 1
                    if let next, case let .conv(_, _, kh, _, _) = next.kind { p = (kh - 1) / 2 }
                    x = b.zeroPad(x, p, name: it.name)
                case .maxPool:
                    x = b.maxPool(x, 3, strides: 2, padding: padded ? "valid" : "same", name: it.name)
                default:
                    throw fail("layer \(it.name) cannot sit inside the stem or a block")
                }
                pending = it.kind == .zeroPad ? x : nil
            }
            return x
        }
        // A 7x7 first conv is the ImageNet stem, which strides by 2; smaller stems (CIFAR) do not.
        let stemConv = parts.stem.firstIndex { if case let .conv(_, _, kh, _, _) = $0.kind { return kh >= 7 }; return false }
        x = try linear(parts.stem, from: x, strideOn: stemConv)
        for (i, blk) in parts.blocks.enumerated() {
            x = try linear(blk.lead, from: x, strideOn: nil)
            let r = blk.readings.first { $0.shortcutFirst == o.shortcutFirst } ?? blk.readings[0]
            var residual = r.residual.map { blk.items[$0] }
            let shortcut = r.shortcut.map { blk.items[$0] }
            var fork = x
            if r.projection != nil, !o.projectionReadsInput {
                let k = leadingPreactivation(blk, r)
                fork = try linear(Array(residual[..<k]), from: x, strideOn: nil)
                residual.removeFirst(k)
            }
            var strideOn: Int?
            if downsampling.contains(i) {
                guard !shortcut.isEmpty else {
                    throw fail("block ending before \(blk.items.last?.name ?? "?") changes width \(blk.inC)→\(blk.outC) without a projection conv")
                }
                let convs = residual.indices.filter { residual[$0].kind.isConv }
                strideOn = o.strideOnFirstConv ? convs.first
                    : convs.first { if case let .conv(_, _, kh, kw, _) = residual[$0].kind { return kh > 1 || kw > 1 }; return false } ?? convs.first
            }
            let y = try linear(residual, from: fork, strideOn: strideOn)
            let s = shortcut.isEmpty ? fork : try linear(shortcut, from: fork, strideOn: strideOn == nil ? nil : 0)
            // Keras code adds [shortcut, residual]; the order does not change the sum.
            x = b.add([s, y], name: blk.addName)
        }
        // Head: ReLUs and BN-ReLU, a pool, an optional flatten, the Dense, an optional activation.
        var sawPool = false
        for (k, it) in parts.head.enumerated() {
            switch it.kind {
            case .relu where !sawPool:
                x = b.act(x, "relu", name: it.name)
            case let .bn(_, scale, center) where !sawPool:
                x = b.bn(x, eps: Self.bnEpsilon, scale: scale, center: center, name: it.name)
                b.setWeights(x, it.vars)
            case .avgPool, .globalPool:
                guard !sawPool else { throw fail("two pooling layers in the head") }
                // An AveragePooling2D whose flattened output feeds a Dense of exactly the channel
                // count covers the whole final map: a global average for the size the model was built for.
                let c = parts.blocks.last!.outC
                guard let dense = parts.head[k...].first(where: { if case .dense = $0.kind { return true }; return false }),
                      case let .dense(inF, _, _) = dense.kind, inF == c else {
                    throw fail("the Dense after \(it.name) does not take \(c) features, so the pool size cannot be read from the weights")
                }
                x = b.globalAvgPool(x, name: it.name)
                sawPool = true
            case .flatten:
                guard sawPool else { throw fail("Flatten \(it.name) without a pool before it: the map size is not in the weights") }
            case let .dense(_, outF, bias):
                guard sawPool else { throw fail("Dense \(it.name) without a pool before it") }
                let last = k == parts.head.count - 1
                x = b.dense(x, outF, activation: last && o.softmax ? "softmax" : "linear", useBias: bias, name: it.name)
                b.setWeights(x, it.vars)
            case .relu, .softmax:
                // An activation after the Dense is the head's: the softmax/logits choice settles it.
                guard k == parts.head.count - 1, k > 0, case .dense = parts.head[k - 1].kind else {
                    throw fail("layer \(it.name) sits where the head allows no activation")
                }
                if o.softmax { x = b.act(x, "softmax", name: it.name) }
            default:
                throw fail("layer \(it.name) cannot sit in the head")
            }
        }
        b.output = x
        return KerasGraph(nodes: b.nodes, input: 0, output: x, inputShape: [nil, nil, parts.inC])
    }
}

extension KerasGraph {
    /// This graph with its classifier ending in `activation` (`softmax` or `linear`): the Dense
    /// producing the output gets that activation, and a softmax layer after it is dropped for logits.
    /// Nil when the output is not a Dense (or a Dense followed by one activation).
    func withHeadActivation(_ activation: String) -> KerasGraph? {
        var g = self
        var out = g.nodes[g.output]
        if out.className == "Activation" || out.className == "Softmax", out.inputs.count == 1,
           g.nodes[out.inputs[0]].className == "Dense" {
            g.output = out.inputs[0]
            out = g.nodes[g.output]
        }
        guard out.className == "Dense", case var .object(cfg) = out.config else { return nil }
        cfg["activation"] = .string(activation)
        g.nodes[out.id].config = .object(cfg)
        return g
    }

    /// The activation the classifier ends in now: `softmax` or `linear` (nil when not a Dense head).
    var headActivation: String? {
        var out = nodes[output]
        if out.className == "Softmax" { return "softmax" }
        if out.className == "Activation", out.inputs.count == 1, nodes[out.inputs[0]].className == "Dense" {
            if out.config["activation"]?.string == "softmax" { return "softmax" }
            out = nodes[out.inputs[0]]
        }
        guard out.className == "Dense" else { return nil }
        return out.config["activation"]?.string ?? "linear"
    }
}
