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
