import Foundation

/// A named architecture for `--arch`, used when a file carries weights but no layer graph.
///
/// Keras presets are built as the Keras layer graph the original Python code creates (same layer
/// order, names and defaults), so the same graph walker and graph interpreter that handle a file
/// with a config handle a preset too. A preset fixes the structure; widths, class count and input
/// channels come from the weights.
public struct PresetInfo: Sendable, Hashable, Codable {
    /// The `--arch` value.
    public var name: String
    /// What it describes and where that structure comes from.
    public var summary: String
    /// `keras` or `torch`: which kind of file it is meant for.
    public var framework: String
}

/// The architectures `--arch` accepts.
public enum Presets {
    /// Every preset, in the order `inspect --list-presets` prints them.
    public static let all: [PresetInfo] = [
        .init(name: "keras-resnet50", summary: "keras.applications ResNet50 (v1: stride on the first 1x1, conv bias, BN eps 1.001e-5), blocks 3-4-6-3", framework: "keras"),
        .init(name: "keras-resnet101", summary: "keras.applications ResNet101 (v1), blocks 3-4-23-3", framework: "keras"),
        .init(name: "keras-resnet152", summary: "keras.applications ResNet152 (v1), blocks 3-8-36-3", framework: "keras"),
        .init(name: "keras-resnet50v2", summary: "keras.applications ResNet50V2 (pre-activation, stride in the last block of a stack), blocks 3-4-6-3", framework: "keras"),
        .init(name: "keras-resnet101v2", summary: "keras.applications ResNet101V2, blocks 3-4-23-3", framework: "keras"),
        .init(name: "keras-resnet152v2", summary: "keras.applications ResNet152V2, blocks 3-8-36-3", framework: "keras"),
        .init(name: "keras-resnet-v1", summary: "keras.applications ResNet v1 code with any widths and blocks per stage (read from the weights)", framework: "keras"),
        .init(name: "keras-resnet-v2", summary: "keras.applications ResNetV2 code with any widths and blocks per stage (read from the weights)", framework: "keras"),
        .init(name: "seed-keras", summary: "the seed write-up's Keras ResNet: conv-BN-ReLU, ReLU'd 1x1 conv shortcut, TF 'same' padding, no BN in the stem (3-4-6-3 at full size; blocks and widths read from the weights)", framework: "keras"),
        .init(name: "torchvision-resnet18", summary: "torchvision resnet18: basic blocks 2-2-2-2, 7x7/2 stem + max pool, 1x1 conv + BN projection", framework: "torch"),
        .init(name: "torchvision-resnet34", summary: "torchvision resnet34: basic blocks 3-4-6-3", framework: "torch"),
        .init(name: "torchvision-resnet50", summary: "torchvision resnet50 (v1.5: stride on the 3x3 conv), bottleneck blocks 3-4-6-3", framework: "torch"),
        .init(name: "torchvision-resnet101", summary: "torchvision resnet101, bottleneck blocks 3-4-23-3", framework: "torch"),
        .init(name: "torchvision-resnet152", summary: "torchvision resnet152, bottleneck blocks 3-8-36-3", framework: "torch"),
        .init(name: "torchvision-wide_resnet50_2", summary: "torchvision wide_resnet50_2: resnet50 with twice the bottleneck width", framework: "torch"),
        .init(name: "torchvision-wide_resnet101_2", summary: "torchvision wide_resnet101_2: resnet101 with twice the bottleneck width", framework: "torch"),
        .init(name: "torchvision-resnext50_32x4d", summary: "torchvision resnext50_32x4d: bottleneck blocks 3-4-6-3, 32 groups", framework: "torch"),
        .init(name: "torchvision-resnext101_32x8d", summary: "torchvision resnext101_32x8d: bottleneck blocks 3-4-23-3, 32 groups", framework: "torch"),
        .init(name: "cifar-resnet20", summary: "CIFAR ResNet-20 (He et al. 2016, akamaster names): 3x3 stem, basic blocks 3-3-3, option A shortcuts", framework: "torch"),
        .init(name: "cifar-resnet32", summary: "CIFAR ResNet-32, option A, blocks 5-5-5", framework: "torch"),
        .init(name: "cifar-resnet44", summary: "CIFAR ResNet-44, option A, blocks 7-7-7", framework: "torch"),
        .init(name: "cifar-resnet56", summary: "CIFAR ResNet-56, option A, blocks 9-9-9", framework: "torch"),
        .init(name: "cifar-resnet110", summary: "CIFAR ResNet-110, option A, blocks 18-18-18", framework: "torch"),
        .init(name: "seed-torch", summary: "the seed write-up's PyTorch ResNet: conv(bias)-ReLU-BN blocks 3-4-6-3, ReLU'd 1x1 conv shortcut, no ReLU after the add, `classifier` head", framework: "torch"),
    ]

    /// Family and, for named depths, the blocks per stage the weights must show.
    static func kerasFamily(_ name: String) -> (family: String, blocks: [Int]?)? {
        switch name {
        case "keras-resnet50": return ("v1", [3, 4, 6, 3])
        case "keras-resnet101": return ("v1", [3, 4, 23, 3])
        case "keras-resnet152": return ("v1", [3, 8, 36, 3])
        case "keras-resnet50v2": return ("v2", [3, 4, 6, 3])
        case "keras-resnet101v2": return ("v2", [3, 4, 23, 3])
        case "keras-resnet152v2": return ("v2", [3, 8, 36, 3])
        case "keras-resnet-v1": return ("v1", nil)
        case "keras-resnet-v2": return ("v2", nil)
        case "seed-keras": return ("seed", nil)
        default: return nil
        }
    }

    /// Builds the Keras layer graph of a Keras preset, with widths, blocks per stage, classes and
    /// input channels read from the variables, and attaches the variables to its layers.
    ///
    /// Every block of these families has a fixed number of 3x3 convolutions (one in keras.applications
    /// bottlenecks, two in the seed's basic blocks) whose filter count is the stage width, so counting
    /// 3x3 kernels by output channels gives the stages without trusting any name.
    ///
    /// - Parameters:
    ///   - layerWeights: the file's weight groups in file order.
    ///   - namesAreSaveOrder: true for Keras 3 `.weights.h5` files, whose group names
    ///     (`conv2d_3`) are given at save time in the model's layer order; false for legacy files
    ///     whose names were given when each layer was created.
    static func kerasGraph(preset: String, layerWeights: [(layer: String, variables: [SourceTensor])],
                           namesAreSaveOrder: Bool, file: String) throws -> KerasGraph {
        guard let (family, expected) = kerasFamily(preset) else {
            let known = all.filter { $0.framework == "keras" }.map(\.name).joined(separator: ", ")
            throw ResNetError.usage("unknown Keras preset '\(preset)'; known: \(known)")
        }
        let groups = layerWeights.filter { !$0.variables.isEmpty }
        let kernels = groups.compactMap { g -> [Int]? in
            guard let s = g.variables.first?.tensor.shape, s.count == 4 else { return nil }
            return s
        }
        guard let stem = kernels.first(where: { $0[0] == 7 && $0[1] == 7 }),
              let head = groups.last(where: { $0.variables.first.map { $0.tensor.shape.count == 2 } ?? false }) else {
            throw ResNetError.mapping(file: file, reason: "preset \(preset): cannot find the 7x7 stem convolution and the dense classifier among the variables")
        }
        let perBlock = family == "seed" ? 2 : 1
        var count: [Int: Int] = [:]
        for k in kernels where k[0] == 3 && k[1] == 3 { count[k[3], default: 0] += 1 }
        let widths = count.keys.sorted()
        let blocks = widths.map { count[$0]! / perBlock }
        guard !widths.isEmpty, widths.allSatisfy({ count[$0]! % perBlock == 0 && count[$0]! > 0 }) else {
            throw ResNetError.mapping(file: file, reason: "preset \(preset): the 3x3 kernels (\(count.sorted { $0.key < $1.key })) do not form whole blocks")
        }
        if let expected, blocks != expected {
            throw ResNetError.mapping(file: file, reason: "preset \(preset) has blocks \(expected) per stage, the weights have \(blocks) (3x3 kernels per width \(widths))")
        }
        let inputChannels = stem[2], stemWidth = stem[3]
        let classes = head.variables[0].tensor.shape[1]
        var b = PresetGraphBuilder()
        switch family {
        case "v1", "v2":
            buildKerasApplications(&b, blocks: blocks, widths: widths, v2: family == "v2", stemWidth: stemWidth, inputChannels: inputChannels, classes: classes)
        default:
            buildSeed(&b, blocks: blocks, widths: widths, stemWidth: stemWidth, inputChannels: inputChannels, classes: classes)
        }
        return try b.attach(groups, namesAreSaveOrder: namesAreSaveOrder, file: file, preset: preset)
    }

    /// keras.applications ResNet (v1 `block1`/`stack1`) and ResNetV2 (`block2`/`stack2`), as keras writes them.
    static func buildKerasApplications(_ b: inout PresetGraphBuilder, blocks: [Int], widths: [Int], v2: Bool, stemWidth: Int, inputChannels: Int, classes: Int) {
        let eps = 1.001e-5   // keras.applications ResNet BN epsilon
        var x = b.input(channels: inputChannels)
        x = b.zeroPad(x, 3, name: "conv1_pad")
        x = b.conv(x, stemWidth, 7, strides: 2, name: "conv1_conv")
        if !v2 {
            x = b.bn(x, eps: eps, name: "conv1_bn")
            x = b.act(x, "relu", name: "conv1_relu")
        }
        x = b.zeroPad(x, 1, name: "pool1_pad")
        x = b.maxPool(x, 3, strides: 2, name: "pool1_pool")
        for (s, n) in blocks.enumerated() {
            let filters = widths[s]
            let stack = "conv\(s + 2)"
            if !v2 {
                for i in 1...n {
                    let name = "\(stack)_block\(i)"
                    let stride = (i == 1 && s > 0) ? 2 : 1
                    let shortcut: Int
                    if i == 1 {
                        let sc = b.conv(x, 4 * filters, 1, strides: stride, name: name + "_0_conv")
                        shortcut = b.bn(sc, eps: eps, name: name + "_0_bn")
                    } else {
                        shortcut = x
                    }
                    var y = b.conv(x, filters, 1, strides: stride, name: name + "_1_conv")
                    y = b.bn(y, eps: eps, name: name + "_1_bn")
                    y = b.act(y, "relu", name: name + "_1_relu")
                    y = b.conv(y, filters, 3, padding: "same", name: name + "_2_conv")
                    y = b.bn(y, eps: eps, name: name + "_2_bn")
                    y = b.act(y, "relu", name: name + "_2_relu")
                    y = b.conv(y, 4 * filters, 1, name: name + "_3_conv")
                    y = b.bn(y, eps: eps, name: name + "_3_bn")
                    y = b.add([shortcut, y], name: name + "_add")
                    x = b.act(y, "relu", name: name + "_out")
                }
            } else {
                for i in 1...n {
                    let name = "\(stack)_block\(i)"
                    // stack2: the stride sits in the last block of every stack but the last.
                    let stride = (i == n && s < blocks.count - 1) ? 2 : 1
                    var preact = b.bn(x, eps: eps, name: name + "_preact_bn")
                    preact = b.act(preact, "relu", name: name + "_preact_relu")
                    let shortcut: Int
                    if i == 1 {
                        shortcut = b.conv(preact, 4 * filters, 1, strides: stride, name: name + "_0_conv")
                    } else {
                        shortcut = stride > 1 ? b.maxPool(x, 1, strides: stride, name: nil) : x
                    }
                    var y = b.conv(preact, filters, 1, useBias: false, name: name + "_1_conv")
                    y = b.bn(y, eps: eps, name: name + "_1_bn")
                    y = b.act(y, "relu", name: name + "_1_relu")
                    y = b.zeroPad(y, 1, name: name + "_2_pad")
                    y = b.conv(y, filters, 3, strides: stride, useBias: false, name: name + "_2_conv")
                    y = b.bn(y, eps: eps, name: name + "_2_bn")
                    y = b.act(y, "relu", name: name + "_2_relu")
                    y = b.conv(y, 4 * filters, 1, name: name + "_3_conv")
                    x = b.add([shortcut, y], name: name + "_out")
                }
            }
        }
        if v2 {
            x = b.bn(x, eps: eps, name: "post_bn")
            x = b.act(x, "relu", name: "post_relu")
        }
        x = b.globalAvgPool(x, name: "avg_pool")
        x = b.dense(x, classes, activation: "softmax", name: "predictions")
        b.output = x
    }

    /// The seed write-up's Keras model (`ResNet.buildNet` / `resblock`), layers created in its order.
    static func buildSeed(_ b: inout PresetGraphBuilder, blocks: [Int], widths: [Int], stemWidth: Int, inputChannels: Int, classes: Int) {
        let eps = 1e-3   // Keras' BatchNormalization default, which the seed does not override
        var x = b.input(channels: inputChannels)
        x = b.conv(x, stemWidth, 7, strides: 2, padding: "same", name: nil)
        x = b.maxPool(x, 3, strides: 2, name: nil)
        for (k, n) in blocks.enumerated() {
            for idx in 0..<n {
                let downsample = idx == 0 && k != 0
                let filters = widths[k]
                var y = b.conv(x, filters, 3, strides: downsample ? 2 : 1, padding: "same", name: nil)
                y = b.bn(y, eps: eps, name: nil)
                y = b.act(y, "relu", name: nil)
                y = b.conv(y, filters, 3, padding: "same", name: nil)
                y = b.bn(y, eps: eps, name: nil)
                y = b.act(y, "relu", name: nil)
                var inputs = x
                if downsample {
                    inputs = b.conv(x, filters, 1, strides: 2, padding: "same", activation: "relu", name: nil)
                }
                let sum = b.add([inputs, y], name: nil)
                x = b.act(sum, "relu", name: nil)
            }
        }
        x = b.globalAvgPool(x, name: nil)
        x = b.dense(x, classes, activation: "softmax", name: nil)
        b.output = x
    }
}

/// Builds a Keras layer graph the way Keras code would: same classes, configs, default names.
struct PresetGraphBuilder {
    private(set) var nodes: [KerasNode] = []
    private var counters: [String: Int] = [:]
    var output = 0

    private static func snake(_ cls: String) -> String {
        // Keras' generic names: Conv2D → conv2d, BatchNormalization → batch_normalization.
        var out = ""
        let chars = Array(cls)
        for (i, c) in chars.enumerated() {
            if c.isUppercase, i > 0, chars[i - 1].isLowercase || (i + 1 < chars.count && chars[i + 1].isLowercase && chars[i - 1].isUppercase) {
                out += "_"
            }
            out += c.lowercased()
        }
        return out
    }

    private mutating func layer(_ cls: String, name: String?, _ config: [String: JSONValue], inputs: [Int]) -> Int {
        let base = Self.snake(cls)
        let n = counters[base, default: 0]
        counters[base] = n + 1
        let layerName = name ?? (n == 0 ? base : "\(base)_\(n)")
        var cfg = config
        cfg["name"] = .string(layerName)
        nodes.append(KerasNode(id: nodes.count, path: layerName, className: cls, config: .object(cfg), inputs: inputs))
        return nodes.count - 1
    }

    mutating func input(channels: Int) -> Int {
        layer("InputLayer", name: "input_1", [:], inputs: [])
    }
    mutating func conv(_ x: Int, _ filters: Int, _ kernel: Int, strides: Int = 1, padding: String = "valid",
                       useBias: Bool = true, activation: String = "linear", name: String?) -> Int {
        layer("Conv2D", name: name, [
            "filters": .number(Double(filters)), "kernel_size": .array([.number(Double(kernel)), .number(Double(kernel))]),
            "strides": .array([.number(Double(strides)), .number(Double(strides))]), "padding": .string(padding),
            "use_bias": .bool(useBias), "activation": .string(activation), "groups": .number(1),
        ], inputs: [x])
    }
    mutating func bn(_ x: Int, eps: Double, scale: Bool = true, center: Bool = true, name: String?) -> Int {
        layer("BatchNormalization", name: name, ["epsilon": .number(eps), "axis": .number(-1),
                                                 "scale": .bool(scale), "center": .bool(center)], inputs: [x])
    }
    mutating func act(_ x: Int, _ fn: String, name: String?) -> Int {
        layer("Activation", name: name, ["activation": .string(fn)], inputs: [x])
    }
    mutating func add(_ xs: [Int], name: String?) -> Int {
        layer("Add", name: name, [:], inputs: xs)
    }
    mutating func zeroPad(_ x: Int, _ p: Int, name: String?) -> Int {
        let pp: JSONValue = .array([.number(Double(p)), .number(Double(p))])
        return layer("ZeroPadding2D", name: name, ["padding": .array([pp, pp])], inputs: [x])
    }
    mutating func maxPool(_ x: Int, _ k: Int, strides: Int, name: String?) -> Int {
        layer("MaxPooling2D", name: name, ["pool_size": .number(Double(k)), "strides": .number(Double(strides)), "padding": .string("valid")], inputs: [x])
    }
    mutating func globalAvgPool(_ x: Int, name: String?) -> Int {
        layer("GlobalAveragePooling2D", name: name, [:], inputs: [x])
    }
    mutating func dense(_ x: Int, _ units: Int, activation: String, useBias: Bool = true, name: String?) -> Int {
        layer("Dense", name: name, ["units": .number(Double(units)), "activation": .string(activation),
                                    "use_bias": .bool(useBias)], inputs: [x])
    }
    mutating func maxPool(_ x: Int, _ k: Int, strides: Int, padding: String, name: String?) -> Int {
        layer("MaxPooling2D", name: name, ["pool_size": .number(Double(k)), "strides": .number(Double(strides)), "padding": .string(padding)], inputs: [x])
    }

    /// Gives a layer the file's variables (for graphs built from evidence, where each layer is
    /// made from one weight group).
    mutating func setWeights(_ id: Int, _ weights: [SourceTensor]) { nodes[id].weights = weights }

    /// The order of `model.layers` in Keras (see ``kerasLayerOrder(_:output:)``).
    func kerasLayerOrder() -> [Int] { ResNetKit.kerasLayerOrder(nodes, output: output) }

    /// Attaches the file's variables to the weighted layers: by layer name when every name
    /// matches, otherwise class by class in the order Keras gives the generic names.
    mutating func attach(_ groups: [(layer: String, variables: [SourceTensor])], namesAreSaveOrder: Bool,
                         file: String, preset: String) throws -> KerasGraph {
        let weighted = nodes.filter { ["Conv2D", "BatchNormalization", "Dense"].contains($0.className) }
        let byName = Dictionary(groups.map { (($0.layer as NSString).lastPathComponent, $0.variables) }, uniquingKeysWith: { a, _ in a })
        if weighted.allSatisfy({ byName[$0.path] != nil }) && groups.count == weighted.count {
            for n in weighted { nodes[n.id].weights = byName[n.path]! }
        } else {
            let order = namesAreSaveOrder ? kerasLayerOrder() : nodes.map(\.id)
            for cls in ["Conv2D", "BatchNormalization", "Dense"] {
                let base = Self.snake(cls)
                let ours = order.filter { nodes[$0].className == cls }
                // File groups of this class, by the counter in their generic name.
                let theirs = groups.compactMap { g -> (Int, (layer: String, variables: [SourceTensor]))? in
                    let name = (g.layer as NSString).lastPathComponent
                    if name == base { return (0, g) }
                    guard name.hasPrefix(base + "_"), let n = Int(name.dropFirst(base.count + 1)) else { return nil }
                    return (n, g)
                }.sorted { $0.0 < $1.0 }.map(\.1)
                guard ours.count == theirs.count else {
                    throw ResNetError.mapping(file: file, reason: "preset \(preset) has \(ours.count) \(cls) layers with weights, the file has \(theirs.count) groups named \(base)*")
                }
                for (id, g) in zip(ours, theirs) { nodes[id].weights = g.variables }
            }
            let matched = nodes.filter { !$0.weights.isEmpty }.count
            guard matched == groups.count else {
                throw ResNetError.mapping(file: file, reason: "preset \(preset) uses \(matched) weight groups, the file has \(groups.count)")
            }
        }
        return KerasGraph(nodes: nodes, input: 0, output: output, inputShape: [nil, nil, channels])
    }

    private var channels: Int? {
        nodes.first(where: { $0.className == "Conv2D" })?.weights.first?.tensor.shape[2]
    }
}

/// The order of `model.layers` in Keras: by decreasing depth (longest path to the output), ties
/// broken by first visit in a depth-first walk from the output that follows inputs in call order.
/// `nodes` are in topological order, each `id` equal to its index.
func kerasLayerOrder(_ nodes: [KerasNode], output: Int) -> [Int] {
    var consumers = [[Int]](repeating: [], count: nodes.count)
    for n in nodes { for i in n.inputs { consumers[i].append(n.id) } }
    var depth = [Int](repeating: 0, count: nodes.count)
    for n in nodes.reversed() {
        depth[n.id] = consumers[n.id].map { depth[$0] + 1 }.max() ?? 0
    }
    var visitIndex = [Int: Int]()
    var stack = [output]
    // Iterative pre-order DFS from the output, inputs in call order.
    while let n = stack.popLast() {
        if visitIndex[n] != nil { continue }
        visitIndex[n] = visitIndex.count
        for i in nodes[n].inputs.reversed() where visitIndex[i] == nil { stack.append(i) }
    }
    return nodes.map(\.id).filter { visitIndex[$0] != nil }.sorted {
        depth[$0] != depth[$1] ? depth[$0] > depth[$1] : visitIndex[$0]! < visitIndex[$1]!
    }
}
