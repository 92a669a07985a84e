import Foundation
import Testing
@testable import ResNetKit

/// Golden parity for real Keras files: the canonical model must reproduce the outputs the real
/// framework computed, within the float32 tolerance, and the independent graph self-check must agree.
@Suite struct KerasParityTests {
    static let external = [
        ("mlcommons-tiny/pretrainedResnet.h5", "mlcommons-tiny/io.npz"),
        ("leogem-keras-injector/ResNet20.keras", "leogem-keras-injector/io.npz"),
    ]

    @Test("external Keras files match their framework goldens", arguments: external)
    func externalKerasFileMatchesGoldens(file: String, golden: String) throws {
        guard let path = Paths.externalFile(file), let io = Paths.externalFile(golden) else { return }
        let loaded = try loadModel(path: path)
        let goldens = try Goldens(path: io, inputChannels: loaded.model.spec.inputChannels)
        let check = try Verifier.checkGoldens(loaded.model, goldens: goldens)
        let report = try #require(check.report)
        testLog("\(file): max|err| \(report.maxAbsError), rel \(report.maxRelativeError)")
        #expect(check.passed, "\(check.detail)")
        #expect(report.maxRelativeError <= 1e-4)
        let graph = try #require(loaded.kerasGraph)
        let selfCheck = try Verifier.checkKerasGraph(graph, model: loaded.model, file: path)
        #expect(selfCheck.passed, "\(selfCheck.detail)")
    }

    @Test func theResNet20KerasFileMapsOntoOptionAShortcuts() throws {
        guard let path = Paths.externalFile("leogem-keras-injector/ResNet20.keras") else { return }
        let spec = try loadModel(path: path).model.spec
        #expect(spec.stages.map { $0.blocks.count } == [3, 3, 3])
        #expect(spec.stages[1].blocks[0].shortcut == [.subsample(stride: 2), .channelPad(before: 8, after: 8)])
        #expect(spec.classes == 10)
    }

    @Test func wrongGoldensFailParity() throws {
        guard let path = Paths.externalFile("mlcommons-tiny/pretrainedResnet.h5"),
              let io = Paths.externalFile("leogem-keras-injector/io.npz") else { return }
        // Same input shape, outputs of a different model: must fail, not pass by accident.
        let loaded = try loadModel(path: path)
        let goldens = try Goldens(path: io, inputChannels: 3)
        let check = try Verifier.checkGoldens(loaded.model, goldens: goldens)
        #expect(!check.passed)
    }
}
