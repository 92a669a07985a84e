import Foundation
import Testing

/// Every published checkpoint in ../shared/fixtures-external that has goldens converts as a user
/// would type it — `resnet-convert FILE out.rnw --expect io.npz`, no --arch, no --map — and passes
/// parity; the dill-pickled module is refused with exit 3 and a reason.
@Suite struct ExternalCheckpointCLITests {
    static let withGoldens = [
        "akamaster-resnet20/resnet20-12fca82f.th",
        "akamaster-resnet56/resnet56-4bfd9763.th",
        "bognev-pruning/checkpoint.th",
        "atreides-basic-ic/resnet_neo_v1_5e4_20.pth",
        "ehanw-advrob/resnet20.pth",
        "mlcommons-tiny/pretrainedResnet.h5",
        "leogem-keras-injector/ResNet20.keras",
        "phlippe-uvadl-resnet/ResNet.ckpt",
        "phlippe-uvadl-preact/ResNetPreAct.ckpt",
        "aifoundry-mhaq-torchdistill/cifar10-resnet20_cifar10_from_resnet20_cifar10_new-final_run_92.81.th",
        "arturjordao-dwp-resnet20/ResNet20.h5",
    ]

    @Test("converts with --expect and nothing else", arguments: withGoldens)
    func convertsWithGoldensOnly(_ rel: String) throws {
        guard let path = CLITests.externalPath(rel),
              let golden = CLITests.externalPath((rel as NSString).deletingLastPathComponent + "/io.npz") else { return }
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("out.rnw").path
        let r = try CLITests.run([path, out, "--expect", golden])
        #expect(r.code == 0, "\(rel): \(r.stderr)\(r.stdout)")
        #expect(r.stdout.contains("[pass] golden"), "\(rel): \(r.stdout)")
        #expect(FileManager.default.fileExists(atPath: out))
    }

    @Test func theDillPickledModuleIsRefusedSayingWhy() throws {
        guard let path = CLITests.externalPath("abideya-pruner-dill/resnet56_check_point.pth") else { return }
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("out.rnw").path
        let r = try CLITests.run([path, out])
        #expect(r.code == 3)
        #expect(r.stderr.contains("dill._dill._load_type") && r.stderr.contains("run code"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }
}
