import Foundation

/// Spatial padding of a convolution or pooling window.
public enum Padding: Hashable, Sendable {
    /// No padding.
    case valid
    /// TensorFlow/Keras `same`: output size `ceil(in / stride)`; total padding
    /// `max((out - 1) * stride + (kernel - 1) * dilation + 1 - in, 0)`, the odd pixel going to the
    /// bottom/right. Resolved per input size, so it is stored as `same`, never as numbers.
    case same
    /// Fixed padding (PyTorch `padding=`, Keras `ZeroPadding2D`).
    case explicit(top: Int, bottom: Int, left: Int, right: Int)

    /// Symmetric explicit padding.
    public static func symmetric(_ p: Int) -> Padding { .explicit(top: p, bottom: p, left: p, right: p) }

    /// Resolves to (before, after) along one axis for an input of size `input`.
    public func resolve(axis: Int, input: Int, kernel: Int, stride: Int, dilation: Int = 1) -> (Int, Int) {
        switch self {
        case .valid: return (0, 0)
        case let .explicit(top, bottom, left, right): return axis == 0 ? (top, bottom) : (left, right)
        case .same:
            let out = (input + stride - 1) / stride
            let total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - input, 0)
            return (total / 2, total - total / 2)
        }
    }
}

/// A 2-D convolution. Weight `<name>.weight` is OIHW: (out, in / groups, kh, kw);
/// bias `<name>.bias` is (out) when `bias` is true.
public struct ConvOp: Hashable, Sendable, Codable {
    public var name: String
    public var inChannels: Int
    public var outChannels: Int
    public var kernel: [Int]      // [kh, kw]
    public var stride: [Int]      // [sh, sw]
    public var dilation: [Int]    // [dh, dw]
    public var padding: Padding
    public var groups: Int
    public var bias: Bool

    public init(name: String, inChannels: Int, outChannels: Int, kernel: [Int], stride: [Int] = [1, 1],
                dilation: [Int] = [1, 1], padding: Padding, groups: Int = 1, bias: Bool) {
        self.name = name; self.inChannels = inChannels; self.outChannels = outChannels
        self.kernel = kernel; self.stride = stride; self.dilation = dilation
        self.padding = padding; self.groups = groups; self.bias = bias
    }
}

/// Inference batch normalisation: `y = (x - running_mean) / sqrt(running_var + epsilon) * weight + bias`.
/// Tensors `<name>.weight` (absent when `scale` is false), `<name>.bias` (absent when `center` is
/// false), `<name>.running_mean`, `<name>.running_var`, all (channels).
public struct BatchNormOp: Hashable, Sendable, Codable {
    public var name: String
    public var channels: Int
    /// Each BN keeps its own epsilon (PyTorch 1e-5, keras.applications ResNet 1.001e-5, Keras default 1e-3).
    public var epsilon: Double
    public var scale: Bool
    public var center: Bool

    public init(name: String, channels: Int, epsilon: Double, scale: Bool = true, center: Bool = true) {
        self.name = name; self.channels = channels; self.epsilon = epsilon; self.scale = scale; self.center = center
    }
}

/// Max or average pooling.
public struct PoolOp: Hashable, Sendable, Codable {
    public var kernel: [Int]
    public var stride: [Int]
    public var padding: Padding
    /// Average pooling only: whether padded cells count in the divisor (PyTorch default true;
    /// Keras `same` excludes them).
    public var countIncludePad: Bool

    public init(kernel: [Int], stride: [Int], padding: Padding = .valid, countIncludePad: Bool = true) {
        self.kernel = kernel; self.stride = stride; self.padding = padding; self.countIncludePad = countIncludePad
    }
}

/// A fully connected layer. Weight `<name>.weight` is (out, in); bias `<name>.bias` is (out).
public struct DenseOp: Hashable, Sendable, Codable {
    public var name: String
    public var inFeatures: Int
    public var outFeatures: Int
    public var bias: Bool

    public init(name: String, inFeatures: Int, outFeatures: Int, bias: Bool) {
        self.name = name; self.inFeatures = inFeatures; self.outFeatures = outFeatures; self.bias = bias
    }
}

/// Element order of a flattened (N, C, H, W) activation.
public enum FlattenOrder: String, Hashable, Sendable, Codable {
    /// Channel-major, as PyTorch flattens NCHW.
    case chw
    /// Pixel-major, as Keras flattens NHWC.
    case hwc
}

/// One operation of the canonical model. Activations are (N, C, H, W) until `flatten` or
/// `globalAvgPool`, then (N, features).
public enum Op: Hashable, Sendable {
    case conv(ConvOp)
    case batchNorm(BatchNormOp)
    case relu
    case maxPool(PoolOp)
    case avgPool(PoolOp)
    /// Spatial zero padding (Keras `ZeroPadding2D`).
    case zeroPad(top: Int, bottom: Int, left: Int, right: Int)
    /// Keep every `stride`-th row and column starting at 0 (`x[:, :, ::s, ::s]`; the paper's option A).
    case subsample(stride: Int)
    /// Add zero channels before and after the existing ones (option A shortcut).
    case channelPad(before: Int, after: Int)
    /// Mean over H and W: (N, C, H, W) → (N, C).
    case globalAvgPool
    /// (N, C, H, W) → (N, C·H·W) in the given order.
    case flatten(FlattenOrder)
    case dense(DenseOp)
    case softmax

    /// The canonical module name for ops that own tensors.
    public var moduleName: String? {
        switch self {
        case let .conv(c): return c.name
        case let .batchNorm(b): return b.name
        case let .dense(d): return d.name
        default: return nil
        }
    }

    /// `conv`, `batch_norm`, `dense` for ops that own tensors, else nil.
    public var moduleKind: String? {
        switch self {
        case .conv: return "conv"
        case .batchNorm: return "batch_norm"
        case .dense: return "dense"
        default: return nil
        }
    }

    /// Canonical tensor names and shapes this op owns, in a stable order.
    public var parameters: [(name: String, shape: [Int])] {
        switch self {
        case let .conv(c):
            // A spec read from a file may be malformed; never index past what is there.
            let kh = c.kernel.count > 0 ? c.kernel[0] : 0, kw = c.kernel.count > 1 ? c.kernel[1] : 0
            var p: [(String, [Int])] = [("\(c.name).weight", [c.outChannels, c.inChannels / max(c.groups, 1), kh, kw])]
            if c.bias { p.append(("\(c.name).bias", [c.outChannels])) }
            return p
        case let .batchNorm(b):
            var p: [(String, [Int])] = []
            if b.scale { p.append(("\(b.name).weight", [b.channels])) }
            if b.center { p.append(("\(b.name).bias", [b.channels])) }
            p.append(("\(b.name).running_mean", [b.channels]))
            p.append(("\(b.name).running_var", [b.channels]))
            return p
        case let .dense(d):
            var p: [(String, [Int])] = [("\(d.name).weight", [d.outFeatures, d.inFeatures])]
            if d.bias { p.append(("\(d.name).bias", [d.outFeatures])) }
            return p
        default:
            return []
        }
    }
}

/// A residual block: `post(residual(pre(x)) + shortcut(pre(x)))`. An empty `shortcut` is the identity.
public struct Block: Hashable, Sendable, Codable {
    /// Canonical module name of the block, e.g. `layer3.1`.
    public var name: String
    /// Ops applied before the fork (pre-activation BN + ReLU in ResNet V2 blocks).
    public var pre: [Op]
    public var residual: [Op]
    public var shortcut: [Op]
    /// Ops after the addition (ReLU in ResNet V1; nothing in V2).
    public var post: [Op]

    public init(name: String, pre: [Op] = [], residual: [Op], shortcut: [Op] = [], post: [Op] = []) {
        self.name = name; self.pre = pre; self.residual = residual; self.shortcut = shortcut; self.post = post
    }
}

/// A group of blocks at one resolution (torchvision's `layerN`).
public struct Stage: Hashable, Sendable, Codable {
    public var blocks: [Block]
    public init(blocks: [Block]) { self.blocks = blocks }
}

/// The canonical ResNet: data that describes the structure exactly. Stored in every `.rnw`.
public struct ResNetSpec: Hashable, Sendable, Codable {
    /// Where the structure came from: a preset name or `keras-graph`.
    public var family: String
    public var inputChannels: Int
    public var classes: Int
    /// Input size the source model declared or was made for, when known ([H, W]).
    public var inputSize: [Int]?
    /// Free text about expected preprocessing, when known.
    public var preprocessing: String?
    public var stem: [Op]
    public var stages: [Stage]
    public var head: [Op]

    public init(family: String, inputChannels: Int, classes: Int, inputSize: [Int]? = nil,
                preprocessing: String? = nil, stem: [Op], stages: [Stage], head: [Op]) {
        self.family = family; self.inputChannels = inputChannels; self.classes = classes
        self.inputSize = inputSize; self.preprocessing = preprocessing
        self.stem = stem; self.stages = stages; self.head = head
    }

    /// Every op in execution order (block ops in pre, residual, shortcut, post order).
    public var allOps: [Op] {
        var ops = stem
        for s in stages { for b in s.blocks { ops += b.pre + b.residual + b.shortcut + b.post } }
        return ops + head
    }

    /// Canonical tensor names and shapes, in a stable order.
    public var parameters: [(name: String, shape: [Int])] {
        allOps.flatMap { $0.parameters }
    }
}

// MARK: - Codable: ops are encoded as {"op": "<kind>", ...fields} so the JSON reads plainly.

extension Padding: Codable {
    private enum Keys: String, CodingKey { case mode, top, bottom, left, right }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        switch try c.decode(String.self, forKey: .mode) {
        case "valid": self = .valid
        case "same": self = .same
        case "explicit":
            self = .explicit(top: try c.decode(Int.self, forKey: .top), bottom: try c.decode(Int.self, forKey: .bottom),
                             left: try c.decode(Int.self, forKey: .left), right: try c.decode(Int.self, forKey: .right))
        case let other:
            throw DecodingError.dataCorruptedError(forKey: .mode, in: c, debugDescription: "unknown padding mode '\(other)'")
        }
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        switch self {
        case .valid: try c.encode("valid", forKey: .mode)
        case .same: try c.encode("same", forKey: .mode)
        case let .explicit(t, b, l, r):
            try c.encode("explicit", forKey: .mode)
            try c.encode(t, forKey: .top); try c.encode(b, forKey: .bottom)
            try c.encode(l, forKey: .left); try c.encode(r, forKey: .right)
        }
    }
}

extension Op: Codable {
    private enum Keys: String, CodingKey { case op, top, bottom, left, right, stride, before, after, order }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        let kind = try c.decode(String.self, forKey: .op)
        switch kind {
        case "conv": self = .conv(try ConvOp(from: decoder))
        case "batch_norm": self = .batchNorm(try BatchNormOp(from: decoder))
        case "relu": self = .relu
        case "max_pool": self = .maxPool(try PoolOp(from: decoder))
        case "avg_pool": self = .avgPool(try PoolOp(from: decoder))
        case "zero_pad":
            self = .zeroPad(top: try c.decode(Int.self, forKey: .top), bottom: try c.decode(Int.self, forKey: .bottom),
                            left: try c.decode(Int.self, forKey: .left), right: try c.decode(Int.self, forKey: .right))
        case "subsample": self = .subsample(stride: try c.decode(Int.self, forKey: .stride))
        case "channel_pad": self = .channelPad(before: try c.decode(Int.self, forKey: .before), after: try c.decode(Int.self, forKey: .after))
        case "global_avg_pool": self = .globalAvgPool
        case "flatten": self = .flatten(try c.decode(FlattenOrder.self, forKey: .order))
        case "dense": self = .dense(try DenseOp(from: decoder))
        case "softmax": self = .softmax
        default:
            throw DecodingError.dataCorruptedError(forKey: .op, in: c, debugDescription: "unknown op '\(kind)'")
        }
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        switch self {
        case let .conv(x): try c.encode("conv", forKey: .op); try x.encode(to: encoder)
        case let .batchNorm(x): try c.encode("batch_norm", forKey: .op); try x.encode(to: encoder)
        case .relu: try c.encode("relu", forKey: .op)
        case let .maxPool(x): try c.encode("max_pool", forKey: .op); try x.encode(to: encoder)
        case let .avgPool(x): try c.encode("avg_pool", forKey: .op); try x.encode(to: encoder)
        case let .zeroPad(t, b, l, r):
            try c.encode("zero_pad", forKey: .op)
            try c.encode(t, forKey: .top); try c.encode(b, forKey: .bottom)
            try c.encode(l, forKey: .left); try c.encode(r, forKey: .right)
        case let .subsample(s): try c.encode("subsample", forKey: .op); try c.encode(s, forKey: .stride)
        case let .channelPad(b, a): try c.encode("channel_pad", forKey: .op); try c.encode(b, forKey: .before); try c.encode(a, forKey: .after)
        case .globalAvgPool: try c.encode("global_avg_pool", forKey: .op)
        case let .flatten(o): try c.encode("flatten", forKey: .op); try c.encode(o, forKey: .order)
        case let .dense(x): try c.encode("dense", forKey: .op); try x.encode(to: encoder)
        case .softmax: try c.encode("softmax", forKey: .op)
        }
    }
}

/// A canonical model: structure plus float32 tensors in canonical layout (OIHW conv, (out, in) dense).
public struct ResNetModel: Sendable {
    public var spec: ResNetSpec
    /// Canonical tensors by canonical name.
    public var tensors: [String: Tensor]

    public init(spec: ResNetSpec, tensors: [String: Tensor]) {
        self.spec = spec
        self.tensors = tensors
    }

    /// Checks that every tensor the spec needs exists with the right shape and nothing else is present.
    public func validate(file: String = "model") throws {
        var missing: [String] = []
        var wrong: [String] = []
        let expected = spec.parameters
        for p in expected {
            guard let t = tensors[p.name] else { missing.append(p.name); continue }
            if t.shape != p.shape { wrong.append("\(p.name) has shape \(t.shape), spec needs \(p.shape)") }
        }
        let names = Set(expected.map { $0.name })
        let extra = tensors.keys.filter { !names.contains($0) }.sorted()
        if !missing.isEmpty || !wrong.isEmpty || !extra.isEmpty {
            var parts: [String] = []
            if !missing.isEmpty { parts.append("missing tensors: \(missing.joined(separator: ", "))") }
            if !wrong.isEmpty { parts.append(wrong.joined(separator: "; ")) }
            if !extra.isEmpty { parts.append("unexpected tensors: \(extra.joined(separator: ", "))") }
            throw ResNetError.mapping(file: file, reason: parts.joined(separator: "; "))
        }
    }
}

/// Where one canonical tensor came from.
public struct TensorOrigin: Sendable, Codable, Hashable {
    /// Canonical tensor name (`layer1.0.conv1.weight`).
    public var canonical: String
    /// Name or path in the source file.
    public var source: String
    /// Element type in the source file.
    public var sourceDType: DType
    /// Canonical shape.
    public var shape: [Int]
    /// Layout change applied, e.g. `HWIO→OIHW`; empty when none.
    public var transform: String

    public init(canonical: String, source: String, sourceDType: DType, shape: [Int], transform: String) {
        self.canonical = canonical; self.source = source; self.sourceDType = sourceDType
        self.shape = shape; self.transform = transform
    }
}
