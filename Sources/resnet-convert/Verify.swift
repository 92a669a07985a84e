import ArgumentParser
import ResNetKit

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a model (.rnw or any readable source file) on golden inputs and compare with the golden outputs.")

    @Argument(help: "A .rnw file or any supported source file.")
    var model: String

    @Option(help: "Goldens: io.npz with input, output and optionally layout.")
    var expect: String

    @Option(help: "Layout of the input (overrides io.npz): nchw or nhwc.")
    var layout: Layout?

    @Option(help: "Architecture preset for files without a model config.")
    var arch: String?

    @Flag(help: "Print the result as JSON.")
    var json = false

    func run() throws {
        Terminal.progress("reading \(model)")
        let loaded = try loadModel(path: model, arch: arch)
        let goldens = try Goldens(path: expect, inputChannels: loaded.model.spec.inputChannels, override: layout)
        Terminal.progress("running \(goldens.input.shape[0]) inputs")
        let check = try Verifier.checkGoldens(loaded.model, goldens: goldens,
                                              policy: .forStorage(loaded.storageDType, spec: loaded.model.spec))
        if json {
            try Terminal.json(check)
        } else {
            print("\(check.passed ? "PASSED" : "FAILED"): \(model) against \(check.reference)")
            for line in check.detail.split(separator: "\n").dropFirst() { print(line) }
        }
        if !check.passed { throw ExitCode(1) }
    }
}
