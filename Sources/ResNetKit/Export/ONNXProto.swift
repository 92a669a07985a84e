// The only Swift file that touches the protoc-c types generated from tools/onnx-subset.proto:
// converts between ONNXModel (plain Swift values) and ONNX ModelProto wire bytes. C memory never
// escapes a call.
import CONNXProto
import Foundation

/// An attribute value of an ONNX node.
enum ONNXAttributeValue: Equatable, Sendable {
    case int(Int)
    case ints([Int])
    case float(Float)
    case string(String)
}

/// An ONNX graph node.
struct ONNXNode: Equatable, Sendable {
    var opType: String
    var name: String
    var inputs: [String]
    var outputs: [String]
    /// In the order they are written.
    var attributes: [(String, ONNXAttributeValue)]

    static func == (a: ONNXNode, b: ONNXNode) -> Bool {
        a.opType == b.opType && a.name == b.name && a.inputs == b.inputs && a.outputs == b.outputs
            && a.attributes.map(\.0) == b.attributes.map(\.0) && a.attributes.map(\.1) == b.attributes.map(\.1)
    }
}

/// An initializer: ONNX element type (1 float, 7 int64, 10 float16, 16 bfloat16), dims and
/// little-endian raw bytes.
struct ONNXTensor: Equatable, Sendable {
    var name: String
    var dataType: Int32
    var dims: [Int]
    var raw: [UInt8]
}

/// One dimension of a graph input or output: a number or a symbolic name.
enum ONNXDim: Equatable, Sendable {
    case value(Int)
    case param(String)
}

/// A float tensor graph input or output.
struct ONNXValueInfo: Equatable, Sendable {
    var name: String
    var dims: [ONNXDim]
}

/// The ONNX model this tool writes: one graph, default-domain opset.
struct ONNXModel: Equatable, Sendable {
    var irVersion: Int
    var opset: Int
    var producerName: String
    var producerVersion: String
    var docString: String
    var graphName: String
    var nodes: [ONNXNode]
    var initializers: [ONNXTensor]
    var inputs: [ONNXValueInfo]
    var outputs: [ONNXValueInfo]
    /// `metadata_props`, written in key order.
    var metadata: [String: String] = [:]
}

/// Owns every C allocation made while building a message, so one `defer` frees them all.
private final class Allocations {
    private var pointers: [UnsafeMutableRawPointer] = []

    func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        let p = strdup(s)!
        pointers.append(UnsafeMutableRawPointer(p))
        return p
    }

    func array<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let raw = calloc(1, max(count, 1) * MemoryLayout<T>.stride)!
        pointers.append(raw)
        return raw.bindMemory(to: T.self, capacity: max(count, 1))
    }

    func bytes(_ b: [UInt8]) -> ProtobufCBinaryData {
        let p = array(UInt8.self, count: b.count)
        p.update(from: b, count: b.count)
        return ProtobufCBinaryData(len: b.count, data: p)
    }

    func freeAll() {
        for p in pointers.reversed() { free(p) }
        pointers.removeAll()
    }
}

private func checkText(_ s: String, _ what: String, file: String) throws {
    if s.utf8.contains(0) { throw ResNetError.invalidInput(file: file, place: what, reason: "text contains a NUL character") }
}

/// Serialises `model` as ONNX ModelProto bytes.
func packONNX(_ model: ONNXModel, file: String) throws -> [UInt8] {
    let a = Allocations()
    defer { a.freeAll() }

    func valueInfo(_ v: ONNXValueInfo) throws -> UnsafeMutablePointer<Onnx__ValueInfoProto> {
        try checkText(v.name, "value \(v.name)", file: file)
        let dims = a.array(UnsafeMutablePointer<Onnx__TensorShapeProto__Dimension>?.self, count: v.dims.count)
        for (i, d) in v.dims.enumerated() {
            let dim = a.array(Onnx__TensorShapeProto__Dimension.self, count: 1)
            onnx__tensor_shape_proto__dimension__init(dim)
            switch d {
            case let .value(n):
                dim.pointee.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE
                dim.pointee.dim_value = Int64(n)
            case let .param(p):
                dim.pointee.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM
                dim.pointee.dim_param = a.string(p)
            }
            dims[i] = dim
        }
        let shape = a.array(Onnx__TensorShapeProto.self, count: 1)
        onnx__tensor_shape_proto__init(shape)
        shape.pointee.n_dim = v.dims.count
        shape.pointee.dim = dims
        let tensorType = a.array(Onnx__TypeProto__Tensor.self, count: 1)
        onnx__type_proto__tensor__init(tensorType)
        tensorType.pointee.has_elem_type = 1
        tensorType.pointee.elem_type = 1   // FLOAT
        tensorType.pointee.shape = shape
        let type = a.array(Onnx__TypeProto.self, count: 1)
        onnx__type_proto__init(type)
        type.pointee.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE
        type.pointee.tensor_type = tensorType
        let info = a.array(Onnx__ValueInfoProto.self, count: 1)
        onnx__value_info_proto__init(info)
        info.pointee.name = a.string(v.name)
        info.pointee.type = type
        return info
    }

    func strings(_ list: [String]) throws -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> {
        let p = a.array(UnsafeMutablePointer<CChar>?.self, count: list.count)
        for (i, s) in list.enumerated() { try checkText(s, "name \(s)", file: file); p[i] = a.string(s) }
        return p
    }

    let nodes = a.array(UnsafeMutablePointer<Onnx__NodeProto>?.self, count: model.nodes.count)
    for (k, n) in model.nodes.enumerated() {
        let node = a.array(Onnx__NodeProto.self, count: 1)
        onnx__node_proto__init(node)
        try checkText(n.opType, "node \(n.name)", file: file)
        node.pointee.op_type = a.string(n.opType)
        node.pointee.name = a.string(n.name)
        node.pointee.n_input = n.inputs.count
        node.pointee.input = try strings(n.inputs)
        node.pointee.n_output = n.outputs.count
        node.pointee.output = try strings(n.outputs)
        let attrs = a.array(UnsafeMutablePointer<Onnx__AttributeProto>?.self, count: n.attributes.count)
        for (i, (name, value)) in n.attributes.enumerated() {
            let attr = a.array(Onnx__AttributeProto.self, count: 1)
            onnx__attribute_proto__init(attr)
            attr.pointee.name = a.string(name)
            attr.pointee.has_type = 1
            switch value {
            case let .int(v):
                attr.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT
                attr.pointee.has_i = 1
                attr.pointee.i = Int64(v)
            case let .ints(vs):
                attr.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS
                let p = a.array(Int64.self, count: vs.count)
                for (j, v) in vs.enumerated() { p[j] = Int64(v) }
                attr.pointee.n_ints = vs.count
                attr.pointee.ints = p
            case let .float(f):
                attr.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT
                attr.pointee.has_f = 1
                attr.pointee.f = f
            case let .string(s):
                attr.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING
                attr.pointee.has_s = 1
                attr.pointee.s = a.bytes(Array(s.utf8))
            }
            attrs[i] = attr
        }
        node.pointee.n_attribute = n.attributes.count
        node.pointee.attribute = attrs
        nodes[k] = node
    }

    let inits = a.array(UnsafeMutablePointer<Onnx__TensorProto>?.self, count: model.initializers.count)
    for (k, t) in model.initializers.enumerated() {
        try checkText(t.name, "initializer \(t.name)", file: file)
        let tp = a.array(Onnx__TensorProto.self, count: 1)
        onnx__tensor_proto__init(tp)
        tp.pointee.name = a.string(t.name)
        tp.pointee.has_data_type = 1
        tp.pointee.data_type = t.dataType
        let dims = a.array(Int64.self, count: t.dims.count)
        for (j, d) in t.dims.enumerated() { dims[j] = Int64(d) }
        tp.pointee.n_dims = t.dims.count
        tp.pointee.dims = dims
        tp.pointee.has_raw_data = 1
        tp.pointee.raw_data = a.bytes(t.raw)
        inits[k] = tp
    }

    let graph = a.array(Onnx__GraphProto.self, count: 1)
    onnx__graph_proto__init(graph)
    graph.pointee.name = a.string(model.graphName)
    graph.pointee.n_node = model.nodes.count
    graph.pointee.node = nodes
    graph.pointee.n_initializer = model.initializers.count
    graph.pointee.initializer = inits
    let ins = a.array(UnsafeMutablePointer<Onnx__ValueInfoProto>?.self, count: model.inputs.count)
    for (i, v) in model.inputs.enumerated() { ins[i] = try valueInfo(v) }
    let outs = a.array(UnsafeMutablePointer<Onnx__ValueInfoProto>?.self, count: model.outputs.count)
    for (i, v) in model.outputs.enumerated() { outs[i] = try valueInfo(v) }
    graph.pointee.n_input = model.inputs.count
    graph.pointee.input = ins
    graph.pointee.n_output = model.outputs.count
    graph.pointee.output = outs

    let opset = a.array(Onnx__OperatorSetIdProto.self, count: 1)
    onnx__operator_set_id_proto__init(opset)
    opset.pointee.domain = a.string("")
    opset.pointee.has_version = 1
    opset.pointee.version = Int64(model.opset)
    let opsets = a.array(UnsafeMutablePointer<Onnx__OperatorSetIdProto>?.self, count: 1)
    opsets[0] = opset

    let m = a.array(Onnx__ModelProto.self, count: 1)
    onnx__model_proto__init(m)
    m.pointee.has_ir_version = 1
    m.pointee.ir_version = Int64(model.irVersion)
    m.pointee.n_opset_import = 1
    m.pointee.opset_import = opsets
    m.pointee.producer_name = a.string(model.producerName)
    m.pointee.producer_version = a.string(model.producerVersion)
    m.pointee.doc_string = a.string(model.docString)
    m.pointee.graph = graph
    let props = model.metadata.sorted { $0.key < $1.key }
    let entries = a.array(UnsafeMutablePointer<Onnx__StringStringEntryProto>?.self, count: props.count)
    for (i, (k, v)) in props.enumerated() {
        try checkText(k, "metadata key \(k)", file: file)
        try checkText(v, "metadata \(k)", file: file)
        let e = a.array(Onnx__StringStringEntryProto.self, count: 1)
        onnx__string_string_entry_proto__init(e)
        e.pointee.key = a.string(k)
        e.pointee.value = a.string(v)
        entries[i] = e
    }
    m.pointee.n_metadata_props = props.count
    m.pointee.metadata_props = entries

    let size = onnx__model_proto__get_packed_size(m)
    var out = [UInt8](repeating: 0, count: size)
    let written = out.withUnsafeMutableBufferPointer { onnx__model_proto__pack(m, $0.baseAddress) }
    guard written == size else {
        throw ResNetError.io(file: file, reason: "protobuf-c packed \(written) of \(size) bytes")
    }
    return out
}

/// Parses ONNX ModelProto bytes back into an ``ONNXModel`` (the fields this tool writes).
func unpackONNX(_ bytes: [UInt8], file: String) throws -> ONNXModel {
    guard let m = bytes.withUnsafeBufferPointer({ onnx__model_proto__unpack(nil, $0.count, $0.baseAddress) }) else {
        throw ResNetError.invalidInput(file: file, place: "ModelProto", reason: "not a parsable ONNX protobuf")
    }
    defer { onnx__model_proto__free_unpacked(m, nil) }
    func str(_ p: UnsafeMutablePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "" }
    guard let g = m.pointee.graph else {
        throw ResNetError.invalidInput(file: file, place: "ModelProto.graph", reason: "no graph")
    }
    var nodes: [ONNXNode] = []
    for i in 0..<g.pointee.n_node {
        guard let n = g.pointee.node[i] else { continue }
        var attrs: [(String, ONNXAttributeValue)] = []
        for j in 0..<n.pointee.n_attribute {
            guard let at = n.pointee.attribute[j] else { continue }
            let name = str(at.pointee.name)
            switch at.pointee.type {
            case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: attrs.append((name, .int(Int(at.pointee.i))))
            case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
                attrs.append((name, .ints((0..<at.pointee.n_ints).map { Int(at.pointee.ints[$0]) })))
            case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: attrs.append((name, .float(at.pointee.f)))
            case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING:
                let s = at.pointee.s
                attrs.append((name, .string(String(decoding: UnsafeBufferPointer(start: s.data, count: s.len), as: UTF8.self))))
            default:
                throw ResNetError.unsupported(file: file, place: "node \(str(n.pointee.name)) attribute \(name)", reason: "attribute type \(at.pointee.type.rawValue)")
            }
        }
        nodes.append(ONNXNode(opType: str(n.pointee.op_type), name: str(n.pointee.name),
                              inputs: (0..<n.pointee.n_input).map { str(n.pointee.input[$0]) },
                              outputs: (0..<n.pointee.n_output).map { str(n.pointee.output[$0]) }, attributes: attrs))
    }
    var inits: [ONNXTensor] = []
    for i in 0..<g.pointee.n_initializer {
        guard let t = g.pointee.initializer[i] else { continue }
        let raw = t.pointee.raw_data
        inits.append(ONNXTensor(name: str(t.pointee.name), dataType: t.pointee.data_type,
                                dims: (0..<t.pointee.n_dims).map { Int(t.pointee.dims[$0]) },
                                raw: raw.data == nil ? [] : Array(UnsafeBufferPointer(start: raw.data, count: raw.len))))
    }
    func infos(_ n: Int, _ list: UnsafeMutablePointer<UnsafeMutablePointer<Onnx__ValueInfoProto>?>?) -> [ONNXValueInfo] {
        (0..<n).compactMap { i -> ONNXValueInfo? in
            guard let v = list?[i] else { return nil }
            var dims: [ONNXDim] = []
            if let tt = v.pointee.type, tt.pointee.value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE,
               let shape = tt.pointee.tensor_type?.pointee.shape {
                for k in 0..<shape.pointee.n_dim {
                    guard let d = shape.pointee.dim[k] else { continue }
                    dims.append(d.pointee.value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM
                                ? .param(str(d.pointee.dim_param)) : .value(Int(d.pointee.dim_value)))
                }
            }
            return ONNXValueInfo(name: str(v.pointee.name), dims: dims)
        }
    }
    let opset = m.pointee.n_opset_import > 0 ? Int(m.pointee.opset_import[0]?.pointee.version ?? 0) : 0
    var metadata: [String: String] = [:]
    for i in 0..<m.pointee.n_metadata_props {
        guard let e = m.pointee.metadata_props[i] else { continue }
        metadata[str(e.pointee.key)] = str(e.pointee.value)
    }
    return ONNXModel(irVersion: Int(m.pointee.ir_version), opset: opset, producerName: str(m.pointee.producer_name),
                     producerVersion: str(m.pointee.producer_version), docString: str(m.pointee.doc_string),
                     graphName: str(g.pointee.name), nodes: nodes, initializers: inits,
                     inputs: infos(g.pointee.n_input, g.pointee.input), outputs: infos(g.pointee.n_output, g.pointee.output),
                     metadata: metadata)
}
