import Foundation

// The canonical model as an ONNX graph (opset 17, NCHW float32). Each canonical op becomes the
// ONNX op with the same arithmetic: TF `same` padding is ONNX `auto_pad = SAME_UPPER` (the odd
// pixel after, as TF does), the option-A shortcut is Slice with steps plus Pad on the channel
// axis, global average pooling is GlobalAveragePool + Flatten, dense is Gemm with transB.
// Canonical tensors are the initializers, under their canonical names. A weight the source stored
// as float16 or bfloat16 stays so: its initializer has that type and a Cast to float feeds the op,
// so the graph computes in float32 on exactly the stored values.

/// ONNX opset and IR version written (IR 8 is the one that goes with opset 17).
private let onnxOpset = 17
private let onnxIRVersion = 8

private struct ONNXGraphBuilder {
    var nodes: [ONNXNode] = []
    var initializers: [ONNXTensor] = []
    var counter = 0
    let model: ResNetModel
    /// Canonical tensors kept at float16/bfloat16; all others are float32.
    var dtypes: [String: DType] = [:]

    mutating func fresh(_ hint: String) -> String {
        counter += 1
        return "\(hint)_\(counter)"
    }

    mutating func node(_ op: String, _ inputs: [String], name: String? = nil, _ attrs: [(String, ONNXAttributeValue)] = []) -> String {
        let n = name ?? fresh(op.lowercased())
        let out = n + ":out"
        nodes.append(ONNXNode(opType: op, name: n, inputs: inputs, outputs: [out], attributes: attrs))
        return out
    }

    mutating func floatInit(_ name: String, _ t: Tensor) throws -> String {
        guard let d = dtypes[name], d == .float16 || d == .bfloat16 else {
            initializers.append(ONNXTensor(name: name, dataType: 1, dims: t.shape, raw: RawTensor(name: name, t).bytes))
            return name
        }
        let raw = try encodeTensor(t, name: name, dtype: d, file: ResNetError.modelPlaceholder).bytes
        initializers.append(ONNXTensor(name: name, dataType: d == .float16 ? 10 : 16, dims: t.shape, raw: raw))
        return node("Cast", [name], name: name + ".cast", [("to", .int(1))])
    }

    mutating func int64Init(_ hint: String, _ values: [Int]) -> String {
        let name = fresh(hint)
        var raw: [UInt8] = []
        for v in values { withUnsafeBytes(of: Int64(v).littleEndian) { raw += $0 } }
        initializers.append(ONNXTensor(name: name, dataType: 7, dims: [values.count], raw: raw))
        return name
    }

    /// Pads/auto_pad attributes for a window op. Unpadded pools say `auto_pad = VALID` rather
    /// than zero pads: onnxruntime's Pad fusion (1.31) folds a preceding zero Pad into a pool's
    /// `pads`, which for MaxPool (pads never win a max) and AveragePool without count_include_pad
    /// is not the same arithmetic; it leaves `VALID` pools alone. Measured on the keras.applications
    /// ResNetV2 stem (ZeroPadding2D → MaxPooling2D): 4.5e-4 off with pads, 3e-7 with VALID.
    func padding(_ p: Padding, pool: Bool = false) -> [(String, ONNXAttributeValue)] {
        switch p {
        case .valid: return pool ? [("auto_pad", .string("VALID"))] : [("pads", .ints([0, 0, 0, 0]))]
        case .same: return [("auto_pad", .string("SAME_UPPER"))]
        case let .explicit(t, b, l, r): return [("pads", .ints([t, l, b, r]))]
        }
    }

    mutating func apply(_ op: Op, _ x: String) throws -> String {
        switch op {
        case let .conv(c):
            var inputs = try [x, floatInit("\(c.name).weight", model.tensors["\(c.name).weight"]!)]
            if c.bias { try inputs.append(floatInit("\(c.name).bias", model.tensors["\(c.name).bias"]!)) }
            return node("Conv", inputs, name: c.name, [("kernel_shape", .ints(c.kernel)), ("strides", .ints(c.stride)),
                                                         ("dilations", .ints(c.dilation)), ("group", .int(c.groups))] + padding(c.padding))
        case let .batchNorm(b):
            let scale = try b.scale ? floatInit("\(b.name).weight", model.tensors["\(b.name).weight"]!)
                : floatInit("\(b.name).weight(ones)", Tensor(shape: [b.channels], data: .init(repeating: 1, count: b.channels)))
            let shift = try b.center ? floatInit("\(b.name).bias", model.tensors["\(b.name).bias"]!)
                : floatInit("\(b.name).bias(zeros)", Tensor(zeros: [b.channels]))
            let mean = try floatInit("\(b.name).running_mean", model.tensors["\(b.name).running_mean"]!)
            let variance = try floatInit("\(b.name).running_var", model.tensors["\(b.name).running_var"]!)
            return node("BatchNormalization", [x, scale, shift, mean, variance], name: b.name, [("epsilon", .float(Float(b.epsilon)))])
        case .relu:
            return node("Relu", [x])
        case let .maxPool(p):
            return node("MaxPool", [x], [("kernel_shape", .ints(p.kernel)), ("strides", .ints(p.stride))] + padding(p.padding, pool: true))
        case let .avgPool(p):
            return node("AveragePool", [x], [("kernel_shape", .ints(p.kernel)), ("strides", .ints(p.stride)),
                                             ("count_include_pad", .int(p.countIncludePad ? 1 : 0))] + padding(p.padding, pool: true))
        case let .zeroPad(t, b, l, r):
            return node("Pad", [x, int64Init("pads", [0, 0, t, l, 0, 0, b, r])], [("mode", .string("constant"))])
        case let .subsample(s):
            let starts = int64Init("starts", [0, 0]), ends = int64Init("ends", [Int(Int64.max), Int(Int64.max)])
            return node("Slice", [x, starts, ends, int64Init("axes", [2, 3]), int64Init("steps", [s, s])])
        case let .channelPad(before, after):
            return node("Pad", [x, int64Init("pads", [0, before, 0, 0, 0, after, 0, 0])], [("mode", .string("constant"))])
        case .globalAvgPool:
            return node("Flatten", [node("GlobalAveragePool", [x])], [("axis", .int(1))])
        case let .flatten(order):
            let y = order == .hwc ? node("Transpose", [x], [("perm", .ints([0, 2, 3, 1]))]) : x
            return node("Flatten", [y], [("axis", .int(1))])
        case let .dense(d):
            var inputs = try [x, floatInit("\(d.name).weight", model.tensors["\(d.name).weight"]!)]
            if d.bias { try inputs.append(floatInit("\(d.name).bias", model.tensors["\(d.name).bias"]!)) }
            return node("Gemm", inputs, name: d.name, [("transB", .int(1))])
        case .softmax:
            return node("Softmax", [x], [("axis", .int(1))])
        }
    }

    mutating func apply(_ ops: [Op], _ x: String) throws -> String {
        var y = x
        for op in ops { y = try apply(op, y) }
        return y
    }
}

/// The ONNX model for `model`.
func onnxModel(_ model: ResNetModel, inputSize: [Int]?, batch: Int?, dtypes: [String: DType] = [:],
               metadata: [String: String] = [:]) throws -> ONNXModel {
    var b = ONNXGraphBuilder(model: model, dtypes: dtypes)
    var x = try b.apply(model.spec.stem, "input")
    for stage in model.spec.stages {
        for block in stage.blocks {
            let pre = try b.apply(block.pre, x)
            let residual = try b.apply(block.residual, pre)
            let shortcut = try b.apply(block.shortcut, pre)
            let sum = b.node("Add", [residual, shortcut], name: block.name + ".add")
            x = try b.apply(block.post, sum)
        }
    }
    x = try b.apply(model.spec.head, x)
    // The graph output gets a plain name through an Identity.
    b.nodes.append(ONNXNode(opType: "Identity", name: "output_identity", inputs: [x], outputs: ["output"], attributes: []))
    let n: ONNXDim = batch.map { .value($0) } ?? .param("N")
    let size = inputSize ?? model.spec.inputSize
    let hw: [ONNXDim] = size.map { [.value($0[0]), .value($0[1])] } ?? [.param("H"), .param("W")]
    return ONNXModel(irVersion: onnxIRVersion, opset: onnxOpset, producerName: "resnet-convert",
                     producerVersion: toolVersion, docString: "canonical ResNet (\(model.spec.family)) exported by \(toolVersion)",
                     graphName: model.spec.family, nodes: b.nodes, initializers: b.initializers,
                     inputs: [ONNXValueInfo(name: "input", dims: [n, .value(model.spec.inputChannels)] + hw)],
                     outputs: [ONNXValueInfo(name: "output", dims: [n, .value(model.spec.classes)])], metadata: metadata)
}

/// Writes the ONNX model and reads it back: the parsed protobuf must equal what was built, and
/// every canonical initializer must hold the canonical tensor bit for bit.
func exportONNX(_ model: ResNetModel, to path: String, display: String, inputSize: [Int]?, batch: Int?,
                dtypes: [String: DType] = [:], metadata: [String: String] = [:]) throws
    -> (layout: String, check: String, notes: [String]) {
    let built = try onnxModel(model, inputSize: inputSize, batch: batch, dtypes: dtypes, metadata: metadata)
    let bytes = try packONNX(built, file: display)
    try bytes.withUnsafeBytes { try writeWholeFile($0, to: path, display: display) }
    guard let readBytes = FileManager.default.contents(atPath: path) else {
        throw ResNetError.io(file: display, reason: "cannot read the written file back")
    }
    let back = try unpackONNX([UInt8](readBytes), file: display)
    guard back == built else {
        throw ResNetError.parityFailed(reason: "read-back of \(display): the parsed graph (metadata included) differs from the one written")
    }
    var tensors: [String: Tensor] = [:]
    for t in back.initializers where model.tensors[t.name] != nil {
        let dtype: DType
        switch t.dataType {
        case 1: dtype = .float32
        case 10: dtype = .float16
        case 16: dtype = .bfloat16
        default: continue
        }
        guard dtype == dtypes[t.name] ?? .float32 else {
            throw ResNetError.parityFailed(reason: "read-back of \(display): initializer \(t.name) is \(dtype.rawValue), written as \((dtypes[t.name] ?? .float32).rawValue)")
        }
        let count = t.dims.reduce(1, *)
        guard t.raw.count == count * dtype.size else {
            throw ResNetError.parityFailed(reason: "read-back of \(display): initializer \(t.name) has \(t.raw.count) bytes for \(count) \(dtype.rawValue) values")
        }
        let values = t.raw.withUnsafeBytes { decodeTensor($0, dtype: dtype, shape: t.dims, scales: []) }
        tensors[t.name] = Tensor(shape: t.dims, data: values)
    }
    try requireSameTensors(model, tensors, file: display)
    var notes: [String] = []
    if (inputSize ?? model.spec.inputSize) == nil { notes.append("input height and width are symbolic (H, W); pass --input-size to fix them") }
    return ("ONNX opset \(onnxOpset), NCHW float32 input 'input', output 'output'",
            "re-parsed \(display): \(back.nodes.count) nodes as written, all \(model.tensors.count) canonical initializers bit-identical",
            notes)
}
