import Foundation

/// Turns a Keras layer graph into a canonical ``ResNetModel`` by walking it: the graph decides the
/// structure (where blocks fork and join, which branch is the shortcut), never the layer names.
///
/// The walk has three steps:
/// 1. every Keras layer call becomes zero or more canonical ops on a DAG (`Conv2D` with an
///    activation becomes conv + relu, `Dropout` and `identity` vanish, `ZeroPadding2D` feeding a
///    `valid` convolution becomes that convolution's padding);
/// 2. the DAG is cut into stem, residual blocks (a fork whose two branches meet at one add) and head;
/// 3. canonical names are given by position (torchvision style) and tensors are moved from the
///    Keras layout (HWIO kernels, (in, out) dense) into the canonical one.
public struct KerasGraphWalker {
    /// Result of a walk: the model plus where every canonical tensor came from.
    public struct Result: Sendable {
        public var model: ResNetModel
        /// Canonical tensor name → source tensor, in canonical order.
        public var sources: [TensorOrigin]
        /// Canonical block name → the Keras layer whose output is that block's output, in model order;
        /// lets the graph self-check say which block diverges first.
        public var blockOutputs: [(canonical: String, kerasPath: String)]
    }

    let file: String
    let graph: KerasGraph

    public init(graph: KerasGraph, file: String) {
        self.graph = graph
        self.file = file
    }

    // MARK: DAG of canonical ops

    fileprivate enum Kind {
        case input
        case op(Op)
        case add
    }

    fileprivate struct Shape {
        var c: Int
        var h: Int?
        var w: Int?
        /// Rank 2 after flatten / global pooling.
        var flat: Bool = false
        /// True after a `transpose(0, 3, 1, 2)`: the Keras tensor is NCHW-ordered; only the
        /// squeeze of 1×1 spatial dims that converters emit before a Dense is understood then.
        var nchwView: Bool = false
        var squeezedW: Bool = false
    }

    fileprivate struct Node {
        var kind: Kind
        var inputs: [Int]
        var source: String
        var shape: Shape
        /// Canonical tensors by role: weight/bias/running_mean/running_var (filled for weighted ops).
        var tensors: [String: Tensor] = [:]
        /// The source variable behind each role.
        var origins: [String: SourceTensor] = [:]
        /// Layer path of the Keras layer that produced it.
        var consumers: [Int] = []
    }

    fileprivate var nodes: [Node] = []

    /// Walks the graph.
    public func walk(family: String = "keras-graph") throws -> Result {
        var w = self
        try w.buildDAG()
        return try w.cut(family: family)
    }

    private func fail(_ place: String, _ reason: String) -> ResNetError {
        .unsupported(file: file, place: place, reason: reason)
    }

    private mutating func append(_ kind: Kind, inputs: [Int], source: String, shape: Shape,
                                 tensors: [String: Tensor] = [:], origins: [String: SourceTensor] = [:]) -> Int {
        nodes.append(Node(kind: kind, inputs: inputs, source: source, shape: shape, tensors: tensors, origins: origins))
        return nodes.count - 1
    }

    // MARK: Step 1: Keras layers → canonical ops

    private mutating func buildDAG() throws {
        var map: [Int: Int] = [:]   // keras node id → our node id
        for kn in graph.nodes {
            let place = "layer '\(kn.path)' (\(kn.className))"
            func input(_ k: Int) throws -> Int {
                guard k < kn.inputs.count, let id = map[kn.inputs[k]] else {
                    throw ResNetError.invalidInput(file: file, place: place, reason: "input \(k) is not connected")
                }
                return id
            }
            func single() throws -> Int {
                guard kn.inputs.count == 1 else {
                    throw fail(place, "expects exactly one input, has \(kn.inputs.count)")
                }
                return try input(0)
            }
            let cfg = kn.config
            // A Permute to channels-first is understood only as the layout of a following Flatten.
            if kn.className != "Flatten", let p = kn.inputs.compactMap({ map[$0] }).first(where: { nodes[$0].source.hasSuffix("#permute") }) {
                throw fail(place, "reads the channels-first output of Permute '\(nodes[p].source.dropLast("#permute".count))'; only a Flatten may follow Permute((3, 1, 2))")
            }
            switch kn.className {
            case "InputLayer":
                let shape = graph.inputShape
                guard let shape, shape.count == 3, let c = shape[2] else {
                    throw fail(place, "the model input must be (H, W, C) with a known channel count; found \(String(describing: graph.inputShape))")
                }
                map[kn.id] = append(.input, inputs: [], source: kn.path, shape: Shape(c: c, h: shape[0], w: shape[1]))

            case "Conv2D":
                let x = try single()
                map[kn.id] = try conv(kn, x: x, place: place)

            case "BatchNormalization":
                let x = try single()
                map[kn.id] = try batchNorm(kn, x: x, place: place)

            case "Activation":
                let x = try single()
                map[kn.id] = try activation(cfg["activation"]?.string ?? "linear", x: x, source: kn.path, place: place)

            case "ReLU":
                let x = try single()
                let maxValue = cfg["max_value"]
                let slope = cfg["negative_slope"]?.double ?? 0
                let threshold = cfg["threshold"]?.double ?? 0
                guard maxValue == nil || maxValue!.isNull, slope == 0, threshold == 0 else {
                    throw fail(place, "only a plain ReLU is supported (max_value, negative_slope and threshold must be unset)")
                }
                map[kn.id] = append(.op(.relu), inputs: [x], source: kn.path, shape: nodes[x].shape)

            case "Dropout", "SpatialDropout2D", "GaussianDropout", "GaussianNoise":
                map[kn.id] = try single()   // no-ops at inference

            case "Add":
                guard kn.inputs.count == 2 else { throw fail(place, "residual adds must have exactly two inputs, found \(kn.inputs.count)") }
                map[kn.id] = try add(try input(0), try input(1), source: kn.path, place: place)

            case "ZeroPadding2D":
                let x = try single()
                let (t, b, l, r) = try zeroPadding(cfg["padding"], place: place)
                var s = nodes[x].shape
                s.h = s.h.map { $0 + t + b }; s.w = s.w.map { $0 + l + r }
                map[kn.id] = append(.op(.zeroPad(top: t, bottom: b, left: l, right: r)), inputs: [x], source: kn.path, shape: s)

            case "MaxPooling2D", "MaxPool2D", "AveragePooling2D", "AvgPool2D":
                let x = try single()
                map[kn.id] = try pool(kn, x: x, isMax: kn.className.hasPrefix("Max"), place: place)

            case "GlobalAveragePooling2D", "GlobalAvgPool2D":
                let x = try single()
                try checkChannelsLast(cfg, place: place)
                if cfg["keepdims"]?.bool == true { throw fail(place, "keepdims=True is not supported") }
                var s = nodes[x].shape
                s.flat = true; s.h = nil; s.w = nil
                map[kn.id] = append(.op(.globalAvgPool), inputs: [x], source: kn.path, shape: s)

            case "Permute":
                let x = try single()
                let s = nodes[x].shape
                guard cfg["dims"]?.array?.compactMap({ $0.int }) == [3, 1, 2], !s.flat, !s.nchwView else {
                    throw fail(place, "only Permute((3, 1, 2)) of a feature map, followed by Flatten, is supported (found dims \(cfg["dims"] ?? .null))")
                }
                var t = s
                t.nchwView = true
                // A marker: no canonical op; the Flatten after it flattens channel-major.
                map[kn.id] = append(.op(.flatten(.chw)), inputs: [x], source: kn.path + "#permute", shape: t)

            case "Flatten":
                let x = try single()
                let s = nodes[x].shape
                if s.flat { map[kn.id] = x; break }
                if nodes[x].source.hasSuffix("#permute") {
                    // Permute((3, 1, 2)) + Flatten is PyTorch's channel-major flatten of the map before it.
                    guard let h = s.h, let w = s.w else { throw fail(place, "Flatten after Permute needs a known spatial size") }
                    let src = nodes[x].inputs[0]
                    map[kn.id] = append(.op(.flatten(.chw)), inputs: [src], source: kn.path, shape: Shape(c: s.c * h * w, h: nil, w: nil, flat: true))
                    break
                }
                guard let h = s.h, let w = s.w else { throw fail(place, "Flatten needs a known spatial size") }
                if h == 1 && w == 1 {
                    map[kn.id] = append(.op(.flatten(.chw)), inputs: [x], source: kn.path, shape: Shape(c: s.c, h: nil, w: nil, flat: true))
                } else {
                    map[kn.id] = append(.op(.flatten(.hwc)), inputs: [x], source: kn.path, shape: Shape(c: s.c * h * w, h: nil, w: nil, flat: true))
                }

            case "Dense":
                let x = try single()
                map[kn.id] = try dense(kn, x: x, place: place)

            case "Softmax":
                let x = try single()
                map[kn.id] = append(.op(.softmax), inputs: [x], source: kn.path, shape: nodes[x].shape)

            case "TFOpLambda", "SlicingOpLambda":
                let ins = try kn.inputs.indices.map { try input($0) }
                map[kn.id] = try tfOp(kn, inputs: ins, place: place)

            default:
                throw fail(place, "layer class \(kn.className) has no canonical equivalent; supported: Conv2D, BatchNormalization, Activation, ReLU, Add, ZeroPadding2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, Flatten, Permute((3, 1, 2)) before Flatten, Dense, Dropout, Softmax, InputLayer and the TFOpLambda ops relu/add/pad/identity/transpose/getitem")
            }
        }
        guard let inputID = map[graph.input], case .input = nodes[inputID].kind else {
            throw ResNetError.invalidInput(file: file, place: "model inputs", reason: "the model input is not an InputLayer")
        }
        guard let out = map[graph.output] else {
            throw ResNetError.invalidInput(file: file, place: "model outputs", reason: "the model output is not connected")
        }
        // Keep only nodes that reach the output, then record consumers.
        var live = Set<Int>()
        var stack = [out]
        while let n = stack.popLast() {
            if live.insert(n).inserted { stack += nodes[n].inputs }
        }
        for (i, n) in nodes.enumerated() where live.contains(i) {
            for j in n.inputs { nodes[j].consumers.append(i) }
        }
        outputNode = out
        inputNode = inputID
        foldPaddingIntoConvolutions()
    }

    /// A `ZeroPadding2D` whose only reader is a `valid` convolution is that convolution's explicit
    /// padding (exact: both pad with zeros). Before a max pool it is not folded: pools pad with -inf.
    private mutating func foldPaddingIntoConvolutions() {
        for i in nodes.indices {
            guard case var .op(.conv(c)) = nodes[i].kind, c.padding == .valid else { continue }
            let p = nodes[i].inputs[0]
            guard case let .op(.zeroPad(t, b, l, r)) = nodes[p].kind, nodes[p].consumers == [i] else { continue }
            c.padding = .explicit(top: t, bottom: b, left: l, right: r)
            nodes[i].kind = .op(.conv(c))
            let src = nodes[p].inputs[0]
            nodes[i].inputs = [src]
            nodes[p].consumers = []
            nodes[src].consumers = nodes[src].consumers.map { $0 == p ? i : $0 }
        }
    }

    fileprivate var outputNode = 0
    fileprivate var inputNode = 0

    private func checkChannelsLast(_ cfg: JSONValue, place: String) throws {
        if let f = cfg["data_format"]?.string, f != "channels_last" {
            throw fail(place, "data_format '\(f)' is not supported (only channels_last)")
        }
    }

    private func pair(_ v: JSONValue?, place: String, what: String, default d: Int? = nil) throws -> [Int] {
        if let v, let i = v.int { return [i, i] }
        if let v, let a = v.array, a.count == 2, let x = a[0].int, let y = a[1].int { return [x, y] }
        if v == nil || v!.isNull, let d { return [d, d] }
        throw fail(place, "cannot read \(what) from \(String(describing: v))")
    }

    private func spatial(_ size: Int?, kernel: Int, stride: Int, dilation: Int, padding: Padding, axis: Int) -> Int? {
        guard let size else { return nil }
        let (a, b) = padding.resolve(axis: axis, input: size, kernel: kernel, stride: stride, dilation: dilation)
        return (size + a + b - (kernel - 1) * dilation - 1) / stride + 1
    }

    private mutating func conv(_ kn: KerasNode, x: Int, place: String) throws -> Int {
        let cfg = kn.config
        try checkChannelsLast(cfg, place: place)
        let kernel = try pair(cfg["kernel_size"], place: place, what: "kernel_size")
        let stride = try pair(cfg["strides"], place: place, what: "strides", default: 1)
        let dilation = try pair(cfg["dilation_rate"], place: place, what: "dilation_rate", default: 1)
        let groups = cfg["groups"]?.int ?? 1
        let useBias = cfg["use_bias"]?.bool ?? true
        guard let filters = cfg["filters"]?.int, filters > 0, groups > 0 else { throw fail(place, "bad filters/groups") }
        var padding: Padding
        switch cfg["padding"]?.string ?? "valid" {
        case "valid": padding = .valid
        case "same": padding = .same
        case let p: throw fail(place, "padding '\(p)' is not supported")
        }
        let inC = nodes[x].shape.c
        guard inC % groups == 0, filters % groups == 0 else { throw fail(place, "channels \(inC)→\(filters) not divisible by groups \(groups)") }
        let expectCount = useBias ? 2 : 1
        guard kn.weights.count == expectCount else {
            throw ResNetError.mapping(file: file, reason: "layer '\(kn.path)' (Conv2D, use_bias=\(useBias)) has \(kn.weights.count) variables, expected \(expectCount)")
        }
        let k = kn.weights[0]
        let wantK = [kernel[0], kernel[1], inC / groups, filters]
        guard k.tensor.shape == wantK else {
            throw ResNetError.mapping(file: file, reason: "\(k.name): kernel shape \(k.tensor.shape), the config implies \(wantK) (HWIO)")
        }
        var tensors = ["weight": layoutChanged(k.tensor, [3, 2, 0, 1])]   // HWIO → OIHW
        var origins = ["weight": k]
        if useBias {
            let b = kn.weights[1]
            origins["bias"] = b
            guard b.tensor.shape == [filters] else {
                throw ResNetError.mapping(file: file, reason: "\(b.name): bias shape \(b.tensor.shape), expected [\(filters)]")
            }
            tensors["bias"] = b.tensor
        }
        let input = x
        let s = nodes[input].shape
        let outShape = Shape(c: filters,
                             h: spatial(s.h, kernel: kernel[0], stride: stride[0], dilation: dilation[0], padding: padding, axis: 0),
                             w: spatial(s.w, kernel: kernel[1], stride: stride[1], dilation: dilation[1], padding: padding, axis: 1))
        if let h = outShape.h, let w = outShape.w, h <= 0 || w <= 0 { throw fail(place, "output would be empty (\(h)x\(w))") }
        let op = ConvOp(name: "", inChannels: inC, outChannels: filters, kernel: kernel, stride: stride,
                        dilation: dilation, padding: padding, groups: groups, bias: useBias)
        let id = append(.op(.conv(op)), inputs: [input], source: kn.path, shape: outShape, tensors: tensors, origins: origins)
        return try activation(cfg["activation"]?.string ?? "linear", x: id, source: kn.path, place: place)
    }

    private mutating func batchNorm(_ kn: KerasNode, x: Int, place: String) throws -> Int {
        let cfg = kn.config
        if let axis = cfg["axis"] {
            let a = axis.int ?? axis.array?.first?.int
            guard axis.array.map({ $0.count == 1 }) ?? true, a == -1 || a == 3 else {
                throw fail(place, "BatchNormalization over axis \(axis) is not supported (channels must be the last axis)")
            }
        }
        let eps = cfg["epsilon"]?.double ?? 1e-3   // Keras' default
        let scale = cfg["scale"]?.bool ?? true
        let center = cfg["center"]?.bool ?? true
        let c = nodes[x].shape.c
        let roles = (scale ? ["weight"] : []) + (center ? ["bias"] : []) + ["running_mean", "running_var"]
        guard kn.weights.count == roles.count else {
            throw ResNetError.mapping(file: file, reason: "layer '\(kn.path)' (BatchNormalization, scale=\(scale), center=\(center)) has \(kn.weights.count) variables, expected \(roles.count)")
        }
        var tensors: [String: Tensor] = [:]
        var origins: [String: SourceTensor] = [:]
        for (role, v) in zip(roles, kn.weights) {
            origins[role] = v
            guard v.tensor.shape == [c] else {
                throw ResNetError.mapping(file: file, reason: "\(v.name): shape \(v.tensor.shape), expected [\(c)]")
            }
            tensors[role] = v.tensor
        }
        let op = BatchNormOp(name: "", channels: c, epsilon: eps, scale: scale, center: center)
        return append(.op(.batchNorm(op)), inputs: [x], source: kn.path, shape: nodes[x].shape, tensors: tensors, origins: origins)
    }

    private mutating func activation(_ name: String, x: Int, source: String, place: String) throws -> Int {
        switch name {
        case "linear": return x
        case "relu": return append(.op(.relu), inputs: [x], source: source, shape: nodes[x].shape)
        case "softmax":
            guard nodes[x].shape.flat else { throw fail(place, "softmax over a feature map is not supported") }
            return append(.op(.softmax), inputs: [x], source: source, shape: nodes[x].shape)
        default: throw fail(place, "activation '\(name)' is not supported (relu, linear, softmax)")
        }
    }

    private mutating func add(_ a: Int, _ b: Int, source: String, place: String) throws -> Int {
        let sa = nodes[a].shape, sb = nodes[b].shape
        guard sa.c == sb.c, sa.flat == sb.flat, sa.h == sb.h || sa.h == nil || sb.h == nil, sa.w == sb.w || sa.w == nil || sb.w == nil else {
            throw fail(place, "adds tensors of different shapes (\(sa.c)x\(sa.h ?? -1)x\(sa.w ?? -1) and \(sb.c)x\(sb.h ?? -1)x\(sb.w ?? -1))")
        }
        return append(.add, inputs: [a, b], source: source, shape: sa)
    }

    private func zeroPadding(_ v: JSONValue?, place: String) throws -> (Int, Int, Int, Int) {
        if let i = v?.int { return (i, i, i, i) }
        if let a = v?.array, a.count == 2 {
            if let y = a[0].int, let x = a[1].int { return (y, y, x, x) }
            if let ya = a[0].array, let xa = a[1].array, ya.count == 2, xa.count == 2,
               let t = ya[0].int, let b = ya[1].int, let l = xa[0].int, let r = xa[1].int {
                return (t, b, l, r)
            }
        }
        throw fail(place, "cannot read padding \(String(describing: v))")
    }

    private mutating func pool(_ kn: KerasNode, x: Int, isMax: Bool, place: String) throws -> Int {
        let cfg = kn.config
        try checkChannelsLast(cfg, place: place)
        let k = try pair(cfg["pool_size"], place: place, what: "pool_size", default: 2)
        let s = (cfg["strides"] == nil || cfg["strides"]!.isNull) ? k : try pair(cfg["strides"], place: place, what: "strides")
        let padding: Padding
        switch cfg["padding"]?.string ?? "valid" {
        case "valid": padding = .valid
        case "same": padding = .same
        case let p: throw fail(place, "padding '\(p)' is not supported")
        }
        // Keras never counts padded cells in an average.
        let p = PoolOp(kernel: k, stride: s, padding: padding, countIncludePad: false)
        let sh = nodes[x].shape
        let out = Shape(c: sh.c, h: spatial(sh.h, kernel: k[0], stride: s[0], dilation: 1, padding: padding, axis: 0),
                        w: spatial(sh.w, kernel: k[1], stride: s[1], dilation: 1, padding: padding, axis: 1))
        return append(.op(isMax ? .maxPool(p) : .avgPool(p)), inputs: [x], source: kn.path, shape: out)
    }

    private mutating func dense(_ kn: KerasNode, x: Int, place: String) throws -> Int {
        let cfg = kn.config
        guard nodes[x].shape.flat else { throw fail(place, "Dense on a feature map (no Flatten or global pooling before it) is not supported") }
        guard let units = cfg["units"]?.int, units > 0 else { throw fail(place, "bad units") }
        let useBias = cfg["use_bias"]?.bool ?? true
        let inF = nodes[x].shape.c
        guard kn.weights.count == (useBias ? 2 : 1) else {
            throw ResNetError.mapping(file: file, reason: "layer '\(kn.path)' (Dense) has \(kn.weights.count) variables, expected \(useBias ? 2 : 1)")
        }
        guard kn.weights[0].tensor.shape == [inF, units] else {
            throw ResNetError.mapping(file: file, reason: "\(kn.weights[0].name): kernel shape \(kn.weights[0].tensor.shape), expected [\(inF), \(units)]")
        }
        var tensors = ["weight": layoutChanged(kn.weights[0].tensor, [1, 0])]   // (in, out) → (out, in)
        var origins = ["weight": kn.weights[0]]
        if useBias {
            origins["bias"] = kn.weights[1]
            guard kn.weights[1].tensor.shape == [units] else {
                throw ResNetError.mapping(file: file, reason: "\(kn.weights[1].name): bias shape \(kn.weights[1].tensor.shape), expected [\(units)]")
            }
            tensors["bias"] = kn.weights[1].tensor
        }
        let op = DenseOp(name: "", inFeatures: inF, outFeatures: units, bias: useBias)
        let id = append(.op(.dense(op)), inputs: [x], source: kn.path, shape: Shape(c: units, h: nil, w: nil, flat: true), tensors: tensors, origins: origins)
        return try activation(cfg["activation"]?.string ?? "linear", x: id, source: kn.path, place: place)
    }

    /// The TensorFlow ops that PyTorch→Keras converters emit as `TFOpLambda` / `SlicingOpLambda`.
    private mutating func tfOp(_ kn: KerasNode, inputs: [Int], place: String) throws -> Int {
        let fn = kn.config["function"]?.string ?? ""
        func input(_ k: Int) throws -> Int {
            guard k < inputs.count else { throw fail(place, "operand \(k) is missing") }
            return inputs[k]
        }
        let args = kn.callArgs
        switch fn {
        case "nn.relu":
            let x = try input(0)
            return append(.op(.relu), inputs: [x], source: kn.path, shape: nodes[x].shape)
        case "identity":
            return try input(0)
        case "__operators__.add", "math.add":
            guard kn.inputs.count == 2 else { throw fail(place, "add needs two tensor operands") }
            return try add(try input(0), try input(1), source: kn.path, place: place)
        case "compat.v1.pad", "pad":
            let x = try input(0)
            guard (args["mode"]?.string ?? "CONSTANT").uppercased() == "CONSTANT",
                  (args["constant_values"]?.double ?? 0) == 0,
                  let p = args["paddings"]?.array, p.count == 4 else {
                throw fail(place, "only constant zero padding of a 4-D tensor is supported")
            }
            let pads = try p.map { row -> (Int, Int) in
                guard let r = row.array, r.count == 2, let a = r[0].int, let b = r[1].int, a >= 0, b >= 0 else {
                    throw fail(place, "cannot read paddings \(p)")
                }
                return (a, b)
            }
            guard pads[0] == (0, 0), !nodes[x].shape.flat, !nodes[x].shape.nchwView else { throw fail(place, "padding the batch axis is not supported") }
            var id = x
            if pads[1] != (0, 0) || pads[2] != (0, 0) {
                var s = nodes[id].shape
                s.h = s.h.map { $0 + pads[1].0 + pads[1].1 }; s.w = s.w.map { $0 + pads[2].0 + pads[2].1 }
                id = append(.op(.zeroPad(top: pads[1].0, bottom: pads[1].1, left: pads[2].0, right: pads[2].1)), inputs: [id], source: kn.path, shape: s)
            }
            if pads[3] != (0, 0) {
                var s = nodes[id].shape
                s.c += pads[3].0 + pads[3].1
                id = append(.op(.channelPad(before: pads[3].0, after: pads[3].1)), inputs: [id], source: kn.path, shape: s)
            }
            return id
        case "compat.v1.transpose", "transpose":
            let x = try input(0)
            guard args["perm"]?.array?.compactMap({ $0.int }) == [0, 3, 1, 2], !nodes[x].shape.flat, !nodes[x].shape.nchwView else {
                throw fail(place, "only transpose(perm=[0, 3, 1, 2]) before the classifier is supported")
            }
            var s = nodes[x].shape
            s.nchwView = true
            // A marker node: no canonical op, the layout change is resolved by the following squeeze.
            return append(.op(.flatten(.chw)), inputs: [x], source: kn.path + "#transpose", shape: s)
        case "__operators__.getitem":
            let x = try input(0)
            guard let spec = args["slice_spec"]?.array else { throw fail(place, "getitem without slice_spec") }
            return try getitem(spec, x: x, source: kn.path, place: place)
        default:
            throw fail(place, "TensorFlow op '\(fn)' is not supported (nn.relu, __operators__.add, compat.v1.pad, identity, compat.v1.transpose, __operators__.getitem)")
        }
    }

    private enum SliceItem: Equatable { case all, step(Int), index(Int) }

    private mutating func getitem(_ spec: [JSONValue], x: Int, source: String, place: String) throws -> Int {
        let items: [SliceItem] = try spec.map { v in
            if let i = v.int { return .index(i) }
            if let o = v.object {
                let start = o["start"] ?? .null, stop = o["stop"] ?? .null
                guard start.isNull || start.int == 0, stop.isNull else { throw fail(place, "slices with start/stop are not supported: \(v)") }
                let step = o["step"]?.int ?? 1
                guard step >= 1 else { throw fail(place, "slice step \(step) is not supported") }
                return step == 1 ? .all : .step(step)
            }
            throw fail(place, "cannot read slice item \(v)")
        }
        let s = nodes[x].shape
        if s.nchwView {
            // After transpose(0,3,1,2): (N, C, H, W). Converters squeeze W then H with index 0.
            var rest = items
            while rest.last == .all { rest.removeLast() }
            if !s.squeezedW, rest == [.all, .all, .all, .index(0)], s.w == 1 {
                var t = s; t.squeezedW = true
                return append(.op(.flatten(.chw)), inputs: [x], source: source + "#squeeze", shape: t)
            }
            if s.squeezedW, rest == [.all, .all, .index(0)], s.h == 1 {
                // (N, C, 1) → (N, C): the whole transpose/squeeze chain is a flatten of a 1×1 map.
                var chainStart = x
                while nodes[chainStart].source.hasSuffix("#transpose") || nodes[chainStart].source.hasSuffix("#squeeze") {
                    chainStart = nodes[chainStart].inputs[0]
                }
                return append(.op(.flatten(.chw)), inputs: [chainStart], source: source, shape: Shape(c: s.c, h: nil, w: nil, flat: true))
            }
            throw fail(place, "only squeezing a 1×1 spatial map after transpose is supported (spatial size \(s.h ?? -1)x\(s.w ?? -1))")
        }
        // NHWC: x[:, ::s, ::s, :] is the option-A subsample.
        var it = items
        while it.count < 4 { it.append(.all) }
        if it.count == 4, it[0] == .all, it[3] == .all, case let .step(a) = it[1], case let .step(b) = it[2], a == b {
            var t = s
            t.h = s.h.map { ($0 + a - 1) / a }; t.w = s.w.map { ($0 + a - 1) / a }
            return append(.op(.subsample(stride: a)), inputs: [x], source: source, shape: t)
        }
        throw fail(place, "slice \(items) is not supported (only x[:, ::s, ::s, :])")
    }

    // MARK: Step 2: cut into stem, blocks, head

    private func isMarker(_ n: Int) -> Bool {
        nodes[n].source.hasSuffix("#transpose") || nodes[n].source.hasSuffix("#squeeze") || nodes[n].source.hasSuffix("#permute")
    }

    /// Follows single-consumer nodes from `start` (exclusive) until an add or a fork.
    private func chain(from start: Int) -> (ops: [Int], end: Int?) {
        var ops: [Int] = []
        var cur = start
        while true {
            let cons = nodes[cur].consumers
            guard cons.count == 1 else { return (ops, cons.isEmpty ? nil : cur) }
            let next = cons[0]
            if case .add = nodes[next].kind { return (ops, next) }
            ops.append(next)
            cur = next
        }
    }

    private func cut(family: String) throws -> Result {
        var stemIDs: [Int] = []
        var blocks: [(pre: [Int], residual: [Int], shortcut: [Int], post: [Int], inC: Int, outC: Int, add: Int)] = []
        var cur = inputNode
        var pending: [Int] = []   // ops after an add, before the next fork
        var afterFirstBlock = false

        func place(_ n: Int) -> String { "layer '\(nodes[n].source)'" }

        while true {
            let cons = nodes[cur].consumers
            if cur == outputNode && cons.isEmpty { break }
            if cons.count == 1, case .add = nodes[cons[0]].kind {
                throw fail(place(cons[0]), "an add whose inputs do not fork from one tensor is not a residual block")
            }
            if cons.count == 1 {
                pending.append(cons[0]); cur = cons[0]; continue
            }
            guard cons.count == 2 else {
                throw fail(place(cur), "\(cons.count) layers consume this tensor; a residual block forks into exactly two branches")
            }
            // A fork: follow both branches to their add.
            func branch(_ first: Int) throws -> (ops: [Int], add: Int) {
                if case .add = nodes[first].kind { return ([], first) }
                var ops = [first]
                let (more, end) = chain(from: first)
                ops += more
                guard let end, case .add = nodes[end].kind else {
                    throw fail(place(first), "a branch that starts here does not end in an add")
                }
                return (ops, end)
            }
            let a = try branch(cons[0]), b = try branch(cons[1])
            guard a.add == b.add else {
                throw fail(place(cur), "the two branches from this tensor end in different adds ('\(nodes[a.add].source)', '\(nodes[b.add].source)')")
            }
            let weighted = { (ids: [Int]) in ids.filter { !nodes[$0].tensors.isEmpty }.count }
            let (residual, shortcut) = (weighted(a.ops), a.ops.count) >= (weighted(b.ops), b.ops.count) ? (a.ops, b.ops) : (b.ops, a.ops)
            // Ops between the previous add and this fork: a leading ReLU run ends the previous
            // block; the rest (a pre-activation BN + ReLU) starts this one.
            var pre: [Int] = []
            if afterFirstBlock {
                var post: [Int] = []
                var i = 0
                while i < pending.count, case .op(.relu) = nodes[pending[i]].kind { post.append(pending[i]); i += 1 }
                blocks[blocks.count - 1].post = post
                pre = Array(pending[i...])
            } else {
                stemIDs = pending
            }
            pending = []
            let inC = nodes[cur].shape.c
            blocks.append((pre, residual, shortcut, [], inC, nodes[a.add].shape.c, a.add))
            afterFirstBlock = true
            cur = a.add
        }
        var headIDs = pending
        if afterFirstBlock {
            // The leading ReLU run ends the last block (counted, then dropped at once: removing one at
            // a time from the front is quadratic in a long run).
            var run = 0
            while run < headIDs.count, case .op(.relu) = nodes[headIDs[run]].kind { run += 1 }
            blocks[blocks.count - 1].post = Array(headIDs.prefix(run))
            headIDs.removeFirst(run)
        } else {
            throw fail("model", "no residual block found (no tensor forks into two branches that meet at an add)")
        }

        // Step 3: names and tensors.
        var tensors: [String: Tensor] = [:]
        var sources: [TensorOrigin] = []
        func ops(_ ids: [Int], naming: (Op) -> String?) -> [Op] {
            ids.compactMap { id -> Op? in
                guard case var .op(op) = nodes[id].kind else { return nil }
                if isMarker(id) { return nil }
                if let name = naming(op) {
                    switch op {
                    case var .conv(c): c.name = name; op = .conv(c)
                    case var .batchNorm(b): b.name = name; op = .batchNorm(b)
                    case var .dense(d): d.name = name; op = .dense(d)
                    default: break
                    }
                    for (role, t) in nodes[id].tensors { tensors["\(name).\(role)"] = t }
                    for p in op.parameters {
                        let role = String(p.name.dropFirst(name.count + 1))
                        if let o = nodes[id].origins[role] {
                            let layout = role == "weight" ? (op.moduleKind == "conv" ? "HWIO→OIHW" : op.moduleKind == "dense" ? "(in,out)→(out,in)" : "") : ""
                            sources.append(TensorOrigin(canonical: p.name, source: o.name, sourceDType: o.sourceDType, shape: p.shape, transform: layout))
                        }
                    }
                }
                return op
            }
        }
        /// Stem: conv1, conv1_2, …; bn1, bn1_2, … (torchvision has one of each).
        func stemNaming() -> (Op) -> String? {
            var nc = 0, nb = 0
            return { op in
                switch op {
                case .conv: nc += 1; return nc == 1 ? "conv1" : "conv1_\(nc)"
                case .batchNorm: nb += 1; return nb == 1 ? "bn1" : "bn1_\(nb)"
                case .dense: return "stem_fc"
                default: return nil
                }
            }
        }
        /// Block branch: conv1, conv2, … and bn1, bn2, … counted over pre + residual ops.
        func blockNaming(_ block: String) -> (Op) -> String? {
            var nc = 0, nb = 0
            return { op in
                switch op {
                case .conv: nc += 1; return "\(block).conv\(nc)"
                case .batchNorm: nb += 1; return "\(block).bn\(nb)"
                case .dense: return "\(block).fc"
                default: return nil
                }
            }
        }
        let stem = ops(stemIDs, naming: stemNaming())

        var stages: [Stage] = []
        var stageBlocks: [Block] = []
        var blockOutputs: [(canonical: String, kerasPath: String)] = []
        for (i, blk) in blocks.enumerated() {
            if i > 0 && blk.inC != blk.outC {
                stages.append(Stage(blocks: stageBlocks)); stageBlocks = []
            }
            let name = "layer\(stages.count + 1).\(stageBlocks.count)"
            let inner = blockNaming(name)
            let pre = ops(blk.pre, naming: inner)
            let residual = ops(blk.residual, naming: inner)
            // Sequential indices as torchvision's `downsample` (conv at 0, bn at 1), counting weightless ops too.
            var index = 0
            let shortcut = ops(blk.shortcut, naming: { op in
                defer { index += 1 }
                switch op {
                case .conv, .batchNorm, .dense: return "\(name).downsample.\(index)"
                default: return nil
                }
            })
            let post = ops(blk.post, naming: { op in
                if case .batchNorm = op { return "\(name).post_bn" }
                return nil
            })
            stageBlocks.append(Block(name: name, pre: pre, residual: residual, shortcut: shortcut, post: post))
            blockOutputs.append((name, nodes[blk.post.last ?? blk.add].source))
        }
        stages.append(Stage(blocks: stageBlocks))
        var headBN = 0
        var nd = 0
        let head = ops(headIDs, naming: { op in
            switch op {
            case .batchNorm: headBN += 1; return headBN == 1 ? "post_bn" : "post_bn\(headBN)"
            case .conv: return "head_conv"
            case .dense: nd += 1; return nd == 1 ? "fc" : "fc\(nd)"
            default: return nil
            }
        })
        let inShape = nodes[inputNode].shape
        let classes: Int = nodes[outputNode].shape.flat ? nodes[outputNode].shape.c : 0
        let size: [Int]? = (inShape.h != nil && inShape.w != nil) ? [inShape.h!, inShape.w!] : nil
        let spec = ResNetSpec(family: family, inputChannels: inShape.c, classes: classes, inputSize: size,
                              stem: stem, stages: stages, head: head)
        let model = ResNetModel(spec: spec, tensors: tensors)
        try model.validate(file: file)
        let order = Dictionary(spec.parameters.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        sources.sort { order[$0.canonical, default: .max] < order[$1.canonical, default: .max] }
        return Result(model: model, sources: sources, blockOutputs: blockOutputs)
    }
}
