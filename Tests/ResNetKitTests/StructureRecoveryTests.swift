import Foundation
import Testing
@testable import ResNetKit

/// Structure recovered from names, order and shapes, with what the weights cannot show settled by
/// parity with goldens the real framework computed. Every file is forced through the recovery even
/// where a naming table would map it, so the tables are not what makes these pass.
@Suite struct StructureRecoveryTests {
    static let external = TorchParityTests.external + [
        "phlippe-uvadl-resnet/ResNet.ckpt",
        "phlippe-uvadl-preact/ResNetPreAct.ckpt",
    ]

    /// Recovers, enumerates candidates, and settles by the goldens; returns the chosen note.
    private func recoverAndSettle(_ path: String, golden: String) throws -> (LoadedModel, ParityCheck) {
        let ckpt = try readTorchCheckpoint(path: path)
        let r = try recoverTorchStructure(ckpt.tensors, file: path)
        var loaded = LoadedModel(path: path, format: "test", model: r.model, kerasGraph: nil, mapping: r.origins, notes: r.notes, storedParity: [])
        loaded.candidates = structureCandidates(of: r.model, mapping: r.origins)
        let goldens = try Goldens(path: golden, inputChannels: r.model.spec.inputChannels)
        loaded = try settleStructure(loaded, goldens: goldens)
        return (loaded, try Verifier.checkGoldens(loaded.model, goldens: goldens))
    }

    @Test("committed torch fixtures are recovered without their naming table", arguments: TorchParityTests.committed.filter { !$0.hasPrefix("seed-torch") })
    func committedFixtureIsRecovered(file: String) throws {
        let dir = Paths.fixtures.appendingPathComponent("torch")
        let path = dir.appendingPathComponent(file).path
        let golden = dir.appendingPathComponent((file as NSString).deletingLastPathComponent + "/io.npz").path
        let (loaded, check) = try recoverAndSettle(path, golden: golden)
        #expect(check.passed, "\(file): \(check.detail)\n\(loaded.notes.joined(separator: "\n"))")
    }

    @Test("external torch checkpoints are recovered without a naming table", arguments: external)
    func externalCheckpointIsRecovered(file: String) throws {
        guard let path = Paths.externalFile(file),
              let golden = Paths.externalFile((file as NSString).deletingLastPathComponent + "/io.npz") else { return }
        let (loaded, check) = try recoverAndSettle(path, golden: golden)
        #expect(check.passed, "\(file): \(check.detail)\n\(loaded.notes.joined(separator: "\n"))")
    }

    @Test func thePreActivationTutorialModelIsReadAsPreActivation() throws {
        guard let path = Paths.externalFile("phlippe-uvadl-preact/ResNetPreAct.ckpt") else { return }
        let model = try loadModel(path: path).model
        let blocks = model.spec.stages.flatMap(\.blocks)
        // BN, ReLU before each conv; no ReLU after the addition; the projection has its own BN-ReLU.
        #expect(blocks.allSatisfy { $0.post.isEmpty })
        #expect(blocks.allSatisfy { if case .batchNorm = $0.residual.first { return true } else { return false } })
        let projected = blocks.filter { !$0.shortcut.isEmpty }
        #expect(projected.count == 2)
        #expect(projected.allSatisfy { if case .batchNorm = $0.shortcut.first { return $0.shortcut[1] == .relu } else { return false } })
        #expect(!model.spec.head.contains { if case .batchNorm = $0 { return true } else { return false } })
    }

    @Test func aBiasedProjectionWithoutBatchNormIsOneConv() throws {
        guard let path = Paths.externalFile("phlippe-uvadl-resnet/ResNet.ckpt") else { return }
        let model = try loadModel(path: path).model
        let projected = model.spec.stages.flatMap(\.blocks).filter { !$0.shortcut.isEmpty }
        #expect(projected.count == 2)
        for b in projected {
            guard b.shortcut.count == 1, case let .conv(c) = b.shortcut[0] else { Issue.record("\(b.name): \(b.shortcut)"); continue }
            #expect(c.bias && c.kernel == [1, 1] && c.stride == [2, 2])
        }
    }

    @Test func theBlockSplitUsesTheGroupWithMoreConvolutionsAsTheResidualBranch() throws {
        // torchvision: direct children conv1..bn2 beside `downsample.*`.
        var tv = StateDictBuilder()
        tv.conv("conv1", 8, 3, 7); tv.bn("bn1", 8)
        tv.conv("layer1.0.conv1", 8, 8, 3); tv.bn("layer1.0.bn1", 8); tv.conv("layer1.0.conv2", 8, 8, 3); tv.bn("layer1.0.bn2", 8)
        tv.conv("layer2.0.conv1", 16, 8, 3); tv.bn("layer2.0.bn1", 16); tv.conv("layer2.0.conv2", 16, 16, 3); tv.bn("layer2.0.bn2", 16)
        tv.conv("layer2.0.downsample.0", 16, 8, 1); tv.bn("layer2.0.downsample.1", 16)
        tv.linear("fc", 5, 16)
        let spec = try recoverTorchStructure(tv.tensors, file: "tv").model.spec
        #expect(spec.stem.contains { if case .maxPool = $0 { return true } else { return false } }, "a 7x7 stem strides and pools")
        let b = spec.stages[1].blocks[0]
        #expect(b.shortcut.count == 2 && b.post == [.relu])
        // HF transformers: `shortcut.*` registered before `layer.*`.
        var hf = StateDictBuilder()
        hf.conv("resnet.embedder.embedder.convolution", 8, 3, 7); hf.bn("resnet.embedder.embedder.normalization", 8)
        hf.conv("resnet.encoder.stages.0.layers.0.layer.0.convolution", 8, 8, 3); hf.bn("resnet.encoder.stages.0.layers.0.layer.0.normalization", 8)
        hf.conv("resnet.encoder.stages.0.layers.0.layer.1.convolution", 8, 8, 3); hf.bn("resnet.encoder.stages.0.layers.0.layer.1.normalization", 8)
        hf.conv("resnet.encoder.stages.1.layers.0.shortcut.convolution", 16, 8, 1); hf.bn("resnet.encoder.stages.1.layers.0.shortcut.normalization", 16)
        hf.conv("resnet.encoder.stages.1.layers.0.layer.0.convolution", 16, 8, 3); hf.bn("resnet.encoder.stages.1.layers.0.layer.0.normalization", 16)
        hf.conv("resnet.encoder.stages.1.layers.0.layer.1.convolution", 16, 16, 3); hf.bn("resnet.encoder.stages.1.layers.0.layer.1.normalization", 16)
        hf.linear("classifier.1", 5, 16)
        let h = try recoverTorchStructure(hf.tensors, file: "hf").model.spec
        #expect(h.stages.map(\.blocks.count) == [1, 1])
        let hb = h.stages[1].blocks[0]
        guard case let .conv(sc)? = hb.shortcut.first, case let .conv(r1)? = hb.residual.first else { Issue.record("\(hb)"); return }
        #expect(sc.kernel == [1, 1] && sc.stride == [2, 2] && r1.kernel == [3, 3] && r1.stride == [2, 2])
    }

    @Test func aResNetDShortcutPoolsBeforeItsConv() throws {
        // timm's avg_down: downsample.0 is the pooling (no tensors), .1 the conv, .2 the BN.
        var sd = StateDictBuilder()
        sd.conv("conv1.0", 4, 3, 3); sd.bn("conv1.1", 4); sd.conv("conv1.3", 4, 4, 3); sd.bn("conv1.4", 4); sd.conv("conv1.6", 8, 4, 3); sd.bn("bn1", 8)
        sd.conv("layer1.0.conv1", 8, 8, 3); sd.bn("layer1.0.bn1", 8); sd.conv("layer1.0.conv2", 8, 8, 3); sd.bn("layer1.0.bn2", 8)
        sd.conv("layer2.0.conv1", 16, 8, 3); sd.bn("layer2.0.bn1", 16); sd.conv("layer2.0.conv2", 16, 16, 3); sd.bn("layer2.0.bn2", 16)
        sd.conv("layer2.0.downsample.1", 16, 8, 1); sd.bn("layer2.0.downsample.2", 16)
        sd.linear("fc", 5, 16)
        let spec = try recoverTorchStructure(sd.tensors, file: "timm-d").model.spec
        let sc = spec.stages[1].blocks[0].shortcut
        guard sc.count == 3, case let .avgPool(p) = sc[0], case let .conv(c) = sc[1], case let .batchNorm(b) = sc[2] else { Issue.record("\(sc)"); return }
        #expect(p.stride == [2, 2] && !p.countIncludePad && c.stride == [1, 1])
        #expect(c.name == "layer2.0.downsample.1" && b.name == "layer2.0.downsample.2")
        #expect(spec.stem.filter { if case .conv = $0 { return true } else { return false } }.count == 3)
    }

    @Test func keysThatAreNotLayerParametersAreListed() {
        var sd = StateDictBuilder()
        sd.conv("conv1", 8, 3, 3); sd.add("alpha1", [1])
        #expect(throws: ResNetError.self) { _ = try recoverTorchStructure(sd.tensors, file: "x") }
        do { _ = try recoverTorchStructure(sd.tensors, file: "x") } catch {
            #expect("\(error)".contains("alpha1"), "\(error)")
        }
    }
}

/// A state dict built in code: names and shapes with small deterministic values.
struct StateDictBuilder {
    var tensors: [SourceTensor] = []
    mutating func add(_ name: String, _ shape: [Int]) {
        let n = shape.reduce(1, *)
        tensors.append(SourceTensor(name: name, sourceDType: .float32, tensor: Tensor(shape: shape, data: (0..<n).map { Float($0 % 7) * 0.01 + 0.5 })))
    }
    mutating func conv(_ name: String, _ out: Int, _ inC: Int, _ k: Int) { add("\(name).weight", [out, inC, k, k]) }
    mutating func bn(_ name: String, _ c: Int) {
        for s in ["weight", "bias", "running_mean", "running_var"] { add("\(name).\(s)", [c]) }
    }
    mutating func linear(_ name: String, _ out: Int, _ inF: Int) { add("\(name).weight", [out, inF]); add("\(name).bias", [out]) }
}

/// Without goldens, the BatchNorm plausibility check keeps (or finds) the structure that reproduces
/// the real framework's goldens on every published checkpoint.
@Suite struct PublishedCheckpointPlausibilityTests {
    @Test("without goldens the structure settled on reproduces the goldens", arguments: ExternalCheckpointFiles.withGoldens)
    func settlesRight(_ rel: String) throws {
        guard let path = Paths.externalFile(rel),
              let golden = Paths.externalFile((rel as NSString).deletingLastPathComponent + "/io.npz") else { return }
        let loaded = try settleStructure(try loadModel(path: path), goldens: nil)
        let goldens = try Goldens(path: golden, inputChannels: loaded.model.spec.inputChannels)
        let check = try Verifier.checkGoldens(loaded.model, goldens: goldens, aliases: Verifier.layerAliases(loaded))
        let passed = check.passed
        #expect(passed, "\(rel): \(loaded.notes.joined(separator: "\n"))")
    }
}

enum ExternalCheckpointFiles {
    static let withGoldens = StructureRecoveryTests.external + [
        "mlcommons-tiny/pretrainedResnet.h5",
        "leogem-keras-injector/ResNet20.keras",
        "aifoundry-mhaq-torchdistill/cifar10-resnet20_cifar10_from_resnet20_cifar10_new-final_run_92.81.th",
        "arturjordao-dwp-resnet20/ResNet20.h5",
    ]
}
