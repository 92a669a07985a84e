import Foundation

/// One structure the weights allow: what a file cannot show by its tensors alone (where a stride
/// sits, whether a ReLU follows an addition, how option A splits its zero channels, whether the head
/// ends in softmax) is enumerated as candidates and settled by measurement: parity with goldens when
/// given, else the BatchNorm plausibility check.
public struct StructureCandidate: Sendable {
    /// The canonical model under this reading of the file.
    public var model: ResNetModel
    /// Where each canonical tensor came from (same convention as ``LoadedModel/mapping``).
    public var mapping: [TensorOrigin]
    /// What this candidate assumes, one short phrase per choice (e.g. `stem stride 1`, `no stem max pool`).
    public var choices: [String]

    public init(model: ResNetModel, mapping: [TensorOrigin], choices: [String]) {
        self.model = model; self.mapping = mapping; self.choices = choices
    }

    /// The choices as one line, or `as read` when the file left nothing open.
    public var summary: String { choices.isEmpty ? "as read" : choices.joined(separator: ", ") }
}

/// One thing the weights cannot show, with the readings it allows; the first option is the spec as read.
struct StructureAxis {
    var name: String
    var options: [(label: String, apply: (inout ResNetSpec) -> Void)]
}

private func isConv(_ op: Op) -> Bool { if case .conv = op { return true } else { return false } }
private func isBN(_ op: Op) -> Bool { if case .batchNorm = op { return true } else { return false } }

private func mapBlocks(_ spec: inout ResNetSpec, _ f: (inout Block) -> Void) {
    for s in spec.stages.indices { for b in spec.stages[s].blocks.indices { f(&spec.stages[s].blocks[b]) } }
}

/// The axes along which `spec` could be read otherwise without changing any tensor: where the stem
/// strides and whether it pools, where a bottleneck strides, how a parameter-free shortcut pools and
/// splits its zero channels, whether a ReLU follows each addition, where a pre-activation projection
/// reads its input, and whether a ReLU precedes the head's pooling.
func structureAxes(of spec: ResNetSpec) -> [StructureAxis] {
    var axes: [StructureAxis] = []

    // Stem: the stride of the first conv and a 3x3/2 max pool are two choices. The stride trades
    // off against the unknown training resolution, so only parity can settle it; the max pool
    // changes what every later layer sees at any resolution.
    if let first = spec.stem.firstIndex(where: isConv), case let .conv(c) = spec.stem[first], c.stride == [c.stride[0], c.stride[0]] {
        let stride = c.stride[0]
        axes.append(StructureAxis(name: "stem stride", options: [stride, stride == 1 ? 2 : 1].map { s in
            ("stem stride \(s)", { spec in
                guard case .conv(var cc) = spec.stem[first] else { return }
                cc.stride = [s, s]; spec.stem[first] = .conv(cc)
            })
        }))
        let hasPool = spec.stem.contains { if case .maxPool = $0 { return true } else { return false } }
        axes.append(StructureAxis(name: "stem max pool", options: [hasPool, !hasPool].map { pool in
            (pool ? "stem max pool" : "no stem max pool", { spec in
                let present = spec.stem.contains { if case .maxPool = $0 { return true } else { return false } }
                if pool == present { return }
                if pool {
                    let at = (spec.stem.lastIndex { if case .relu = $0 { return true } else { return false } } ?? (spec.stem.count - 1)) + 1
                    spec.stem.insert(.maxPool(PoolOp(kernel: [3, 3], stride: [2, 2], padding: .symmetric(1))), at: at)
                } else {
                    spec.stem.removeAll { if case .maxPool = $0 { return true } else { return false } }
                }
            })
        }))
    }

    // Bottlenecks that stride: on the first conv with a larger kernel (v1.5) or on the first 1x1 (v1).
    let strided = spec.stages.flatMap(\.blocks).filter { b in
        b.residual.filter(isConv).count == 3 && b.residual.contains { if case let .conv(c) = $0 { return c.stride != [1, 1] } else { return false } }
    }
    if let b = strided.first, let at = b.residual.firstIndex(where: { if case let .conv(c) = $0 { return c.stride != [1, 1] } else { return false } }) {
        let onFirst = b.residual.firstIndex(where: isConv) == at
        func move(toFirst: Bool) -> (inout ResNetSpec) -> Void {
            { spec in mapBlocks(&spec) { block in
                let convs = block.residual.indices.filter { isConv(block.residual[$0]) }
                guard convs.count == 3 else { return }
                var stride = [1, 1]
                for i in convs { if case let .conv(c) = block.residual[i], c.stride != [1, 1] { stride = c.stride } }
                guard stride != [1, 1] else { return }
                let target = toFirst ? convs[0] : (convs.first { i in if case let .conv(c) = block.residual[i] { return c.kernel != [1, 1] } else { return false } } ?? convs[1])
                for i in convs { if case var .conv(c) = block.residual[i] { c.stride = i == target ? stride : [1, 1]; block.residual[i] = .conv(c) } }
            } }
        }
        axes.append(StructureAxis(name: "bottleneck stride", options: [
            (onFirst ? "bottleneck stride on the first 1x1 conv" : "bottleneck stride on the 3x3 conv", { _ in }),
            (onFirst ? "bottleneck stride on the 3x3 conv" : "bottleneck stride on the first 1x1 conv", move(toFirst: !onFirst)),
        ]))
    }

    // Parameter-free shortcuts that add zero channels: how they reduce the resolution (subsample or
    // average pool) and where the zeros go are two separate choices.
    let padded = spec.stages.flatMap(\.blocks).first { $0.shortcut.contains { if case .channelPad = $0 { return true } else { return false } } }
    if let padded {
        let strided = spec.stages.flatMap(\.blocks).contains { b in b.shortcut.contains { if case .subsample = $0 { return true }; if case .avgPool = $0 { return true }; return false } }
        if strided {
            let pooled = padded.shortcut.contains { if case .avgPool = $0 { return true } else { return false } }
            var options: [(String, (inout ResNetSpec) -> Void)] = []
            for pool in [pooled, !pooled] {
                options.append(("zero-channel shortcut: \(pool ? "2x2 average pool" : "subsample")", { spec in
                    mapBlocks(&spec) { block in
                        guard block.shortcut.contains(where: { if case .channelPad = $0 { return true } else { return false } }) else { return }
                        block.shortcut = block.shortcut.map { op in
                            switch op {
                            case let .subsample(st) where pool: return .avgPool(PoolOp(kernel: [st, st], stride: [st, st]))
                            case let .avgPool(q) where !pool: return .subsample(stride: q.stride[0])
                            default: return op
                            }
                        }
                    }
                }))
            }
            axes.append(StructureAxis(name: "zero-channel pooling", options: options))
        }
        var split = "evenly"
        for case let .channelPad(before, after) in padded.shortcut { split = before == 0 ? "after" : after == 0 ? "before" : "evenly" }
        var options: [(String, (inout ResNetSpec) -> Void)] = []
        for where_ in [split] + ["evenly", "before", "after"].filter({ $0 != split }) {
            options.append(("zero channels \(where_ == "evenly" ? "split evenly" : where_)", { spec in
                mapBlocks(&spec) { block in
                    block.shortcut = block.shortcut.map { op in
                        guard case let .channelPad(b, a) = op else { return op }
                        let total = a + b
                        let (nb, na) = where_ == "before" ? (total, 0) : where_ == "after" ? (0, total) : (total / 2, total - total / 2)
                        return .channelPad(before: nb, after: na)
                    }
                }
            }))
        }
        axes.append(StructureAxis(name: "zero-channel split", options: options))
    }

    // ReLU after the addition.
    let blocks = spec.stages.flatMap(\.blocks)
    if !blocks.isEmpty {
        let withReLU = blocks[0].post == [.relu]
        if blocks.allSatisfy({ $0.post == blocks[0].post }) && (withReLU || blocks[0].post.isEmpty) {
            axes.append(StructureAxis(name: "post-add ReLU", options: [
                (withReLU ? "ReLU after each addition" : "no ReLU after the additions", { _ in }),
                (withReLU ? "no ReLU after the additions" : "ReLU after each addition", { spec in mapBlocks(&spec) { $0.post = withReLU ? [] : [.relu] } }),
            ]))
        }
    }

    // Pre-activation projections: read the pre-activated input (shared BN-ReLU) or the raw input.
    let shared = blocks.contains { !$0.pre.isEmpty && ($0.shortcut.first.map(isConv) ?? false) }
    let separate = blocks.contains { $0.pre.isEmpty && ($0.shortcut.first.map(isConv) ?? false) && $0.residual.count >= 2 && isBN($0.residual[0]) }
    if shared != separate {
        axes.append(StructureAxis(name: "pre-activation projection", options: [
            (shared ? "projection reads the pre-activated input" : "projection reads the block input", { _ in }),
            (shared ? "projection reads the block input" : "projection reads the pre-activated input", { spec in mapBlocks(&spec) { block in
                guard block.shortcut.first.map(isConv) ?? false else { return }
                if shared, !block.pre.isEmpty { block.residual = block.pre + block.residual; block.pre = [] }
                else if !shared, block.pre.isEmpty, block.residual.count >= 2, isBN(block.residual[0]), block.residual[1] == .relu {
                    block.pre = Array(block.residual[0...1]); block.residual.removeFirst(2)
                }
            } }),
        ]))
    }

    // Pre-activation networks without a final batch norm: a ReLU before the head's pooling or not.
    if !blocks.isEmpty, blocks.allSatisfy({ $0.post.isEmpty }), !spec.head.contains(where: isBN), spec.head.first == .globalAvgPool || spec.head.first == .relu {
        let hasReLU = spec.head.first == .relu
        axes.append(StructureAxis(name: "head ReLU", options: [
            (hasReLU ? "ReLU before the head's pooling" : "no ReLU before the head's pooling", { _ in }),
            (hasReLU ? "no ReLU before the head's pooling" : "ReLU before the head's pooling", { spec in
                if hasReLU { spec.head.removeFirst() } else { spec.head.insert(.relu, at: 0) }
            }),
        ]))
    }
    // The head's activation: logits or softmax, which no tensor shows.
    if case .dense? = spec.head.last {
        axes.append(StructureAxis(name: "head activation", options: [("head: logits", { _ in }), ("head: softmax", { $0.head.append(.softmax) })]))
    } else if spec.head.last == .softmax, spec.head.count >= 2, case .dense = spec.head[spec.head.count - 2] {
        axes.append(StructureAxis(name: "head activation", options: [("head: softmax", { _ in }), ("head: logits", { $0.head.removeLast() })]))
    }
    return axes
}

/// Candidates for `model`: every combination of the axes' options, the reading as given first and
/// the others by how many choices differ from it, at most `limit`.
func structureCandidates(of model: ResNetModel, mapping: [TensorOrigin], limit: Int = 96) -> [StructureCandidate] {
    let axes = structureAxes(of: model.spec)
    guard !axes.isEmpty else { return [] }
    var combos: [[Int]] = [[]]
    for a in axes { combos = combos.flatMap { c in a.options.indices.map { c + [$0] } } }
    combos.sort { $0.filter { $0 != 0 }.count < $1.filter { $0 != 0 }.count }
    var out: [StructureCandidate] = []
    var seen = Set<ResNetSpec>()
    for combo in combos {
        var spec = model.spec
        var choices: [String] = []
        for (a, i) in zip(axes, combo) { a.options[i].apply(&spec); choices.append(a.options[i].label) }
        guard seen.insert(spec).inserted else { continue }
        out.append(StructureCandidate(model: ResNetModel(spec: spec, tensors: model.tensors), mapping: mapping, choices: choices))
        if out.count == limit { break }
    }
    return out
}
