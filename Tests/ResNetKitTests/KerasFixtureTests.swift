import Foundation
import Testing
@testable import ResNetKit

/// Every committed Keras fixture (written by the real tf_keras / Keras 3, see fixtures/MANIFEST.json)
/// converts and reproduces its framework goldens within the float32 tolerance.
@Suite struct KerasFixtureTests {
    /// The preset that describes each fixture model, for files without a config.
    static let presets = ["kapp-resnet-v1": "keras-resnet-v1", "kapp-resnet-v2": "keras-resnet-v2", "seed-keras": "seed-keras"]

    static var files: [String] {
        let root = Paths.fixtures.appendingPathComponent("keras")
        let models = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return models.sorted().flatMap { model in
            ((try? FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent(model).path)) ?? [])
                .filter { $0.hasSuffix(".h5") || $0.hasSuffix(".keras") }.sorted().map { "\(model)/\($0)" }
        }
    }

    @Test func theFixturesAreThere() {
        #expect(Self.files.count >= 20, "fixtures/keras is incomplete: \(Self.files)")
    }

    @Test("Keras fixture matches its goldens", arguments: files)
    func fixtureMatchesGoldens(relative: String) throws {
        let model = String(relative.split(separator: "/")[0])
        let path = Paths.fixtures.appendingPathComponent("keras/\(relative)").path
        let io = Paths.fixtures.appendingPathComponent("keras/\(model)/io.npz").path
        let kind = try readKerasFile(path: path).kind
        let needsArch = kind == .legacyWeights || kind == .v3Weights
        if needsArch && Self.presets[model] == nil {
            // A custom architecture without a config cannot be mapped: the error must say so.
            #expect(throws: ResNetError.self) { try loadModel(path: path) }
            return
        }
        let loaded = try loadModel(path: path, arch: needsArch ? Self.presets[model] : nil)
        let goldens = try Goldens(path: io, inputChannels: loaded.model.spec.inputChannels)
        #expect(goldens.layout == .nhwc)
        let check = try Verifier.checkGoldens(loaded.model, goldens: goldens)
        #expect(check.passed, "\(relative): \(check.detail)")
        let graph = try #require(loaded.kerasGraph)
        let selfCheck = try Verifier.checkKerasGraph(graph, model: loaded.model, file: path)
        #expect(selfCheck.passed, "\(relative): \(selfCheck.detail)")
    }

    @Test("weights-only files of a known family need no --arch", arguments: [
        ("kapp-resnet-v1/keras3.weights.h5", "keras-resnet-v1"), ("kapp-resnet-v1/tfkeras2.legacy-weights.h5", "keras-resnet-v1"),
        ("kapp-resnet-v2/keras3.weights.h5", "keras-resnet-v2"),
    ])
    func weightsOnlyArchitectureIsInferred(relative: String, family: String) throws {
        let path = Paths.fixtures.appendingPathComponent("keras/\(relative)").path
        let io = Paths.fixtures.appendingPathComponent("keras/\(relative.split(separator: "/")[0])/io.npz").path
        let loaded = try loadModel(path: path)
        #expect(loaded.model.spec.family == family)
        #expect(loaded.notes.contains { $0.contains("inferred as \(family)") })
        let check = try Verifier.checkGoldens(loaded.model, goldens: try Goldens(path: io, inputChannels: 3))
        #expect(check.passed, "\(check.detail)")
    }

    @Test func namedPresetsRefuseWeightsWithOtherBlockCounts() throws {
        let path = Paths.fixtures.appendingPathComponent("keras/kapp-resnet-v1/keras3.weights.h5").path
        #expect(throws: ResNetError.self) { try loadModel(path: path, arch: "keras-resnet50") }
    }

    @Test func aPresetOfTheWrongFamilyIsRefused() throws {
        let path = Paths.fixtures.appendingPathComponent("keras/kapp-resnet-v1/tfkeras2.legacy-weights.h5").path
        #expect(throws: ResNetError.self) { try loadModel(path: path, arch: "keras-resnet-v2") }
    }

    @Test func theSeedModelKeepsItsReLUInsideTheShortcut() throws {
        let path = Paths.fixtures.appendingPathComponent("keras/seed-keras/tfkeras2.model.h5").path
        let spec = try loadModel(path: path).model.spec
        let shortcut = spec.stages[1].blocks[0].shortcut
        #expect(shortcut.count == 2)
        if case let .conv(c) = shortcut.first { #expect(c.padding == .same && c.stride == [2, 2] && c.bias) } else { Issue.record("shortcut must start with a conv") }
        #expect(shortcut.last == .relu)
        if case let .conv(c) = spec.stem.first { #expect(c.padding == .same && c.kernel == [7, 7]) }
        #expect(!spec.stem.contains { if case .batchNorm = $0 { return true }; return false }, "the seed has no BN in the stem")
    }
}
