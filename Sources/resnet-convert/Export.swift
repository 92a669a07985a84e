import ArgumentParser
import ResNetKit

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a model as PyTorch (.pth), safetensors, Keras weights (.h5) or ONNX, verified by reading it back.",
        discussion: """
        float16 and bfloat16 weights (of a .rnw, or of a checkpoint stored so) stay float16/bfloat16 in .pth, \
        safetensors and ONNX; int8 weights are widened to float32. The source file's SHA-256, the tool version, \
        the parity record of a .rnw and the preprocessing the source declares go into the file's metadata. \
        An existing output file is replaced, atomically and only after the read-back; --no-clobber refuses to replace it.
        """)

    @Argument(help: "Input: a .rnw file or any weight file `convert` reads.")
    var input: String

    @Argument(help: "Output file; its extension (.pth, .safetensors, .h5, .onnx) picks the format.")
    var output: String

    @OptionGroup var source: SourceOptions

    @Option(name: .customLong("input-size"), help: "ONNX and full-model Keras .h5: input height and width, e.g. 224x224 (ONNX resolves TF 'same' padding for it; Keras declares it in the InputLayer); default: the size the model declares.")
    var inputSize: String?

    @Option(help: "ONNX only: a fixed batch size (default: a symbolic batch dimension N).")
    var batch: Int?

    @Flag(help: "Refuse to write when the output exists already (exit 4); by default it is replaced.")
    var noClobber = false

    @Flag(help: "Print the report as JSON (on failure: a JSON error object).")
    var json = false

    @OptionGroup(title: "Limits") var limits: LimitOptions

    func validate() throws {
        if ExportFormat(path: output) == nil {
            throw ValidationError(output.hasSuffix(".rnw")
                ? "\(output): export writes .pth, .safetensors, .h5 and .onnx; to write a .rnw file, run `resnet-convert convert \(input) \(output)`"
                : "\(output): cannot tell the format from the extension: use .pth, .safetensors, .h5 or .onnx")
        }
        if let inputSize, parsedSize(inputSize) == nil { throw ValidationError("--input-size must look like 224x224") }
        if let batch, batch < 1 { throw ValidationError("--batch must be at least 1") }
    }

    private func parsedSize(_ s: String) -> [Int]? {
        let parts = s.lowercased().split(separator: "x").compactMap { Int($0) }
        return parts.count == 2 && parts.allSatisfy({ $0 > 0 && $0 <= 65_536 }) ? parts : nil
    }

    func run() throws {
        // Ctrl-C, SIGTERM, SIGHUP: one line saying nothing was written, then the signal's own exit.
        Interruption.install(activity: "export to \(output.displayed)")
        try limits.readLimits.apply(runWithLimits)
    }

    private func runWithLimits() throws {
        let report = try exportModel(input: input, output: output,
                                     options: .init(arch: source.arch, mapFile: source.mapFile,
                                                    inputSize: inputSize.flatMap(parsedSize), batch: batch, weights: source.weights,
                                                    replaceExisting: !noClobber),
                                     progress: Terminal.progress)
        if json {
            try Terminal.json(report)
        } else {
            Terminal.show("OK: \(report.input.displayed) → \(report.output.displayed)")
            Terminal.show("  format \(report.format.displayed), \(report.layout.displayed), \(report.tensors) tensors")
            Terminal.show("  [pass] read-back: \(report.check.displayed)")
            for note in report.notes { Terminal.show("  note: \(note.displayed)") }
        }
    }
}
