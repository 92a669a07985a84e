import Foundation
import Testing
@testable import ResNetKit

/// Keras files without a model config that no preset describes: the structure is read from the
/// layer order, the variables' shapes and the weightless layers' names, and what the weights cannot
/// tell is offered as candidates. Fixtures: fixtures/recognition-keras (tools/make_recognition_keras_fixtures.py).
@Suite struct KerasRecognitionTests {
    static func fixture(_ name: String) -> String {
        Paths.fixtures.appendingPathComponent("recognition-keras/\(name)").path
    }

    /// Runs every candidate against the goldens; returns the summaries of those that pass.
    static func passing(_ loaded: LoadedModel, goldens: String) throws -> [String] {
        let g = try Goldens(path: goldens, inputChannels: loaded.model.spec.inputChannels)
        let all = loaded.candidates.isEmpty
            ? [StructureCandidate(model: loaded.model, mapping: loaded.mapping, choices: [])] : loaded.candidates
        return try all.filter { try Verifier.checkGoldens($0.model, goldens: g).passed }.map(\.summary)
    }

    @Test func kerasIOv1WeightsOnlyPicksTheRightCandidate() throws {
        let loaded = try loadModel(path: Self.fixture("kerasio-v1-d14.h5"))
        #expect(loaded.model.spec.family == "keras-layer-order")
        #expect(loaded.candidates.count == 2)
        #expect(loaded.candidates.first?.choices == ["head: softmax"])
        #expect(try Self.passing(loaded, goldens: Self.fixture("kerasio-v1-d14.io.npz")) == ["head: softmax"])
        // The true structure: 3 stages of 2 basic blocks, a 1x1 projection without BN in stages 2-3
        // carrying the stride together with the first 3x3 conv, a ReLU after each add.
        let spec = loaded.model.spec
        #expect(spec.stages.map(\.blocks.count) == [2, 2, 2])
        let b = spec.stages[1].blocks[0]
        guard case let .conv(proj) = b.shortcut.first, case let .conv(first) = b.residual.first else {
            Issue.record("stage 2 block 1 has no projection conv: \(b)"); return
        }
        #expect(b.shortcut.count == 1 && proj.kernel == [1, 1] && proj.stride == [2, 2] && proj.bias)
        #expect(first.kernel == [3, 3] && first.stride == [2, 2] && first.padding == .same)
        #expect(b.post == [.relu])
        #expect(spec.head.last == .softmax)
        let graph = try #require(loaded.kerasGraph)
        #expect(try Verifier.checkKerasGraph(graph, model: loaded.model, file: "v1").passed)
    }

    @Test func kerasIOv2WeightsOnlyPicksTheRightCandidate() throws {
        let loaded = try loadModel(path: Self.fixture("kerasio-v2-d20.h5"))
        #expect(loaded.candidates.count == 16)
        #expect(loaded.candidates.count <= 16)
        let pass = try Self.passing(loaded, goldens: Self.fixture("kerasio-v2-d20.io.npz"))
        #expect(pass.count == 1, "candidates passing: \(pass)")
        #expect(pass.first == loaded.candidates[0].summary)
        let spec = loaded.model.spec
        #expect(spec.stages.map(\.blocks.count) == [2, 2, 2])
        // Pre-activation bottlenecks: no ReLU after the add; the first stage's first block starts with its conv.
        #expect(spec.stages.allSatisfy { $0.blocks.allSatisfy { $0.post.isEmpty && $0.pre.isEmpty } })
        guard case .conv = spec.stages[0].blocks[0].residual.first, case .batchNorm = spec.stages[1].blocks[0].residual.first else {
            Issue.record("unexpected block openings"); return
        }
        // The stride sits on the first (1x1) conv of stage 2's first block.
        guard case let .conv(c) = spec.stages[1].blocks[0].residual[2] else { Issue.record("no conv"); return }
        #expect(c.kernel == [1, 1] && c.stride == [2, 2])
    }

    @Test func everyCandidateDescribesItsChoices() throws {
        let loaded = try loadModel(path: Self.fixture("kerasio-v2-d20.h5"))
        #expect(Set(loaded.candidates.map(\.summary)).count == loaded.candidates.count)
        for c in loaded.candidates {
            #expect(c.choices.count == 4)
            #expect(c.choices.contains { $0 == "head: softmax" || $0 == "head: logits" })
            try c.model.validate()
        }
    }

    @Test func kerasApplicationsLogitsWeightsOfferTheLogitsHead() throws {
        // A Keras 3 .weights.h5 of keras.applications' own ResNet code with classifier_activation=None:
        // the preset (softmax) comes first, and only the logits candidate reproduces the goldens.
        let loaded = try loadModel(path: Self.fixture("kapp-tiny-logits.weights.h5"))
        #expect(loaded.model.spec.family == "keras-resnet-v1")
        #expect(loaded.candidates.map(\.summary) == ["head: softmax", "head: logits"])
        #expect(try Self.passing(loaded, goldens: Self.fixture("kapp-tiny-logits.io.npz")) == ["head: logits"])
    }

    @Test func configWithDictAndKerasTensorReferencesReads() throws {
        // input_layers written as {"image": [...]} and output_layers as a __keras_tensor__ object.
        let loaded = try loadModel(path: Self.fixture("config-dict-refs.h5"))
        #expect(loaded.candidates.isEmpty)   // the graph says everything, the softmax included
        #expect(try Self.passing(loaded, goldens: Self.fixture("config-dict-refs.io.npz")).count == 1)
    }

    @Test("input_layers/output_layers in every form Keras writes", arguments: [
        #"[["input_1", 0, 0]]"#,
        #"["input_1", 0, 0]"#,
        #"{"image": ["input_1", 0, 0]}"#,
        #"{"class_name": "__keras_tensor__", "config": {"shape": [null, 4, 4, 3], "keras_history": ["input_1", 0, 0]}}"#,
        #"[{"class_name": "__keras_tensor__", "config": {"keras_history": ["input_1", 0, 0]}}]"#,
        #"[[["input_1", 0, 0]]]"#,
    ])
    func tensorReferenceForms(form: String) throws {
        let text = #"""
        {"class_name": "Functional", "config": {"name": "m", "layers": [
          {"class_name": "InputLayer", "name": "input_1", "config": {"name": "input_1", "batch_input_shape": [null, 4, 4, 3]}, "inbound_nodes": []},
          {"class_name": "Flatten", "name": "flatten", "config": {"name": "flatten"}, "inbound_nodes": [[["input_1", 0, 0, {}]]]}],
         "input_layers": FORM,
         "output_layers": [["flatten", 0, 0]]}}
        """#.replacingOccurrences(of: "FORM", with: form)
        let json = try parseKerasJSON(Data(text.utf8), file: "m.json", place: "config")
        var builder = KerasGraphBuilder(file: "m.json", place: "config")
        let (graph, _) = try builder.build(json)
        #expect(graph.nodes[graph.input].path == "input_1")
        #expect(graph.nodes[graph.output].path == "flatten")
    }

    @Test func aMalformedReferenceIsRefusedWithItsPlace() throws {
        let text = #"{"class_name": "Functional", "config": {"layers": [], "input_layers": {"a": 3}, "output_layers": []}}"#
        let json = try parseKerasJSON(Data(text.utf8), file: "m.json", place: "config")
        var builder = KerasGraphBuilder(file: "m.json", place: "config")
        #expect(throws: ResNetError.self) { _ = try builder.build(json) }
    }

    @Test func externalKerasIOResNet20WeightsOnlyConverts() throws {
        // arturjordao/DepthWisePruning ResNet20.h5: Keras 2.1.2 save_weights, keras.io CIFAR ResNet v1.
        guard let path = Paths.externalFile("arturjordao-dwp-resnet20/ResNet20.h5"),
              let io = Paths.externalFile("arturjordao-dwp-resnet20/io.npz") else { return }
        let loaded = try loadModel(path: path)
        #expect(try Self.passing(loaded, goldens: io) == ["head: softmax"])
        #expect(loaded.model.spec.stages.map(\.blocks.count) == [3, 3, 3])
        let out = try Paths.temporaryDirectory().appendingPathComponent("resnet20.rnw").path
        let report = try convert(input: path, output: out, options: .init(expect: io))
        #expect(report.passed)
    }

    @Test func keras1LayerNamesReadTheSame() throws {
        // Keras 1 wrote `convolution2d_N`, `batchnormalization_N`, `merge_N`, `averagepooling2d_N` and
        // variable names without the layer's group (`convolution2d_1_W`). Same weights, Keras 1 names.
        let v1 = try readKerasFile(path: Self.fixture("kerasio-v1-d14.h5"))
        func rename(_ s: String) -> String {
            s.replacingOccurrences(of: "conv2d", with: "convolution2d")
                .replacingOccurrences(of: "batch_normalization", with: "batchnormalization")
                .replacingOccurrences(of: "average_pooling2d", with: "averagepooling2d")
                .replacingOccurrences(of: "add", with: "merge")
        }
        var k = v1
        k.layerOrder = v1.layerOrder!.map(rename)
        k.layerWeights = v1.layerWeights.map { g in
            (rename(g.layer) + "/", g.variables.map { v in
                var t = v
                t.name = rename(v.name).replacingOccurrences(of: "/", with: "_")
                return t
            })
        }
        let loaded = try loadKeras(k, arch: nil)
        #expect(try Self.passing(loaded, goldens: Self.fixture("kerasio-v1-d14.io.npz")) == ["head: softmax"])
    }

    @Test func unknownWeightlessLayersAreNamedInTheRefusal() throws {
        // A weights-only file whose layer order holds a layer the names do not explain.
        let v1 = try readKerasFile(path: Self.fixture("kerasio-v1-d14.h5"))
        var k = v1
        k.layerOrder = v1.layerOrder!.map { $0.hasPrefix("flatten") ? "lambda_7" : $0 }
        do {
            _ = try loadKeras(k, arch: nil)
            Issue.record("expected a refusal")
        } catch let e as ResNetError {
            #expect(e.description.contains("lambda_7"))
            #expect(e.description.contains("--arch"))
        }
    }
}
