import Foundation

// Full-model legacy Keras HDF5, laid out as tf_keras' `model.save("x.h5")` writes it: root
// attributes `model_config` (a Functional config, JSON), `keras_version`, `backend`; group
// `model_weights` with `layer_names` (in `model.layers` order, which is how both tf_keras and
// Keras 3 match groups to layers) and per layer `weight_names` + `<layer>/<layer>/<var>:0`.
//
// Used for specs no keras.applications / seed-Keras builder describes (torchvision, CIFAR, the
// seed PyTorch model, …). Every canonical op becomes built-in Keras layers computing the same
// numbers, so the file loads without custom objects; see "Export to Keras" in Mapping.md for the
// table and for the ops that are refused because no built-in layer is exact.

/// One Keras variable: its name within the layer, its value in Keras layout, and the canonical
/// tensor it holds bit for bit (nil for a variable synthesised by the export).
private struct KerasVariable {
    var name: String
    var value: Tensor
    var canonical: String?
}

/// A tensor flowing through the graph being built.
private struct Flow {
    var node: Int
    var c: Int
    var h: Int?
    var w: Int?
    var flat = false
    /// Every element is ≥ 0 (after a ReLU, and kept by pads, pools and channel moves): where a
    /// zero-padded max pool equals PyTorch's -inf-padded one.
    var nonNegative = false
    /// What produced it, for refusals.
    var producer: String
}

private func number(_ v: Int) -> JSONValue { .number(Double(v)) }
private func pairValue(_ v: [Int]) -> JSONValue { .array(v.map(number)) }

private struct KerasModelBuilder {
    let model: ResNetModel
    let file: String
    var nodes: [KerasNode] = []
    var variables: [[KerasVariable]] = []
    var taken: Set<String> = []

    init(model: ResNetModel, file: String) {
        self.model = model
        self.file = file
    }

    func refuse(_ place: String, _ reason: String) -> ResNetError {
        .unsupported(file: file, place: place, reason: reason)
    }

    /// A layer name Keras accepts (no dots) and that no other layer has.
    mutating func unique(_ base: String) -> String {
        let clean = base.replacingOccurrences(of: ".", with: "_")
        var name = clean
        var k = 1
        while taken.contains(name) { name = "\(clean)_\(k)"; k += 1 }
        taken.insert(name)
        return name
    }

    mutating func layer(_ cls: String, _ base: String, _ config: [String: JSONValue], inputs: [Int],
                        variables vars: [KerasVariable] = []) -> Int {
        let name = unique(base)
        var cfg = config
        cfg["name"] = .string(name)
        cfg["dtype"] = .string("float32")
        // tf_keras' InputLayer takes no `trainable` argument; every other layer records it.
        if cls != "InputLayer" { cfg["trainable"] = .bool(true) }
        nodes.append(KerasNode(id: nodes.count, path: name, className: cls, config: .object(cfg), inputs: inputs))
        variables.append(vars)
        return nodes.count - 1
    }

    func tensor(_ name: String) throws -> Tensor {
        guard let t = model.tensors[name] else { throw ResNetError.mapping(file: file, reason: "no canonical tensor \(name)") }
        return t
    }

    /// Output size along one axis, when the input size is known.
    func spatial(_ size: Int?, kernel: Int, stride: Int, dilation: Int = 1, padding: Padding, axis: Int) -> Int? {
        guard let size else { return nil }
        let (a, b) = padding.resolve(axis: axis, input: size, kernel: kernel, stride: stride, dilation: dilation)
        return (size + a + b - (kernel - 1) * dilation - 1) / stride + 1
    }

    func requireMap(_ x: Flow, _ place: String) throws {
        guard !x.flat else { throw refuse(place, "needs a feature map, but its input is already flat") }
    }

    mutating func zeroPadding(_ x: Flow, _ t: Int, _ b: Int, _ l: Int, _ r: Int, name: String) -> Flow {
        let id = layer("ZeroPadding2D", name, ["padding": .array([pairValue([t, b]), pairValue([l, r])]),
                                               "data_format": .string("channels_last")], inputs: [x.node])
        return Flow(node: id, c: x.c, h: x.h.map { $0 + t + b }, w: x.w.map { $0 + l + r }, nonNegative: x.nonNegative, producer: "ZeroPadding2D")
    }

    /// Explicit padding as (top, bottom, left, right), nil for `same`; refuses negative values.
    func explicitPads(_ p: Padding, _ place: String) throws -> (Int, Int, Int, Int)? {
        switch p {
        case .valid: return (0, 0, 0, 0)
        case .same: return nil
        case let .explicit(t, b, l, r):
            guard t >= 0, b >= 0, l >= 0, r >= 0 else { throw refuse(place, "negative padding \(p) has no Keras layer") }
            return (t, b, l, r)
        }
    }

    mutating func pool(_ p: PoolOp, max isMax: Bool, _ x: Flow, scope: String) throws -> Flow {
        let kind = isMax ? "max_pool" : "avg_pool"
        let place = "\(scope) \(kind) (kernel \(p.kernel), stride \(p.stride), padding \(p.padding))"
        try requireMap(x, place)
        guard p.kernel.count == 2, p.stride.count == 2 else { throw refuse(place, "kernel and stride must have two entries") }
        var input = x
        var mode = "valid"
        if let (t, b, l, r) = try explicitPads(p.padding, place) {
            if t + b + l + r > 0 {
                if isMax {
                    // Keras pads a max pool only through ZeroPadding2D; zeros equal PyTorch's -inf
                    // padding exactly when no real value is negative and every window keeps one real cell.
                    guard x.nonNegative else {
                        throw refuse(place, "explicit max-pool padding pads with -inf, which a Keras layer reproduces only on a non-negative input (after a ReLU); its input comes from \(x.producer)")
                    }
                    guard t < p.kernel[0], b < p.kernel[0], l < p.kernel[1], r < p.kernel[1] else {
                        throw refuse(place, "padding as large as the window leaves windows without a real cell")
                    }
                } else if !p.countIncludePad {
                    throw refuse(place, "explicit average-pool padding that is left out of the divisor has no exact Keras layer (AveragePooling2D pads only as 'same')")
                }
                input = zeroPadding(x, t, b, l, r, name: "\(scope)_\(kind)_pad")
            }
        } else {
            // TF `same`: Keras' own pools leave padded cells out of both the max and the mean.
            guard isMax || !p.countIncludePad else {
                throw refuse(place, "'same' average-pool padding counted in the divisor has no exact Keras layer")
            }
            mode = "same"
        }
        let resolved: Padding = mode == "same" ? .same : .valid
        let id = layer(isMax ? "MaxPooling2D" : "AveragePooling2D", "\(scope)_\(kind)",
                       ["pool_size": pairValue(p.kernel), "strides": pairValue(p.stride), "padding": .string(mode),
                        "data_format": .string("channels_last")], inputs: [input.node])
        return Flow(node: id, c: x.c,
                    h: spatial(input.h, kernel: p.kernel[0], stride: p.stride[0], padding: resolved, axis: 0),
                    w: spatial(input.w, kernel: p.kernel[1], stride: p.stride[1], padding: resolved, axis: 1),
                    nonNegative: x.nonNegative, producer: isMax ? "MaxPooling2D" : "AveragePooling2D")
    }

    mutating func apply(_ op: Op, _ x: Flow, scope: String) throws -> Flow {
        switch op {
        case let .conv(c):
            let place = "conv \(c.name)"
            try requireMap(x, place)
            guard c.inChannels == x.c, c.kernel.count == 2, c.stride.count == 2, c.dilation.count == 2 else {
                throw ResNetError.mapping(file: file, reason: "\(place): takes \(c.inChannels) channels, its input has \(x.c)")
            }
            guard c.stride.allSatisfy({ $0 == 1 }) || c.dilation.allSatisfy({ $0 == 1 }) else {
                throw refuse(place, "stride \(c.stride) together with dilation \(c.dilation) is not supported by Keras' Conv2D")
            }
            var input = x
            var mode = "valid"
            if let (t, b, l, r) = try explicitPads(c.padding, place) {
                // ZeroPadding2D + a valid Conv2D is the same arithmetic as a padded convolution.
                if t + b + l + r > 0 { input = zeroPadding(x, t, b, l, r, name: "\(c.name)_pad") }
            } else {
                mode = "same"
            }
            var vars = [KerasVariable(name: "kernel", value: try tensor("\(c.name).weight").permuted([2, 3, 1, 0]), canonical: "\(c.name).weight")]
            if c.bias { vars.append(KerasVariable(name: "bias", value: try tensor("\(c.name).bias"), canonical: "\(c.name).bias")) }
            let id = layer("Conv2D", c.name, [
                "filters": number(c.outChannels), "kernel_size": pairValue(c.kernel), "strides": pairValue(c.stride),
                "padding": .string(mode), "data_format": .string("channels_last"), "dilation_rate": pairValue(c.dilation),
                "groups": number(c.groups), "activation": .string("linear"), "use_bias": .bool(c.bias),
            ], inputs: [input.node], variables: vars)
            let resolved: Padding = mode == "same" ? .same : .valid
            return Flow(node: id, c: c.outChannels,
                        h: spatial(input.h, kernel: c.kernel[0], stride: c.stride[0], dilation: c.dilation[0], padding: resolved, axis: 0),
                        w: spatial(input.w, kernel: c.kernel[1], stride: c.stride[1], dilation: c.dilation[1], padding: resolved, axis: 1),
                        producer: "conv \(c.name)")

        case let .batchNorm(b):
            guard b.channels == x.c else {
                throw ResNetError.mapping(file: file, reason: "batch norm \(b.name): \(b.channels) channels, its input has \(x.c)")
            }
            var vars: [KerasVariable] = []
            if b.scale { vars.append(KerasVariable(name: "gamma", value: try tensor("\(b.name).weight"), canonical: "\(b.name).weight")) }
            if b.center { vars.append(KerasVariable(name: "beta", value: try tensor("\(b.name).bias"), canonical: "\(b.name).bias")) }
            vars.append(KerasVariable(name: "moving_mean", value: try tensor("\(b.name).running_mean"), canonical: "\(b.name).running_mean"))
            vars.append(KerasVariable(name: "moving_variance", value: try tensor("\(b.name).running_var"), canonical: "\(b.name).running_var"))
            let id = layer("BatchNormalization", b.name, [
                "axis": number(-1), "momentum": .number(0.99), "epsilon": .number(b.epsilon),
                "center": .bool(b.center), "scale": .bool(b.scale),
            ], inputs: [x.node], variables: vars)
            var y = x
            y.node = id; y.nonNegative = false; y.producer = "batch norm \(b.name)"
            return y

        case .relu:
            let id = layer("Activation", "\(scope)_relu", ["activation": .string("relu")], inputs: [x.node])
            var y = x
            y.node = id; y.nonNegative = true; y.producer = "a ReLU"
            return y

        case let .maxPool(p):
            return try pool(p, max: true, x, scope: scope)

        case let .avgPool(p):
            return try pool(p, max: false, x, scope: scope)

        case let .zeroPad(t, b, l, r):
            try requireMap(x, "\(scope) zero_pad")
            guard t >= 0, b >= 0, l >= 0, r >= 0 else { throw refuse("\(scope) zero_pad", "negative padding has no Keras layer") }
            return zeroPadding(x, t, b, l, r, name: "\(scope)_zero_pad")

        case let .subsample(s):
            try requireMap(x, "\(scope) subsample")
            guard s >= 1 else { throw refuse("\(scope) subsample", "stride \(s)") }
            // x[:, :, ::s, ::s] is a 1×1 max pool with stride s: each window holds exactly one cell.
            let id = layer("MaxPooling2D", "\(scope)_subsample", ["pool_size": pairValue([1, 1]), "strides": pairValue([s, s]),
                                                                  "padding": .string("valid"), "data_format": .string("channels_last")],
                           inputs: [x.node])
            return Flow(node: id, c: x.c, h: x.h.map { ($0 + s - 1) / s }, w: x.w.map { ($0 + s - 1) / s },
                        nonNegative: x.nonNegative, producer: "a subsample")

        case let .channelPad(before, after):
            try requireMap(x, "\(scope) channel_pad")
            guard before >= 0, after >= 0 else { throw refuse("\(scope) channel_pad", "negative channel padding") }
            // No built-in layer pads channels; a bias-free 1×1 Conv2D whose kernel embeds channel i
            // at i + before is exact in float32: each output is one input times 1 plus zeros.
            let out = x.c + before + after
            var kernel = Tensor(zeros: [1, 1, x.c, out])
            for i in 0..<x.c { kernel.data[i * out + before + i] = 1 }
            let id = layer("Conv2D", "\(scope)_channel_pad", [
                "filters": number(out), "kernel_size": pairValue([1, 1]), "strides": pairValue([1, 1]),
                "padding": .string("valid"), "data_format": .string("channels_last"), "dilation_rate": pairValue([1, 1]),
                "groups": number(1), "activation": .string("linear"), "use_bias": .bool(false),
            ], inputs: [x.node], variables: [KerasVariable(name: "kernel", value: kernel, canonical: nil)])
            return Flow(node: id, c: out, h: x.h, w: x.w, nonNegative: x.nonNegative, producer: "a channel pad")

        case .globalAvgPool:
            try requireMap(x, "\(scope) global_avg_pool")
            let id = layer("GlobalAveragePooling2D", "\(scope)_global_avg_pool",
                           ["data_format": .string("channels_last"), "keepdims": .bool(false)], inputs: [x.node])
            return Flow(node: id, c: x.c, h: nil, w: nil, flat: true, nonNegative: x.nonNegative, producer: "global average pooling")

        case let .flatten(order):
            if x.flat { return x }
            let place = "\(scope) flatten"
            guard let h = x.h, let w = x.w else {
                throw refuse(place, "flattening a feature map needs a known input size (the spec has none; pass --input-size)")
            }
            var input = x.node
            if order == .chw && (h != 1 || w != 1) {
                // Keras flattens NHWC pixel-major; PyTorch's channel-major order is Permute + Flatten.
                input = layer("Permute", "\(scope)_permute", ["dims": pairValue([3, 1, 2])], inputs: [x.node])
            }
            let id = layer("Flatten", "\(scope)_flatten", ["data_format": .string("channels_last")], inputs: [input])
            return Flow(node: id, c: x.c * h * w, h: nil, w: nil, flat: true, nonNegative: x.nonNegative, producer: "a flatten")

        case let .dense(d):
            guard x.flat, d.inFeatures == x.c else {
                throw ResNetError.mapping(file: file, reason: "dense \(d.name): takes \(d.inFeatures) features, its input has \(x.flat ? "\(x.c)" : "a feature map")")
            }
            var vars = [KerasVariable(name: "kernel", value: try tensor("\(d.name).weight").permuted([1, 0]), canonical: "\(d.name).weight")]
            if d.bias { vars.append(KerasVariable(name: "bias", value: try tensor("\(d.name).bias"), canonical: "\(d.name).bias")) }
            let id = layer("Dense", d.name, ["units": number(d.outFeatures), "activation": .string("linear"), "use_bias": .bool(d.bias)],
                           inputs: [x.node], variables: vars)
            return Flow(node: id, c: d.outFeatures, h: nil, w: nil, flat: true, producer: "dense \(d.name)")

        case .softmax:
            guard x.flat else { throw refuse("\(scope) softmax", "softmax over a feature map is not supported") }
            let id = layer("Activation", "\(scope)_softmax", ["activation": .string("softmax")], inputs: [x.node])
            var y = x
            y.node = id; y.nonNegative = true; y.producer = "a softmax"
            return y
        }
    }

    mutating func apply(_ ops: [Op], _ x: Flow, scope: String) throws -> Flow {
        var y = x
        for op in ops { y = try apply(op, y, scope: scope) }
        return y
    }

    /// Builds the whole graph; returns the output node.
    mutating func build(inputSize: [Int]?) throws -> Int {
        let spec = model.spec
        let shape: [JSONValue] = [.null] + (inputSize.map { [number($0[0]), number($0[1])] } ?? [.null, .null]) + [number(spec.inputChannels)]
        let input = layer("InputLayer", "input_1", ["batch_input_shape": .array(shape), "sparse": .bool(false), "ragged": .bool(false)], inputs: [])
        var x = Flow(node: input, c: spec.inputChannels, h: inputSize?[0], w: inputSize?[1], producer: "the model input")
        x = try apply(spec.stem, x, scope: "stem")
        for stage in spec.stages {
            for block in stage.blocks {
                let scope = block.name
                let pre = try apply(block.pre, x, scope: scope)
                let residual = try apply(block.residual, pre, scope: scope)
                let shortcut = try apply(block.shortcut, pre, scope: scope)
                guard residual.c == shortcut.c, residual.flat == shortcut.flat,
                      residual.h == shortcut.h, residual.w == shortcut.w else {
                    throw ResNetError.mapping(file: file, reason: "block \(block.name): residual (\(residual.c) channels) and shortcut (\(shortcut.c) channels) do not have the same shape")
                }
                let add = layer("Add", "\(scope)_add", [:], inputs: [residual.node, shortcut.node])
                let sum = Flow(node: add, c: residual.c, h: residual.h, w: residual.w, flat: residual.flat,
                               nonNegative: residual.nonNegative && shortcut.nonNegative, producer: "the add of block \(block.name)")
                x = try apply(block.post, sum, scope: scope)
            }
        }
        x = try apply(spec.head, x, scope: "head")
        return x.node
    }
}

/// The `model_config` JSON for `nodes` (listed in `order`), as tf_keras serialises a Functional model.
private func functionalConfig(name: String, nodes: [KerasNode], order: [Int], input: Int, output: Int) throws -> String {
    let layers: [JSONValue] = order.map { id in
        let n = nodes[id]
        let inbound: JSONValue = n.inputs.isEmpty ? .array([]) : .array([.array(n.inputs.map { i in
            .array([.string(nodes[i].path), .number(0), .number(0), .object([:])])
        })])
        return .object(["class_name": .string(n.className), "config": n.config, "name": .string(n.path), "inbound_nodes": inbound])
    }
    let config: JSONValue = .object([
        "class_name": .string("Functional"),
        "config": .object([
            "name": .string(name), "trainable": .bool(true), "layers": .array(layers),
            "input_layers": .array([.array([.string(nodes[input].path), .number(0), .number(0)])]),
            "output_layers": .array([.array([.string(nodes[output].path), .number(0), .number(0)])]),
        ]),
    ])
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(config), as: UTF8.self)
}

/// What tf_keras' `save_attributes_to_hdf5_group` does with a string list too large for one
/// object header (64 512 bytes): split it into `name0`, `name1`, ….
private func setStringList(_ writer: HDF5Writer, _ name: String, of group: String, _ values: [String]) throws {
    let limit = 64512
    let width = max(values.map { $0.utf8.count }.max() ?? 0, 1)
    let bytes = width * values.count
    guard bytes > limit else { return try writer.setStringAttribute(name, of: group, values) }
    let chunks = (bytes + limit - 1) / limit
    // numpy.array_split: the first `count % chunks` pieces get one extra element.
    let base = values.count / chunks, extra = values.count % chunks
    var start = 0
    for k in 0..<chunks {
        let n = base + (k < extra ? 1 : 0)
        try writer.setStringAttribute("\(name)\(k)", of: group, Array(values[start..<start + n]))
        start += n
    }
}

/// Relative float32 agreement required between the exported model, read back and walked, and
/// the model it came from (the ops are rewritten, not approximated, so only summation order may differ).
let kerasModelReadBackTolerance = 1e-5

/// Writes a full-model legacy Keras `.h5` for `model` and proves it before it gets its name: the
/// file is read back by this library's Keras reader and graph walker, and (1) every canonical tensor
/// is found bit-identical under the Keras variable it was written to, (2) the walked model's forward
/// pass equals the original's within ``kerasModelReadBackTolerance`` relative, (3) the independent
/// Keras-graph interpreter, run on the file's own layers and weights, agrees with the original.
func exportKerasModel(_ model: ResNetModel, to path: String, display: String, inputSize: [Int]?) throws
    -> (layout: String, check: String, notes: [String]) {
    let size = inputSize ?? model.spec.inputSize
    if let size, size.count != 2 || size.contains(where: { $0 < 1 }) {
        throw ResNetError.usage("input size \(size) is not [height, width]")
    }
    var builder = KerasModelBuilder(model: model, file: display)
    let output = try builder.build(inputSize: size)
    let nodes = builder.nodes
    let order = kerasLayerOrder(nodes, output: output)
    guard order.count == nodes.count else {
        throw ResNetError.mapping(file: display, reason: "\(nodes.count - order.count) Keras layers do not lead to the output")
    }
    let modelName = model.spec.family.replacingOccurrences(of: ".", with: "_")
    let json = try functionalConfig(name: modelName.isEmpty ? "resnet" : modelName, nodes: nodes, order: order, input: 0, output: output)

    let writer = try HDF5Writer(path: path, display: display)
    try writer.setTextAttribute("backend", of: "/", "tensorflow")
    // The layout version Keras' loaders check (they only special-case Keras 1 files).
    try writer.setTextAttribute("keras_version", of: "/", "2.20.1")
    try writer.setTextAttribute("model_config", of: "/", json)
    try writer.setTextAttribute("writer", of: "/", toolVersion)
    try writer.createGroup("/model_weights")
    try setStringList(writer, "layer_names", of: "/model_weights", order.map { nodes[$0].path })
    try writer.setTextAttribute("backend", of: "/model_weights", "tensorflow")
    try writer.setTextAttribute("keras_version", of: "/model_weights", "2.20.1")
    var written: [String: String] = [:]   // canonical → Keras variable path under model_weights
    for id in order + [-1] {
        // tf_keras also writes an empty group for variables owned by the model itself.
        let layer = id < 0 ? "top_level_model_weights" : nodes[id].path
        let vars = id < 0 ? [] : builder.variables[id]
        let group = "/model_weights/" + layer
        try writer.createGroup(group)
        try writer.setStringAttribute("weight_names", of: group, vars.map { "\(layer)/\($0.name):0" })
        guard !vars.isEmpty else { continue }
        try writer.createGroup("\(group)/\(layer)")
        for v in vars {
            try writer.writeFloat32("\(group)/\(layer)/\(v.name):0", v.value)
            if let c = v.canonical { written[c] = "\(layer)/\(layer)/\(v.name):0" }
        }
    }
    try writer.close()
    guard written.count == model.tensors.count else {
        throw ResNetError.mapping(file: display, reason: "wrote \(written.count) Keras variables for \(model.tensors.count) canonical tensors")
    }

    // Read back exactly as a user's file is read: model_config through the graph walker.
    let file = try readKerasH5(bytes: try readWholeFile(path, display: display), name: display)
    let back = try loadKeras(file, arch: nil)
    var backBySource: [String: String] = [:]
    for o in back.mapping {
        let source = o.source.hasPrefix("model_weights/") ? String(o.source.dropFirst("model_weights/".count)) : o.source
        backBySource[source] = o.canonical
    }
    for (canonical, variable) in written.sorted(by: { $0.key < $1.key }) {
        guard let b = backBySource[variable], let t = back.model.tensors[b] else {
            throw ResNetError.parityFailed(reason: "read-back of \(display): Keras variable \(variable) (canonical \(canonical)) is not in the walked model")
        }
        guard bitIdentical(model.tensors[canonical]!, t) else {
            throw ResNetError.parityFailed(reason: "read-back of \(display): \(variable) differs from canonical \(canonical)")
        }
    }
    let hw = size ?? [64, 64]
    let nhwc = Verifier.deterministicInput(shape: [2, hw[0], hw[1], model.spec.inputChannels], seed: 20240601)
    let input = nhwc.permuted([0, 3, 1, 2])
    let ours = try forward(model, input: input)
    let theirs = try forward(back.model, input: input)
    guard ours.shape == theirs.shape else {
        throw ResNetError.parityFailed(reason: "read-back of \(display): output shape \(theirs.shape), the model gives \(ours.shape)")
    }
    var maxAbs: Float = 0, scale: Float = 0
    for (a, b) in zip(ours.data, theirs.data) {
        guard a.isFinite, b.isFinite else {
            throw ResNetError.parityFailed(reason: "read-back of \(display): non-finite output")
        }
        maxAbs = max(maxAbs, abs(a - b)); scale = max(scale, abs(a))
    }
    let relative = Double(maxAbs) / Double(max(scale, .leastNormalMagnitude))
    guard relative <= kerasModelReadBackTolerance else {
        throw ResNetError.parityFailed(reason: "read-back of \(display): the walked model's output differs by \(maxAbs) (\(relative) of the output scale, limit \(kerasModelReadBackTolerance))")
    }
    guard let graph = back.kerasGraph else {
        throw ResNetError.parityFailed(reason: "read-back of \(display): no layer graph was read from model_config")
    }
    let interpreted = try Verifier.checkKerasGraph(graph, model: model, file: display)
    guard interpreted.passed else {
        throw ResNetError.parityFailed(reason: "read-back of \(display): \(interpreted.reference): \(interpreted.detail)")
    }

    var notes: [String] = []
    let synthesised = builder.variables.joined().filter { $0.canonical == nil }.count
    if synthesised > 0 {
        notes.append("\(synthesised) zero channel padding shortcut(s) written as bias-free 1x1 Conv2D with a fixed 0/1 embedding kernel (exact in float32)")
    }
    if size == nil { notes.append("input height and width are unspecified (None) in the Keras model") }
    let check = "reopened \(display) and walked its model_config: all \(model.tensors.count) canonical tensors bit-identical under their Keras variables; "
        + String(format: "forward pass %.2e of the output scale from the original (limit %.0e); ", relative, kerasModelReadBackTolerance)
        + "\(interpreted.reference): \(interpreted.detail)"
    return ("full Keras model (legacy HDF5: model_config + model_weights, \(nodes.count) built-in layers named after the canonical modules)", check, notes)
}
