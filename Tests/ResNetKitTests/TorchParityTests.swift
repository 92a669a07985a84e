import Foundation
import Testing
@testable import ResNetKit

/// Golden parity for PyTorch files: read, map onto the canonical ResNet, run the reference forward
/// pass on the golden input, compare with the output the real torch computed.
@Suite struct TorchParityTests {
    /// Every weight file under fixtures/torch, with the io.npz beside it.
    static let committed: [String] = {
        let root = Paths.fixtures.appendingPathComponent("torch")
        guard let e = FileManager.default.enumerator(atPath: root.path) else { return [] }
        // checkpoints/ holds layout fixtures with made-up weights and no goldens (TorchCheckpointLayoutTests).
        return e.compactMap { $0 as? String }.filter { [".pth", ".th", ".pt"].contains(where: $0.hasSuffix) && !$0.hasPrefix("checkpoints/") }.sorted()
    }()

    static let external = [
        "akamaster-resnet20/resnet20-12fca82f.th",
        "akamaster-resnet56/resnet56-4bfd9763.th",
        "bognev-pruning/checkpoint.th",
        "atreides-basic-ic/resnet_neo_v1_5e4_20.pth",
        "ehanw-advrob/resnet20.pth",
    ]

    private func check(_ path: String, golden: String, arch: String? = nil) throws -> ParityReport {
        let ckpt = try readTorchCheckpoint(path: path)
        let mapped = try mapTorchCheckpoint(ckpt, arch: arch, mapFile: nil)
        let goldens = try Goldens(path: golden, inputChannels: mapped.model.spec.inputChannels)
        let result = try Verifier.checkGoldens(mapped.model, goldens: goldens)
        let report = try #require(result.report)
        #expect(result.passed, "\(path): \(result.detail)")
        #expect(report.maxAbsError <= 1e-4 * report.referenceScale, "\(path)")
        return report
    }

    @Test func theCommittedTorchFixturesArePresent() {
        #expect(Self.committed.count >= 14, "\(Self.committed)")
    }

    @Test("committed torch fixtures match the goldens real torch computed", arguments: committed)
    func committedFixtureMatchesItsGoldens(file: String) throws {
        let url = Paths.fixtures.appendingPathComponent("torch").appendingPathComponent(file)
        let golden = url.deletingLastPathComponent().appendingPathComponent("io.npz").path
        let report = try check(url.path, golden: golden)
        testLog("fixtures/torch/\(file): max|err| \(report.maxAbsError), scale max(1,max|ref|) \(report.referenceScale)")
    }

    @Test("external torch checkpoints match their goldens", arguments: external)
    func externalCheckpointMatchesItsGoldens(file: String) throws {
        guard let path = Paths.externalFile(file),
              let golden = Paths.externalFile((file as NSString).deletingLastPathComponent + "/io.npz") else { return }
        let report = try check(path, golden: golden)
        testLog("external \(file): max|err| \(report.maxAbsError), scale max(1,max|ref|) \(report.referenceScale)")
    }

    @Test func theAkamasterResNetsAlsoMapThroughTheirPresets() throws {
        for (file, arch) in [("akamaster-resnet20/resnet20-12fca82f.th", "cifar-resnet20"), ("akamaster-resnet56/resnet56-4bfd9763.th", "cifar-resnet56")] {
            guard let path = Paths.externalFile(file),
                  let golden = Paths.externalFile((file as NSString).deletingLastPathComponent + "/io.npz") else { return }
            _ = try check(path, golden: golden, arch: arch)
        }
    }

    @Test func eachExternalLayoutIsDetectedAsItsScheme() throws {
        let expected = [
            "akamaster-resnet20/resnet20-12fca82f.th": "cifar-akamaster",
            "bognev-pruning/checkpoint.th": "cifar-akamaster",
            "atreides-basic-ic/resnet_neo_v1_5e4_20.pth": "cifar-flat-avgpool",
            "ehanw-advrob/resnet20.pth": "cifar-stage",
        ]
        for (file, scheme) in expected {
            guard let path = Paths.externalFile(file) else { return }
            let notes = try mapTorchCheckpoint(try readTorchCheckpoint(path: path), arch: nil, mapFile: nil).notes
            #expect(notes.first?.hasPrefix("naming scheme '\(scheme)' detected") == true, "\(file): \(notes)")
        }
    }

    @Test func theAtreidesModelKeepsItsFixedAveragePoolAndInputSize() throws {
        guard let path = Paths.externalFile("atreides-basic-ic/resnet_neo_v1_5e4_20.pth") else { return }
        let spec = try mapTorchCheckpoint(try readTorchCheckpoint(path: path), arch: nil, mapFile: nil).model.spec
        #expect(spec.inputSize == [32, 32])
        #expect(Array(spec.head.prefix(2)) == [.avgPool(PoolOp(kernel: [8, 8], stride: [8, 8])), .flatten(.chw)])
        #expect(spec.stages[2].blocks[0].shortcut == [.avgPool(PoolOp(kernel: [2, 2], stride: [2, 2])), .channelPad(before: 16, after: 16)])
    }
}
