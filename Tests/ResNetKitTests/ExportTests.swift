import Foundation
import Testing
@testable import ResNetKit

/// Export writers and the safetensors reader: round trips through every format keep every
/// canonical tensor bit for bit, and malformed safetensors headers are refused with a reason.
@Suite struct ExportTests {
    static func fixture(_ relative: String) -> String { Paths.fixtures.appendingPathComponent(relative).path }

    static func expectBitIdentical(_ a: ResNetModel, _ b: ResNetModel) {
        #expect(Set(a.tensors.keys) == Set(b.tensors.keys))
        for (name, t) in a.tensors {
            guard let u = b.tensors[name] else { continue }
            #expect(bitIdentical(t, u), "tensor \(name) differs")
        }
    }

    /// Keras → .rnw → .pth → .rnw: a .pth names tensors only, so the structure comes back in
    /// PyTorch's convention, but every canonical tensor must be the same bits.
    @Test func kerasToRNWToPthToRNWKeepsEveryTensorBitIdentical() throws {
        let dir = try Paths.temporaryDirectory()
        let rnw = dir.appendingPathComponent("k.rnw").path, pth = dir.appendingPathComponent("k.pth").path
        let back = dir.appendingPathComponent("k2.rnw").path
        _ = try convert(input: Self.fixture("keras/kapp-resnet-v1/tfkeras2.model.h5"), output: rnw)
        let report = try exportModel(input: rnw, output: pth)
        #expect(report.format == "pth")
        _ = try convert(input: pth, output: back)
        Self.expectBitIdentical(try RNWReader(path: rnw).model(), try RNWReader(path: back).model())
    }

    /// Keras → .rnw → .h5 → .rnw for each Keras layout the writer knows: same structure and bits.
    @Test("Keras weights export reads back with the same structure and bits", arguments: [
        ("keras/kapp-resnet-v1/tfkeras2.model.h5", "keras-resnet-v1"),
        ("keras/kapp-resnet-v2/tfkeras2.model.h5", "keras-resnet-v2"),
        ("keras/seed-keras/tfkeras2.model.h5", "seed-keras"),
    ])
    func kerasWeightsRoundTrip(source: String, preset: String) throws {
        let dir = try Paths.temporaryDirectory()
        let rnw = dir.appendingPathComponent("m.rnw").path, h5 = dir.appendingPathComponent("m.h5").path
        _ = try convert(input: Self.fixture(source), output: rnw)
        _ = try exportModel(input: rnw, output: h5)
        let original = try RNWReader(path: rnw).model()
        let back = try loadModel(path: h5, arch: preset).model
        #expect(sameStructure(original.spec, back.spec))
        Self.expectBitIdentical(original, back)
    }

    /// Keras matches groups to layers by position, so the written `layer_names` must be exactly
    /// the order tf_keras itself wrote for the same architecture.
    @Test func keras_layer_namesFollowTheOrderTfKerasWrites() throws {
        let dir = try Paths.temporaryDirectory()
        let h5 = dir.appendingPathComponent("m.h5").path
        let real = Self.fixture("keras/kapp-resnet-v1/tfkeras2.legacy-weights.h5")
        _ = try exportModel(input: Self.fixture("keras/kapp-resnet-v1/tfkeras2.model.h5"), output: h5)
        let ours = try HDF5File(path: h5).attribute("layer_names", of: "/")?.stringList
        let theirs = try HDF5File(path: real).attribute("layer_names", of: "/")?.stringList
        #expect(ours != nil && ours == theirs)
    }

    /// PyTorch → .rnw → .h5 (full model with its own model_config) → .rnw: the re-read model still
    /// meets the PyTorch goldens, and every canonical tensor comes back bit for bit under the Keras
    /// variable of the layer named after its module (dots become underscores).
    @Test("PyTorch layouts round-trip through a full-model Keras .h5", arguments: [
        "tv-resnet18-mini", "cifar-resnet20-optionA", "cifar-resnet20-optionB", "seed-torch",
    ])
    func torchLayoutsRoundTripThroughKerasModelH5(name: String) throws {
        let dir = try Paths.temporaryDirectory()
        let rnw = dir.appendingPathComponent("m.rnw").path, h5 = dir.appendingPathComponent("m.h5").path
        let back = dir.appendingPathComponent("m2.rnw").path
        let golden = Self.fixture("torch/\(name)/io.npz")
        _ = try convert(input: Self.fixture("torch/\(name)/\(name).pth"), output: rnw)
        let report = try exportModel(input: rnw, output: h5)
        #expect(report.layout.hasPrefix("full Keras model"))
        // convert runs the Keras-graph self-check on the written file as on any Keras input.
        _ = try convert(input: h5, output: back, options: .init(expect: golden))
        let original = try RNWReader(path: rnw).model()
        let reread = try RNWReader(path: back).model()
        let goldens = try Goldens(path: golden, inputChannels: reread.spec.inputChannels)
        let check = try Verifier.checkGoldens(reread, goldens: goldens)
        #expect(check.passed, "\(check.detail)")

        let walked = try loadModel(path: h5)
        var bySource: [String: String] = [:]
        for o in walked.mapping { bySource[o.source] = o.canonical }
        let roles = ["weight": ["conv": "kernel", "batch_norm": "gamma", "dense": "kernel"], "bias": ["conv": "bias", "batch_norm": "beta", "dense": "bias"],
                     "running_mean": ["batch_norm": "moving_mean"], "running_var": ["batch_norm": "moving_variance"]]
        var kinds: [String: String] = [:]
        for op in original.spec.allOps { if let m = op.moduleName, let k = op.moduleKind { kinds[m] = k } }
        for (canonical, t) in original.tensors {
            let dot = canonical.lastIndex(of: ".")!
            let module = String(canonical[..<dot]), role = String(canonical[canonical.index(after: dot)...])
            let layer = module.replacingOccurrences(of: ".", with: "_")
            guard let v = roles[role]?[kinds[module] ?? ""] else { Issue.record("no Keras variable for \(canonical)"); continue }
            let source = "model_weights/\(layer)/\(layer)/\(v):0"
            guard let c = bySource[source], let u = reread.tensors[c] else { Issue.record("\(source) (for \(canonical)) is not in the re-read model"); continue }
            #expect(bitIdentical(t, u), "\(canonical) → \(source) → \(c) differs")
        }
    }

    /// A structure no keras.applications builder has: the zero-padded max pool after a ReLU, the
    /// option-A shortcut (1×1 max pool + 0/1 embedding conv) and a channel-major flatten of a 2×2 map
    /// (Permute + Flatten) all come back with the same outputs, and the file holds those layers.
    @Test func channelMajorFlattenOfAMapBecomesPermuteAndFlatten() throws {
        var model = try loadModel(path: Self.fixture("torch/cifar-resnet20-optionA/cifar-resnet20-optionA.pth")).model
        let fc = model.spec.head.compactMap { op -> DenseOp? in if case let .dense(d) = op { return d } else { return nil } }[0]
        let width = fc.inFeatures
        model.spec.head = [.avgPool(PoolOp(kernel: [4, 4], stride: [4, 4])), .flatten(.chw),
                           .dense(DenseOp(name: fc.name, inFeatures: width * 4, outFeatures: fc.outFeatures, bias: true))]
        model.tensors["\(fc.name).weight"] = Tensor(shape: [fc.outFeatures, width * 4],
                                                    data: (0..<(fc.outFeatures * width * 4)).map { Float(($0 * 37) % 23) / 23 - 0.5 })
        let h5 = try Paths.temporaryDirectory().appendingPathComponent("m.h5").path
        _ = try exportKerasModel(model, to: h5, display: h5, inputSize: nil)
        let read = try readKerasFile(path: h5)
        let classes = Set(read.graph?.nodes.map(\.className) ?? [])
        #expect(classes.isSuperset(of: ["Permute", "Flatten", "ZeroPadding2D", "MaxPooling2D", "Add"]))
        let back = try loadModel(path: h5).model
        #expect(back.spec.head.contains(.flatten(.chw)))
        let x = Verifier.deterministicInput(shape: [2, 3, 32, 32], seed: 7)
        let a = try forward(model, input: x), b = try forward(back, input: x)
        #expect(a.shape == b.shape)
        let err = zip(a.data, b.data).map { abs($0 - $1) }.max() ?? .infinity
        #expect(err <= 1e-5 * (a.data.map(abs).max() ?? 1))
    }

    static func permuteGraph(then cls: String?) -> KerasGraph {
        var nodes = [
            KerasNode(id: 0, path: "input_1", className: "InputLayer", config: .object([:]), inputs: []),
            KerasNode(id: 1, path: "permute", className: "Permute", config: .object(["dims": .array([.number(3), .number(1), .number(2)])]), inputs: [0]),
        ]
        if let cls { nodes.append(KerasNode(id: 2, path: "next", className: cls, config: .object(["activation": .string("relu")]), inputs: [1])) }
        return KerasGraph(nodes: nodes, input: 0, output: nodes.count - 1, inputShape: [2, 3, 4])
    }

    /// The interpreter's Permute moves the non-batch axes as `dims` says (numbered from 1).
    @Test func interpreterPermuteMovesChannelsFirst() throws {
        let x = Tensor(shape: [1, 2, 3, 4], data: (0..<24).map(Float.init))
        let y = try interpretKerasGraph(Self.permuteGraph(then: nil), input: x, file: "t")
        #expect(y == x.permuted([0, 3, 1, 2]))
    }

    /// The walker reads Permute((3, 1, 2)) only as the layout of a following Flatten.
    @Test func walkerRefusesALayerOtherThanFlattenAfterPermute() {
        #expect {
            _ = try KerasGraphWalker(graph: Self.permuteGraph(then: "Activation"), file: "t").walk()
        } throws: { "\($0)".contains("only a Flatten may follow Permute") }
    }

    /// A max pool padded with -inf on an input that may be negative has no exact Keras layer:
    /// refused with exit 3, naming the op, and `export` leaves nothing behind.
    @Test func paddedMaxPoolWithoutAReLUBeforeItIsRefused() throws {
        var model = try loadModel(path: Self.fixture("torch/tv-resnet18-mini/tv-resnet18-mini.pth")).model
        model.spec.stem.removeAll { $0 == .relu }
        let dir = try Paths.temporaryDirectory()
        let rnw = dir.appendingPathComponent("m.rnw").path, h5 = dir.appendingPathComponent("m.h5").path
        try RNWWriter.write(model, to: rnw)
        do {
            _ = try exportModel(input: rnw, output: h5)
            Issue.record("export succeeded")
        } catch let e as ResNetError {
            #expect(e.exitCode == 3)
            #expect(e.description.contains("max_pool") && e.description.contains("ReLU"), "\(e)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["m.rnw"])
    }

    /// Average pooling that leaves explicit padding out of the divisor is refused too.
    @Test func explicitlyPaddedAveragePoolExcludingPaddingIsRefused() throws {
        var model = try loadModel(path: Self.fixture("torch/tv-resnet18-mini/tv-resnet18-mini.pth")).model
        model.spec.stem = model.spec.stem.map { op in
            if case .maxPool = op { return .avgPool(PoolOp(kernel: [3, 3], stride: [2, 2], padding: .symmetric(1), countIncludePad: false)) }
            return op
        }
        let h5 = try Paths.temporaryDirectory().appendingPathComponent("m.h5").path
        #expect {
            _ = try exportKerasModel(model, to: h5, display: h5, inputSize: nil)
        } throws: { ($0 as? ResNetError)?.exitCode == 3 && "\($0)".contains("avg_pool") }
    }

    /// PyTorch → .pth / .safetensors → canonical: torchvision and seed names map back through their
    /// schemes to the very same structure and bits.
    @Test("PyTorch layouts round-trip through .pth and .safetensors", arguments: [
        "torch/tv-resnet18-mini/tv-resnet18-mini.pth", "torch/seed-torch/seed-torch.pth",
        "torch/cifar-resnet20-optionA/cifar-resnet20-optionA.pth", "torch/tv-resnext-mini/tv-resnext-mini.pth",
    ])
    func torchLayoutsRoundTrip(source: String) throws {
        let dir = try Paths.temporaryDirectory()
        let original = try loadModel(path: Self.fixture(source)).model
        for ext in ["pth", "safetensors"] {
            let out = dir.appendingPathComponent("m.\(ext)").path
            _ = try exportModel(input: Self.fixture(source), output: out)
            let back = try loadModel(path: out).model
            #expect(sameStructure(original.spec, back.spec), "\(source) via .\(ext)")
            Self.expectBitIdentical(original, back)
        }
    }

    /// The .pth writer emits what torch.save does: a stored zip whose members start on 64-byte
    /// boundaries, `version` and `byteorder` records, and a BN step counter for every BN.
    @Test func pthArchiveIsAlignedAndHasTheTorchRecords() throws {
        let dir = try Paths.temporaryDirectory()
        let out = dir.appendingPathComponent("m.pth").path
        _ = try exportModel(input: Self.fixture("torch/tv-resnet18-mini/tv-resnet18-mini.pth"), output: out)
        let ckpt = try readTorchCheckpoint(path: out)
        #expect(ckpt.container.contains("64-byte aligned"))
        #expect(ckpt.container.contains("version 3"))
        let bns = try loadModel(path: out).model.spec.allOps.filter { if case .batchNorm = $0 { return true } else { return false } }.count
        #expect(ckpt.ignored.filter { $0.hasSuffix("num_batches_tracked") }.count == bns)
    }

    /// The ONNX file parses back into the graph that was built, and the initializers are the
    /// canonical tensors.
    @Test func onnxExportParsesBackWithTheCanonicalInitializers() throws {
        let dir = try Paths.temporaryDirectory()
        let out = dir.appendingPathComponent("m.onnx").path
        let source = Self.fixture("torch/cifar-resnet20-optionA/cifar-resnet20-optionA.pth")
        _ = try exportModel(input: source, output: out, options: .init(batch: 2))
        let model = try loadModel(path: source).model
        let onnx = try unpackONNX([UInt8](try Data(contentsOf: URL(fileURLWithPath: out))), file: out)
        #expect(onnx.inputs.first?.dims == [.value(2), .value(3), .value(32), .value(32)])
        #expect(onnx.outputs.first?.dims == [.value(2), .value(model.spec.classes)])
        // Option A shortcuts are Slice with steps + Pad on the channel axis.
        #expect(onnx.nodes.contains { $0.opType == "Slice" })
        #expect(Set(onnx.initializers.filter { $0.dataType == 1 }.map(\.name)) == Set(model.tensors.keys))
        #expect(onnx.metadata["tool_version"] == toolVersion)
        #expect(try onnxModel(model, inputSize: nil, batch: 2, metadata: onnx.metadata) == onnx)
    }

    /// A float16 `.rnw` exported keeps its float16 conv and dense weights in every PyTorch-side
    /// format and carries its provenance: the file's hash, the tool version and the parity record
    /// the `.rnw` holds. (tools/check_exports.py loads the same files in torch, safetensors and
    /// onnxruntime.)
    @Test("float16 weights stay float16, with provenance", arguments: ["safetensors", "pth", "onnx"])
    func float16RNWExportKeepsDTypeAndProvenance(format: String) throws {
        let source = Self.fixture("rnw/seed-keras.v1.1.f16.rnw")
        let dir = try Paths.temporaryDirectory()
        let out = dir.appendingPathComponent("m.\(format)").path
        let report = try exportModel(input: source, output: out)
        let file = try RNWReader(path: source)
        let narrow = Set(file.manifest.tensors.filter { $0.dtype == .float16 }.map(\.name))
        #expect(!narrow.isEmpty && narrow.contains("conv1.weight"))
        #expect(report.notes.contains { $0.contains("kept as f16") })
        var dtypes: [String: DType] = [:]
        var metadata: [String: String] = [:]
        switch format {
        case "onnx":
            let onnx = try unpackONNX([UInt8](try Data(contentsOf: URL(fileURLWithPath: out))), file: out)
            for t in onnx.initializers { dtypes[t.name] = t.dataType == 10 ? .float16 : t.dataType == 1 ? .float32 : .int64 }
            // Each float16 initializer feeds its op through a Cast to float.
            for name in narrow { #expect(onnx.nodes.contains { $0.opType == "Cast" && $0.inputs == [name] }) }
            metadata = onnx.metadata
        case "safetensors":
            let bytes = try Data(contentsOf: URL(fileURLWithPath: out))
            let layout = try bytes.withUnsafeBytes { try parseSafeTensorsHeader($0, file: out) }
            for e in layout.entries { dtypes[e.name] = e.dtype }
            metadata = layout.metadata
            #expect(metadata["format"] == "pt")
        default:
            for t in try readTorchCheckpoint(path: out).tensors { dtypes[t.name] = t.sourceDType }
            let archive = String(decoding: try Data(contentsOf: URL(fileURLWithPath: out)), as: UTF8.self)
            for key in ["_metadata", "resnet_convert", "source_sha256", "tool_version", toolVersion] { #expect(archive.contains(key)) }
        }
        // The names are canonical for this structure: every narrowed weight is stored narrow, nothing else is.
        #expect(Set(dtypes.filter { $0.value == .float16 }.keys) == narrow)
        if format != "pth" {
            #expect(metadata["tool_version"] == toolVersion)
            #expect(metadata["source_sha256"] == (try sha256Hex(path: source)))
            #expect(metadata["rnw_source_sha256"] == file.manifest.provenance?.sourceSHA256)
            let parity = try #require(metadata["parity"])
            #expect(parity.contains("stored model (f16)"))
        }
        // The values are the stored ones bit for bit: exportModel's own read-back proves that.
    }

    /// int8 weights widen to float32, with a note saying so.
    @Test func int8RNWExportWidensWithANote() throws {
        let dir = try Paths.temporaryDirectory()
        let out = dir.appendingPathComponent("m.safetensors").path
        let report = try exportModel(input: Self.fixture("rnw/seed-keras.v1.1.int8.rnw"), output: out)
        #expect(report.notes.contains { $0.contains("int8 tensor(s) widened to float32") })
        #expect(try readSafeTensors(path: out).tensors.allSatisfy { $0.sourceDType == .float32 })
    }

    // MARK: - safetensors validation

    static func safetensors(header: String, data: [UInt8]) -> Data {
        var d = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { d.append(contentsOf: $0) }
        d.append(contentsOf: Array(header.utf8))
        d.append(contentsOf: data)
        return d
    }

    static func refusal(_ bytes: Data) -> String? {
        bytes.withUnsafeBytes { raw in
            do { _ = try parseSafeTensorsHeader(raw, file: "t.safetensors"); return nil } catch { return "\(error)" }
        }
    }

    @Test func aWellFormedSafetensorsHeaderParses() {
        let ok = Self.safetensors(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"format":"pt"}}"#, data: .init(repeating: 0, count: 8))
        #expect(Self.refusal(ok) == nil)
    }

    @Test("malformed safetensors headers are refused with the reason", arguments: [
        (#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8, "needs 12 bytes"),
        (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8, "overlap"),
        (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8, "belong to no tensor"),
        (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 4, "truncated"),
        (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 8, "after the last tensor"),
        (#"{"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#, 8, "dtype C64"),
        (#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, 4, "not a size"),
        (#"{"a":{"dtype":"F32","shape":[2147483647,2147483647,2147483647],"data_offsets":[0,4]}}"#, 4, "overflows"),
        (#"[1,2]"#, 0, "does not start with '{'"),
        (#"{"a":"#, 0, "unterminated object"),
    ])
    func malformedSafetensorsAreRefused(header: String, dataBytes: Int, mention: String) {
        let reason = Self.refusal(Self.safetensors(header: header, data: .init(repeating: 0, count: dataBytes)))
        #expect(reason?.contains(mention) == true, "got \(reason ?? "no error")")
    }

    @Test func aHeaderLengthBeyondTheCapOrTheFileIsRefused() {
        var huge = Data()
        withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { huge.append(contentsOf: $0) }
        #expect(Self.refusal(huge)?.contains("limit") == true)
        var short = Data()
        withUnsafeBytes(of: UInt64(100).littleEndian) { short.append(contentsOf: $0) }
        short.append(contentsOf: Array("{}".utf8))
        #expect(Self.refusal(short)?.contains("only 2 follow") == true)
        #expect(Self.refusal(Data([1, 2, 3]))?.contains("fewer than") == true)
    }
}
