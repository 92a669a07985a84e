import Foundation

// Keras weights files in the legacy `save_weights` HDF5 layout: root attributes `layer_names`
// (every layer of `model.layers`, in that order), `backend`, `keras_version`; one group per layer
// with a `weight_names` attribute and datasets `<layer>/<layer>/<variable>:0`. Keras matches
// groups to layers by order, so the order and the variables per layer must be exactly Keras'.
//
// The layer graph comes from the same preset builders that read weights-only Keras files; the
// canonical-name ↔ Keras-variable correspondence comes from walking that graph with the same
// walker that maps every Keras file. So no second, hand-written naming table can drift from
// the reader; the written file is read back through the preset and compared bit for bit.

/// A Keras layout the writer knows: preset builder family and its `--arch` name for reading back.
private struct KerasLayout {
    var family: String        // v1, v2, seed
    var preset: String
    var description: String
}

private let kerasLayouts = [
    KerasLayout(family: "v1", preset: "keras-resnet-v1", description: "keras.applications ResNet (v1) layer names"),
    KerasLayout(family: "v2", preset: "keras-resnet-v2", description: "keras.applications ResNetV2 layer names"),
    KerasLayout(family: "seed", preset: "seed-keras", description: "the seed Keras model's layer order (Keras' generic layer names)"),
]

/// Stage widths as the preset builders take them: the output channels of each stage's 3x3 convolutions.
private func presetDimensions(_ spec: ResNetSpec) -> (blocks: [Int], widths: [Int], stemWidth: Int)? {
    guard case let .conv(stem)? = spec.stem.first(where: { if case .conv = $0 { return true } else { return false } }) else { return nil }
    var widths: [Int] = []
    for stage in spec.stages {
        guard let block = stage.blocks.first else { return nil }
        let w = (block.pre + block.residual).compactMap { op -> Int? in
            if case let .conv(c) = op, c.kernel == [3, 3] { return c.outChannels } else { return nil }
        }.first
        guard let w else { return nil }
        widths.append(w)
    }
    return (spec.stages.map(\.blocks.count), widths, stem.outChannels)
}

/// The Keras graph of `layout` sized like `spec`, with placeholder variables named as Keras names
/// them, walked into a canonical model; nil when the walk fails or its structure is not `spec`'s.
private func kerasCorrespondence(_ spec: ResNetSpec, layout: KerasLayout, file: String)
    -> (builder: PresetGraphBuilder, origins: [TensorOrigin])? {
    guard let dims = presetDimensions(spec) else { return nil }
    var b = PresetGraphBuilder()
    if layout.family == "seed" {
        Presets.buildSeed(&b, blocks: dims.blocks, widths: dims.widths, stemWidth: dims.stemWidth,
                          inputChannels: spec.inputChannels, classes: spec.classes)
    } else {
        Presets.buildKerasApplications(&b, blocks: dims.blocks, widths: dims.widths, v2: layout.family == "v2",
                                       stemWidth: dims.stemWidth, inputChannels: spec.inputChannels, classes: spec.classes)
    }
    var nodes = b.nodes
    var channels = [Int](repeating: 0, count: nodes.count)
    for n in nodes {
        let inC = n.inputs.first.map { channels[$0] } ?? spec.inputChannels
        let layer = n.path
        func v(_ variable: String, _ shape: [Int]) -> SourceTensor {
            SourceTensor(name: "\(layer)/\(layer)/\(variable):0", sourceDType: .float32, tensor: Tensor(zeros: shape))
        }
        switch n.className {
        case "Conv2D":
            guard let f = n.config["filters"]?.int, let k = n.config["kernel_size"]?[0]?.int else { return nil }
            nodes[n.id].weights = [v("kernel", [k, k, inC, f])] + ((n.config["use_bias"]?.bool ?? true) ? [v("bias", [f])] : [])
            channels[n.id] = f
        case "BatchNormalization":
            nodes[n.id].weights = ["gamma", "beta", "moving_mean", "moving_variance"].map { v($0, [inC]) }
            channels[n.id] = inC
        case "Dense":
            guard let u = n.config["units"]?.int else { return nil }
            nodes[n.id].weights = [v("kernel", [inC, u]), v("bias", [u])]
            channels[n.id] = u
        default:
            channels[n.id] = inC
        }
    }
    let graph = KerasGraph(nodes: nodes, input: 0, output: b.output, inputShape: [nil, nil, spec.inputChannels])
    guard let walked = try? KerasGraphWalker(graph: graph, file: file).walk(family: layout.preset),
          sameStructure(walked.model.spec, spec) else { return nil }
    return (b, walked.sources)
}

/// Writes a legacy Keras weights file for a keras.applications-shaped (or seed) model and reads it
/// back; any other structure gets a full-model file with its own `model_config` (``exportKerasModel``).
func exportKerasWeights(_ model: ResNetModel, to path: String, display: String, inputSize: [Int]? = nil) throws
    -> (layout: String, check: String, notes: [String]) {
    var found: (KerasLayout, PresetGraphBuilder, [TensorOrigin])?
    for layout in kerasLayouts {
        if let c = kerasCorrespondence(model.spec, layout: layout, file: display) { found = (layout, c.builder, c.origins); break }
    }
    guard let (layout, builder, origins) = found else {
        return try exportKerasModel(model, to: path, display: display, inputSize: inputSize)
    }
    var bySource: [String: TensorOrigin] = [:]
    for o in origins { bySource[o.source] = o }

    let writer = try HDF5Writer(path: path, display: display)
    let order = builder.kerasLayerOrder()
    let nodes = builder.nodes
    try writer.setStringAttribute("layer_names", of: "/", order.map { nodes[$0].path })
    try writer.setStringAttribute("backend", of: "/", ["tensorflow"], scalar: true)
    // The layout version Keras' loaders check (they only special-case Keras 1 files).
    try writer.setStringAttribute("keras_version", of: "/", ["2.20.1"], scalar: true)
    try writer.setStringAttribute("writer", of: "/", [toolVersion], scalar: true)
    var written = 0
    for id in order {
        let n = nodes[id]
        let layer = n.path
        try writer.createGroup("/" + layer)
        let variables = variableNames(n)
        try writer.setStringAttribute("weight_names", of: "/" + layer, variables.map { "\(layer)/\($0):0" })
        guard !variables.isEmpty else { continue }
        try writer.createGroup("/\(layer)/\(layer)")
        for v in variables {
            let source = "\(layer)/\(layer)/\(v):0"
            guard let o = bySource[source], let t = model.tensors[o.canonical] else {
                throw ResNetError.mapping(file: display, reason: "no canonical tensor for Keras variable \(source)")
            }
            // Canonical OIHW conv kernels and (out, in) dense kernels go back to HWIO and (in, out).
            let keras = t.shape.count == 4 ? t.permuted([2, 3, 1, 0]) : t.shape.count == 2 ? t.permuted([1, 0]) : t
            try writer.writeFloat32("/" + source, keras)
            written += 1
        }
    }
    try writer.close()
    guard written == model.tensors.count else {
        throw ResNetError.mapping(file: display, reason: "wrote \(written) Keras variables for \(model.tensors.count) canonical tensors")
    }

    // Read back exactly as a user's weights-only file would be read: through the preset.
    let file = try readKerasH5(bytes: try readWholeFile(path, display: display), name: display)
    let back = try loadKeras(file, arch: layout.preset)
    guard sameStructure(back.model.spec, model.spec) else {
        throw ResNetError.parityFailed(reason: "read-back of \(display): preset \(layout.preset) sees a different structure")
    }
    try requireSameTensors(model, back.model.tensors, file: display)
    return (layout.description,
            "reopened \(display) as a Keras weights file with --arch \(layout.preset): same structure, all \(model.tensors.count) tensors bit-identical",
            [])
}

/// Variable names of a layer in Keras' storage order.
private func variableNames(_ n: KerasNode) -> [String] {
    switch n.className {
    case "Conv2D": return (n.config["use_bias"]?.bool ?? true) ? ["kernel", "bias"] : ["kernel"]
    case "BatchNormalization": return ["gamma", "beta", "moving_mean", "moving_variance"]
    case "Dense": return ["kernel", "bias"]
    default: return []
    }
}
