import Foundation
import Testing
@testable import ResNetKit

/// `../shared/fixtures-external/` next to the package root, when it exists.
private let readerExternalDir: URL? = FileManager.default.fileExists(atPath: Paths.external.path) ? Paths.external : nil

private func external(_ relative: String) -> String? {
    guard let dir = readerExternalDir else {
        print("SKIPPED: ../shared/fixtures-external is absent; \(relative) not tested")
        return nil
    }
    let path = dir.appendingPathComponent(relative).path
    guard FileManager.default.fileExists(atPath: path) else {
        print("SKIPPED: \(path) is absent")
        return nil
    }
    return path
}

private func temporaryFile(_ name: String, _ bytes: Data) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("KerasReaderTests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let url = dir.appendingPathComponent(name)
    try bytes.write(to: url)
    return url.path
}

/// A minimal zip archive with stored (uncompressed) members, written by hand so the tests need
/// no zip library.
private func storedZip(_ members: [(String, Data)]) -> Data {
    func crc32(_ d: Data) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in d {
            c ^= UInt32(b)
            for _ in 0 ..< 8 { c = (c >> 1) ^ (0xEDB8_8320 & (0 &- (c & 1))) }
        }
        return ~c
    }
    var out = Data(), central = Data()
    func u16(_ v: Int, _ d: inout Data) { d.append(UInt8(v & 0xFF)); d.append(UInt8((v >> 8) & 0xFF)) }
    func u32(_ v: UInt32, _ d: inout Data) { for s in stride(from: 0, to: 32, by: 8) { d.append(UInt8((v >> UInt32(s)) & 0xFF)) } }
    for (name, data) in members {
        let offset = UInt32(out.count), crc = crc32(data), n = Data(name.utf8)
        u32(0x0403_4B50, &out); u16(20, &out); u16(0, &out); u16(0, &out); u16(0, &out); u16(0x21, &out)
        u32(crc, &out); u32(UInt32(data.count), &out); u32(UInt32(data.count), &out)
        u16(n.count, &out); u16(0, &out); out.append(n); out.append(data)
        u32(0x0201_4B50, &central); u16(20, &central); u16(20, &central); u16(0, &central); u16(0, &central)
        u16(0, &central); u16(0x21, &central); u32(crc, &central); u32(UInt32(data.count), &central)
        u32(UInt32(data.count), &central); u16(n.count, &central); u16(0, &central); u16(0, &central)
        u16(0, &central); u16(0, &central); u32(0, &central); u32(offset, &central); central.append(n)
    }
    let centralOffset = UInt32(out.count)
    out.append(central)
    u32(0x0605_4B50, &out); u16(0, &out); u16(0, &out); u16(members.count, &out); u16(members.count, &out)
    u32(UInt32(central.count), &out); u32(centralOffset, &out); u16(0, &out)
    return out
}

private func expectError(_ body: () throws -> Void, mentioning words: [String]) {
    do {
        try body()
        Issue.record("expected an error mentioning \(words)")
    } catch let error as ResNetError {
        let text = error.description
        for w in words { #expect(text.contains(w), "error \"\(text)\" does not mention \(w)") }
    } catch {
        Issue.record("expected ResNetError, got \(error)")
    }
}

private func classCounts(_ g: KerasGraph) -> [String: Int] {
    g.nodes.reduce(into: [:]) { $0[$1.className, default: 0] += 1 }
}

/// Checks that every weighted node's variable shapes agree with its config and its producer.
private func checkWeightsMatchConfig(_ graph: KerasGraph) {
    for node in graph.nodes {
        switch node.className {
        case "Conv2D":
            let filters = node.config["filters"]?.int
            let kernel = node.config["kernel_size"]?.array?.compactMap(\.int)
            let bias = node.config["use_bias"]?.bool ?? true
            #expect(node.weights.count == (bias ? 2 : 1), "\(node.path)")
            #expect(node.weights.first.map { Array($0.tensor.shape.prefix(2)) } == kernel, "\(node.path)")
            #expect(node.weights.first?.tensor.shape.last == filters, "\(node.path)")
            if bias { #expect(node.weights.last?.tensor.shape == [filters ?? -1], "\(node.path)") }
        case "BatchNormalization":
            #expect(node.weights.count == 4, "\(node.path)")
            let c = node.weights.first?.tensor.shape
            #expect(node.weights.allSatisfy { $0.tensor.shape == c }, "\(node.path)")
            // The normalised channels are the previous conv's filters.
            if let producer = node.inputs.first.map({ graph.nodes[$0] }), producer.className == "Conv2D" {
                #expect(c == [producer.config["filters"]?.int ?? -1], "\(node.path)")
            }
        case "Dense":
            let units = node.config["units"]?.int
            #expect(node.weights.count == 2, "\(node.path)")
            #expect(node.weights.first?.tensor.shape.last == units, "\(node.path)")
            #expect(node.weights.last?.tensor.shape == [units ?? -1], "\(node.path)")
        default:
            #expect(node.weights.isEmpty, "\(node.path) (\(node.className)) should have no variables")
        }
        for i in node.inputs { #expect(i < node.id, "\(node.path) is not in topological order") }
        for w in node.weights { #expect(w.sourceDType == .float32 && w.tensor.data.allSatisfy(\.isFinite)) }
    }
}

@Suite("Keras readers")
struct KerasReaderTests {
    // MARK: real files published by others

    @Test func readsTheMLCommonsLegacyFullModel() throws {
        guard let path = external("mlcommons-tiny/pretrainedResnet.h5") else { return }
        let file = try readKerasFile(path: path)
        #expect(file.kind == .legacyFullModel)
        #expect(file.kerasVersion == "2.4.0")
        let graph = try #require(file.graph)
        // SOURCES.md: 30 layers (Conv2D 9, BatchNormalization 7, Activation 7, Add 3, …), 48 datasets, 78,666 elements.
        #expect(graph.nodes.count == 30)
        #expect(classCounts(graph) == ["InputLayer": 1, "Conv2D": 9, "BatchNormalization": 7, "Activation": 7,
                                       "Add": 3, "AveragePooling2D": 1, "Flatten": 1, "Dense": 1])
        #expect(graph.inputShape == [32, 32, 3])
        #expect(graph.nodes[graph.input].className == "InputLayer")
        #expect(graph.nodes[graph.output].className == "Dense")
        let all = graph.nodes.flatMap(\.weights)
        #expect(all.count == 48)
        #expect(all.reduce(0) { $0 + $1.tensor.count } == 78_666)
        #expect(graph.nodes.filter { $0.className == "Add" }.allSatisfy { $0.inputs.count == 2 })
        let conv = try #require(graph.nodes.first { $0.path == "conv2d" })
        #expect(conv.weights.map(\.name) == ["model_weights/conv2d/conv2d/kernel:0", "model_weights/conv2d/conv2d/bias:0"])
        #expect(conv.weights[0].tensor.shape == [3, 3, 3, 16])
        let bn = try #require(graph.nodes.first { $0.path == "batch_normalization" })
        #expect(bn.weights.map { $0.name.split(separator: "/").last! } == ["gamma:0", "beta:0", "moving_mean:0", "moving_variance:0"])
        checkWeightsMatchConfig(graph)
        #expect(file.layerWeights.count == 17)
    }

    @Test func readsTheLeogemKerasZipWithNestedModelsAndOpLambdas() throws {
        guard let path = external("leogem-keras-injector/ResNet20.keras") else { return }
        let file = try readKerasFile(path: path)
        #expect(file.kind == .kerasZip)
        #expect(file.kerasVersion == "2.14.0")
        let graph = try #require(file.graph)
        let counts = classCounts(graph)
        // Stem conv + 2 per block × 9 blocks; sub-models are inlined, never nodes themselves.
        #expect(counts["Conv2D"] == 19)
        #expect(counts["BatchNormalization"] == 19)
        #expect(counts["Dense"] == 1)
        #expect(counts["InputLayer"] == 1)
        #expect(counts["Functional"] == nil)
        #expect(counts["SlicingOpLambda"] == 4)
        #expect(graph.nodes.count == 5 + 9 * 10 + 2 * 2 + 6)
        // SOURCES.md: 97 datasets, 271,098 elements.
        let all = graph.nodes.flatMap(\.weights)
        #expect(all.count == 97)
        #expect(all.reduce(0) { $0 + $1.tensor.count } == 271_098)
        checkWeightsMatchConfig(graph)

        // Inside block model_3 the residual add takes `y=` from the zero-padded shortcut.
        let add = try #require(graph.nodes.first { $0.path == "model_3/tf.__operators__.add_3" })
        #expect(add.className == "TFOpLambda")
        #expect(add.inputs.map { graph.nodes[$0].path } == ["model_3/batch_normalization_8", "model_3/tf.compat.v1.pad"])
        #expect(add.callArgs["y"] == .object(["__input__": .number(1)]))
        // The sub-model's InputLayer maps to the tensor feeding the sub-model.
        let slice = try #require(graph.nodes.first { $0.path == "model_3/tf.__operators__.getitem" })
        #expect(slice.inputs.map { graph.nodes[$0].path } == ["model_2/tf.identity_2"])
        let firstPad = try #require(graph.nodes.first { $0.path == "model/zero_padding2d_1" })
        #expect(firstPad.inputs.map { graph.nodes[$0].path } == ["tf.nn.relu_18"])
        // Generic v3 names: model_8's second conv is functional_8/…/conv2d_1.
        let conv = try #require(graph.nodes.first { $0.path == "model_8/conv2d_18" })
        #expect(conv.weights.map(\.name) == ["_layer_checkpoint_dependencies/functional_8/_layer_checkpoint_dependencies/conv2d_1/vars/0"])
        #expect(graph.nodes[graph.output].path == "tf.identity_9")
    }

    // MARK: bad input

    @Test func refusesAFileThatIsNotHDF5() throws {
        let path = try temporaryFile("junk.h5", Data((0 ..< 4096).map { UInt8(truncatingIfNeeded: $0 &* 31) }))
        expectError({ _ = try readKerasFile(path: path) }, mentioning: ["junk.h5", "not an HDF5 file"])
    }

    @Test func refusesAnEmptyFile() throws {
        let path = try temporaryFile("empty.h5", Data())
        expectError({ _ = try readKerasFile(path: path) }, mentioning: ["empty.h5", "not an HDF5 file"])
    }

    @Test func reportsATruncatedHDF5FileWithLibHDF5sReason() throws {
        guard let source = external("mlcommons-tiny/pretrainedResnet.h5") else { return }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: source))
        let path = try temporaryFile("cut.h5", bytes.prefix(bytes.count / 2))
        expectError({ _ = try readKerasFile(path: path) }, mentioning: ["cut.h5", "truncated"])
    }

    @Test func reportsAKerasZipWithoutWeights() throws {
        let zip = storedZip([("metadata.json", Data(#"{"keras_version": "3.0.0"}"#.utf8)),
                             ("config.json", Data(#"{"class_name": "Functional", "config": {}}"#.utf8))])
        let path = try temporaryFile("noweights.keras", zip)
        expectError({ _ = try readKerasFile(path: path) }, mentioning: ["noweights.keras", "model.weights.h5"])
    }

    @Test func reportsCorruptConfigJSON() throws {
        let zip = storedZip([("config.json", Data(#"{"class_name": "Functional", "config": {"#.utf8)),
                             ("model.weights.h5", Data(HDF5File.signature))])
        let path = try temporaryFile("badjson.keras", zip)
        expectError({ _ = try readKerasFile(path: path) }, mentioning: ["badjson.keras", "config.json", "JSON"])
    }

    @Test func reportsWeightsInsideAZipThatAreNotHDF5() throws {
        let config = #"{"class_name": "Sequential", "config": {"name": "s", "layers": [{"class_name": "InputLayer", "config": {"name": "in", "batch_shape": [null, 4]}}]}}"#
        let zip = storedZip([("config.json", Data(config.utf8)), ("model.weights.h5", Data("hello".utf8))])
        let path = try temporaryFile("notweights.keras", zip)
        expectError({ _ = try readKerasFile(path: path) }, mentioning: ["notweights.keras!model.weights.h5", "not an HDF5 file"])
    }

    @Test func reportsAKerasZipWhoseWeightsAreTruncated() throws {
        guard let source = external("leogem-keras-injector/ResNet20.keras") else { return }
        let original = try readKerasFile(path: source)
        #expect(original.graph != nil)
        // Cut the weights out of a real file by rebuilding the archive from its own parts.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("KerasReaderTests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let unzip = Process()
        unzip.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        unzip.arguments = ["unzip", "-q", source, "-d", dir.path]
        do { try unzip.run(); unzip.waitUntilExit() } catch { print("SKIPPED: unzip not available"); return }
        guard unzip.terminationStatus == 0 else { print("SKIPPED: unzip failed"); return }
        let config = try Data(contentsOf: dir.appendingPathComponent("config.json"))
        let weights = try Data(contentsOf: dir.appendingPathComponent("model.weights.h5"))
        let path = try temporaryFile("cut.keras", storedZip([("config.json", config), ("model.weights.h5", weights.prefix(weights.count / 3))]))
        expectError({ _ = try readKerasFile(path: path) }, mentioning: ["cut.keras!model.weights.h5", "truncated"])
    }

    // MARK: config parsing

    @Test func kerasSnakeCaseFollowsKerasNamingRule() {
        // Pairs printed by keras.src.utils.naming.to_snake_case (Keras 3.15.1).
        let pairs = ["Conv2D": "conv2d", "TFOpLambda": "tf_op_lambda", "ReLU": "re_lu",
                     "BatchNormalization": "batch_normalization", "SlicingOpLambda": "slicing_op_lambda",
                     "GlobalAveragePooling2D": "global_average_pooling2d", "ZeroPadding2D": "zero_padding2d",
                     "DepthwiseConv2D": "depthwise_conv2d", "Functional": "functional",
                     "InputLayer": "input_layer", "HTTPServer2Go": "http_server2_go"]
        for (cls, snake) in pairs { #expect(kerasSnakeCase(cls) == snake, "\(cls)") }
        var namer = GenericNamer()
        #expect(["Conv2D", "Dense", "Conv2D", "Conv2D"].map { namer.next(for: $0) } == ["conv2d", "dense", "conv2d_1", "conv2d_2"])
    }

    @Test func naturalOrderPutsCountersInNumericOrder() {
        #expect(kerasNaturalOrder(["conv2d_10", "conv2d", "conv2d_2", "add"]) == ["add", "conv2d", "conv2d_2", "conv2d_10"])
        #expect(kerasNaturalOrder(["10", "2", "0", "1"]) == ["0", "1", "2", "10"])
    }

    private func graph(_ json: String) throws -> KerasGraph {
        var b = KerasGraphBuilder(file: "test.json", place: "config")
        return try b.build(try parseKerasJSON(Data(json.utf8), file: "test.json", place: "config")).graph
    }

    @Test func inlinesKeras3NestedModelsAndSequentials() throws {
        func t(_ n: String) -> String { #"{"class_name": "__keras_tensor__", "config": {"keras_history": ["\#(n)", 0, 0]}}"# }
        let json = """
        {"class_name": "Functional", "config": {"name": "top", "input_layers": [["x", 0, 0]], "output_layers": [["d", 0, 0]], "layers": [
          {"class_name": "InputLayer", "name": "x", "config": {"name": "x", "batch_shape": [null, 8, 8, 3]}, "inbound_nodes": []},
          {"class_name": "Functional", "name": "blk", "config": {"name": "blk", "input_layers": ["i", 0, 0], "output_layers": ["a", 0, 0], "layers": [
             {"class_name": "InputLayer", "name": "i", "config": {"name": "i"}, "inbound_nodes": []},
             {"class_name": "Conv2D", "name": "c", "config": {"name": "c"}, "inbound_nodes": [{"args": [\(t("i"))], "kwargs": {}}]},
             {"class_name": "Add", "name": "a", "config": {"name": "a"}, "inbound_nodes": [{"args": [[\(t("c")), \(t("i"))]], "kwargs": {}}]}]},
           "inbound_nodes": [{"args": [\(t("x"))], "kwargs": {"mask": null}}]},
          {"class_name": "Sequential", "name": "seq", "config": {"name": "seq", "layers": [
             {"class_name": "InputLayer", "config": {"name": "si"}},
             {"class_name": "ReLU", "config": {"name": "r"}}, {"class_name": "Flatten", "config": {"name": "f"}}]},
           "inbound_nodes": [{"args": [\(t("blk"))], "kwargs": {}}]},
          {"class_name": "Dense", "name": "d", "config": {"name": "d", "units": 2}, "inbound_nodes": [{"args": [\(t("seq"))], "kwargs": {}}]}]}}
        """
        let g = try graph(json)
        #expect(g.nodes.map(\.path) == ["x", "blk/c", "blk/a", "seq/r", "seq/f", "d"])
        #expect(g.nodes[2].inputs == [1, 0])
        #expect(g.nodes[3].inputs == [2])
        #expect(g.nodes[5].inputs == [4])
        #expect(g.inputShape == [8, 8, 3])
        #expect(g.output == 5)
    }

    @Test func refusesASharedLayerCalledTwice() throws {
        let json = """
        {"class_name": "Functional", "config": {"name": "m", "input_layers": [["x", 0, 0]], "output_layers": [["c", 1, 0]], "layers": [
          {"class_name": "InputLayer", "name": "x", "config": {"name": "x"}, "inbound_nodes": []},
          {"class_name": "Conv2D", "name": "c", "config": {"name": "c"}, "inbound_nodes": [[["x", 0, 0, {}]], [["c", 0, 0, {}]]]}]}}
        """
        #expect(throws: ResNetError.self) { try graph(json) }
        expectError({ _ = try graph(json) }, mentioning: ["c", "shared"])
    }

    @Test func refusesAGraphThatReferencesAMissingLayer() throws {
        let json = """
        {"class_name": "Functional", "config": {"name": "m", "input_layers": [["x", 0, 0]], "output_layers": [["c", 0, 0]], "layers": [
          {"class_name": "InputLayer", "name": "x", "config": {"name": "x"}, "inbound_nodes": []},
          {"class_name": "Conv2D", "name": "c", "config": {"name": "c"}, "inbound_nodes": [[["nope", 0, 0, {}]]]}]}}
        """
        expectError({ _ = try graph(json) }, mentioning: ["unknown layer nope"])
    }
}
