import Foundation

/// A JSON value, as found in Keras `model_config` / `config.json`.
public indirect enum JSONValue: Hashable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public subscript(key: String) -> JSONValue? {
        if case let .object(o) = self { return o[key] }
        return nil
    }
    public subscript(index: Int) -> JSONValue? {
        if case let .array(a) = self, index >= 0, index < a.count { return a[index] }
        return nil
    }
    public var string: String? { if case let .string(s) = self { return s }; return nil }
    public var double: Double? { if case let .number(n) = self { return n }; return nil }
    public var int: Int? {
        if case let .number(n) = self, n.rounded() == n, abs(n) < 1e15 { return Int(n) }
        return nil
    }
    public var bool: Bool? { if case let .bool(b) = self { return b }; return nil }
    public var array: [JSONValue]? { if case let .array(a) = self { return a }; return nil }
    public var object: [String: JSONValue]? { if case let .object(o) = self { return o }; return nil }
    public var isNull: Bool { if case .null = self { return true }; return false }
}

extension JSONValue: Codable {
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case let .bool(b): try c.encode(b)
        case let .number(n): try c.encode(n)
        case let .string(s): try c.encode(s)
        case let .array(a): try c.encode(a)
        case let .object(o): try c.encode(o)
        }
    }
}

/// One layer call of a Keras model, with nested Functional/Sequential sub-models already inlined.
///
/// Produced by the Keras readers (``KerasFile/graph``); consumed by the graph walker that builds a
/// ``ResNetSpec`` and by the independent NHWC graph interpreter.
public struct KerasNode: Sendable {
    /// Index of this node in ``KerasGraph/nodes`` (topological order: inputs come first).
    public var id: Int
    /// Layer name, prefixed by the names of enclosing sub-models: `model_3/conv2d_7`.
    public var path: String
    /// Keras class name: `Conv2D`, `BatchNormalization`, `Add`, `TFOpLambda`, `InputLayer`, …
    public var className: String
    /// The layer's `config` object (for TFOpLambda, `config.function` names the op).
    public var config: JSONValue
    /// Node ids this call consumes, in call order. Tensor references found in call keyword
    /// arguments (TFOpLambda `y=`) are appended after the positional ones.
    public var inputs: [Int]
    /// Call keyword arguments (Keras 2 fourth element / Keras 3 `kwargs`), with every tensor
    /// reference replaced by `{"__input__": k}` where `k` indexes ``inputs``. `.null` if none.
    public var callArgs: JSONValue
    /// The layer's variables in the order Keras stores them (Conv2D: kernel HWIO, bias;
    /// BatchNormalization: gamma, beta, moving_mean, moving_variance, minus any disabled by
    /// `scale`/`center`; Dense: kernel (in, out), bias). Names are the HDF5 paths in the file.
    public var weights: [SourceTensor]

    public init(id: Int, path: String, className: String, config: JSONValue, inputs: [Int],
                callArgs: JSONValue = .null, weights: [SourceTensor] = []) {
        self.id = id; self.path = path; self.className = className; self.config = config
        self.inputs = inputs; self.callArgs = callArgs; self.weights = weights
    }
}

/// A Keras model as a flat DAG of layer calls in topological order.
public struct KerasGraph: Sendable {
    public var nodes: [KerasNode]
    /// The model input node (an `InputLayer`). Exactly one is supported.
    public var input: Int
    /// The model output node. Exactly one is supported.
    public var output: Int
    /// Input shape without the batch dimension, from `batch_input_shape` / `batch_shape`, when declared ([H, W, C]).
    public var inputShape: [Int?]?

    public init(nodes: [KerasNode], input: Int, output: Int, inputShape: [Int?]?) {
        self.nodes = nodes; self.input = input; self.output = output; self.inputShape = inputShape
    }
}

/// The four kinds of Keras files.
public enum KerasFileKind: String, Sendable, Codable {
    /// Legacy HDF5 full model (`model_config` + `model_weights`), Keras 1/2/3.
    case legacyFullModel = "keras-h5-model"
    /// Legacy HDF5 weights only (`save_weights`, `layer_names` at the root).
    case legacyWeights = "keras-h5-weights"
    /// Keras 3 `.keras` zip (`config.json` + `model.weights.h5`).
    case kerasZip = "keras-v3-zip"
    /// Keras 3 `.weights.h5` (`layers/<generic name>/vars/<i>`), no config.
    case v3Weights = "keras-v3-weights"
}

/// Everything a Keras reader extracts from a file.
public struct KerasFile: Sendable {
    public var path: String
    public var kind: KerasFileKind
    /// `keras_version` attribute or metadata, when present.
    public var kerasVersion: String?
    /// The layer graph when the file has a config, with every node's weights attached.
    public var graph: KerasGraph?
    /// Weight groups in file order, for files without a config: (layer name or path, variables).
    /// For files with a config this lists the same variables per layer path.
    public var layerWeights: [(layer: String, variables: [SourceTensor])]
    /// For legacy weights-only files: every name in the root `layer_names`, weightless layers
    /// included (`activation_3`, `add_1`, `flatten_1`), in the order Keras saved them (the model's
    /// layer order, which is topological). Nil for other kinds.
    public var layerOrder: [String]?

    public init(path: String, kind: KerasFileKind, kerasVersion: String?, graph: KerasGraph?,
                layerWeights: [(layer: String, variables: [SourceTensor])], layerOrder: [String]? = nil) {
        self.path = path; self.kind = kind; self.kerasVersion = kerasVersion
        self.graph = graph; self.layerWeights = layerWeights; self.layerOrder = layerOrder
    }
}
