import Foundation

// Evidence about a PyTorch structure beyond the tensors' names and shapes: the hyper-parameters a
// whole pickled nn.Module records (a Conv2d's stride, a MaxPool2d or Softmax child), and, where
// nothing records it, the convention a stem's kernel implies.

private func stemConvs(_ spec: ResNetSpec) -> [ConvOp] {
    spec.stem.compactMap { if case let .conv(c) = $0 { return c } else { return nil } }
}

/// The stem stride a state dict implies when nothing records it: a single 3×3 (or smaller) stem conv
/// is the CIFAR stem, which keeps the resolution; a naming table borrowed from an ImageNet layout
/// (torchvision's `conv1`/`bn1`) must not give it that layout's stride. Returns the adjusted spec
/// and a note, or nil when the reading already follows the convention.
func conventionalStem(_ spec: ResNetSpec) -> (spec: ResNetSpec, note: String)? {
    let convs = stemConvs(spec)
    guard convs.count == 1, let c = convs.first, c.kernel.allSatisfy({ $0 <= 3 }), c.stride != [1, 1],
          let at = spec.stem.firstIndex(where: { if case .conv = $0 { return true } else { return false } }) else { return nil }
    var out = spec
    var cc = c
    cc.stride = [1, 1]
    out.stem[at] = .conv(cc)
    return (out, "stem: a single \(c.kernel.map(String.init).joined(separator: "x")) conv is read with stride 1 (the CIFAR stem), not stride \(c.stride[0]); the stride cannot be seen in the weights or the BatchNorm statistics: pass --expect io.npz to confirm it")
}

/// What a whole pickled module's tree says about the structure, as constraints a candidate must meet.
struct RecordedStructure {
    /// Conv module path → recorded stride.
    var convStrides: [String: [Int]] = [:]
    /// A MaxPool2d outside the residual blocks: the stem pools.
    var stemMaxPool = false
    /// A Softmax / LogSoftmax module: the head ends in softmax.
    var softmax = false

    init(_ modules: [TorchModuleInfo]) {
        for m in modules where m.sharedWith == nil {
            switch m.typeName {
            case "Conv2d":
                if let s = m.ints["stride"], !s.isEmpty { convStrides[m.path] = s.count == 1 ? [s[0], s[0]] : s }
            case "MaxPool2d":
                stemMaxPool = true
            case "Softmax", "LogSoftmax":
                softmax = true
            default:
                break
            }
        }
    }

    var isEmpty: Bool { convStrides.isEmpty && !stemMaxPool && !softmax }

    /// The recorded facts `model` contradicts, in words; empty when it meets them all.
    func contradictions(_ model: ResNetModel, mapping: [TensorOrigin]) -> [String] {
        var sources: [String: String] = [:]
        for o in mapping where o.canonical.hasSuffix(".weight") && o.source.hasSuffix(".weight") {
            sources[String(o.canonical.dropLast(7))] = String(o.source.dropLast(7))
        }
        var out: [String] = []
        for case let .conv(c) in model.spec.allOps {
            guard let path = sources[c.name], let recorded = convStrides[path], recorded != c.stride else { continue }
            out.append("\(path) strides \(recorded.map(String.init).joined(separator: "x")), not \(c.stride.map(String.init).joined(separator: "x"))")
        }
        if stemMaxPool && !model.spec.stem.contains(where: { if case .maxPool = $0 { return true } else { return false } }) {
            out.append("the module has a MaxPool2d")
        }
        // Absence proves nothing: a forward may call F.softmax or F.max_pool2d.
        if softmax && model.spec.head.last != .softmax { out.append("the module has a Softmax") }
        return out
    }
}

/// Keeps the candidates a whole pickled module's recorded hyper-parameters allow (all of them when
/// the tree records nothing, or when none fits, which the returned note says).
func applyRecordedStructure(_ candidates: [StructureCandidate], modules: [TorchModuleInfo]) -> (candidates: [StructureCandidate], note: String?) {
    let recorded = RecordedStructure(modules)
    guard !recorded.isEmpty, !candidates.isEmpty else { return (candidates, nil) }
    let kept = candidates.filter { recorded.contradictions($0.model, mapping: $0.mapping).isEmpty }
    if kept.isEmpty {
        let contradictions = recorded.contradictions(candidates[0].model, mapping: candidates[0].mapping)
        let why = firstItems(contradictions, 3, separator: "; ")
        return (candidates, "module tree: no candidate structure meets the recorded hyper-parameters (\(why)); the choice is left to parity or BatchNorm plausibility")
    }
    var facts: [String] = []
    if !recorded.convStrides.isEmpty { facts.append("the strides of \(recorded.convStrides.count) Conv2d modules") }
    if recorded.stemMaxPool { facts.append("a MaxPool2d") }
    if recorded.softmax { facts.append("a Softmax") }
    return (kept, "module tree: the recorded hyper-parameters (\(facts.joined(separator: ", "))) leave \(kept.count) of \(candidates.count) candidate structures")
}

/// The shortcuts of `spec` in words, from the ops it holds (not from how it was built, so a note
/// never describes another structure than the one stored): each distinct kind once, in block order.
func shortcutNote(_ spec: ResNetSpec) -> String {
    var kinds: [String] = []
    for stage in spec.stages {
        for block in stage.blocks where !block.shortcut.isEmpty {
            let parts = block.shortcut.map { op -> String in
                switch op {
                case let .conv(c):
                    let stride = c.stride == [1, 1] ? "" : " stride \(c.stride[0])"
                    return "\(c.kernel[0])x\(c.kernel[1]) conv\(stride)\(c.bias ? " with bias" : "")"
                case .batchNorm: return "BN"
                case .relu: return "ReLU"
                case let .avgPool(p): return "\(p.kernel[0])x\(p.kernel[1]) average pool\(p.countIncludePad ? "" : " (ceil mode)")"
                case let .maxPool(p): return "\(p.kernel[0])x\(p.kernel[1]) max pool"
                case let .subsample(s): return "subsample by \(s)"
                case let .channelPad(before, after): return "zero channels (\(before) before, \(after) after)"
                case .zeroPad: return "zero padding"
                case .globalAvgPool: return "global average pool"
                case .flatten: return "flatten"
                case .dense: return "dense"
                case .softmax: return "softmax"
                }
            }
            let kind = parts.joined(separator: " + ")
            if !kinds.contains(kind) { kinds.append(kind) }
        }
    }
    return "shortcuts: " + (kinds.isEmpty ? "identity only" : kinds.joined(separator: "; ") + "; identity in the other blocks")
}
