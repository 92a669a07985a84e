import Foundation
import Testing

/// `--weights PATH` picks the entry of a PyTorch checkpoint that holds the weights.
@Suite struct WeightsOptionCLITests {
    static let checkpoint = CLITests.fixtures.appendingPathComponent("torch/cifar-resnet20-optionB/checkpoint-model-optimizer.pth").path

    @Test func weightsPathChoosesTheEntry() throws {
        let ok = try CLITests.run(["inspect", Self.checkpoint, "--weights", "model"])
        #expect(ok.code == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("weights taken from checkpoint['model']") && ok.stdout.contains("as --weights asked"), "\(ok.stdout)")
    }

    @Test func aMissingOrWrongWeightsPathIsRefusedWithTheCandidates() throws {
        let missing = try CLITests.run(["inspect", Self.checkpoint, "--weights", "state_dict_ema"])
        #expect(missing.code != 0)
        #expect(missing.stderr.contains("no entry 'state_dict_ema'") && missing.stderr.contains("weights found at: model"), "\(missing.stderr)")
        let wrong = try CLITests.run(["inspect", Self.checkpoint, "--weights", "optimizer"])
        #expect(wrong.code != 0)
        #expect(wrong.stderr.contains("optimizer state, not a state dict"), "\(wrong.stderr)")
    }

    @Test func weightsIsRefusedForKerasFiles() throws {
        let h5 = CLITests.fixtures.appendingPathComponent("bad/good.h5").path
        let r = try CLITests.run(["inspect", h5, "--weights", "model"])
        #expect(r.code != 0 && r.stderr.contains("--weights applies to PyTorch checkpoints only"), "\(r.stderr)")
    }
}
