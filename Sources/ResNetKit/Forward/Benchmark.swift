// Timing of the forward pass, for `resnet-convert bench` and tools/bench.
//
// The plan is built before timing starts (it is a one-off per model), warm-up runs size the arena and
// page in the weights, then each timed iteration is one `run` on the same input. The median is the
// headline because the machines this runs on are shared and noisy; the minimum shows what the code
// can do when nothing else interferes.

import COpenBLAS
import Foundation

/// Which forward implementation a benchmark times.
public enum BenchmarkEngine: String, Sendable, Codable, CaseIterable {
    /// The prepared ``ForwardPlan`` (what `forward` runs by default).
    case plan
    /// The unfused im2col path (what `forward` runs when capturing module outputs).
    case unfused
    /// The plain reference loops; only sensible for tiny models.
    case reference
}

/// What one benchmark measured. Times are wall-clock milliseconds of single forward calls.
public struct BenchmarkResult: Sendable, Codable {
    /// The model file, as given.
    public var model: String
    public var engine: BenchmarkEngine
    /// For the plan engine: who runs the threads.
    public var parallelism: ForwardPlan.Parallelism
    public var batch: Int
    /// Input height and width.
    public var size: Int
    /// Threads for OpenBLAS and for the plan's own loops.
    public var threads: Int
    public var warmup: Int
    public var iterations: Int
    public var medianMs: Double
    public var minMs: Double
    public var meanMs: Double
    /// Images per second at the median latency.
    public var throughputPerS: Double
    /// Time to build the plan (fold the weights) and settle its kernels for this input shape (from the
    /// cache file, or by timing candidates, then laying out the weights); 0 for the other engines.
    public var prepareMs: Double
    /// The part of `prepareMs` spent timing kernel candidates (0 when every choice came from the cache).
    public var measureMs: Double = 0
    /// Per convolution, what was timed and chosen, when asked for.
    public var choices: [LayerChoice]?
}

/// Times `model` on a deterministic input of shape (batch, inputChannels, size, size).
///
/// Leaves OpenBLAS's process-wide thread count set for the rest of the process (to `threads`, or as
/// the plan's ``ForwardPlan/Parallelism`` needs), so run benchmarks in their own process.
/// - Throws: `ResNetError.usage` for non-positive counts; forward errors as `forward` throws them.
public func benchmarkForward(_ model: ResNetModel, modelName: String, engine: BenchmarkEngine = .plan,
                             parallelism: ForwardPlan.Parallelism = .own,
                             batch: Int, size: Int, iterations: Int, warmup: Int = 2, threads: Int,
                             explain: Bool = false) throws -> BenchmarkResult {
    // Errors of the forward pass about the model name its file; the input is made here, from `size`.
    try namingFiles(model: modelName) {
        try benchmark(model, modelName: modelName, engine: engine, parallelism: parallelism, batch: batch, size: size,
                      iterations: iterations, warmup: warmup, threads: threads, explain: explain)
    }
}

private func benchmark(_ model: ResNetModel, modelName: String, engine: BenchmarkEngine, parallelism: ForwardPlan.Parallelism,
                       batch: Int, size: Int, iterations: Int, warmup: Int, threads: Int, explain: Bool) throws -> BenchmarkResult {
    for (v, what) in [(batch, "batch"), (size, "size"), (iterations, "iterations"), (threads, "threads")] where v < 1 {
        throw ResNetError.usage("\(what) must be at least 1, got \(v)")
    }
    guard warmup >= 0 else { throw ResNetError.usage("warm-up count must be non-negative, got \(warmup)") }
    try requireOpenBLAS()
    if engine != .plan { copenblas_set_num_threads(Int32(clamping: threads)) }   // the plan sets its own

    let shape = [batch, model.spec.inputChannels, size, size]
    let count = try checkedElementCount(shape) { ResNetError.usage("input \(shape): \($0)") }
    let input = Tensor(shape: shape, data: syntheticInput(count: count))

    let clock = ContinuousClock()
    var plan: ForwardPlan?
    var prepareMs = 0.0
    if engine == .plan {
        let start = clock.now
        plan = try ForwardPlan(model, threads: threads, parallelism: parallelism)
        try plan!.prepare(inputShape: shape)
        prepareMs = milliseconds(clock.now - start)
    }
    func once() throws {
        switch engine {
        case .plan: _ = try plan!.run(input)
        case .unfused: _ = try forward(model, input: input, engine: .fast, capture: { _, _ in })
        case .reference: _ = try forward(model, input: input, engine: .reference)
        }
    }
    for _ in 0..<warmup { try once() }
    var times: [Double] = []
    times.reserveCapacity(iterations)
    for _ in 0..<iterations {
        let start = clock.now
        try once()
        times.append(milliseconds(clock.now - start))
    }
    times.sort()
    let median = times.count % 2 == 1 ? times[times.count / 2] : (times[times.count / 2 - 1] + times[times.count / 2]) / 2
    var result = BenchmarkResult(model: modelName, engine: engine, parallelism: parallelism, batch: batch, size: size, threads: threads,
                                 warmup: warmup, iterations: iterations, medianMs: median, minMs: times[0],
                                 meanMs: times.reduce(0, +) / Double(times.count),
                                 throughputPerS: Double(batch) * 1000 / median, prepareMs: prepareMs)
    if let plan {
        result.measureMs = plan.measuringSeconds * 1000
        if explain { result.choices = try plan.explain(inputShape: shape) }
    }
    return result
}

private func milliseconds(_ d: Duration) -> Double { seconds(d) * 1000 }

/// Milliseconds to open a `.rnw` file with every checksum verified and nothing else (no tensor is
/// copied out); nil for other formats. The median of `repeats` opens, so the first one's cold page
/// cache does not decide the number.
public func benchmarkOpenRNW(path: String, repeats: Int = 5) throws -> Double? {
    guard try InputFormat.detect(path: path) == .rnw else { return nil }
    let clock = ContinuousClock()
    var times: [Double] = []
    for _ in 0..<max(repeats, 1) {
        let start = clock.now
        _ = try RNWReader(path: path, verifyChecksums: true)
        times.append(milliseconds(clock.now - start))
    }
    return times.sorted()[times.count / 2]
}
