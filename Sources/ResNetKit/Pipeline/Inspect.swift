import Foundation

/// What `inspect` shows about a file.
public struct FileSummary: Sendable, Codable {
    public var path: String
    public var format: String
    public var family: String
    public var inputChannels: Int
    public var classes: Int
    /// One line per part: stem, each stage, head.
    public var architecture: [String]
    /// Every canonical tensor with its source name, source dtype and shape.
    public var tensors: [TensorOrigin]
    public var notes: [String]
    /// The spec as stored in a `.rnw` or built from the source.
    public var spec: ResNetSpec

    /// A table for people; names from the file are escaped (``DisplayText``).
    public var text: String {
        var lines = ["\(path.displayed)", "  format: \(format.displayed)", "  architecture: \(family.displayed), \(inputChannels) input channels, \(classes) classes"]
        lines += architecture.map { "    \($0.displayed)" }
        for n in notes { lines.append("  note: \(n.displayed)") }
        let rows = tensors.map { (source: $0.source.displayed, canonical: $0.canonical.displayed, t: $0) }
        let w = max(rows.map(\.source.count).max() ?? 0, 6)
        let c = max(rows.map(\.canonical.count).max() ?? 0, 9)
        lines.append("  " + "source".padding(toLength: w, withPad: " ", startingAt: 0) + "  " + "canonical".padding(toLength: c, withPad: " ", startingAt: 0) + "  dtype  shape  (layout change)")
        for (source, canonical, t) in rows {
            lines.append("  " + source.padding(toLength: w, withPad: " ", startingAt: 0) + "  "
                         + canonical.padding(toLength: c, withPad: " ", startingAt: 0) + "  "
                         + t.sourceDType.rawValue.padding(toLength: 5, withPad: " ", startingAt: 0) + "  \(t.shape)"
                         + (t.transform.isEmpty ? "" : "  \(t.transform)"))
        }
        return lines.joined(separator: "\n")
    }
}

/// Reads a file and describes it: format, detected architecture and the tensor table.
public func inspectFile(path: String, arch: String? = nil, mapFile: String? = nil, weights: String? = nil) throws -> FileSummary {
    let loaded = try loadModel(path: path, arch: arch, mapFile: mapFile, weights: weights)
    let spec = loaded.model.spec
    var tensors = loaded.mapping
    if tensors.isEmpty {   // a .rnw: canonical names are the stored names
        tensors = spec.parameters.map { TensorOrigin(canonical: $0.name, source: $0.name, sourceDType: .float32, shape: $0.shape, transform: "") }
    }
    return FileSummary(path: path, format: loaded.format, family: spec.family, inputChannels: spec.inputChannels,
                       classes: spec.classes, architecture: spec.outline, tensors: tensors, notes: loaded.notes, spec: spec)
}

extension Op {
    /// A short description: `conv 7x7/2 3→64 same +bias`, `bn eps=1.001e-05`, `relu`.
    public var summary: String {
        func pad(_ p: Padding) -> String {
            switch p {
            case .valid: return "valid"
            case .same: return "same(TF)"
            case let .explicit(t, b, l, r): return t == b && b == l && l == r ? "pad \(t)" : "pad \(t),\(b),\(l),\(r)"
            }
        }
        switch self {
        case let .conv(c):
            return "conv \(c.kernel[0])x\(c.kernel[1])/\(c.stride[0]) \(c.inChannels)→\(c.outChannels) \(pad(c.padding))"
                + (c.groups > 1 ? " groups \(c.groups)" : "") + (c.bias ? " +bias" : "")
        case let .batchNorm(b): return "bn eps=\(b.epsilon)"
        case .relu: return "relu"
        case let .maxPool(p): return "maxpool \(p.kernel[0])/\(p.stride[0]) \(pad(p.padding))"
        case let .avgPool(p): return "avgpool \(p.kernel[0])/\(p.stride[0]) \(pad(p.padding))"
        case let .zeroPad(t, b, l, r): return "zeropad \(t),\(b),\(l),\(r)"
        case let .subsample(s): return "subsample /\(s)"
        case let .channelPad(b, a): return "channel-pad +\(b)+\(a)"
        case .globalAvgPool: return "global-avgpool"
        case let .flatten(o): return "flatten(\(o.rawValue))"
        case let .dense(d): return "fc \(d.inFeatures)→\(d.outFeatures)" + (d.bias ? " +bias" : "")
        case .softmax: return "softmax"
        }
    }
}

extension ResNetSpec {
    /// One line for the stem, one per stage (with its first block's structure), one for the head.
    public var outline: [String] {
        func chain(_ ops: [Op]) -> String { ops.isEmpty ? "identity" : ops.map(\.summary).joined(separator: " → ") }
        var lines = ["stem: \(chain(stem))"]
        for (i, s) in stages.enumerated() {
            lines.append("stage \(i + 1): \(s.blocks.count) block(s)")
            for b in s.blocks.prefix(2) {
                lines.append("  \(b.name): " + (b.pre.isEmpty ? "" : "pre [\(chain(b.pre))] ")
                             + "residual [\(chain(b.residual))] shortcut [\(chain(b.shortcut))]"
                             + (b.post.isEmpty ? "" : " post [\(chain(b.post))]"))
            }
            if s.blocks.count > 2 { lines.append("  … \(s.blocks.count - 2) more block(s) not listed") }
        }
        lines.append("head: \(chain(head))")
        return lines
    }
}
