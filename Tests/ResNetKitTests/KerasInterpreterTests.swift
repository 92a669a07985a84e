import Foundation
import Testing
@testable import ResNetKit

// Hand-built Keras graphs checked against mathematical properties of each layer (no numbers
// invented for a framework): which pixel a one-tap kernel reads, the BN formula, counts of cells.

/// Parses a JSON literal written in the test.
private func json(_ text: String) -> JSONValue {
    try! JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
}

private func variable(_ name: String, _ t: Tensor) -> SourceTensor {
    SourceTensor(name: name, sourceDType: .float32, tensor: t)
}

/// A graph input → layers… chain; each layer reads the previous node unless `inputs` says otherwise.
private struct GraphBuilder {
    var nodes: [KerasNode] = [KerasNode(id: 0, path: "input_1", className: "InputLayer",
                                        config: json(#"{"name": "input_1"}"#), inputs: [])]
    @discardableResult
    mutating func add(_ className: String, _ config: String, inputs: [Int]? = nil, args: String? = nil,
                      weights: [Tensor] = [], path: String? = nil) -> Int {
        let id = nodes.count
        let p = path ?? "\(className.lowercased())_\(id)"
        nodes.append(KerasNode(id: id, path: p, className: className, config: json(config),
                               inputs: inputs ?? [id - 1], callArgs: args.map(json) ?? .null,
                               weights: weights.enumerated().map { variable("\(p)/var_\($0.offset)", $0.element) }))
        return id
    }
    var graph: KerasGraph { KerasGraph(nodes: nodes, input: 0, output: nodes.count - 1, inputShape: nil) }
    func run(_ x: Tensor) throws -> Tensor { try interpretKerasGraph(graph, input: x, file: "test.h5") }
}

/// x[n, h, w, c] = 1 + the row-major index: every cell distinct and non-zero.
private func ramp(_ shape: [Int]) -> Tensor {
    Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { Float($0 + 1) })
}

/// Deterministic values in [-1, 1).
private func noise(_ shape: [Int], seed: UInt64) -> Tensor {
    var s = seed &* 6364136223846793005 &+ 1442695040888963407
    let data = (0..<shape.reduce(1, *)).map { _ -> Float in
        s = s &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: s >> 11) % 2_000_000) / 1_000_000 - 1
    }
    return Tensor(shape: shape, data: data)
}

private func maxAbsDiff(_ a: Tensor, _ b: Tensor) -> Float {
    zip(a.data, b.data).map { abs($0 - $1) }.max() ?? 0
}

/// A 3x3 single-channel kernel (KH, KW, 1, 1) that is 1 at (kh, kw) and 0 elsewhere.
private func tap(_ kh: Int, _ kw: Int) -> Tensor {
    var k = Tensor(zeros: [3, 3, 1, 1]); k.data[kh * 3 + kw] = 1; return k
}

private func expectError(_ body: () throws -> Tensor, unsupported: Bool, place: String, mentions words: [String]) {
    do {
        _ = try body()
        Issue.record("expected an error at \(place)")
    } catch let error as ResNetError {
        switch (error, unsupported) {
        case let (.unsupported(file, p, reason), true), let (.invalidInput(file, p, reason), false):
            #expect(file == "test.h5")
            #expect(p == place)
            for w in words { #expect(reason.contains(w), "\(reason) should mention \(w)") }
        default:
            Issue.record("unexpected error kind: \(error)")
        }
    } catch {
        Issue.record("unexpected error type: \(error)")
    }
}

private let conv3x3Stride2Same = #"{"filters": 1, "kernel_size": [3, 3], "strides": [2, 2], "padding": "same", "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1, "activation": "linear", "use_bias": false}"#

@Test func tfSamePaddingWithStride2PutsTheExtraPixelAtTheBottomRight() throws {
    // 4x4 input, 3x3 kernel, stride 2: output 2x2, total padding 1, all of it after (top 0, bottom 1).
    let x = ramp([1, 4, 4, 1])
    var topLeft = GraphBuilder()
    topLeft.add("Conv2D", conv3x3Stride2Same, weights: [tap(0, 0)])
    let a = try topLeft.run(x)
    #expect(a.shape == [1, 2, 2, 1])
    // tap (0, 0) of output (oh, ow) reads input (2 oh, 2 ow): no padding above or to the left.
    #expect(a.data == [x.data[0], x.data[2], x.data[8], x.data[10]])

    var bottomRight = GraphBuilder()
    bottomRight.add("Conv2D", conv3x3Stride2Same, weights: [tap(2, 2)])
    let b = try bottomRight.run(x)
    // tap (2, 2) reads input (2 oh + 2, 2 ow + 2): row/column 4 is the padding below/right.
    #expect(b.data == [x.data[2 * 4 + 2], 0, 0, 0])
}

@Test func convSamePaddingWithStride1IsSymmetricForAnOddKernel() throws {
    let x = ramp([1, 3, 3, 1])
    var g = GraphBuilder()
    g.add("Conv2D", #"{"filters": 1, "kernel_size": 3, "strides": 1, "padding": "same", "use_bias": true, "activation": "relu"}"#,
          weights: [tap(1, 1), Tensor(shape: [1], data: [-5])])
    let y = try g.run(x)
    // the centre tap reproduces the input; bias -5 then relu
    #expect(y.data == x.data.map { max($0 - 5, 0) })
}

@Test func im2colConvolutionAgreesWithTheDirectLoop() {
    let cases: [(h: Int, w: Int, c: Int, f: Int, k: (Int, Int), s: (Int, Int), d: (Int, Int), g: Int, pad: KPad2D)] = [
        (7, 6, 4, 6, (3, 3), (2, 2), (1, 1), 1, KPad2D(top: 1, bottom: 1, left: 0, right: 1)),
        (5, 5, 4, 4, (3, 2), (1, 1), (2, 1), 2, KPad2D(top: 2, bottom: 1, left: 1, right: 0)),
        (4, 4, 3, 5, (1, 1), (1, 1), (1, 1), 1, .zero),
        (6, 6, 6, 3, (1, 1), (2, 2), (1, 1), 3, .zero),
    ]
    for (i, t) in cases.enumerated() {
        let x = noise([2, t.h, t.w, t.c], seed: UInt64(i))
        let k = noise([t.k.0, t.k.1, t.c / t.g, t.f], seed: UInt64(100 + i))
        let b = noise([t.f], seed: UInt64(200 + i))
        let fast = kConv2D(x, kernel: k, bias: b, stride: t.s, dilation: t.d, pad: t.pad, groups: t.g)
        let slow = kConv2DDirect(x, kernel: k, bias: b, stride: t.s, dilation: t.d, pad: t.pad, groups: t.g)
        #expect(fast.shape == slow.shape)
        #expect(maxAbsDiff(fast, slow) < 1e-5, "case \(i)")
    }
}

@Test func batchNormalizationAppliesTheInferenceFormulaPerChannel() throws {
    let gamma: [Float] = [2, 0.5], beta: [Float] = [1, -1], mean: [Float] = [3, -2], variance: [Float] = [4, 0.25]
    let eps: Float = 0.001
    let x = ramp([1, 2, 2, 2])
    var g = GraphBuilder()
    g.add("BatchNormalization", #"{"axis": [3], "epsilon": 0.001, "center": true, "scale": true}"#,
          weights: [gamma, beta, mean, variance].map { Tensor(shape: [2], data: $0) })
    let y = try g.run(x)
    for i in 0..<x.count {
        let c = i % 2
        let expected = (Double(x.data[i]) - Double(mean[c])) / (Double(variance[c]) + Double(eps)).squareRoot()
            * Double(gamma[c]) + Double(beta[c])
        #expect(abs(Double(y.data[i]) - expected) < 1e-5)
    }
}

@Test func batchNormalizationWithoutScaleOrCenterReadsOnlyTheMovingStatistics() throws {
    let x = ramp([1, 1, 2, 2])
    var g = GraphBuilder()
    g.add("BatchNormalization", #"{"axis": -1, "epsilon": 0, "center": false, "scale": false}"#,
          weights: [Tensor(shape: [2], data: [1, 2]), Tensor(shape: [2], data: [4, 16])])
    let y = try g.run(x)
    let expected: [Float] = [0, 0, 1, 0.5]   // (x - mean) / sqrt(var): (1-1)/2, (2-2)/4, (3-1)/2, (4-2)/4
    #expect(y.data == expected)

    var wrong = GraphBuilder()
    wrong.add("BatchNormalization", #"{"axis": -1, "center": true, "scale": false}"#, weights: [Tensor(shape: [2], data: [1, 2])],
              path: "bn")
    expectError({ try wrong.run(x) }, unsupported: false, place: "bn", mentions: ["BatchNormalization", "3 variables", "beta"])
}

@Test func batchNormalizationOnAnotherAxisIsRefused() {
    var g = GraphBuilder()
    g.add("BatchNormalization", #"{"axis": [1]}"#, weights: [], path: "bn_first")
    expectError({ try g.run(ramp([1, 2, 2, 2])) }, unsupported: true, place: "bn_first", mentions: ["axis"])
}

@Test func averagePoolingSameExcludesPaddedCellsFromTheCount() throws {
    // 3x3 input, pool 2, stride 2, same: output 2x2 with one padded row and column at the end.
    let x = ramp([1, 3, 3, 1])   // 1 2 3 / 4 5 6 / 7 8 9
    var g = GraphBuilder()
    g.add("AveragePooling2D", #"{"pool_size": [2, 2], "strides": null, "padding": "same", "data_format": "channels_last"}"#)
    let y = try g.run(x)
    #expect(y.shape == [1, 2, 2, 1])
    let expected: [Float] = [12 / 4, 9 / 2, 15 / 2, 9]   // (1+2+4+5)/4, (3+6)/2, (7+8)/2, 9/1
    #expect(y.data == expected)
}

@Test func maxPoolingSameNeverPicksAPaddedCell() throws {
    let x = Tensor(shape: [1, 3, 3, 1], data: (1...9).map { -Float($0) })
    var g = GraphBuilder()
    g.add("MaxPooling2D", #"{"pool_size": [2, 2], "strides": [2, 2], "padding": "same"}"#)
    let y = try g.run(x)
    #expect(y.data == [-1, -3, -7, -9])
}

@Test func poolingValidDropsTheRemainder() throws {
    var g = GraphBuilder()
    g.add("MaxPooling2D", #"{"pool_size": 3, "strides": 2, "padding": "valid"}"#)
    let y = try g.run(ramp([1, 6, 6, 1]))
    // windows start at 0 and 2: out = floor((6 - 3) / 2) + 1 = 2; the max is the bottom-right cell
    #expect(y.shape == [1, 2, 2, 1])
    #expect(y.data == [15, 17, 27, 29])
}

@Test func zeroPaddingAcceptsIntPairAndPairOfPairs() throws {
    let x = ramp([1, 2, 2, 1])
    for (config, shape) in [("1", [1, 4, 4, 1]), ("[1, 2]", [1, 4, 6, 1]), ("[[0, 1], [2, 0]]", [1, 3, 4, 1])] {
        var g = GraphBuilder()
        g.add("ZeroPadding2D", #"{"padding": \#(config), "data_format": "channels_last"}"#)
        let y = try g.run(x)
        #expect(y.shape == shape)
        #expect(y.data.reduce(0, +) == x.data.reduce(0, +))
    }
    var g = GraphBuilder()
    g.add("ZeroPadding2D", #"{"padding": [[0, 1], [2, 0]]}"#)
    let y = try g.run(x)
    // rows: x0, x1, pad; columns: pad, pad, x0, x1
    #expect(y.data == [0, 0, 1, 2, 0, 0, 3, 4, 0, 0, 0, 0])
}

@Test func globalAveragePoolingFlattenAndDenseSoftmax() throws {
    let x = ramp([2, 2, 2, 3])
    var g = GraphBuilder()
    g.add("GlobalAveragePooling2D", #"{"data_format": "channels_last", "keepdims": true}"#)
    g.add("Flatten", #"{"data_format": "channels_last"}"#)
    let kernel = noise([3, 4], seed: 7), bias = noise([4], seed: 8)
    g.add("Dense", #"{"units": 4, "activation": "softmax", "use_bias": true}"#, weights: [kernel, bias])
    var captured: [String: Tensor] = [:]
    let y = try interpretKerasGraph(g.graph, input: x, file: "test.h5") { captured[$0.path] = $1 }
    #expect(captured["globalaveragepooling2d_1"]?.shape == [2, 1, 1, 3])
    let pooled = captured["flatten_2"]!
    #expect(pooled.shape == [2, 3])
    // sample 0 channel 0 holds 1, 4, 7, 10
    #expect(pooled.data[0] == 5.5)
    #expect(y.shape == [2, 4])
    for n in 0..<2 {
        let row = Array(y.data[(n * 4)..<(n * 4 + 4)])
        #expect(abs(row.reduce(0, +) - 1) < 1e-6)
        // softmax keeps the order of the logits
        let logits = (0..<4).map { j in bias.data[j] + (0..<3).map { pooled.data[n * 3 + $0] * kernel.data[$0 * 4 + j] }.reduce(0, +) }
        #expect(row.indices.max { row[$0] < row[$1] } == logits.indices.max { logits[$0] < logits[$1] })
    }
}

@Test func flattenKeepsNHWCOrder() throws {
    var g = GraphBuilder()
    g.add("Flatten", "{}")
    let x = ramp([1, 2, 2, 3])
    #expect(try g.run(x).data == x.data)
}

@Test func addLayerSumsAllInputsAndTFAddReadsYFromKwargs() throws {
    var g = GraphBuilder()
    let a = g.add("ReLU", #"{"max_value": null, "negative_slope": 0.0, "threshold": 0.0}"#, inputs: [0])
    let b = g.add("Activation", #"{"activation": "linear"}"#, inputs: [0])
    let sum = g.add("Add", "{}", inputs: [0, a, b])
    g.add("TFOpLambda", #"{"function": "__operators__.add"}"#, inputs: [sum, 0], args: #"{"y": {"__input__": 1}, "name": null}"#)
    let x = Tensor(shape: [1, 1, 2, 1], data: [-1, 2])
    // x + relu(x) + x + x
    #expect(try g.run(x).data == [-3, 8])
}

@Test func tfOpsPadGetitemTransposeGiveTheShapesTFGives() throws {
    // The ResNet-20 "option A" shortcut and the converted head, as tf_keras records them.
    var g = GraphBuilder()
    let sub = g.add("SlicingOpLambda", #"{"function": "__operators__.getitem"}"#,
                    args: #"{"slice_spec": [{"start": null, "stop": null, "step": null}, {"start": null, "stop": null, "step": 2}, {"start": null, "stop": null, "step": 2}, {"start": null, "stop": null, "step": null}]}"#)
    g.add("TFOpLambda", #"{"function": "compat.v1.pad"}"#,
          args: #"{"paddings": [[0, 0], [0, 0], [0, 0], [1, 1]], "mode": "CONSTANT", "name": null, "constant_values": 0}"#)
    g.add("GlobalAveragePooling2D", #"{"keepdims": true}"#)
    let tr = g.add("TFOpLambda", #"{"function": "compat.v1.transpose"}"#, args: #"{"perm": [0, 3, 1, 2], "name": "transpose", "conjugate": false}"#)
    let s1 = g.add("SlicingOpLambda", #"{"function": "__operators__.getitem"}"#,
                   args: #"{"slice_spec": [{"start": null, "stop": null, "step": null}, {"start": null, "stop": null, "step": null}, {"start": null, "stop": null, "step": null}, 0]}"#)
    g.add("SlicingOpLambda", #"{"function": "__operators__.getitem"}"#,
          args: #"{"slice_spec": [{"start": null, "stop": null, "step": null}, {"start": null, "stop": null, "step": null}, 0]}"#)
    let x = ramp([2, 4, 4, 2])
    var shapes: [Int: [Int]] = [:], values: [Int: Tensor] = [:]
    let y = try interpretKerasGraph(g.graph, input: x, file: "test.h5") { shapes[$0.id] = $1.shape; values[$0.id] = $1 }
    #expect(shapes[sub] == [2, 2, 2, 2])
    // x[:, ::2, ::2, :] keeps rows and columns 0 and 2
    #expect(values[sub]!.data[0..<8] == [1, 2, 5, 6, 17, 18, 21, 22])
    #expect(shapes[sub + 1] == [2, 2, 2, 4])
    #expect(shapes[tr] == [2, 4, 1, 1])
    #expect(shapes[s1] == [2, 4, 1])
    #expect(y.shape == [2, 4])
    // the padded channels are zero; the real ones are the means of the subsampled pixels
    #expect(y.data[0] == 0 && y.data[3] == 0)
    #expect(y.data[1] == (1 + 5 + 17 + 21) / 4)
}

@Test func getitemFollowsPythonSliceRules() throws {
    var g = GraphBuilder()
    g.add("SlicingOpLambda", #"{"function": "__operators__.getitem"}"#,
          args: #"{"slice_spec": [-1, {"start": null, "stop": null, "step": -1}, {"start": 1, "stop": -1, "step": null}]}"#)
    let y = try g.run(ramp([2, 3, 4]))
    // last batch row, rows reversed, columns 1 and 2
    #expect(y.shape == [3, 2])
    #expect(y.data == [22, 23, 18, 19, 14, 15])
}

@Test func unknownLayerClassIsRefusedByPathAndClass() {
    var g = GraphBuilder()
    g.add("LayerNormalization", #"{"axis": -1}"#, path: "model_3/layer_norm")
    expectError({ try g.run(ramp([1, 2, 2, 1])) }, unsupported: true, place: "model_3/layer_norm",
                mentions: ["LayerNormalization"])
}

@Test func unknownTFFunctionActivationAndKwargAreRefused() {
    var f = GraphBuilder()
    f.add("TFOpLambda", #"{"function": "math.sigmoid"}"#, path: "tf.math.sigmoid")
    expectError({ try f.run(ramp([1, 2])) }, unsupported: true, place: "tf.math.sigmoid", mentions: ["TFOpLambda", "math.sigmoid"])
    var a = GraphBuilder()
    a.add("Activation", #"{"activation": "swish"}"#, path: "act")
    expectError({ try a.run(ramp([1, 2])) }, unsupported: true, place: "act", mentions: ["swish"])
    var k = GraphBuilder()
    k.add("TFOpLambda", #"{"function": "compat.v1.pad"}"#, args: #"{"paddings": [[0, 0], [1, 1]], "mode": "REFLECT"}"#, path: "pad")
    expectError({ try k.run(ramp([1, 2])) }, unsupported: true, place: "pad", mentions: ["REFLECT"])
    var r = GraphBuilder()
    r.add("ReLU", #"{"max_value": 6.0}"#, path: "relu6")
    expectError({ try r.run(ramp([1, 2])) }, unsupported: true, place: "relu6", mentions: ["max_value"])
    var c = GraphBuilder()
    c.add("Conv2D", #"{"filters": 1, "kernel_size": 1, "data_format": "channels_first"}"#, path: "conv_cf")
    expectError({ try c.run(ramp([1, 1, 2, 2])) }, unsupported: true, place: "conv_cf", mentions: ["channels_first"])
}

@Test func weightShapesAndGraphOrderAreChecked() {
    var g = GraphBuilder()
    g.add("Conv2D", conv3x3Stride2Same, weights: [Tensor(zeros: [3, 3, 2, 1])], path: "conv")
    expectError({ try g.run(ramp([1, 4, 4, 1])) }, unsupported: false, place: "conv", mentions: ["kernel", "[3, 3, 1, 1]"])
    var h = GraphBuilder()
    h.add("Activation", #"{"activation": "relu"}"#, inputs: [2], path: "forward_ref")
    h.add("Activation", #"{"activation": "relu"}"#)
    expectError({ try h.run(ramp([1, 2])) }, unsupported: false, place: "forward_ref", mentions: ["topological"])
}

@Test func declaredInputShapeIsEnforced() {
    var g = GraphBuilder()
    g.add("Activation", #"{"activation": "relu"}"#)
    let graph = KerasGraph(nodes: g.nodes, input: 0, output: 1, inputShape: [32, 32, 3])
    expectError({ try interpretKerasGraph(graph, input: ramp([1, 32, 32, 1]), file: "test.h5") },
                unsupported: false, place: "model input", mentions: ["[1, 32, 32, 1]"])
}

@Test func aSliceThatLeavesNothingIsAnErrorNotAnEmptyTensor() {
    var g = GraphBuilder()
    g.add("SlicingOpLambda", #"{"function": "__operators__.getitem"}"#,
          args: #"{"slice_spec": [{"start": null, "stop": null, "step": null}, {"start": 5, "stop": null, "step": null}]}"#, path: "empty")
    expectError({ try g.run(ramp([1, 3])) }, unsupported: false, place: "empty", mentions: ["empty tensor"])
}
