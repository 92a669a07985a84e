import ArgumentParser
import ResNetKit

struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two weight files of any supported formats tensor by tensor, after mapping both to canonical names.",
        discussion: "Exit 0 when every tensor is on both sides with the same shape and within --atol, 1 otherwise.")

    @Argument(help: "First weight file.")
    var a: String

    @Argument(help: "Second weight file.")
    var b: String

    @Option(help: "Largest absolute difference that still counts as equal (default 0: bit-identical values).")
    var atol: Double = 0

    @Option(help: "Architecture preset for the first file, if it has no model config.")
    var archA: String?

    @Option(help: "Architecture preset for the second file, if it has no model config.")
    var archB: String?

    @Option(help: ArgumentHelp("PyTorch checkpoints: the entry of the first file holding the weights, as a dotted path (e.g. state_dict_ema).", valueName: "path"))
    var weightsA: String?

    @Option(help: ArgumentHelp("PyTorch checkpoints: the entry of the second file holding the weights, as a dotted path.", valueName: "path"))
    var weightsB: String?

    @Flag(help: "Print the comparison as JSON.")
    var json = false

    @OptionGroup(title: "Limits") var limits: LimitOptions

    func validate() throws {
        if !(atol >= 0) { throw ValidationError("--atol must be a non-negative number") }
    }

    func run() throws { try limits.readLimits.apply(runWithLimits) }

    private func runWithLimits() throws {
        let d = try diffWeights(a, b, atol: atol, archA: archA, archB: archB, weightsA: weightsA, weightsB: weightsB)
        if json { try Terminal.json(d) } else { Terminal.show(d.text) }
        if !d.equal { throw ExitCode(1) }
    }
}
