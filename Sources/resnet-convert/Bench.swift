import ArgumentParser
import Foundation
import ResNetKit

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time the forward pass of a model (.rnw or any readable source file) on a synthetic input.",
        discussion: "Warms up, then reports median and minimum latency and throughput. Timings on a shared machine are noisy: compare medians of several runs.")

    @Argument(help: "A .rnw file or any supported source file.")
    var model: String

    @Option(help: "Batch size.")
    var batch = 1

    @Option(help: "Input height and width (default: the model's declared size, else 224).")
    var size: Int?

    @Option(help: "Timed iterations.")
    var iterations = 20

    @Option(help: "Untimed warm-up iterations.")
    var warmup = 2

    @Option(help: "Threads for OpenBLAS and the plan's own loops (default: all cores).")
    var threads: Int?

    @Option(help: "plan (default), unfused or reference.")
    var engine: BenchmarkEngine = .plan

    @Option(help: "For the plan engine: own (the plan's threads, default) or blas (OpenBLAS's threads).")
    var parallelism: ForwardPlan.Parallelism = .own

    @Option(help: "Architecture preset for files without a model config.")
    var arch: String?

    @Flag(help: "Print one JSON object.")
    var json = false

    @Flag(help: "For the plan engine: list each convolution's candidate algorithms, their times and the choice.")
    var explain = false

    @OptionGroup(title: "Limits") var limits: LimitOptions

    func run() throws { try limits.readLimits.apply(runWithLimits) }

    private func runWithLimits() throws {
        let clock = ContinuousClock()
        let openMs = try benchmarkOpenRNW(path: model)
        Terminal.progress("reading \(model)")
        let start = clock.now
        let loaded = try loadModel(path: model, arch: arch)
        let loadTime = (clock.now - start).components
        let loadMs = Double(loadTime.seconds) * 1000 + Double(loadTime.attoseconds) / 1e15
        let side = size ?? loaded.model.spec.inputSize?.first ?? 224
        let threadCount = threads ?? ProcessInfo.processInfo.activeProcessorCount
        Terminal.progress("timing \(iterations) iterations")
        let r = try benchmarkForward(loaded.model, modelName: model, engine: engine, parallelism: parallelism, batch: batch, size: side,
                                     iterations: iterations, warmup: warmup, threads: threadCount,
                                     explain: explain)
        if json {
            try Terminal.json(BenchReport(result: r, loadMs: loadMs, openRnwMs: openMs))
            return
        }
        Terminal.show("\(model.displayed): \(r.engine.rawValue) (\(r.parallelism.rawValue) threads), batch \(r.batch), \(r.size)x\(r.size), \(r.threads) threads, \(r.iterations) iterations")
        print(String(format: "  median %.2f ms   min %.2f ms   mean %.2f ms   %.1f images/s", r.medianMs, r.minMs, r.meanMs, r.throughputPerS))
        print(String(format: "  load %.1f ms   plan %.1f ms (%.1f ms timing kernel candidates)", loadMs, r.prepareMs, r.measureMs)
              + (openMs.map { String(format: "   open .rnw with checksums %.1f ms", $0) } ?? ""))
        if let choices = r.choices { printChoices(choices) }
    }

    /// One line per convolution: place and shape, the choice and where it came from, then every
    /// candidate's time relative to the chosen one.
    private func printChoices(_ choices: [LayerChoice]) {
        print("  kernel choices (per convolution: chosen algorithm, source; candidates with their fastest run):")
        for c in choices {
            Terminal.show("  \(c.place.displayed)  \(c.shape)")
            let chosen = c.candidates.first { $0.name == c.choice }?.milliseconds
            let list = c.candidates.map { cand in
                String(format: "%@ %.3f ms", cand.name, cand.milliseconds) + (chosen.map { cand.name == c.choice ? " *" : String(format: " (%.2fx)", cand.milliseconds / $0) } ?? "")
            }
            print("      -> \(c.choice) [\(c.source)]" + (list.isEmpty ? "" : ": " + list.joined(separator: ", ")))
        }
    }
}

/// The JSON shape: the library's result plus the load timings.
private struct BenchReport: Encodable {
    var result: BenchmarkResult
    var loadMs: Double
    var openRnwMs: Double?

    func encode(to encoder: Encoder) throws {
        try result.encode(to: encoder)
        enum Keys: String, CodingKey { case loadMs, openRnwMs }
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(loadMs, forKey: .loadMs)
        try c.encodeIfPresent(openRnwMs, forKey: .openRnwMs)
    }
}

extension BenchmarkEngine: ExpressibleByArgument {}
extension ForwardPlan.Parallelism: ExpressibleByArgument {}
