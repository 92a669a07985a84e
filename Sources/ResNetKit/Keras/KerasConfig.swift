import Foundation

// Turns a Keras model config (legacy `model_config` attribute or `.keras` `config.json`) into a
// flat KerasGraph, inlining nested Functional and Sequential sub-models. Weights are attached
// later by the readers, using the `LayerOrigin` recorded for each node.

/// Where a graph node came from, so that readers can find its weights.
struct LayerOrigin: Sendable {
    /// Config layer names from the outermost model down to this layer (`["model_3", "conv2d_7"]`).
    var names: [String]
    /// Keras 3 weight-file names along the same chain (`["functional_3", "conv2d_1"]`): the
    /// snake_case class name plus a per-class counter within each container.
    var genericNames: [String]
}

/// Keras' `to_snake_case` (keras/src/utils/naming.py), applied to class names to name the
/// weight groups of the v3 format: drop non-word characters, put `_` before each capitalised
/// word and between a lower-case letter and a capital, lower-case everything.
/// `Conv2D` → `conv2d`, `TFOpLambda` → `tf_op_lambda`, `ReLU` → `re_lu`.
func kerasSnakeCase(_ name: String) -> String {
    let chars = Array(name.unicodeScalars.filter {
        CharacterSet.alphanumerics.contains($0) || $0 == "_"
    })
    func isUpper(_ c: Unicode.Scalar) -> Bool { c.properties.isUppercase }
    func isLower(_ c: Unicode.Scalar) -> Bool { c.properties.isLowercase }
    // Pass 1: (.)([A-Z][a-z]+) → \1_\2, scanning left to right without overlap.
    var pass1: [Unicode.Scalar] = []
    var i = 0
    while i < chars.count {
        if i + 2 < chars.count, isUpper(chars[i + 1]), isLower(chars[i + 2]) {
            var j = i + 2
            while j < chars.count, isLower(chars[j]) { j += 1 }
            pass1.append(chars[i]); pass1.append("_")
            pass1.append(contentsOf: chars[(i + 1) ..< j])
            i = j
        } else {
            pass1.append(chars[i]); i += 1
        }
    }
    // Pass 2: ([a-z])([A-Z]) → \1_\2.
    var pass2: [Unicode.Scalar] = []
    i = 0
    while i < pass1.count {
        if i + 1 < pass1.count, isLower(pass1[i]), isUpper(pass1[i + 1]) {
            pass2.append(pass1[i]); pass2.append("_"); pass2.append(pass1[i + 1]); i += 2
        } else {
            pass2.append(pass1[i]); i += 1
        }
    }
    var out = String.UnicodeScalarView()
    out.append(contentsOf: pass2)
    return String(out).lowercased()
}

/// Keras' per-container unique naming: the first `conv2d` keeps its name, later ones get `_1`, `_2`, ….
struct GenericNamer {
    private var used: [String: Int] = [:]
    mutating func next(for className: String) -> String {
        let base = kerasSnakeCase(className)
        if let n = used[base] {
            used[base] = n + 1
            return "\(base)_\(n + 1)"
        }
        used[base] = 0
        return base
    }
}

/// Builds a flat graph from a model config.
struct KerasGraphBuilder {
    let file: String
    let place: String
    private(set) var nodes: [KerasNode] = []
    private(set) var origins: [LayerOrigin] = []
    private var topInputs: [Int] = []
    private var inputShape: [Int?]?

    init(file: String, place: String) {
        self.file = file
        self.place = place
    }

    private func invalid(_ where_: String, _ reason: String) -> ResNetError {
        .invalidInput(file: file, place: where_.isEmpty ? place : "\(place) \(where_)", reason: reason)
    }

    private static let modelClasses: Set<String> = ["Functional", "Model", "Sequential"]

    /// Builds the graph of the model described by `model` (`{"class_name": …, "config": {…}}`).
    mutating func build(_ model: JSONValue) throws -> (graph: KerasGraph, origins: [LayerOrigin]) {
        guard let className = model["class_name"]?.string, let config = model["config"], config.object != nil else {
            throw invalid("", "model config has no class_name/config")
        }
        let outputs = try inline(className: className, config: config, names: [], generics: [], bound: nil)
        guard topInputs.count == 1 else {
            throw ResNetError.unsupported(file: file, place: place,
                reason: "model has \(topInputs.count) inputs; exactly one is supported")
        }
        guard outputs.count == 1 else {
            throw ResNetError.unsupported(file: file, place: place,
                reason: "model has \(outputs.count) outputs; exactly one is supported")
        }
        let graph = KerasGraph(nodes: nodes, input: topInputs[0], output: outputs[0], inputShape: inputShape)
        return (graph, origins)
    }

    private static func layerName(_ entry: JSONValue) -> String? {
        entry["name"]?.string ?? entry["config"]?["name"]?.string
    }

    private static func isModel(_ entry: JSONValue) -> Bool {
        guard let cls = entry["class_name"]?.string else { return false }
        return modelClasses.contains(cls) || entry["config"]?["layers"]?.array != nil
    }

    private mutating func addNode(path: String, className: String, config: JSONValue, inputs: [Int],
                                  callArgs: JSONValue, origin: LayerOrigin) -> Int {
        let id = nodes.count
        nodes.append(KerasNode(id: id, path: path, className: className, config: config,
                               inputs: inputs, callArgs: callArgs))
        origins.append(origin)
        return id
    }

    private mutating func addInput(entry: JSONValue, name: String, names: [String], generics: [String], generic: String) -> Int {
        let cfg = entry["config"] ?? .object([:])
        if inputShape == nil, let shape = (cfg["batch_input_shape"] ?? cfg["batch_shape"])?.array, !shape.isEmpty {
            inputShape = shape.dropFirst().map { $0.int }
        }
        let id = addNode(path: (names + [name]).joined(separator: "/"), className: "InputLayer", config: cfg,
                         inputs: [], callArgs: .null,
                         origin: LayerOrigin(names: names + [name], genericNames: generics + [generic]))
        topInputs.append(id)
        return id
    }

    /// Inlines one (sub-)model; returns its output node ids. `bound` are the outer nodes feeding
    /// a nested model's inputs (nil for the outermost model).
    private mutating func inline(className: String, config: JSONValue, names: [String], generics: [String],
                                 bound: [Int]?) throws -> [Int] {
        guard let layers = config["layers"]?.array else {
            throw invalid(names.joined(separator: "/"), "model config has no `layers` list")
        }
        if className == "Sequential" || config["input_layers"] == nil {
            return try inlineSequential(layers: layers, names: names, generics: generics, bound: bound)
        }
        return try inlineFunctional(config: config, layers: layers, names: names, generics: generics, bound: bound)
    }

    private mutating func inlineSequential(layers: [JSONValue], names: [String], generics: [String],
                                           bound: [Int]?) throws -> [Int] {
        let scope = names.joined(separator: "/")
        var namer = GenericNamer()
        var current: Int
        var rest = layers[...]
        if let first = layers.first, first["class_name"]?.string == "InputLayer" {
            rest = layers.dropFirst()
            let name = KerasGraphBuilder.layerName(first) ?? "input"
            if let bound {
                guard bound.count == 1 else { throw invalid(scope, "Sequential model called with \(bound.count) inputs") }
                current = bound[0]
            } else {
                // Keras leaves a Sequential's own InputLayer out of its weight container.
                current = addInput(entry: first, name: name, names: names, generics: generics, generic: "input_layer")
            }
        } else if let bound {
            guard bound.count == 1 else { throw invalid(scope, "Sequential model called with \(bound.count) inputs") }
            current = bound[0]
        } else {
            // Old Keras 2 Sequential configs declare the input on the first layer.
            guard let first = layers.first else { throw invalid(scope, "Sequential model has no layers") }
            current = addInput(entry: first, name: "input", names: names, generics: generics, generic: "input_layer")
        }
        for entry in rest {
            guard let cls = entry["class_name"]?.string, let name = KerasGraphBuilder.layerName(entry) else {
                throw invalid(scope, "layer without class_name or name")
            }
            let generic = namer.next(for: cls)
            if KerasGraphBuilder.isModel(entry) {
                // A nested model without a config is refused, not force-unwrapped (found by fuzz-keras-config).
                guard let config = entry["config"] else { throw invalid(scope, "nested model '\(name)' has no config") }
                let outs = try inline(className: cls, config: config, names: names + [name],
                                      generics: generics + [generic], bound: [current])
                guard outs.count == 1 else { throw invalid(scope + "/" + name, "sub-model in a Sequential has \(outs.count) outputs") }
                current = outs[0]
            } else {
                current = addNode(path: (names + [name]).joined(separator: "/"), className: cls,
                                  config: entry["config"] ?? .null, inputs: [current], callArgs: .null,
                                  origin: LayerOrigin(names: names + [name], genericNames: generics + [generic]))
            }
        }
        return [current]
    }

    /// A reference to a layer output inside one model's scope.
    private struct Ref { var layer: String; var tensor: Int }

    /// The model's inputs or outputs in every form Keras 2.x and 3.x write: a list of
    /// `["name", node, tensor]` triples, a single triple (Keras 3 with one input/output), Keras 3
    /// `{"class_name": "__keras_tensor__", "config": {"keras_history": [...]}}` objects, and
    /// dicts (keyed inputs/outputs: values in sorted key order, as Keras flattens them) or lists
    /// nesting any of these.
    private func refList(_ value: JSONValue?, _ scope: String, _ what: String) throws -> [Ref] {
        guard let value, !value.isNull else { throw invalid(scope, "model config has no \(what)") }
        var refs: [Ref] = []
        func collect(_ v: JSONValue, depth: Int) throws {
            guard depth < 16 else { throw invalid(scope, "\(what) nests deeper than 16 levels") }
            switch v {
            case let .array(a):
                if a.first?.string != nil {
                    refs.append(try ref(v, scope))
                } else {
                    for x in a { try collect(x, depth: depth + 1) }
                }
            case let .object(o):
                if let history = o["config"]?["keras_history"] ?? o["keras_history"] {
                    refs.append(try ref(history, scope))
                } else {
                    for k in o.keys.sorted() { try collect(o[k]!, depth: depth + 1) }
                }
            default:
                throw invalid(scope, "\(what) holds \(v), which is not a tensor reference")
            }
        }
        try collect(value, depth: 0)
        guard !refs.isEmpty else { throw invalid(scope, "\(what) is empty") }
        return refs
    }

    private func ref(_ value: JSONValue, _ scope: String) throws -> Ref {
        guard let a = value.array, a.count >= 3, let name = a[0].string, let t = a[2].int, t >= 0 else {
            throw invalid(scope, "malformed tensor reference \(value)")
        }
        return Ref(layer: name, tensor: t)
    }

    /// Parses one layer's inbound nodes: the tensors it consumes and its call kwargs with
    /// tensor references replaced by `{"__input__": k}`.
    private func parseInbound(_ entry: JSONValue, name: String, scope: String, known: Set<String>) throws -> (refs: [Ref], kwargs: JSONValue) {
        let inbound = entry["inbound_nodes"]?.array ?? []
        if inbound.isEmpty { return ([], .null) }
        guard inbound.count == 1 else {
            throw ResNetError.unsupported(file: file, place: "\(place) \(scope.isEmpty ? name : scope + "/" + name)",
                reason: "layer is called \(inbound.count) times (shared layers are not supported)")
        }
        let node = inbound[0]
        var refs: [Ref] = []
        if node.object != nil {
            // Keras 3: {"args": [...], "kwargs": {...}} with __keras_tensor__ objects.
            func walk(_ v: JSONValue) throws -> JSONValue {
                switch v {
                case let .object(o):
                    if o["class_name"]?.string == "__keras_tensor__" {
                        guard let h = o["config"]?["keras_history"] else { throw invalid(scope + "/" + name, "keras tensor without keras_history") }
                        refs.append(try ref(h, scope))
                        return .object(["__input__": .number(Double(refs.count - 1))])
                    }
                    var out: [String: JSONValue] = [:]
                    for (k, x) in o { out[k] = try walk(x) }
                    return .object(out)
                case let .array(a): return .array(try a.map(walk))
                default: return v
                }
            }
            // Positional args first (in order), then keyword arguments.
            _ = try walk(node["args"] ?? .array([]))
            let kwargs = try walk(node["kwargs"] ?? .null)
            return (refs, kwargs)
        }
        // Keras 2: a list of [name, node, tensor, kwargs] refs, or a single ref (TFOpLambda form).
        guard let items = node.array, !items.isEmpty else { throw invalid(scope + "/" + name, "malformed inbound node \(node)") }
        let refItems = items[0].string != nil ? [node] : items
        var kwargs: JSONValue = .null
        for (i, item) in refItems.enumerated() {
            refs.append(try ref(item, scope))
            if i == 0, let k = item[3], k.object != nil { kwargs = k }
        }
        func walk2(_ v: JSONValue) -> JSONValue {
            switch v {
            case let .array(a):
                if a.count == 3, let n = a[0].string, known.contains(n), a[1].int != nil, let t = a[2].int, t >= 0 {
                    refs.append(Ref(layer: n, tensor: t))
                    return .object(["__input__": .number(Double(refs.count - 1))])
                }
                return .array(a.map(walk2))
            case let .object(o): return .object(o.mapValues(walk2))
            default: return v
            }
        }
        if kwargs.object != nil { kwargs = walk2(kwargs) }
        return (refs, kwargs)
    }

    private mutating func inlineFunctional(config: JSONValue, layers: [JSONValue], names: [String], generics: [String],
                                           bound: [Int]?) throws -> [Int] {
        let scope = names.joined(separator: "/")
        let inputRefs = try refList(config["input_layers"], scope, "input_layers")
        let outputRefs = try refList(config["output_layers"], scope, "output_layers")
        if let bound, bound.count != inputRefs.count {
            throw invalid(scope, "sub-model has \(inputRefs.count) inputs but is called with \(bound.count)")
        }
        struct Pending { var entry: JSONValue; var cls: String; var name: String; var generic: String }
        var namer = GenericNamer()
        var pending: [Pending] = []
        var known = Set<String>()
        var indexOf: [String: Int] = [:]
        for entry in layers {
            guard let cls = entry["class_name"]?.string, let name = KerasGraphBuilder.layerName(entry) else {
                throw invalid(scope, "layer without class_name or name")
            }
            guard known.insert(name).inserted else { throw invalid(scope, "two layers are named \(name)") }
            indexOf[name] = pending.count
            pending.append(Pending(entry: entry, cls: cls, name: name, generic: namer.next(for: cls)))
        }
        var inputIndex: [String: Int] = [:]
        for (k, r) in inputRefs.enumerated() where inputIndex[r.layer] == nil { inputIndex[r.layer] = k }
        // Each layer's inbound nodes are parsed once; a layer waits on one count per reference.
        var inbound = [(refs: [Ref], kwargs: JSONValue)](repeating: ([], .null), count: pending.count)
        var waiting = [Int](repeating: 0, count: pending.count)
        var dependents = [[Int]](repeating: [], count: pending.count)
        for (i, p) in pending.enumerated() where p.cls != "InputLayer" {
            let place = scope.isEmpty ? p.name : scope + "/" + p.name
            let (refs, kwargs) = try parseInbound(p.entry, name: p.name, scope: scope, known: known)
            if refs.isEmpty { throw invalid(place, "layer has no inbound nodes (not connected)") }
            for r in refs {
                guard let j = indexOf[r.layer] else { throw invalid(place, "refers to unknown layer \(r.layer)") }
                dependents[j].append(i)
                waiting[i] += 1
            }
            inbound[i] = (refs, kwargs)
        }
        // Kahn's topological sort; among the layers ready at once the earliest in the config goes
        // first, so a config already in topological order keeps its order, and one listing layers
        // before their inputs costs O(n log n), not a scan of the pending list per placed layer.
        var ready = MinHeap()
        for i in pending.indices where waiting[i] == 0 { ready.push(i) }
        var outputsOf: [String: [Int]] = [:]
        var placed = 0
        while let i = ready.pop() {
            let p = pending[i]
            if p.cls == "InputLayer" {
                if let bound {
                    guard let k = inputIndex[p.name] else {
                        throw invalid(scope + "/" + p.name, "InputLayer is not among the model's input_layers")
                    }
                    outputsOf[p.name] = [bound[k]]
                } else {
                    outputsOf[p.name] = [addInput(entry: p.entry, name: p.name, names: names, generics: generics, generic: p.generic)]
                }
            } else {
                let place = scope.isEmpty ? p.name : scope + "/" + p.name
                var inputs: [Int] = []
                for r in inbound[i].refs {
                    let outs = outputsOf[r.layer] ?? []
                    guard r.tensor < outs.count else {
                        throw invalid(place, "refers to output \(r.tensor) of \(r.layer), which has \(outs.count)")
                    }
                    inputs.append(outs[r.tensor])
                }
                if KerasGraphBuilder.isModel(p.entry) {
                    guard let config = p.entry["config"] else { throw invalid(p.name, "nested model has no config") }
                    outputsOf[p.name] = try inline(className: p.cls, config: config, names: names + [p.name],
                                                   generics: generics + [p.generic], bound: inputs)
                } else {
                    outputsOf[p.name] = [addNode(path: (names + [p.name]).joined(separator: "/"), className: p.cls,
                                                 config: p.entry["config"] ?? .null, inputs: inputs, callArgs: inbound[i].kwargs,
                                                 origin: LayerOrigin(names: names + [p.name], genericNames: generics + [p.generic]))]
                }
            }
            placed += 1
            for d in dependents[i] {
                waiting[d] -= 1
                if waiting[d] == 0 { ready.push(d) }
            }
        }
        if placed < pending.count {
            let stuck = firstItems(pending.indices.filter { waiting[$0] > 0 }.map { pending[$0].name }, 5)
            throw invalid(scope, "layers [\(stuck)] wait on each other (cycle or missing input)")
        }
        return try outputRefs.map { r in
            guard let outs = outputsOf[r.layer], r.tensor < outs.count else {
                throw invalid(scope, "output_layers refers to \(r.layer)[\(r.tensor)], which does not exist")
            }
            return outs[r.tensor]
        }
    }
}

/// The variables a layer of a known class must have, from its config alone. `nil` entries in a
/// shape are dimensions the config does not fix (input channels). Returns nil for classes this
/// reader does not know (their variables are taken as found).
func expectedVariableShapes(className: String, config: JSONValue) -> [[Int?]]? {
    let useBias = config["use_bias"]?.bool ?? true
    switch className {
    case "InputLayer", "Activation", "ReLU", "LeakyReLU", "Softmax", "Add", "Subtract", "Multiply", "Average",
         "Maximum", "Concatenate", "ZeroPadding2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
         "GlobalMaxPooling2D", "Flatten", "Dropout", "SpatialDropout2D", "Reshape", "Permute", "Identity",
         "TFOpLambda", "SlicingOpLambda", "Lambda", "Cropping2D", "UpSampling2D", "Rescaling":
        return []
    case "Conv2D", "Conv1D", "Conv3D":
        let k = config["kernel_size"]?.array?.map { $0.int } ?? []
        let f = config["filters"]?.int
        var shapes: [[Int?]] = [k + [nil, f]]
        if useBias { shapes.append([f]) }
        return shapes
    case "DepthwiseConv2D":
        let k = config["kernel_size"]?.array?.map { $0.int } ?? []
        var shapes: [[Int?]] = [k + [nil, config["depth_multiplier"]?.int ?? 1]]
        if useBias { shapes.append([nil]) }
        return shapes
    case "Dense":
        let u = config["units"]?.int
        var shapes: [[Int?]] = [[nil, u]]
        if useBias { shapes.append([u]) }
        return shapes
    case "BatchNormalization":
        let n = (config["scale"]?.bool ?? true ? 1 : 0) + (config["center"]?.bool ?? true ? 1 : 0) + 2
        return Array(repeating: [nil], count: n)
    default:
        return nil
    }
}

/// Rank of the variable names Keras uses, in the order a layer stores them; used to order a
/// nested model's flattened legacy weights back into per-layer order.
func kerasVariableRank(_ variableName: String) -> Int? {
    var base = Substring(variableName.split(separator: "/").last ?? "")
    if let colon = base.firstIndex(of: ":") { base = base[..<colon] }
    let order = ["kernel", "depthwise_kernel", "pointwise_kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"]
    return order.firstIndex(of: String(base))
}

/// A binary min-heap of indices: the ready layers of a topological sort, earliest first.
struct MinHeap {
    private var items: [Int] = []

    mutating func push(_ v: Int) {
        items.append(v)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i] < items[parent] else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Int? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count, items[l] < items[m] { m = l }
                if r < items.count, items[r] < items[m] { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}
