import ArgumentParser
import Foundation
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

    @OptionGroup var source: SourceOptions

    @Flag(help: "Print the result as JSON (on failure: a JSON error object).")
    var json = false

    @Option(help: "Also write a self-contained HTML report (verdict, numbers, per-layer error plot).")
    var report: String?

    @OptionGroup(title: "Limits") var limits: LimitOptions

    func run() throws {
        if let report { Interruption.install(activity: "verification writing \(report.displayed)") }
        try limits.readLimits.apply(runWithLimits)
    }

    private func runWithLimits() throws {
        Terminal.progress("reading \(model)")
        var loaded = try loadModel(path: model, arch: source.arch, mapFile: source.mapFile, weights: source.weights)
        let goldens = try Goldens(path: expect, inputChannels: loaded.model.spec.inputChannels, override: layout)
        loaded = try settleStructure(loaded, goldens: goldens, arch: source.arch, progress: Terminal.progress)
        for note in loaded.notes where note.hasPrefix("structure chosen") || note.hasPrefix("no candidate structure") { Terminal.progress(note) }
        Terminal.progress("running \(goldens.input.shape[0]) inputs")
        let check = try Verifier.checkGoldens(loaded.model, goldens: goldens,
                                              policy: .forStorage(loaded.storageDType, spec: loaded.model.spec),
                                              aliases: Verifier.layerAliases(loaded))
        let summary = VerificationSummary(model: model, check: check)
        if let report { try writeFileAtomically(Data(summary.html.utf8), to: report) }
        if json { try Terminal.json(summary) } else { Terminal.show(summary.text) }
        if !check.passed { throw ExitCode(1) }
    }
}
