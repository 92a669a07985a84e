import ArgumentParser
import ResNetKit

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read a weight file, map it onto the canonical ResNet, verify it and write a .rnw file.",
        discussion: "An existing output file is replaced, atomically and only once every check passed; --no-clobber refuses to replace it.")

    @Argument(help: "Input weight file (Keras .h5 / .keras / .weights.h5, PyTorch .pth / .pt / .th, .safetensors, .rnw; recognised by content, not by name).")
    var input: String

    @Argument(help: "Output .rnw file (for other formats use `resnet-convert export`).")
    var output: String

    @OptionGroup var source: SourceOptions

    @Option(help: "Goldens (io.npz with input, output, optional layout) from the source framework.")
    var expect: String?

    @Option(help: "Layout of the goldens' input when io.npz does not say: nchw or nhwc.")
    var layout: Layout?

    @Option(help: "Storage type of conv and dense weights: f32, f16, bf16 or int8 (per-channel symmetric). BatchNorm and biases stay f32.")
    var dtype: DType = .float32

    @Flag(help: "Fold each BatchNorm that directly follows a conv into that conv (weights and bias).")
    var foldBn = false

    @Flag(help: "Write the output even if a parity check fails.")
    var force = false

    @Flag(help: "Skip the forward-pass checks, to time the I/O path. A streamed float32 conversion then also skips reading the tensor data back (the header and manifest are still reopened and checked; readers verify the stored checksums); other conversions still read every tensor back.")
    var noVerify = false

    @Flag(help: "Refuse to write when the output exists already (exit 4); by default it is replaced.")
    var noClobber = false

    @Flag(help: "Print the report as JSON (on failure: a JSON error object).")
    var json = false

    @OptionGroup(title: "Limits") var limits: LimitOptions

    func validate() throws {
        if layout != nil && expect == nil { throw ValidationError("--layout only applies with --expect") }
        if noVerify && expect != nil { throw ValidationError("--no-verify and --expect contradict each other") }
        if !output.hasSuffix(".rnw") {
            if let format = ExportFormat(path: output) {
                throw ValidationError("\(output): convert writes .rnw files only; to write \(format.rawValue), run `resnet-convert export \(input) \(output)`")
            }
            throw ValidationError("\(output): the output must be a .rnw file (`resnet-convert export` writes .pth, .safetensors, .h5 and .onnx)")
        }
    }

    func run() throws {
        // Ctrl-C, SIGTERM, SIGHUP: one line saying nothing was written, then the signal's own exit.
        Interruption.install(activity: "conversion to \(output.displayed)")
        try limits.readLimits.apply(runWithLimits)
    }

    private func runWithLimits() throws {
        let report = try ResNetKit.convert(input: input, output: output,
                                           options: .init(arch: source.arch, mapFile: source.mapFile, expect: expect, layout: layout,
                                                          force: force, dtype: dtype, foldBatchNorm: foldBn, skipVerification: noVerify,
                                                          weights: source.weights, replaceExisting: !noClobber),
                                           progress: Terminal.progress)
        if json {
            try Terminal.json(report)
        } else {
            // Paths, the format (it quotes the file's Keras version), the family and notes may
            // hold text from the file: escaped (DisplayText); the check details escape their names.
            Terminal.show("\(report.passed ? "OK" : "WRITTEN DESPITE FAILED PARITY (--force)"): \(report.input.displayed) → \((report.output ?? "").displayed)")
            Terminal.show("  format \(report.format.displayed), architecture \(report.family.displayed), \(report.classes) classes, \(report.tensors) tensors")
            for check in report.checks {
                Terminal.show("  [\(check.passed ? "pass" : "FAIL")] \(check.reference.displayed)")
                for line in check.detail.split(separator: "\n") { Terminal.show("      \(line)") }
            }
            for note in report.notes { Terminal.show("  note: \(note.displayed)") }
        }
        if !report.passed { throw ExitCode(1) }
        PhaseTrace.mark("printed")
    }
}
