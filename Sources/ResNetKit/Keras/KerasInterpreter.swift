import Foundation

/// Runs a Keras layer graph on the weights exactly as the file stores them (NHWC activations, HWIO
/// kernels, Dense kernels (in, out)) and returns the output of ``KerasGraph/output``.
///
/// This is the second, independent reading of a Keras model: it shares no code with the canonical
/// ResNet or its forward pass, so comparing the two catches mistakes in the mapping without any
/// golden output. Only the nodes the output depends on are evaluated, and an intermediate result
/// is released as soon as its last consumer has run.
///
/// - Parameters:
///   - graph: the layer DAG from a Keras reader.
///   - input: the model input, batch first, in the layout the model expects (NHWC for images).
///   - file: the source file, named in every error.
///   - capture: called with every evaluated node and its output, in evaluation order.
/// - Throws: ``ResNetError/unsupported(file:place:reason:)`` naming the layer path and class for a
///   layer, function, option or argument this interpreter does not implement;
///   ``ResNetError/invalidInput(file:place:reason:)`` for a malformed graph, config or weight shape.
public func interpretKerasGraph(_ graph: KerasGraph, input: Tensor, file: String,
                                capture: ((_ node: KerasNode, _ output: Tensor) -> Void)? = nil) throws -> Tensor {
    try requireOpenBLAS()   // Conv2D and Dense run on sgemm
    let nodes = graph.nodes
    func bad(_ place: String, _ reason: String) -> ResNetError {
        .invalidInput(file: file, place: place, reason: reason)
    }
    guard nodes.indices.contains(graph.input), nodes.indices.contains(graph.output) else {
        throw bad("model graph", "input node \(graph.input) or output node \(graph.output) is not among \(nodes.count) nodes")
    }
    for (i, node) in nodes.enumerated() {
        guard node.id == i else { throw bad(node.path, "node id \(node.id) is stored at index \(i)") }
        for k in node.inputs where !(0..<i).contains(k) {
            throw bad(node.path, "input node \(k) does not come before this node (\(i)); the graph is not in topological order")
        }
    }
    try checkModelInput(input, declared: graph.inputShape, file: file)

    // Nodes the output depends on, and for each the last node that reads it.
    var needed = [Bool](repeating: false, count: nodes.count)
    needed[graph.output] = true
    for i in stride(from: graph.output, through: 0, by: -1) where needed[i] {
        for k in nodes[i].inputs { needed[k] = true }
    }
    var lastUse = [Int](repeating: -1, count: nodes.count)
    for i in nodes.indices where needed[i] {
        for k in nodes[i].inputs { lastUse[k] = i }
    }

    var values = [Tensor?](repeating: nil, count: nodes.count)
    for i in 0...graph.output where needed[i] {
        let node = nodes[i]
        let args = node.inputs.map { values[$0]! }
        let layer = KerasLayerCall(node: node, file: file)
        let y: Tensor
        if i == graph.input {
            guard node.className == "InputLayer", node.inputs.isEmpty else {
                throw bad(node.path, "the model input node is a \(node.className) with \(node.inputs.count) inputs, not an InputLayer")
            }
            y = input
        } else {
            y = try layer.evaluate(args)
        }
        // Later ops (BLAS leading dimensions, pools) assume every axis has at least one cell.
        guard y.count > 0 else { throw bad(node.path, "\(node.className) produces an empty tensor of shape \(y.shape)") }
        capture?(node, y)
        values[i] = y
        for k in node.inputs where lastUse[k] == i && k != graph.output { values[k] = nil }
    }
    return values[graph.output]!
}

/// The caller's input must agree with the declared `batch_input_shape` where that names a size.
private func checkModelInput(_ input: Tensor, declared: [Int?]?, file: String) throws {
    guard input.shape.count >= 1, input.shape.count <= 4, input.shape.allSatisfy({ $0 >= 1 }) else {
        throw ResNetError.invalidInput(file: file, place: "model input",
                                       reason: "input of shape \(input.shape) is not a non-empty rank 1-4 tensor")
    }
    guard let declared else { return }
    let given = Array(input.shape.dropFirst())
    let matches = given.count == declared.count && zip(given, declared).allSatisfy { $1 == nil || $0 == $1! }
    guard matches else {
        let text = declared.map { $0.map(String.init) ?? "None" }.joined(separator: ", ")
        throw ResNetError.invalidInput(file: file, place: "model input",
                                       reason: "input of shape \(input.shape) does not fit the declared input shape (batch, \(text))")
    }
}

/// Largest tensor the interpreter creates: keeps every size and leading dimension within the
/// Int32 range BLAS takes, and refuses configs that would ask for absurd allocations.
private let maxElements = Int(Int32.max)

/// One layer call: its config, weights and arguments, with the checks that turn untrusted
/// config values into op parameters.
struct KerasLayerCall {
    let node: KerasNode
    let file: String

    // MARK: errors

    func bad(_ reason: String) -> ResNetError {
        .invalidInput(file: file, place: node.path, reason: "\(node.className): \(reason)")
    }
    func unsupported(_ reason: String) -> ResNetError {
        .unsupported(file: file, place: node.path, reason: "\(node.className): \(reason)")
    }

    // MARK: dispatch

    func evaluate(_ inputs: [Tensor]) throws -> Tensor {
        switch node.className {
        case "InputLayer":
            // A nested model's input placeholder that the reader kept in the flat graph.
            guard inputs.count == 1 else {
                throw unsupported("a second model input (only one InputLayer without inbound nodes is supported)")
            }
            return inputs[0]
        case "Conv2D": return try conv2D(one(inputs))
        case "Dense": return try dense(one(inputs))
        case "BatchNormalization": return try batchNorm(one(inputs))
        case "Activation":
            return try applyActivation(one(inputs), try activationName("activation"))
        case "ReLU": return try reluLayer(one(inputs))
        case "Softmax": return try softmaxLayer(one(inputs))
        case "Add": return try add(inputs)
        case "ZeroPadding2D": return try zeroPadding2D(one(inputs))
        case "MaxPooling2D": return try pooling(one(inputs), average: false)
        case "AveragePooling2D": return try pooling(one(inputs), average: true)
        case "GlobalAveragePooling2D": return try globalAveragePooling(one(inputs))
        case "Flatten": return try flatten(one(inputs))
        case "Permute": return try permute(one(inputs))
        case "Dropout": return try one(inputs)   // inference: identity
        case "TFOpLambda": return try tfOp(inputs)
        case "SlicingOpLambda": return try slicingOp(inputs)
        default:
            throw unsupported("layer class \(node.className) is not implemented by the Keras interpreter")
        }
    }

    // MARK: layers

    /// Conv2D: x (N, H, W, C), kernel (KH, KW, C/G, F), bias (F) → (N, OH, OW, F), then the activation.
    func conv2D(_ x: Tensor) throws -> Tensor {
        try requireRank(x, 4)
        try requireChannelsLast()
        let filters = try positiveInt("filters")
        let (kh, kw) = try pair("kernel_size")
        let (sh, sw) = try pair("strides", default: (1, 1))
        let (dh, dw) = try pair("dilation_rate", default: (1, 1))
        let groups = try positiveInt("groups", default: 1)
        let useBias = try bool("use_bias", default: true)
        let act = try activationName("activation")
        let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        guard c % groups == 0, filters % groups == 0 else {
            throw bad("groups \(groups) does not divide input channels \(c) and filters \(filters)")
        }
        let vars = try weights(useBias ? [[kh, kw, c / groups, filters], [filters]] : [[kh, kw, c / groups, filters]],
                               names: useBias ? ["kernel", "bias"] : ["kernel"])
        let ekh = (kh - 1) * dh + 1, ekw = (kw - 1) * dw + 1   // dilated kernel extent
        let pad: KPad2D, oh: Int, ow: Int
        switch try paddingMode() {
        case "valid":
            guard h >= ekh, w >= ekw else {
                throw bad("input \(h)x\(w) is smaller than the dilated kernel \(ekh)x\(ekw) with padding 'valid'")
            }
            pad = .zero; oh = (h - ekh) / sh + 1; ow = (w - ekw) / sw + 1
        default:
            let ph = kTFSamePadding(input: h, effectiveKernel: ekh, stride: sh)
            let pw = kTFSamePadding(input: w, effectiveKernel: ekw, stride: sw)
            pad = KPad2D(top: ph.before, bottom: ph.after, left: pw.before, right: pw.after)
            oh = ph.out; ow = pw.out
        }
        try checkSize([n, oh, ow, filters])
        try checkSize([oh, ow, kh, kw, c / groups])   // the im2col buffer
        let y = kConv2D(x, kernel: vars[0], bias: useBias ? vars[1] : nil, stride: (sh, sw),
                        dilation: (dh, dw), pad: pad, groups: groups)
        return try applyActivation(y, act)
    }

    /// Dense on the last axis: x (..., IN), kernel (IN, units), bias (units) → (..., units), then the activation.
    func dense(_ x: Tensor) throws -> Tensor {
        guard x.shape.count >= 2 else { throw bad("input of shape \(x.shape) has no feature axis") }
        let units = try positiveInt("units")
        let useBias = try bool("use_bias", default: true)
        let act = try activationName("activation")
        let inFeatures = x.shape[x.shape.count - 1]
        let vars = try weights(useBias ? [[inFeatures, units], [units]] : [[inFeatures, units]],
                               names: useBias ? ["kernel", "bias"] : ["kernel"])
        try checkSize(Array(x.shape.dropLast()) + [units])
        return try applyActivation(kDense(x, kernel: vars[0], bias: useBias ? vars[1] : nil), act)
    }

    /// BatchNormalization in inference mode on the last axis; variables present by `scale`/`center`.
    func batchNorm(_ x: Tensor) throws -> Tensor {
        let rank = x.shape.count
        guard rank >= 2 else { throw bad("input of shape \(x.shape) has no channel axis") }
        let axes: [Int]
        switch node.config["axis"] {
        case nil, .null?: axes = [-1]
        case let v?:
            if let a = v.int { axes = [a] }
            else if let list = v.array, list.allSatisfy({ $0.int != nil }) { axes = list.map { $0.int! } }
            else { throw bad("axis \(v) is not an integer or a list of integers") }
        }
        guard axes.count == 1, axes[0] == rank - 1 || axes[0] == -1 else {
            throw unsupported("axis \(axes) on a rank-\(rank) input; only the last (channels) axis is supported")
        }
        if try bool("renorm", default: false) { throw unsupported("renorm is not supported") }
        let scale = try bool("scale", default: true), center = try bool("center", default: true)
        let epsilon = try number("epsilon", default: 1e-3)
        guard epsilon >= 0, epsilon.isFinite else { throw bad("epsilon \(epsilon) is not a non-negative number") }
        let c = x.shape[rank - 1]
        var names: [String] = []
        if scale { names.append("gamma") }
        if center { names.append("beta") }
        names += ["moving_mean", "moving_variance"]
        let vars = try weights(names.map { _ in [c] }, names: names)
        var next = 0
        let gamma = scale ? vars[next].data : [Float](repeating: 1, count: c)
        if scale { next += 1 }
        let beta = center ? vars[next].data : [Float](repeating: 0, count: c)
        if center { next += 1 }
        return kBatchNormLastAxis(x, gamma: gamma, beta: beta, mean: vars[next].data,
                                  variance: vars[next + 1].data, epsilon: Float(epsilon))
    }

    /// ReLU layer; only plain max(x, 0) (no cap, slope or threshold).
    func reluLayer(_ x: Tensor) throws -> Tensor {
        if let v = node.config["max_value"], !v.isNull {
            throw unsupported("max_value \(v) is not supported (only the default None)")
        }
        for key in ["negative_slope", "threshold"] {
            let v = try number(key, default: 0)
            guard v == 0 else { throw unsupported("\(key) \(v) is not supported (only the default 0)") }
        }
        return kReLU(x)
    }

    /// Softmax layer along its configured axis (default the last).
    func softmaxLayer(_ x: Tensor) throws -> Tensor {
        var axis = -1
        if let v = node.config["axis"], !v.isNull {
            if let a = v.int { axis = a }
            else if let list = v.array, list.count == 1, let a = list[0].int { axis = a }
            else { throw unsupported("axis \(v) (only one integer axis is supported)") }
        }
        return kSoftmax(x, axis: try normalizedAxis(axis, rank: x.shape.count))
    }

    /// Add: the elementwise sum of every input.
    func add(_ inputs: [Tensor]) throws -> Tensor {
        guard var y = inputs.first else { throw bad("no inputs") }
        for t in inputs.dropFirst() { y = try addBroadcast(y, t) }
        return y
    }

    /// ZeroPadding2D: x (N, H, W, C) → (N, H + top + bottom, W + left + right, C).
    func zeroPadding2D(_ x: Tensor) throws -> Tensor {
        try requireRank(x, 4)
        try requireChannelsLast()
        let p: (top: Int, bottom: Int, left: Int, right: Int)
        let v = node.config["padding"] ?? .number(1)
        if let k = v.int { p = (k, k, k, k) }
        else if let a = v.array, a.count == 2, let h = a[0].int, let w = a[1].int { p = (h, h, w, w) }
        else if let a = v.array, a.count == 2, let hp = a[0].array, let wp = a[1].array,
                hp.count == 2, wp.count == 2, let t = hp[0].int, let b = hp[1].int, let l = wp[0].int, let r = wp[1].int {
            p = (t, b, l, r)
        } else { throw bad("padding \(v) is not an int, a pair, or a pair of pairs") }
        for q in [p.top, p.bottom, p.left, p.right] where !(0...(1 << 20)).contains(q) {
            throw bad("padding \(q) is out of range")
        }
        let padding = [(0, 0), (p.top, p.bottom), (p.left, p.right), (0, 0)]
        try checkSize([x.shape[0], x.shape[1] + p.top + p.bottom, x.shape[2] + p.left + p.right, x.shape[3]])
        return kPad(x, padding, value: 0)
    }

    /// MaxPooling2D / AveragePooling2D: x (N, H, W, C) → (N, OH, OW, C).
    func pooling(_ x: Tensor, average: Bool) throws -> Tensor {
        try requireRank(x, 4)
        try requireChannelsLast()
        let (kh, kw) = try pair("pool_size", default: (2, 2))
        let (sh, sw) = try pair("strides", default: (kh, kw))   // Keras: strides None means pool_size
        let (h, w) = (x.shape[1], x.shape[2])
        let pad: KPad2D
        switch try paddingMode() {
        case "valid":
            guard h >= kh, w >= kw else { throw bad("input \(h)x\(w) is smaller than the pool \(kh)x\(kw) with padding 'valid'") }
            pad = .zero
        default:
            let ph = kTFSamePadding(input: h, effectiveKernel: kh, stride: sh)
            let pw = kTFSamePadding(input: w, effectiveKernel: kw, stride: sw)
            pad = KPad2D(top: ph.before, bottom: ph.after, left: pw.before, right: pw.after)
        }
        return average ? kAvgPool2D(x, pool: (kh, kw), stride: (sh, sw), pad: pad)
                       : kMaxPool2D(x, pool: (kh, kw), stride: (sh, sw), pad: pad)
    }

    /// GlobalAveragePooling2D: (N, H, W, C) → (N, C), or (N, 1, 1, C) with keepdims.
    func globalAveragePooling(_ x: Tensor) throws -> Tensor {
        try requireRank(x, 4)
        try requireChannelsLast()
        guard x.shape[1] * x.shape[2] > 0 else { throw bad("input of shape \(x.shape) has no pixels to average") }
        let y = kGlobalAvgPool2D(x)
        return try bool("keepdims", default: false) ? y.reshaped([x.shape[0], 1, 1, x.shape[3]]) : y
    }

    /// Flatten in NHWC order: (N, ...) → (N, product).
    func flatten(_ x: Tensor) throws -> Tensor {
        try requireChannelsLast()
        return x.reshaped([x.shape[0], x.shape.dropFirst().reduce(1, *)])
    }

    /// Permute: `dims` is a permutation of the non-batch axes, numbered from 1.
    func permute(_ x: Tensor) throws -> Tensor {
        let rank = x.shape.count
        guard let list = node.config["dims"]?.array, list.count == rank - 1,
              let axes = Optional(list.compactMap(\.int)), axes.count == rank - 1, Set(axes) == Set(1..<rank) else {
            throw bad("dims \(node.config["dims"] ?? .null) is not a permutation of the \(rank - 1) non-batch axes (numbered from 1)")
        }
        return x.permuted([0] + axes)
    }

    // MARK: TF op layers (tf_keras `TFOpLambda` / `SlicingOpLambda`)

    func tfOp(_ inputs: [Tensor]) throws -> Tensor {
        guard let function = node.config["function"]?.string else { throw bad("config has no 'function' name") }
        guard let x = inputs.first else { throw bad("\(function) has no tensor input") }
        switch function {
        case "nn.relu":
            try allowKwargs(["name"], function)
            try requireInputCount(inputs, 1, function)
            return kReLU(x)
        case "identity":
            try allowKwargs(["name"], function)
            try requireInputCount(inputs, 1, function)
            return x
        case "__operators__.add":
            try allowKwargs(["y", "name"], function)
            guard let yArg = node.callArgs["y"] else { throw bad("\(function) has no 'y' argument") }
            if let ref = try tensorRef(yArg, inputs) {
                try requireInputCount(inputs, 2, function)
                return try addBroadcast(x, ref)
            }
            guard let c = yArg.double else { throw unsupported("\(function) with y = \(yArg)") }
            try requireInputCount(inputs, 1, function)
            return try addBroadcast(x, Tensor(shape: [], data: [Float(c)]))
        case "compat.v1.pad", "pad":
            try allowKwargs(["paddings", "mode", "constant_values", "name"], function)
            try requireInputCount(inputs, 1, function)
            return try tfPad(x, function)
        case "compat.v1.transpose", "transpose":
            try allowKwargs(["perm", "conjugate", "name"], function)
            try requireInputCount(inputs, 1, function)
            return try tfTranspose(x, function)
        default:
            throw unsupported("TF function \(function) is not implemented by the Keras interpreter")
        }
    }

    /// tf.pad with mode CONSTANT: paddings (rank, 2) of (before, after).
    private func tfPad(_ x: Tensor, _ function: String) throws -> Tensor {
        let mode = node.callArgs["mode"]?.string ?? "CONSTANT"
        guard mode.uppercased() == "CONSTANT" else { throw unsupported("\(function) mode \(mode) (only CONSTANT)") }
        var value: Float = 0
        if let v = node.callArgs["constant_values"], !v.isNull {
            guard let d = v.double else { throw unsupported("\(function) constant_values \(v)") }
            value = Float(d)
        }
        guard let rows = node.callArgs["paddings"]?.array, rows.count == x.shape.count else {
            throw bad("\(function) paddings \(node.callArgs["paddings"] ?? .null) is not a list of \(x.shape.count) pairs")
        }
        var padding: [(Int, Int)] = []
        for row in rows {
            guard let r = row.array, r.count == 2, let b = r[0].int, let a = r[1].int,
                  (0...(1 << 20)).contains(b), (0...(1 << 20)).contains(a) else {
                throw bad("\(function) paddings row \(row) is not a pair of non-negative integers")
            }
            padding.append((b, a))
        }
        let outShape = zip(x.shape, padding).map { $0 + $1.0 + $1.1 }
        try checkSize(outShape)
        return kPad(x, padding, value: value)
    }

    /// tf.transpose: result.shape[i] = x.shape[perm[i]]; no perm reverses the axes.
    private func tfTranspose(_ x: Tensor, _ function: String) throws -> Tensor {
        let rank = x.shape.count
        var perm = Array((0..<rank).reversed())
        if let p = node.callArgs["perm"], !p.isNull {
            guard let list = p.array, list.count == rank,
                  let axes = Optional(list.compactMap(\.int)), axes.count == rank,
                  Set(axes) == Set(0..<rank) else {
                throw bad("\(function) perm \(p) is not a permutation of the \(rank) axes")
            }
            perm = axes
        }
        return x.permuted(perm)
    }

    /// `x[slice_spec]` with Python semantics: a dict {start, stop, step} slices an axis, an int
    /// picks one index and drops the axis; axes after the spec are kept whole.
    func slicingOp(_ inputs: [Tensor]) throws -> Tensor {
        guard let function = node.config["function"]?.string else { throw bad("config has no 'function' name") }
        guard function == "__operators__.getitem" else {
            throw unsupported("slicing function \(function) is not implemented by the Keras interpreter")
        }
        try allowKwargs(["slice_spec", "name"], function)
        try requireInputCount(inputs, 1, function)
        let x = inputs[0]
        guard let specValue = node.callArgs["slice_spec"] else { throw bad("\(function) has no slice_spec") }
        let entries = specValue.array ?? [specValue]
        guard entries.count <= x.shape.count else {
            throw bad("slice_spec has \(entries.count) entries for a rank-\(x.shape.count) tensor")
        }
        var spec: [KSliceAxis] = []
        for (axis, size) in x.shape.enumerated() {
            guard axis < entries.count else {
                spec.append(KSliceAxis(start: 0, step: 1, count: size, keepsAxis: true)); continue
            }
            let e = entries[axis]
            if let i = e.int {
                let index = i < 0 ? i + size : i
                guard (0..<size).contains(index) else { throw bad("index \(i) is out of range for axis \(axis) of size \(size)") }
                spec.append(KSliceAxis(start: index, step: 1, count: 1, keepsAxis: false))
            } else if let d = e.object, Set(d.keys).isSubset(of: ["start", "stop", "step"]) {
                func bound(_ key: String) throws -> Int? {
                    guard let v = d[key], !v.isNull else { return nil }
                    guard let i = v.int, abs(i) <= (1 << 40) else { throw unsupported("slice \(key) \(v) on axis \(axis)") }
                    return i
                }
                spec.append(try pythonSlice(start: bound("start"), stop: bound("stop"), step: bound("step"),
                                            size: size, axis: axis))
            } else {
                throw unsupported("slice_spec entry \(e) on axis \(axis) (only slices and integer indices)")
            }
        }
        return kStridedSlice(x, spec)
    }

    /// Python's `slice(start, stop, step).indices(size)`, as a start, step and count.
    private func pythonSlice(start: Int?, stop: Int?, step: Int?, size: Int, axis: Int) throws -> KSliceAxis {
        let step = step ?? 1
        guard step != 0 else { throw bad("slice step 0 on axis \(axis)") }
        let (lower, upper) = step > 0 ? (0, size) : (-1, size - 1)
        func clamp(_ v: Int?, _ fallback: Int) -> Int {
            guard var v else { return fallback }
            if v < 0 { v += size; return max(v, lower) }
            return min(v, upper)
        }
        let s = clamp(start, step > 0 ? lower : upper)
        let e = clamp(stop, step > 0 ? upper : lower)
        let count = step > 0 ? max(0, (e - s + step - 1) / step) : max(0, (s - e + (-step) - 1) / (-step))
        return KSliceAxis(start: s, step: step, count: count, keepsAxis: true)
    }

    // MARK: shared pieces

    private func one(_ inputs: [Tensor]) throws -> Tensor {
        guard inputs.count == 1 else { throw bad("expects one input, got \(inputs.count)") }
        return inputs[0]
    }

    private func requireInputCount(_ inputs: [Tensor], _ n: Int, _ function: String) throws {
        guard inputs.count == n else { throw bad("\(function) expects \(n) tensor inputs, got \(inputs.count)") }
    }

    private func requireRank(_ x: Tensor, _ rank: Int) throws {
        guard x.shape.count == rank else { throw bad("expects a rank-\(rank) input, got shape \(x.shape)") }
    }

    private func requireChannelsLast() throws {
        if let f = node.config["data_format"], !f.isNull, f.string != "channels_last" {
            throw unsupported("data_format \(f) (only channels_last)")
        }
    }

    /// Call keyword arguments outside `allowed` may change what the op computes, so they are refused.
    private func allowKwargs(_ allowed: Set<String>, _ function: String) throws {
        guard !node.callArgs.isNull else { return }
        guard let kwargs = node.callArgs.object else { throw bad("call arguments \(node.callArgs) are not an object") }
        for key in kwargs.keys.sorted() where !allowed.contains(key) {
            throw unsupported("argument '\(key)' of \(function) is not supported")
        }
    }

    /// The tensor a `{"__input__": k}` reference names, or nil if `v` is not a reference.
    private func tensorRef(_ v: JSONValue, _ inputs: [Tensor]) throws -> Tensor? {
        guard let ref = v["__input__"] else { return nil }
        guard let k = ref.int, inputs.indices.contains(k) else { throw bad("tensor reference \(v) is not one of \(inputs.count) inputs") }
        return inputs[k]
    }

    private func addBroadcast(_ a: Tensor, _ b: Tensor) throws -> Tensor {
        let rank = max(a.shape.count, b.shape.count)
        let sa = [Int](repeating: 1, count: rank - a.shape.count) + a.shape
        let sb = [Int](repeating: 1, count: rank - b.shape.count) + b.shape
        for d in 0..<rank where sa[d] != sb[d] && sa[d] != 1 && sb[d] != 1 {
            throw bad("cannot add shapes \(a.shape) and \(b.shape)")
        }
        return kAdd(a, b)
    }

    private func normalizedAxis(_ axis: Int, rank: Int) throws -> Int {
        let a = axis < 0 ? axis + rank : axis
        guard (0..<rank).contains(a) else { throw bad("axis \(axis) is out of range for rank \(rank)") }
        return a
    }

    private func checkSize(_ shape: [Int]) throws {
        var total = 1
        for d in shape {
            let (p, overflow) = total.multipliedReportingOverflow(by: d)
            guard d >= 0, !overflow, p <= maxElements else { throw bad("a tensor of shape \(shape) is too large") }
            total = p
        }
    }

    /// The layer's variables, checked against the shapes its config and input imply.
    private func weights(_ shapes: [[Int]], names: [String]) throws -> [Tensor] {
        guard node.weights.count == shapes.count else {
            throw bad("expects \(shapes.count) variables (\(names.joined(separator: ", "))), the file has \(node.weights.count)")
        }
        for (i, w) in node.weights.enumerated() where w.tensor.shape != shapes[i] {
            throw bad("variable \(names[i]) '\(w.name)' has shape \(w.tensor.shape), expected \(shapes[i])")
        }
        return node.weights.map(\.tensor)
    }

    private func activationName(_ key: String) throws -> String {
        guard let v = node.config[key], !v.isNull else { return "linear" }
        guard let name = v.string else { throw unsupported("activation \(v) (only built-in activation names)") }
        return name
    }

    private func applyActivation(_ x: Tensor, _ name: String) throws -> Tensor {
        switch name {
        case "linear": return x
        case "relu": return kReLU(x)
        case "softmax":
            guard x.shape.count >= 2 else { throw bad("softmax on a rank-\(x.shape.count) tensor") }
            return kSoftmax(x, axis: x.shape.count - 1)
        default: throw unsupported("activation '\(name)' is not implemented by the Keras interpreter")
        }
    }

    private func paddingMode() throws -> String {
        let v = node.config["padding"] ?? .string("valid")
        guard let s = v.string?.lowercased(), s == "valid" || s == "same" else {
            throw unsupported("padding \(v) (only 'valid' and 'same')")
        }
        return s
    }

    private func positiveInt(_ key: String, default d: Int? = nil) throws -> Int {
        guard let v = node.config[key], !v.isNull else {
            if let d { return d }
            throw bad("config has no '\(key)'")
        }
        guard let i = v.int, (1...(1 << 20)).contains(i) else { throw bad("\(key) \(v) is not a positive integer") }
        return i
    }

    /// An int or a two-element list of positive ints (kernel_size, strides, dilation_rate, pool_size).
    private func pair(_ key: String, default d: (Int, Int)? = nil) throws -> (Int, Int) {
        guard let v = node.config[key], !v.isNull else {
            if let d { return d }
            throw bad("config has no '\(key)'")
        }
        let values: [Int?] = v.int.map { [$0, $0] } ?? (v.array?.map(\.int) ?? [])
        guard values.count == 2, let a = values[0], let b = values[1],
              (1...(1 << 20)).contains(a), (1...(1 << 20)).contains(b) else {
            throw bad("\(key) \(v) is not a positive integer or a pair of them")
        }
        return (a, b)
    }

    private func bool(_ key: String, default d: Bool) throws -> Bool {
        guard let v = node.config[key], !v.isNull else { return d }
        guard let b = v.bool else { throw bad("\(key) \(v) is not a boolean") }
        return b
    }

    private func number(_ key: String, default d: Double) throws -> Double {
        guard let v = node.config[key], !v.isNull else { return d }
        guard let x = v.double else { throw bad("\(key) \(v) is not a number") }
        return x
    }
}
