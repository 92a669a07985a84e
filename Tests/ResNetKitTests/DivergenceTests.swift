import Foundation
import Testing
@testable import ResNetKit

/// A corrupted layer must be caught and named: the first divergent layer is the block that holds it.
@Suite struct DivergenceTests {
    static func corrupted(_ model: ResNetModel, _ tensor: String, by factor: Float) throws -> ResNetModel {
        var m = model
        let t = try #require(m.tensors[tensor], "no tensor \(tensor)")
        m.tensors[tensor] = Tensor(shape: t.shape, data: t.data.map { $0 * factor })
        return m
    }

    @Test("a scaled conv weight is located by the per-layer goldens", arguments: [
        ("seed-keras/keras3.keras", "layer3.1.conv2.weight", "layer3.1"),
        ("kapp-resnet-v2/keras3.keras", "layer3.1.conv2.weight", "layer3.1"),
        ("kapp-resnet-v1/tfkeras2.model.h5", "layer1.1.conv2.weight", "layer1.1"),
    ])
    func corruptedLayerIsNamedByGoldens(file: String, tensor: String, block: String) throws {
        let path = Paths.fixtures.appendingPathComponent("keras/\(file)").path
        let io = Paths.fixtures.appendingPathComponent("keras/\(file.split(separator: "/")[0])/io.npz").path
        let loaded = try loadModel(path: path)
        let goldens = try Goldens(path: io, inputChannels: 3)
        #expect(!goldens.layers.isEmpty, "the fixture goldens carry per-layer activations")
        let clean = try Verifier.checkGoldens(loaded.model, goldens: goldens)
        #expect(clean.passed && clean.firstDivergentLayer == nil, "\(clean.detail)")
        let bad = try Verifier.checkGoldens(try Self.corrupted(loaded.model, tensor, by: 1.5), goldens: goldens)
        #expect(!bad.passed)
        #expect(bad.firstDivergentLayer == block, "\(bad.layers.map { "\($0.name) \($0.maxRelError)" })")
        // Every layer before the corrupted block still agrees.
        let before = bad.layers.prefix { $0.name != block }
        #expect(before.allSatisfy { $0.passed })
    }

    @Test("a scaled weight in a PyTorch model is located by the per-layer goldens", arguments: [
        ("tv-resnet18-mini/tv-resnet18-mini.pth", "layer3.1.conv2.weight", "layer3.1"),
        ("seed-torch/seed-torch.pth", "layer3.1.conv2.weight", "layer3.1"),
        ("cifar-resnet20-optionB/cifar-resnet20-optionB.pth", "layer2.0.downsample.1.running_var", "layer2.0"),
    ])
    func corruptedTorchLayerIsNamed(file: String, tensor: String, block: String) throws {
        let path = Paths.fixtures.appendingPathComponent("torch/\(file)").path
        let io = Paths.fixtures.appendingPathComponent("torch/\(file.split(separator: "/")[0])/io.npz").path
        let loaded = try loadModel(path: path)
        let goldens = try Goldens(path: io, inputChannels: 3)
        #expect(goldens.layout == .nchw && !goldens.layers.isEmpty)
        let clean = try Verifier.checkGoldens(loaded.model, goldens: goldens)
        #expect(clean.passed, "\(clean.detail)")
        let bad = try Verifier.checkGoldens(try Self.corrupted(loaded.model, tensor, by: 1.5), goldens: goldens)
        #expect(bad.firstDivergentLayer == block, "\(bad.layers.map { "\($0.name) \($0.maxRelError)" })")
    }

    @Test func theGraphSelfCheckAlsoNamesTheCorruptedBlock() throws {
        let path = Paths.fixtures.appendingPathComponent("keras/seed-keras/tfkeras2.model.h5").path
        let loaded = try loadModel(path: path)
        let graph = try #require(loaded.kerasGraph)
        let bad = try Self.corrupted(loaded.model, "layer2.1.bn1.running_var", by: 4)
        let check = try Verifier.checkKerasGraph(graph, model: bad, file: path, blockOutputs: loaded.kerasBlockOutputs)
        #expect(!check.passed)
        #expect(check.firstDivergentLayer == "layer2.1")
        #expect(check.layers.count == loaded.model.spec.stages.map(\.blocks.count).reduce(0, +))
    }

    @Test func theSummaryJSONHasEveryField() throws {
        let path = Paths.fixtures.appendingPathComponent("keras/seed-keras/keras3.keras").path
        let io = Paths.fixtures.appendingPathComponent("keras/seed-keras/io.npz").path
        let loaded = try loadModel(path: path)
        let check = try Verifier.checkGoldens(loaded.model, goldens: try Goldens(path: io, inputChannels: 3))
        let data = try JSONEncoder().encode(VerificationSummary(model: path, check: check))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        for key in ["passed", "max_abs_error", "max_rel_error", "cosine", "top1_agreement", "first_divergent_layer", "tolerance", "layers"] {
            #expect(object.keys.contains(key), "missing \(key)")
        }
        #expect(object["first_divergent_layer"] is NSNull)
        #expect((object["layers"] as? [Any])?.count == 9)
    }
}

/// Per-layer goldens named by the source framework's own modules are compared at the equivalent point.
@Suite struct LayerNamingTests {
    static let folder = Paths.fixtures.appendingPathComponent("torch/tv-resnet18-mini")

    /// The fixture's real-PyTorch per-layer goldens renamed as torchvision's hooks name them: `layerN`
    /// is the stage output (its last block, `layerN.1` here) and `avgpool` is computed from PyTorch's own
    /// `layer4` activation. `relu` and `maxpool` are not among the recorded activations; they come
    /// from the model itself, with `extra`.
    static func torchvisionNamedGoldens(_ model: ResNetModel, extra: [String] = []) throws -> Goldens {
        var goldens = try Goldens(path: folder.appendingPathComponent("io.npz").path, inputChannels: 3)
        let real = Dictionary(goldens.layers.map { ($0.name, $0.tensor) }, uniquingKeysWith: { a, _ in a })
        var own: [String: Tensor] = [:]
        _ = try forward(model, input: goldens.input, capture: { name, t in own[name] = t })
        let l4 = try #require(real["layer4.1"])
        let (n, c, hw) = (l4.shape[0], l4.shape[1], l4.shape[2] * l4.shape[3])
        var pooled = [Float](repeating: 0, count: n * c)
        for i in 0..<(n * c) { pooled[i] = l4.data[i * hw..<(i + 1) * hw].reduce(0, +) / Float(hw) }
        let conv1 = try #require(real["conv1"]), relu = try #require(own["stem.relu"]), maxpool = try #require(own["stem.maxpool"])
        let l1 = try #require(real["layer1.1"]), l2 = try #require(real["layer2.1"]), l3 = try #require(real["layer3.1"])
        let fc = try #require(real["fc"])
        var layers: [(name: String, tensor: Tensor)] = [("conv1", conv1), ("relu", relu), ("maxpool", maxpool)]
        layers += [("layer1", l1), ("layer2", l2), ("layer3", l3), ("layer4", l4)]
        layers += [("avgpool", Tensor(shape: [n, c, 1, 1], data: pooled)), ("fc", fc)]
        goldens.layers = layers
        goldens.layers += extra.map { ($0, Tensor(zeros: [2, 4])) }
        return goldens
    }

    @Test("a perfect model passes with torchvision's names relu, maxpool, layer1, avgpool")
    func torchvisionNamesArePassed() throws {
        let model = try loadModel(path: Self.folder.appendingPathComponent("tv-resnet18-mini.pth").path).model
        let check = try Verifier.checkGoldens(model, goldens: try Self.torchvisionNamedGoldens(model))
        #expect(check.passed, "\(check.detail)")
        #expect(check.layers.map(\.name) == ["conv1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"])
        #expect(check.layers.allSatisfy { $0.passed })
        #expect(check.layers.first { $0.name == "maxpool" }?.comparedWith == "stem.maxpool")
        #expect(check.layers.first { $0.name == "layer1" }?.comparedWith == "layer1.1")
        #expect(check.layers.first { $0.name == "conv1" }?.comparedWith == nil)
        #expect(check.notCompared.isEmpty)
    }

    @Test("a perturbed weight still fails, naming the first divergent layer by the golden's name")
    func perturbedWeightIsNamed() throws {
        let model = try loadModel(path: Self.folder.appendingPathComponent("tv-resnet18-mini.pth").path).model
        let goldens = try Self.torchvisionNamedGoldens(model)
        let bad = try Verifier.checkGoldens(try DivergenceTests.corrupted(model, "layer3.1.conv2.weight", by: 1.5), goldens: goldens)
        #expect(!bad.passed)
        #expect(bad.firstDivergentLayer == "layer3", "\(bad.layers.map { "\($0.name) \($0.maxRelError)" })")
        #expect(bad.layers.prefix { $0.name != "layer3" }.allSatisfy { $0.passed })
    }

    @Test("a golden name with no equivalent point is listed as not compared, not failed")
    func unknownNameIsNotCompared() throws {
        let path = Self.folder.appendingPathComponent("tv-resnet18-mini.pth").path
        let loaded = try loadModel(path: path)
        let goldens = try Self.torchvisionNamedGoldens(loaded.model, extra: ["features.99", "layer9"])
        let check = try Verifier.checkGoldens(loaded.model, goldens: goldens)
        #expect(check.passed, "\(check.detail)")
        #expect(check.notCompared == ["features.99", "layer9"])
        #expect(check.detail.contains("not compared (no equivalent point in the model): features.99, layer9"))
        let summary = VerificationSummary(model: path, check: check)
        #expect(summary.text.contains("not compared"))
        let object = try #require(try JSONSerialization.jsonObject(with: try JSONEncoder().encode(summary)) as? [String: Any])
        #expect(object["not_compared"] as? [String] == ["features.99", "layer9"])
        let rows = try #require(object["layers"] as? [[String: Any]])
        #expect(rows.first { $0["name"] as? String == "avgpool" }?["compared_with"] as? String == "head.avgpool")
    }

    @Test("a model without a max pool leaves a maxpool golden uncompared")
    func missingPointIsNotCompared() throws {
        let path = Paths.fixtures.appendingPathComponent("torch/cifar-resnet20-optionB/cifar-resnet20-optionB.pth").path
        let spec = try loadModel(path: path).model.spec
        #expect(Verifier.layerPoint(for: "maxpool", spec: spec) == nil)
        #expect(Verifier.layerPoint(for: "relu", spec: spec) == "stem.relu")
        #expect(Verifier.layerPoint(for: "layer3", spec: spec) == "layer3.2")
        #expect(Verifier.layerPoint(for: "layer4", spec: spec) == nil)
    }

    @Test("source module names of a PyTorch file become aliases of canonical points")
    func sourceNamesBecomeAliases() throws {
        let path = Paths.fixtures.appendingPathComponent("torch/seed-torch/seed-torch.pth").path
        let loaded = try loadModel(path: path)
        let aliases = Verifier.layerAliases(loaded)
        // The seed names its stages conv2…conv5 and its classifier `classifier`.
        #expect(aliases["classifier"] == "fc", "\(aliases)")
        #expect(aliases["conv2.0"] == "layer1.0", "\(aliases)")
        #expect(aliases["conv2"] == "layer1.2", "\(aliases)")
        // The committed real-PyTorch goldens renamed to the seed's own module names still pass.
        var goldens = try Goldens(path: Paths.fixtures.appendingPathComponent("torch/seed-torch/io.npz").path, inputChannels: 3)
        goldens.layers = goldens.layers.map { name, t in
            if name == "fc" { return ("classifier", t) }
            if name.hasPrefix("layer"), let s = Int(name.dropFirst(5).prefix(1)) { return ("conv\(s + 1)" + name.dropFirst(6), t) }
            return (name, t)
        }
        let check = try Verifier.checkGoldens(loaded.model, goldens: goldens, aliases: aliases)
        #expect(check.passed && check.notCompared.isEmpty, "\(check.detail)")
        #expect(check.layers.count == goldens.layers.count)
    }

    @Test("Keras block output layer names compare at the canonical block")
    func kerasLayerNamesCompare() throws {
        let path = Paths.fixtures.appendingPathComponent("keras/kapp-resnet-v1/tfkeras2.model.h5").path
        let loaded = try loadModel(path: path)
        let aliases = Verifier.layerAliases(loaded)
        let byCanonical = Dictionary(loaded.kerasBlockOutputs.map { ($0.canonical, $0.kerasPath) }, uniquingKeysWith: { a, _ in a })
        var goldens = try Goldens(path: Paths.fixtures.appendingPathComponent("keras/kapp-resnet-v1/io.npz").path, inputChannels: 3)
        goldens.layers = goldens.layers.map { name, t in (byCanonical[name].map { String($0.split(separator: "/").last!) } ?? name, t) }
        let check = try Verifier.checkGoldens(loaded.model, goldens: goldens, aliases: aliases)
        #expect(check.passed && check.notCompared.isEmpty, "\(check.detail)")
        #expect(check.layers.contains { $0.comparedWith == "layer1.0" }, "\(check.layers.map(\.name))")
    }
}
