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

    @Test("converts with its goldens and no --arch", arguments: ["kerasio-v1-d14.h5", "kerasio-v2-d20.h5", "config-dict-refs.h5"])
    func convertsWithGoldens(file: String) throws {
        let io = Self.fixture(file.replacingOccurrences(of: ".h5", with: ".io.npz"))
        let out = try Paths.temporaryDirectory().appendingPathComponent("out.rnw").path
        let report = try convert(input: Self.fixture(file), output: out, options: .init(expect: io))
        #expect(report.passed)
        #expect(report.checks.count >= 2)   // goldens and the Keras graph self-check
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

    @Test func adoptingACandidateSwapsTheGraphTheSelfCheckRuns() throws {
        var loaded = try loadModel(path: Self.fixture("kapp-tiny-logits.weights.h5"))
        let goldens = try Goldens(path: Self.fixture("kapp-tiny-logits.io.npz"), inputChannels: 3)
        try loaded.adoptCandidate(1, reason: "test")
        #expect(loaded.model.spec.head.last != .softmax)
        #expect(try Verifier.checkGoldens(loaded.model, goldens: goldens).passed)
        let graph = try #require(loaded.kerasGraph)
        let check = try Verifier.checkKerasGraph(graph, model: loaded.model, file: loaded.path, blockOutputs: loaded.kerasBlockOutputs)
        #expect(check.passed, "\(check.detail)")
        #expect(loaded.notes.last == "structure: head: logits (test)")
        // The v2 file's last reading differs in every choice; its graph follows it too.
        var v2 = try loadModel(path: Self.fixture("kerasio-v2-d20.h5"))
        try v2.adoptCandidate(15, reason: "test")
        let g2 = try #require(v2.kerasGraph)
        #expect(try Verifier.checkKerasGraph(g2, model: v2.model, file: v2.path, blockOutputs: v2.kerasBlockOutputs).passed)
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

    @Test("malformed input_layers are refused, not crashed on", arguments: [
        #"{"a": 3}"#, #"{}"#, #"[]"#, #"null"#, #"["input_1"]"#, #"[["input_1", 0, -1]]"#,
        String(repeating: "[", count: 40) + #"["input_1", 0, 0]"# + String(repeating: "]", count: 40),
    ])
    func malformedReferencesAreRefused(form: String) throws {
        let text = #"{"class_name": "Functional", "config": {"layers": [], "input_layers": FORM, "output_layers": []}}"#
            .replacingOccurrences(of: "FORM", with: form)
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

/// Evidence for a goldens-free choice: with BatchNorm statistics calibrated on natural-looking images,
/// feeding such images through each candidate and comparing every BN's batch statistics with its
/// moving ones ranks the true wiring first. Softmax/logits leave the BNs untouched, so candidates that
/// differ only in the head tie (the plausibility check cannot settle the head).
@Suite struct KerasRecognitionPlausibilityTests {
    /// Synthetic natural-looking images (N, 3, H, W): octaves of smooth noise with amplitude growing with
    /// their scale (a 1/f-like spectrum), a luminance field shared by the channels, per-image contrast and cast.
    static func naturalImages(n: Int, size: Int, seed: UInt64) -> Tensor {
        var state = seed | 1
        func uniform() -> Double {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return (Double(state >> 11) + 0.5) / Double(1 << 53)
        }
        func normal() -> Double { (-2 * log(uniform())).squareRoot() * cos(2 * .pi * uniform()) }
        func field() -> [Double] {
            var f = [Double](repeating: 0, count: size * size)
            var cells = 2
            while cells <= size {
                let g = (0..<((cells + 1) * (cells + 1))).map { _ in normal() }
                let amp = Double(size) / Double(cells)
                for y in 0..<size {
                    for x in 0..<size {
                        let fy = Double(y) / Double(size) * Double(cells), fx = Double(x) / Double(size) * Double(cells)
                        let y0 = Int(fy), x0 = Int(fx), ty = fy - Double(y0), tx = fx - Double(x0)
                        func at(_ a: Int, _ b: Int) -> Double { g[a * (cells + 1) + b] }
                        let v = (1 - ty) * ((1 - tx) * at(y0, x0) + tx * at(y0, x0 + 1)) + ty * ((1 - tx) * at(y0 + 1, x0) + tx * at(y0 + 1, x0 + 1))
                        f[y * size + x] += amp * v
                    }
                }
                cells *= 2
            }
            let mean = f.reduce(0, +) / Double(f.count)
            let std = (f.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(f.count)).squareRoot()
            return f.map { ($0 - mean) / (std + 1e-8) }
        }
        var data = [Float](repeating: 0, count: n * 3 * size * size)
        for i in 0..<n {
            let lum = field()
            let contrast = 0.6 + 0.8 * uniform()
            for c in 0..<3 {
                let own = field(), cast = 0.3 * normal()
                for p in 0..<(size * size) {
                    data[(i * 3 + c) * size * size + p] = Float((0.8 * lum[p] + 0.45 * own[p]) * contrast + cast)
                }
            }
        }
        return Tensor(shape: [n, 3, size, size], data: data)
    }

    /// Mean over every BN channel of |batch mean − moving mean| / sqrt(moving var + eps), the BN's
    /// input computed by running the spec truncated just before that BN.
    static func score(_ model: ResNetModel, images: Tensor) throws -> Double {
        let spec = model.spec
        var truncated: [ResNetSpec] = []
        var bns: [BatchNormOp] = []
        func cut(stages: [Stage], tail: [Op], ops: [Op]) {
            for (i, op) in ops.enumerated() {
                guard case let .batchNorm(b) = op else { continue }
                var s = spec
                s.stages = stages; s.head = tail + ops[..<i]
                truncated.append(s); bns.append(b)
            }
        }
        cut(stages: [], tail: [], ops: spec.stem)
        // Stem-only prefixes keep the stem; later ones keep it whole.
        for k in truncated.indices { let i = truncated[k].head.count; truncated[k].stem = Array(spec.stem[..<i]); truncated[k].head = [] }
        var done: [Stage] = []
        for stage in spec.stages {
            var blocks: [Block] = []
            for block in stage.blocks {
                let before = done + (blocks.isEmpty ? [] : [Stage(blocks: blocks)])
                cut(stages: before, tail: [], ops: block.pre)
                cut(stages: before, tail: block.pre, ops: block.residual)
                cut(stages: before, tail: block.pre, ops: block.shortcut)
                for (i, op) in block.post.enumerated() {
                    guard case let .batchNorm(b) = op else { continue }
                    var s = spec, partial = block
                    partial.post = Array(block.post[..<i])
                    s.stages = done + [Stage(blocks: blocks + [partial])]; s.head = []
                    truncated.append(s); bns.append(b)
                }
                blocks.append(block)
            }
            done.append(Stage(blocks: blocks))
        }
        cut(stages: spec.stages, tail: [], ops: spec.head)
        var total = 0.0, count = 0
        for (s, b) in zip(truncated, bns) {
            let x = try forward(ResNetModel(spec: s, tensors: model.tensors), input: images)
            let (n, c) = (x.shape[0], x.shape[1])
            let hw = x.shape.count == 4 ? x.shape[2] * x.shape[3] : 1
            let mean = model.tensors["\(b.name).running_mean"]!.data, variance = model.tensors["\(b.name).running_var"]!.data
            for ch in 0..<c {
                var sum = 0.0, sq = 0.0
                for i in 0..<n { for p in 0..<hw { let v = Double(x.data[(i * c + ch) * hw + p]); sum += v; sq += v * v } }
                let m = sum / Double(n * hw), v = max(sq / Double(n * hw) - m * m, 0)
                let sd = (Double(variance[ch]) + b.epsilon).squareRoot()
                total += abs(m - Double(mean[ch])) / sd + abs(log((v + b.epsilon) / (sd * sd)))
                count += 1
            }
        }
        return total / Double(max(count, 1))
    }

    @Test(arguments: ["kerasio-v1-d14.h5", "kerasio-v2-d20.h5"])
    func batchNormStatisticsRankTheTrueStructureFirst(file: String) throws {
        let loaded = try loadModel(path: KerasRecognitionTests.fixture(file))
        let images = Self.naturalImages(n: 8, size: 32, seed: 7)
        // The head does not touch any BN: score one candidate per structural reading.
        let structural = { (c: StructureCandidate) in c.choices.filter { !$0.hasPrefix("head: ") } }
        var seen = Set<[String]>()
        let distinct = loaded.candidates.filter { seen.insert(structural($0)).inserted }
        let scores = try distinct.map { try Self.score($0.model, images: images) }
        for (c, s) in zip(distinct, scores) { testLog("plausibility \(file): \(String(format: "%.3f", s))  \(structural(c))") }
        let truth = scores[0]
        for (c, s) in zip(distinct, scores).dropFirst() {
            testLog("plausibility \(file): margin \(String(format: "%.2f", s / truth))x for \(structural(c))")
        }
        #expect(scores.dropFirst().allSatisfy { $0 > truth }, "\(scores)")
    }
}
