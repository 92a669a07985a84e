import Foundation
import Testing
@testable import ResNetKit

/// Inputs crafted to cost a careless reader more than linear work, and `.rnw` files whose spec
/// breaks a rule of the forward pass. The small files are committed under `fixtures/slow` (written
/// by `tools/make_slow_inputs.py`, see its MANIFEST.json); the large ones are built here, the same
/// way the script's `--large` option writes them. Each run of the binary has a deadline, so a
/// quadratic or exponential reader fails the test by timing out; nothing here measures time.
@Suite struct LinearWorkTests {
    static let slow = CLITests.fixtures.appendingPathComponent("slow")
    static let deadline: Double = 120

    static func write(_ data: Data, _ name: String, in dir: URL) throws -> String {
        let url = dir.appendingPathComponent(name)
        try data.write(to: url)
        return url.path
    }

    static func finishes(_ args: [String], _ label: String) throws -> RobustnessTests.Outcome {
        let r = try RobustnessTests.run(args, seconds: deadline)
        #expect(!r.timedOut, "\(label): still running after \(deadline) s")
        #expect(r.exited, "\(label): killed by a signal: \(r.stderr)")
        return r
    }

    // MARK: PyTorch

    @Test("a module DAG, a shared module under two names and a list DAG are read in linear time",
          arguments: ["shared-dag-60.pth", "shared-dag-candidates.pth", "list-dag.pth"])
    func pickledDAGs(name: String) throws {
        let path = Self.slow.appendingPathComponent(name).path
        let r = try Self.finishes(["inspect", path], name)
        // None of them is a ResNet: read, searched, then refused by the mapping with exit 3.
        #expect(r.code == 3, "\(name): \(r.stderr)")
        #expect(r.stderr.contains("cannot map weights"), "\(name): \(r.stderr)")
    }

    /// Protocol 2: a list of `n` instances of `n` distinct classes (`__main__.M0000000` …).
    static func manyClassesPickle(_ n: Int) -> [UInt8] {
        var out: [UInt8] = [0x80, 0x02, UInt8(ascii: "]"), UInt8(ascii: "q"), 0x00, UInt8(ascii: "(")]
        for i in 0..<n {
            out += Array("c__main__\nM\(String(format: "%07d", i))\n".utf8)
            out += [UInt8(ascii: ")"), 0x81]   // EMPTY_TUPLE, NEWOBJ
        }
        out += [UInt8(ascii: "e"), UInt8(ascii: ".")]
        return out
    }

    @Test("200,000 distinct module classes are indexed, not searched linearly")
    func manyModuleClasses() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let zip = try storedZip([("archive/data.pkl", Self.manyClassesPickle(200_000)), ("archive/byteorder", Array("little".utf8)),
                                 ("archive/version", Array("3\n".utf8))], alignment: 64)
        let path = try Self.write(zip, "classes.pth", in: dir)
        let r = try Self.finishes(["inspect", path], "200k classes")
        #expect(r.code == 3 && r.stderr.contains("no state dict"), "\(r.stderr)")
    }

    @Test("a key prefix of 200,000 shared components is removed in one pass")
    func longSharedPrefix() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let prefix = String(repeating: "a.", count: 200_000)
        let zip = try torchArchiveBytes([RawTensor(name: prefix + "conv1.weight", Tensor(zeros: [2, 1, 1, 1])),
                                         RawTensor(name: prefix + "fc.weight", Tensor(zeros: [3, 2]))])
        let path = try Self.write(zip, "prefix.pth", in: dir)
        let r = try Self.finishes(["inspect", path], "long prefix")
        // The prefix is gone (the keys are `conv1.weight`, `fc.weight`); two tensors are no ResNet.
        #expect(r.code == 3 && r.stderr.contains("cannot map weights"), "\(r.stderr.prefix(2000))")
    }

    /// A state dict of `n` one-element tensors, all views of one storage (protocol 2).
    static func manyTensorsPickle(_ n: Int) -> [UInt8] {
        var out: [UInt8] = [0x80, 0x02]
        func text(_ s: String) { out += [UInt8(ascii: "X")] + withUnsafeBytes(of: UInt32(s.utf8.count).littleEndian, Array.init) + Array(s.utf8) }
        let orderedDict = Array("ccollections\nOrderedDict\n)R".utf8)
        out += orderedDict + [UInt8(ascii: "(")]
        for i in 0..<n {
            text("t\(i).weight")
            out += Array("ctorch._utils\n_rebuild_tensor_v2\n((".utf8)
            text("storage"); out += Array("ctorch\nFloatStorage\n".utf8); text("0"); text("cpu")
            out += [UInt8(ascii: "K"), 1, UInt8(ascii: "t"), UInt8(ascii: "Q")]          // count 1, TUPLE, BINPERSID
            out += [UInt8(ascii: "K"), 0, UInt8(ascii: "K"), 1, 0x85, UInt8(ascii: "K"), 1, 0x85, 0x89]   // offset, (1,), (1,), False
            out += orderedDict + [UInt8(ascii: "t"), UInt8(ascii: "R")]
        }
        out += [UInt8(ascii: "u"), UInt8(ascii: ".")]
        return out
    }

    @Test("a state dict of more than 100,000 tensors is refused by count")
    func tooManyTensors() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let zip = try storedZip([("archive/data.pkl", Self.manyTensorsPickle(100_001)), ("archive/byteorder", Array("little".utf8)),
                                 ("archive/data/0", [0, 0, 0x80, 0x3F]), ("archive/version", Array("3\n".utf8))], alignment: 64)
        let path = try Self.write(zip, "tensors.pth", in: dir)
        let r = try Self.finishes(["inspect", path], "100,001 tensors")
        #expect(r.code == 3 && r.stderr.contains("100001 tensors") && r.stderr.contains("at most 100000"), "\(r.stderr)")
    }

    // MARK: safetensors

    static func zeroSizeSafetensors(_ n: Int) -> Data {
        var header = "{"
        for i in 0..<n {
            if i > 0 { header += "," }
            header += "\"t\(String(format: "%07d", i))\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}"
        }
        header += "}"
        var bytes = Array(header.utf8)
        while bytes.count % 8 != 0 { bytes.append(UInt8(ascii: " ")) }
        var out = Data()
        withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: bytes)
        return out
    }

    @Test("999,999 zero-size safetensors entries are refused by count; 100,000 are read")
    func zeroSizeSafetensorsEntries() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let many = try Self.write(Self.zeroSizeSafetensors(999_999), "many.safetensors", in: dir)
        let r = try Self.finishes(["inspect", many], "999,999 entries")
        #expect(r.code == 3 && r.stderr.contains("999999 entries") && r.stderr.contains("at most 100000"), "\(r.stderr)")
        let limit = try Self.write(Self.zeroSizeSafetensors(100_000), "limit.safetensors", in: dir)
        let s = try Self.finishes(["inspect", limit], "100,000 entries")
        // Read in full, then no naming scheme maps `t0000000` …: a mapping refusal.
        #expect(s.code == 3 && s.stderr.contains("cannot map weights"), "\(s.stderr)")
    }

    /// A safetensors file of float32 tensors with the given names, in that order: `fc.weight` (2, 1),
    /// `fc.bias` (2), every other one (1, 1, 1, 1).
    static func tinySafetensors(_ names: [String]) -> Data {
        var fields: [String] = []
        var offset = 0
        for name in names {
            let (shape, size) = name == "fc.weight" ? ("[2,1]", 8) : name == "fc.bias" ? ("[2]", 8) : ("[1,1,1,1]", 4)
            fields.append("\"\(name)\":{\"dtype\":\"F32\",\"shape\":\(shape),\"data_offsets\":[\(offset),\(offset + size)]}")
            offset += size
        }
        var bytes = Array(("{" + fields.joined(separator: ",") + "}").utf8)
        while bytes.count % 8 != 0 { bytes.append(UInt8(ascii: " ")) }
        var out = Data()
        withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: bytes)
        out.append(Data(repeating: 0x3F, count: offset))
        return out
    }

    @Test("structure recovery is linear in the number of stages and of containers in a block")
    func manyStagesAndContainers() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let n = 20_000
        let stages = ["conv1.weight"] + (1...n).flatMap { ["layer\($0).0.conv1.weight", "layer\($0).0.conv2.weight"] } + ["fc.weight", "fc.bias"]
        let containers = ["conv1.weight"] + (0..<n).map { "layer1.0.c\($0).conv.weight" } + ["fc.weight", "fc.bias"]
        for (label, names) in [("stages", stages), ("containers", containers)] {
            let path = try Self.write(Self.tinySafetensors(names), "\(label).safetensors", in: dir)
            let r = try Self.finishes(["inspect", path], "\(n) \(label)")
            #expect(r.code == 3 && r.stderr.contains("cannot map weights"), "\(label): \(r.stderr)")
        }
    }

    @Test("a key of 50,000 numbered components is grouped into blocks in linear time")
    func deepNumberedKeys() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let deep = "x." + String(repeating: "0.", count: 50_000)
        let names = ["conv1.weight", deep + "conv1.weight", deep + "conv2.weight", "fc.weight", "fc.bias"]
        let path = try Self.write(Self.tinySafetensors(names), "deep.safetensors", in: dir)
        let r = try Self.finishes(["inspect", path], "deep keys")
        // Every prefix of the two deep keys holds both convolutions: the deepest is the one block.
        #expect(r.code == 0, "\(r.stderr.prefix(2000))")
    }

    // MARK: Keras

    /// A Functional config: an input, then `n` chained activations, listed last layer first.
    static func reverseChainConfig(_ n: Int) -> String {
        var layers = ["{\"class_name\":\"InputLayer\",\"name\":\"in\",\"config\":{\"name\":\"in\",\"batch_input_shape\":[null,8,8,3]},\"inbound_nodes\":[]}"]
        var previous = "in"
        for i in 0..<n {
            layers.append("{\"class_name\":\"Activation\",\"name\":\"a\(i)\",\"config\":{\"name\":\"a\(i)\",\"activation\":\"relu\"},\"inbound_nodes\":[[[\"\(previous)\",0,0,{}]]]}")
            previous = "a\(i)"
        }
        return "{\"class_name\":\"Functional\",\"config\":{\"name\":\"chain\",\"layers\":[\(layers.reversed().joined(separator: ","))],"
            + "\"input_layers\":[[\"in\",0,0]],\"output_layers\":[[\"\(previous)\",0,0]]}}"
    }

    @Test("a Functional config of 20,000 layers in reverse order is sorted topologically in linear time")
    func reverseOrderFunctionalConfig() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        // Any valid HDF5 image will do as the weights: the graph is built and walked before they are matched.
        let weights = try Data(contentsOf: CLITests.fixtures.appendingPathComponent("bad/good.h5"))
        let zip = try storedZip([("config.json", Array(Self.reverseChainConfig(20_000).utf8)), ("model.weights.h5", Array(weights))],
                                alignment: 1)
        let path = try Self.write(zip, "reverse.keras", in: dir)
        let r = try Self.finishes(["inspect", path], "20,000 reversed layers")
        // The graph is built and walked to the end: a chain of activations has no residual block.
        #expect(r.code == 3 && r.stderr.contains("no residual block"), "\(r.stderr)")
    }

    @Test("the topological order keeps config order where it can and puts inputs first")
    func topologicalOrder() throws {
        var builder = KerasGraphBuilder(file: "x", place: "config.json")
        let json = try parseKerasJSON(Data(Self.reverseChainConfig(2_000).utf8), file: "x", place: "config.json")
        let graph = try builder.build(json).graph
        #expect(graph.nodes.count == 2_001)
        #expect(graph.nodes.allSatisfy { n in n.inputs.allSatisfy { $0 < n.id } })
        #expect(graph.nodes.map(\.path) == ["in"] + (0..<2_000).map { "a\($0)" })
        // A diamond listed out of order: among the ready layers the earliest in the config goes first.
        let diamond = """
        {"class_name":"Functional","config":{"name":"d","input_layers":[["in",0,0]],"output_layers":[["add",0,0]],"layers":[
        {"class_name":"Add","name":"add","config":{"name":"add"},"inbound_nodes":[[["b",0,0,{}],["a",0,0,{}]]]},
        {"class_name":"Activation","name":"b","config":{"name":"b","activation":"relu"},"inbound_nodes":[[["in",0,0,{}]]]},
        {"class_name":"InputLayer","name":"in","config":{"name":"in","batch_input_shape":[null,4,4,1]},"inbound_nodes":[]},
        {"class_name":"Activation","name":"a","config":{"name":"a","activation":"relu"},"inbound_nodes":[[["in",0,0,{}]]]}]}}
        """
        var b2 = KerasGraphBuilder(file: "x", place: "config.json")
        let g2 = try b2.build(try parseKerasJSON(Data(diamond.utf8), file: "x", place: "config.json")).graph
        #expect(g2.nodes.map(\.path) == ["in", "b", "a", "add"])
        #expect(g2.nodes[3].inputs == [1, 2])
        // A cycle is still refused, naming the layers.
        let cycle = diamond.replacingOccurrences(of: "[[[\"in\",0,0,{}]]]},\n{\"class_name\":\"InputLayer\"",
                                                 with: "[[[\"a\",0,0,{}]]]},\n{\"class_name\":\"InputLayer\"")
            .replacingOccurrences(of: "\"name\":\"a\",\"config\":{\"name\":\"a\",\"activation\":\"relu\"},\"inbound_nodes\":[[[\"in\",0,0,{}]]]",
                                  with: "\"name\":\"a\",\"config\":{\"name\":\"a\",\"activation\":\"relu\"},\"inbound_nodes\":[[[\"b\",0,0,{}]]]")
        var b3 = KerasGraphBuilder(file: "x", place: "config.json")
        #expect(throws: ResNetError.self) { try b3.build(try parseKerasJSON(Data(cycle.utf8), file: "x", place: "config.json")) }
        do {
            var b4 = KerasGraphBuilder(file: "x", place: "config.json")
            _ = try b4.build(try parseKerasJSON(Data(cycle.utf8), file: "x", place: "config.json"))
        } catch {
            #expect("\(error)".contains("wait on each other"), "\(error)")
        }
    }

    // MARK: .rnw specs

    struct ManifestEntry: Decodable { var expected: String; var what: String }
    struct Manifest: Decodable { var files: [String: ManifestEntry] }

    static let invalidSpecs: [(file: String, field: String)] = [
        ("spec-flatten-in-stem.rnw", "stages[0].blocks[0].residual[0]"),
        ("spec-softmax-in-stem.rnw", "stem[3]"),
        ("spec-zero-pool-stride.rnw", "stem[3].stride"),
        ("spec-conv-channels.rnw", "stages[0].blocks[0].residual[0].inChannels"),
        ("spec-negative-epsilon.rnw", "stem[1].epsilon"),
        ("spec-branch-channels.rnw", "stages[0].blocks[0]"),
    ]

    @Test("every invalid-spec .rnw in the manifest is tested here")
    func manifestCoversTheTests() throws {
        let manifest = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: Self.slow.appendingPathComponent("MANIFEST.json")))
        let specFiles = Set(manifest.files.keys.filter { $0.hasPrefix("spec-") && $0 != "spec-valid.rnw" })
        #expect(specFiles == Set(Self.invalidSpecs.map(\.file)))
        for (file, field) in Self.invalidSpecs { #expect(manifest.files[file]?.expected.contains(field) == true, "\(file)") }
    }

    @Test("a .rnw whose spec breaks a forward-pass rule is refused on every read, naming the file and the field",
          arguments: invalidSpecs.map(\.file))
    func invalidSpecIsRefused(file: String) throws {
        let field = Self.invalidSpecs.first { $0.file == file }!.field
        let input = Self.slow.appendingPathComponent(file).path
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("out.rnw").path
        for args in [["convert", input, out], ["convert", input, out, "--no-verify"], ["inspect", input]] {
            let r = try Self.finishes(args, file)
            #expect(r.code == 3, "\(args): \(r.stderr)")
            #expect(r.stderr.contains(input) && r.stderr.contains("manifest spec_json") && r.stderr.contains(field + " ("),
                    "\(args): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out), "\(args) left an output")
        }
    }

    @Test("the control .rnw converts")
    func validSpecConverts() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("out.rnw").path
        let r = try Self.finishes(["convert", Self.slow.appendingPathComponent("spec-valid.rnw").path, out], "spec-valid")
        #expect(r.code == 0, "\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: out))
    }

    @Test("the reader and the forward pass refuse a spec for the same rule")
    func oneRuleSetForReaderAndForward() throws {
        for (file, field) in Self.invalidSpecs {
            let data = try Data(contentsOf: Self.slow.appendingPathComponent(file))
            var readerError = ""
            do { _ = try RNWReader(data: data, name: file) } catch { readerError = "\(error)" }
            #expect(readerError.contains(field + " ("), "\(file): \(readerError)")
            // The same spec with the tensors it names, run forward: the same violation, as a mapping error.
            let valid = try RNWReader(data: Data(contentsOf: Self.slow.appendingPathComponent("spec-valid.rnw")), name: "valid")
            var model = try valid.model()
            let spec = try JSONDecoder().decode(ResNetSpec.self, from: Data(Self.specJSON(data)))
            model.spec = spec
            guard let v = spec.structuralViolation() else { Issue.record("\(file): no violation"); continue }
            #expect(readerError.contains(v.description))
            for engine in ForwardEngine.allCases {
                do {
                    _ = try forward(model, input: Tensor(zeros: [1, 3, 8, 8]), engine: engine)
                    Issue.record("\(file): forward ran")
                } catch let e as ResNetError {
                    guard case let .mapping(_, reason) = e else { Issue.record("\(file): \(e)"); continue }
                    #expect(reason.contains(v.description), "\(file): \(reason)")
                }
            }
            #expect(throws: ResNetError.self) { _ = try ForwardPlan(model) }
        }
    }

    /// The spec JSON of a `.rnw` image, read without validating it.
    static func specJSON(_ data: Data) throws -> [UInt8] {
        let length = data.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 16, as: UInt64.self))) }
        let manifest = try Array(data[40 ..< 40 + length]).withUnsafeBytes { try unpackManifest($0, file: "x") }
        return manifest.specJSON
    }
}
