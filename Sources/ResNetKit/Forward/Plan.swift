// The fused fast path: a model compiled once into a plan, then run many times.
//
// Same dimension legend as Reference.swift. What differs from the unfused path:
// - Activations are NHWC: x[n, h, w, c] = data[((n * H + h) * W + w) * C + c]; flat ones stay (N, F).
//   NHWC makes batch and pixels one GEMM dimension P = N·OH·OW, so a 1×1 stride-1 convolution is one
//   matrix product on the activation as it lies, batch 8 is one larger product rather than 8 small
//   ones, and im2col copies whole runs of channels instead of single floats.
// - Conv weights are stored per group as (KH·KW·Cg, Og): row (kh·KW + kw)·Cg + i, column og; an
//   ungrouped convolution's are packed instead into the C matrix kernel's panels when the CPU runs it
//   (FastGemm.swift), with OpenBLAS sgemm as the fallback.
//   The im2col matrix is (P, G·KH·KW·Cg) with column ((g·KH + kh)·KW + kw)·Cg + i, so group g's
//   patch is the contiguous run starting at g·KH·KW·Cg and all groups come from one unfolding pass.
// - A batch norm right after a convolution is folded into its weights and bias (in double precision),
//   and a following ReLU, plus the residual addition and the block's final ReLU, run in the product's
//   epilogue (at the C kernel's store, or one pass after sgemm) instead of four passes.
// - 3×3 stride-1 ungrouped convolutions run as Winograd F(4×4, 3×3) or F(2×2, 3×3) (FastWinograd.swift).
// - All buffers come from an arena sized for the input shape and reused across calls; the hot loop
//   allocates nothing. Plans are immutable, so concurrent calls only contend for the arena pool.
//
// Every check of Reference.swift still happens: geometry goes through the same ForwardRunner
// helpers, in a sizing pass that walks the plan before any buffer is touched.

import COpenBLAS
import Foundation

/// A model prepared once for repeated fast inference: batch norms folded into convolutions, ReLUs and
/// residual additions fused, weights laid out for the matrix products, activation buffers reused across calls.
///
/// `forward(_:input:engine:capture:)` builds and caches one for `.fast` when no capture is asked for;
/// build one yourself to control threads or to keep several models prepared. Safe to share between
/// threads: concurrent `run` calls each take their own buffers.
///
/// Each convolution's algorithm (matrix kernel build, Winograd tile, grouped path) is chosen for the
/// CPU at hand: the first run at an input shape times the candidates on each distinct layer shape and
/// keeps the fastest, and the choices are kept in a cache file (`RESNET_KERNEL_CACHE`, default
/// `~/.cache/resnet-convert/kernel-choices.json`) so later processes reuse them. ``explain(inputShape:)``
/// shows what was timed and chosen. The plan `forward` keeps measures only once it is reused.
public final class ForwardPlan: @unchecked Sendable {
    /// The structure the plan was built from.
    public let spec: ResNetSpec
    /// How many threads a run uses.
    public let threads: Int
    /// Who runs those threads.
    public let parallelism: Parallelism

    /// Where the threads of a run come from. OpenBLAS's thread count is one setting for the whole
    /// process, so `run` sets it (to 1 for `.own`, to `threads` for `.blas`) when it differs.
    public enum Parallelism: String, Sendable, Codable, CaseIterable {
        /// The plan splits every convolution's output rows (or, for layers with few rows, its output
        /// channels; for Winograd, its tiles and transform points) over `threads` workers of a
        /// persistent pool, each running the C kernels or single-threaded sgemm; OpenBLAS runs one thread.
        /// The default: OpenBLAS's idle workers spin for a while after each call, and next to our own
        /// workers on two cores that spinning cost more than the threading gained.
        case own
        /// OpenBLAS threads each sgemm over `threads` (the C matrix kernel is not used); everything
        /// else runs on the calling thread.
        case blas
    }

    let stem: [Step]
    let blocks: [BlockPlan]
    /// Threads for the plan's own loops.
    var loopThreads: Int { parallelism == .own ? threads : 1 }
    let head: [Step]
    /// Measurement knobs (Winograd tile, thresholds, per-layer profile).
    let tuning: PlanTuning
    private let lock = NSLock()
    private var arenas: [Arena] = []      // guarded by lock
    /// Serialises preparing schedules (a measurement must not run beside another).
    private let scheduleLock = NSLock()
    private var schedules: [[Int]: Schedule] = [:]   // by input shape; guarded by scheduleLock

    /// Compiles `model`. Throws `ResNetError.mapping` for a missing or misshapen tensor or an invalid op.
    /// - Parameter model: the canonical model to compile.
    /// - Parameter threads: threads per run; default: the active processor count.
    /// - Parameter parallelism: see ``Parallelism``; `.own` unless measuring.
    public convenience init(_ model: ResNetModel, threads: Int? = nil, parallelism: Parallelism = .own) throws {
        try self.init(model, threads: threads, parallelism: parallelism, tuning: .environment)
    }

    /// Where measured kernel choices are kept across processes (nil: nowhere).
    let kernelCache: KernelCache?
    /// Tests: each layer takes this candidate instead of the fastest (set before the first run).
    nonisolated(unsafe) var forcedChoice: (([ConvAlgorithm]) -> ConvAlgorithm)?
    /// Whether the first run at an input shape may time candidates. When not (the plan `forward` keeps
    /// for one-off calls), that run takes what the cache file holds and the fixed rules for the rest, and
    /// a second run at the same shape, which shows the plan is being reused, measures.
    let measuresOnFirstRun: Bool
    private var runsByShape: [[Int]: Int] = [:]      // guarded by scheduleLock

    /// Compiles `model` with explicit tuning (tests pin the Winograd choices with it) and cache file.
    init(_ model: ResNetModel, threads: Int?, parallelism: Parallelism, tuning: PlanTuning,
         kernelCache: KernelCache? = KernelCache.shared, measuresOnFirstRun: Bool = true) throws {
        spec = model.spec
        self.kernelCache = kernelCache
        self.measuresOnFirstRun = measuresOnFirstRun
        var tuning = tuning
        // With `.blas` OpenBLAS threads each product; the C kernel runs on the plan's threads only.
        if parallelism == .blas { tuning.gemmKernel = .blas; tuning.measured.remove(.gemm) }
        self.tuning = tuning
        self.threads = max(1, min(threads ?? ProcessInfo.processInfo.activeProcessorCount, 64))
        self.parallelism = parallelism
        let compiler = PlanCompiler(runner: ForwardRunner(tensors: model.tensors, engine: .fast, capture: nil), tuning: tuning,
                                    threads: self.threads)
        // The rules the `.rnw` reader also applies; the compiler and each run check the rest.
        if let v = model.spec.structuralViolation() { throw compiler.runner.mapping("spec \(v)") }
        stem = try compiler.compile(model.spec.stem, place: "stem")
        var blocks: [BlockPlan] = []
        for (s, stage) in model.spec.stages.enumerated() {
            for (b, block) in stage.blocks.enumerated() {
                let name = block.name.isEmpty ? "stage \(s) block \(b)" : block.name
                blocks.append(BlockPlan(place: name,
                                        pre: try compiler.compile(block.pre, place: "\(name) pre"),
                                        residual: try compiler.compile(block.residual, place: "\(name) residual"),
                                        shortcut: try compiler.compile(block.shortcut, place: "\(name) shortcut"),
                                        post: try compiler.compile(block.post, place: "\(name) post")))
            }
        }
        self.blocks = blocks
        head = try compiler.compile(model.spec.head, place: "head")
    }

    /// Runs the plan on `input` (N, C, H, W); the result has the same shape and meaning as `forward`'s.
    /// - Throws: `ResNetError.invalidInput` for an input that does not fit, `ResNetError.mapping` for a
    ///   spec whose geometry fails at this input size.
    public func run(_ input: Tensor) throws -> Tensor {
        let checker = ForwardRunner(tensors: [:], engine: .fast, capture: nil)
        let x = try checker.checkedInput(input, spec: spec)
        try requireOpenBLAS()
        setBLASThreads()
        let schedule = try self.schedule(for: x.shape, counting: true)
        var sizing = Executor(plan: self, arena: nil, mode: .schedule(schedule))
        let sizedOutput = try sizing.runAll(inputShape: x.shape, input: nil)
        let arena = takeArena(activation: sizing.maxActivation, columns: sizing.maxColumns, slots: sizing.maxSlots)
        defer { giveBack(arena) }
        var executor = Executor(plan: self, arena: arena, mode: .schedule(schedule))
        let out = try x.data.withUnsafeBufferPointer { try executor.runAll(inputShape: x.shape, input: $0.baseAddress!) }
        precondition(out.flat == sizedOutput.flat && out.count == sizedOutput.count, "sizing and running passes disagree")
        if tuning.profile { executor.reportProfile() }
        return executor.output(out)
    }

    private func setBLASThreads() {
        let blasThreads = Int32(parallelism == .own ? 1 : threads)
        if copenblas_get_num_threads() != blasThreads { copenblas_set_num_threads(blasThreads) }
    }

    /// Settles every layer's algorithm for inputs of `shape` (N, C, H, W) now rather than at the first
    /// `run`: from the cache file, or by timing the candidates (KernelChoice.swift).
    /// - Throws: what `run` throws for an input of that shape.
    func prepare(inputShape shape: [Int]) throws {
        let x = try ForwardRunner(tensors: [:], engine: .fast, capture: nil).checkedInput(Tensor(zeros: shape), spec: spec)
        try requireOpenBLAS()
        setBLASThreads()
        _ = try schedule(for: x.shape)
    }

    /// What the plan runs for each convolution at input `shape` (N, C, H, W), settling it first if needed:
    /// the candidates timed, their times and the choice. For `resnet-convert bench --explain`.
    /// - Throws: what `run` throws for an input of that shape.
    public func explain(inputShape shape: [Int]) throws -> [LayerChoice] {
        try prepare(inputShape: shape)
        return scheduleLock.withLock { schedules[shape]!.choices }
    }

    /// The algorithm of each convolution at input `shape`, in plan order (tests check what was chosen).
    func algorithms(inputShape shape: [Int]) throws -> [ConvAlgorithm] {
        try prepare(inputShape: shape)
        return scheduleLock.withLock { schedules[shape]!.convs.map(\.algorithm) }
    }

    /// Seconds spent timing candidates for the schedules made so far (0 when all came from the cache).
    var measuringSeconds: Double { scheduleLock.withLock { schedules.values.reduce(0) { $0 + $1.measuringSeconds } } }

    /// The schedule for input `shape`, made on first use: a sizing walk lists the convolutions and their
    /// geometry; each takes its choice from the cache file or, when any is missing, one run on a
    /// synthetic input times every candidate in place; then the layouts the choices read are derived and
    /// every other layout is dropped.
    func schedule(for shape: [Int], counting: Bool = false) throws -> Schedule {
        scheduleLock.lock()
        defer { scheduleLock.unlock() }
        if counting { runsByShape[shape, default: 0] += 1 }
        let mayMeasure = measuresOnFirstRun || !counting || runsByShape[shape, default: 0] > 1
        if let s = schedules[shape], !s.provisional || !mayMeasure { return s }
        let cache = tuning.usesCache && parallelism == .own ? kernelCache : nil
        let tuner = KernelTuner(tuning: tuning, threads: loopThreads, cache: forcedChoice == nil ? cache : nil, forced: forcedChoice)
        var survey = Executor(plan: self, arena: nil, mode: .tune(tuner))
        _ = try survey.runAll(inputShape: shape, input: nil)
        let layers = survey.surveyed
        let settled = layers.map { tuner.settledWithoutTiming($0.g, shortcut: $0.shortcut, relu: $0.relu) }
        var decisions = settled.compactMap { $0 }
        var measuring = 0.0
        var provisional = false
        if decisions.count < layers.count && !mayMeasure {
            // Not measuring yet: the fixed rules for every layer the cache does not settle.
            provisional = true
            decisions = zip(layers, settled).map { layer, s in
                s ?? LayerDecision(algorithm: tuning.candidates(layer.g)[0], times: [], source: .fixed)
            }
        } else if decisions.count < layers.count {
            let input = syntheticInput(count: shape.reduce(1, *))
            let arena = Arena(activation: survey.maxActivation, columns: survey.maxColumns)
            tuner.otherLayouts = layers.indices.map { i in Set(schedules.values.map { $0.convs[i].algorithm.layout }) }
            var run = Executor(plan: self, arena: arena, mode: .tune(tuner))
            _ = try input.withUnsafeBufferPointer { try run.runAll(inputShape: shape, input: $0.baseAddress!) }
            decisions = tuner.sequence.map(\.decision)
            measuring = tuner.measuringSeconds
            cache?.save()
        }
        precondition(decisions.count == layers.count, "the tuning run met a different number of convolutions")
        // Laying out the weights is most of a warm start: layers are spread over the threads, interleaved
        // because the late layers are the large ones.
        var laid = [LaidOutWeights?](repeating: nil, count: layers.count)
        laid.withUnsafeMutableBufferPointer { out in
            let workers = max(1, min(threads, layers.count))
            WorkerPool.shared.run(workers) { w in
                for i in stride(from: w, to: layers.count, by: workers) {
                    out[i] = layers[i].step.store.get(decisions[i].algorithm.layout)
                }
            }
        }
        let convs = zip(decisions, laid).map { d, w in ScheduledConv(algorithm: d.algorithm, weights: w!) }
        let choices = zip(layers, decisions).map { layer, d in
            let g = layer.g
            return LayerChoice(place: layer.step.place, shape: "\(g.C)->\(g.O) \(g.KH)x\(g.KW)/\(g.SH) \(g.OH)x\(g.OW)",
                               choice: d.algorithm.description, candidates: d.times.map { .init(name: $0.0.description, milliseconds: $0.1) },
                               source: d.source.rawValue)
        }
        let base = Schedule(convs: convs, choices: choices, measuringSeconds: measuring, provisional: provisional, split: nil)
        let layerKeys = layers.map { KernelTuner.key($0.g, threads: loopThreads, shortcut: $0.shortcut, relu: $0.relu) }
        let (split, splitChoice, splitSeconds) = try chooseSplit(base, shape: shape, cache: cache, layerKeys: layerKeys,
                                                                 measure: mayMeasure && forcedChoice == nil)
        cache?.save()
        let schedule = Schedule(convs: convs, choices: (splitChoice.map { [$0] } ?? []) + choices,
                                measuringSeconds: measuring + splitSeconds, provisional: provisional, split: split)
        schedules[shape] = schedule
        // Each convolution keeps only the layouts some schedule reads.
        for (i, layer) in layers.enumerated() {
            layer.step.store.keep(Set(schedules.values.map { $0.convs[i].algorithm.layout }))
        }
        return schedule
    }

    /// Whether and how to run the early blocks a few images at a time (Executor.runFront): for a batch,
    /// the stem plus the first one or two stages, one or two images at a time, or the whole batch
    /// throughout — whichever runs the first two stages fastest here, from the cache file or timed on
    /// a synthetic input. The candidates are the stage boundaries, not a size tuned for one machine's caches.
    private func chooseSplit(_ base: Schedule, shape: [Int], cache: KernelCache?, layerKeys: [String],
                             measure: Bool) throws -> ((blocks: Int, images: Int)?, LayerChoice?, Double) {
        let N = shape[0]
        var boundaries: [Int] = []
        var total = 0
        for stage in spec.stages { total += stage.blocks.count; if total < blocks.count { boundaries.append(total) } }
        if tuning.splitBlocks > 0 || !tuning.measured.contains(.split) {
            let pinned = tuning.splitBlocks > 0 && tuning.splitImages > 0 && tuning.splitImages < N
                ? (blocks: min(tuning.splitBlocks, blocks.count), images: tuning.splitImages) : nil
            return (pinned, nil, 0)
        }
        let ends = Array(boundaries.prefix(2))
        let images = [1, 2].filter { $0 < N }
        guard N > 1, let last = ends.last, !images.isEmpty else { return (nil, nil, 0) }
        var candidates: [(blocks: Int, images: Int)?] = [nil]
        for b in ends { for i in images { candidates.append((b, i)) } }
        func name(_ c: (blocks: Int, images: Int)?) -> String {
            c.map { "split \($0.blocks)x\($0.images)" } ?? "whole batch"
        }
        func describe(_ c: (blocks: Int, images: Int)?) -> String {
            c.map { "stem and first \($0.blocks) blocks, \($0.images) image\($0.images == 1 ? "" : "s") at a time" } ?? "whole batch"
        }
        let key = "split n\(N) c\(shape[1]) h\(shape[2]) w\(shape[3]) t\(loopThreads) \(hashText(layerKeys.joined(separator: ";")))"
        let shapeText = "first \(last) blocks at batch \(N)"
        if let hit = cache?.lookupSplit(key), let c = candidates.first(where: { name($0) == hit.choice }) {
            return (c, LayerChoice(place: "batch", shape: shapeText, choice: describe(c),
                                   candidates: hit.times.map { .init(name: $0.0, milliseconds: $0.1) }, source: "cached"), 0)
        }
        guard measure else { return (nil, nil, 0) }
        let started = ContinuousClock.now
        var sizes = (activation: 0, columns: 0, slots: 0)
        for c in candidates {
            var sizing = Executor(plan: self, arena: nil, mode: .schedule(base))
            sizing.split = c
            sizing.stopAfterBlocks = last
            _ = try sizing.runAll(inputShape: shape, input: nil)
            sizes = (max(sizes.activation, sizing.maxActivation), max(sizes.columns, sizing.maxColumns), max(sizes.slots, sizing.maxSlots))
        }
        let arena = Arena(activation: sizes.activation, columns: sizes.columns, slots: sizes.slots)
        let input = syntheticInput(count: shape.reduce(1, *))
        var times: [(String, Double)] = []
        var best = Double.infinity
        try input.withUnsafeBufferPointer { x in
            for c in candidates {
                let t = try fastestRun(best: best) {
                    var run = Executor(plan: self, arena: arena, mode: .schedule(base))
                    run.split = c
                    run.stopAfterBlocks = last
                    let t0 = ContinuousClock.now
                    _ = try run.runAll(inputShape: shape, input: x.baseAddress!)
                    return seconds(ContinuousClock.now - t0)
                }
                times.append((name(c), t * 1000))
                best = min(best, t)
            }
        }
        let chosenName = pickFastest(times)
        let chosen = candidates.first { name($0) == chosenName }!
        cache?.recordSplit(key, choice: chosenName, times: times)
        return (chosen, LayerChoice(place: "batch", shape: shapeText, choice: describe(chosen),
                                    candidates: times.map { .init(name: $0.0, milliseconds: $0.1) }, source: "measured"),
                seconds(ContinuousClock.now - started))
    }

    private func takeArena(activation: Int, columns: Int, slots: Int) -> Arena {
        lock.lock()
        defer { lock.unlock() }
        if let i = arenas.firstIndex(where: { $0.activationCapacity >= activation && $0.columnCapacity >= columns && $0.slotCount >= slots }) {
            return arenas.remove(at: i)
        }
        return Arena(activation: activation, columns: columns, slots: slots)
    }

    private func giveBack(_ arena: Arena) {
        lock.lock()
        defer { lock.unlock() }
        // Keep at most two (one per concurrent caller on a two-core machine is the common case);
        // prefer the largest so the next call of any size finds one.
        arenas.append(arena)
        arenas.sort { $0.activationCapacity > $1.activationCapacity }
        if arenas.count > 2 { arenas.removeLast(arenas.count - 2) }
    }
}

// MARK: - One cached plan for `forward`

extension ForwardPlan {
    private static let cacheLock = NSLock()
    nonisolated(unsafe) private static var cache: (tensors: [String: Tensor], plan: ForwardPlan)?

    /// The plan for `model`, reusing the last one when `model` is the same spec with the very same tensor
    /// storage. Sound because the cache keeps those arrays alive: a live array buffer cannot be reused by
    /// other data, and any write to a shared buffer copies it first, giving it a new address.
    static func cached(for model: ResNetModel) throws -> ForwardPlan {
        cacheLock.lock()
        defer { cacheLock.unlock() }
        if let (tensors, plan) = cache, plan.spec == model.spec, sameStorage(tensors, model.tensors) { return plan }
        cache = nil                                     // drop the old weights before preparing new ones
        let plan = try ForwardPlan(model, threads: nil, parallelism: .own, tuning: .environment, measuresOnFirstRun: false)
        cache = (model.tensors, plan)
        return plan
    }

    private static func sameStorage(_ a: [String: Tensor], _ b: [String: Tensor]) -> Bool {
        guard a.count == b.count else { return false }
        for (name, t) in a {
            guard let u = b[name], t.shape == u.shape, t.data.count == u.data.count else { return false }
            let same = t.data.withUnsafeBufferPointer { x in u.data.withUnsafeBufferPointer { y in x.baseAddress == y.baseAddress } }
            if !same { return false }
        }
        return true
    }
}

// MARK: - Compiled steps

/// A convolution with its batch norm folded in and what follows fused.
struct ConvStep {
    let op: ConvOp
    let place: String
    /// The folded weights, in each layout a schedule asked for (ConvAlgorithm.swift).
    let store: ConvWeights
    /// (O); the conv bias and the folded batch-norm shift (zeros when neither exists).
    let bias: [Float]
    let relu: Bool
}

/// A batch norm that follows no convolution (pre-activation blocks, V2 post-norm), computed exactly as
/// the reference does: `(x - mean) * scale + shift`.
struct AffineStep {
    let op: BatchNormOp
    let place: String
    let mean: [Float], scale: [Float], shift: [Float]
    let relu: Bool
}

struct DenseStep {
    let op: DenseOp
    let place: String
    let weight: [Float]     // (K, F), as stored
    let bias: [Float]       // (K), zeros when absent
}

enum Step {
    case conv(ConvStep)
    case affine(AffineStep)
    case relu
    case maxPool(PoolOp, String)
    case avgPool(PoolOp, String)
    case zeroPad(top: Int, bottom: Int, left: Int, right: Int, String)
    case subsample(Int, String)
    case channelPad(before: Int, after: Int, String)
    case globalAvgPool(String)
    case flatten(FlattenOrder, String)
    case dense(DenseStep)
    case softmax(String)
}

struct BlockPlan {
    let place: String
    let pre: [Step], residual: [Step], shortcut: [Step], post: [Step]

    /// The residual branch ends in a convolution without its own ReLU and the block ends in nothing or a
    /// ReLU: then the addition and that ReLU go into the convolution's epilogue.
    var fusesAddition: Bool {
        guard case let .conv(c)? = residual.last, !c.relu else { return false }
        if post.isEmpty { return true }
        if post.count == 1, case .relu = post[0] { return true }
        return false
    }
}

/// The algorithm and weights of every convolution for one input shape, in the order the executor meets them.
final class Schedule: @unchecked Sendable {
    let convs: [ScheduledConv]
    let choices: [LayerChoice]
    /// Seconds spent timing candidates to make it.
    let measuringSeconds: Double
    /// Made without measuring although some layer had candidates left: replaced once the plan may measure.
    let provisional: Bool
    /// The early blocks' sub-batching (Executor.runFront), or nil.
    let split: (blocks: Int, images: Int)?

    init(convs: [ScheduledConv], choices: [LayerChoice], measuringSeconds: Double, provisional: Bool,
         split: (blocks: Int, images: Int)?) {
        (self.convs, self.choices, self.measuringSeconds, self.provisional, self.split) = (convs, choices, measuringSeconds, provisional, split)
    }
}

struct ScheduledConv {
    let algorithm: ConvAlgorithm
    let weights: LaidOutWeights
}

/// Turns op lists into steps, checking every tensor.
struct PlanCompiler {
    let runner: ForwardRunner
    let tuning: PlanTuning
    /// Threads for folding the weights.
    let threads: Int

    func compile(_ ops: [Op], place: String) throws -> [Step] {
        var steps: [Step] = []
        var i = 0
        while i < ops.count {
            let at = ops[i].moduleName.map { "\(place) op \(i) (\($0))" } ?? "\(place) op \(i)"
            switch ops[i] {
            case let .conv(c):
                var bn: (BatchNormOp, String)?
                if i + 1 < ops.count, case let .batchNorm(b) = ops[i + 1], b.channels == c.outChannels {
                    bn = (b, "\(place) op \(i + 1) (\(b.name))")
                    i += 1
                }
                var relu = false
                if i + 1 < ops.count, case .relu = ops[i + 1] { relu = true; i += 1 }
                steps.append(.conv(try convStep(c, place: at, bn: bn, relu: relu)))
            case let .batchNorm(b):
                var relu = false
                if i + 1 < ops.count, case .relu = ops[i + 1] { relu = true; i += 1 }
                let (mean, inv) = try batchNormStatistics(b, place: at)
                let gamma = b.scale ? try runner.tensor("\(b.name).weight", shape: [b.channels], place: at).data : nil
                let beta = b.center ? try runner.tensor("\(b.name).bias", shape: [b.channels], place: at).data : nil
                let scale = (0..<b.channels).map { Float(inv[$0]) * (gamma?[$0] ?? 1) }
                steps.append(.affine(AffineStep(op: b, place: at, mean: mean, scale: scale,
                                                shift: beta ?? [Float](repeating: 0, count: b.channels), relu: relu)))
            case .relu: steps.append(.relu)
            case let .maxPool(p): steps.append(.maxPool(p, at))
            case let .avgPool(p): steps.append(.avgPool(p, at))
            case let .zeroPad(t, b, l, r): steps.append(.zeroPad(top: t, bottom: b, left: l, right: r, at))
            case let .subsample(s): steps.append(.subsample(s, at))
            case let .channelPad(b, a): steps.append(.channelPad(before: b, after: a, at))
            case .globalAvgPool: steps.append(.globalAvgPool(at))
            case let .flatten(order): steps.append(.flatten(order, at))
            case let .dense(d):
                try runner.checkRange(d.inFeatures, 1...ForwardRunner.maxChannels, "dense inFeatures", place: at)
                try runner.checkRange(d.outFeatures, 1...ForwardRunner.maxChannels, "dense outFeatures", place: at)
                let weight = try runner.tensor("\(d.name).weight", shape: [d.outFeatures, d.inFeatures], place: at)
                let bias = d.bias ? try runner.tensor("\(d.name).bias", shape: [d.outFeatures], place: at).data
                                  : [Float](repeating: 0, count: d.outFeatures)
                steps.append(.dense(DenseStep(op: d, place: at, weight: weight.data, bias: bias)))
            case .softmax: steps.append(.softmax(at))
            }
            i += 1
        }
        return steps
    }

    /// Running mean and 1 / sqrt(var + eps) (as float32 first, as the reference computes it).
    private func batchNormStatistics(_ b: BatchNormOp, place: String) throws -> ([Float], [Float]) {
        try runner.checkRange(b.channels, 1...ForwardRunner.maxChannels, "batch norm channels", place: place)
        guard b.epsilon.isFinite, b.epsilon >= 0 else {
            throw runner.mapping("\(place): epsilon \(b.epsilon) is not a finite non-negative number")
        }
        let mean = try runner.tensor("\(b.name).running_mean", shape: [b.channels], place: place).data
        let variance = try runner.tensor("\(b.name).running_var", shape: [b.channels], place: place).data
        let eps = Float(b.epsilon)
        if let c = variance.indices.first(where: { !(variance[$0] + eps > 0) }) {
            throw runner.mapping("\(place): \(b.name).running_var[\(c)] = \(variance[c]) with epsilon \(b.epsilon) gives a non-positive variance")
        }
        return (mean, variance.map { 1 / ($0 + eps).squareRoot() })
    }

    private func convStep(_ c: ConvOp, place: String, bn: (BatchNormOp, String)?, relu: Bool) throws -> ConvStep {
        // The shape checks that do not depend on the input; convGeometry repeats them per input.
        for (v, what) in [(c.kernel, "kernel"), (c.stride, "stride"), (c.dilation, "dilation")] {
            guard v.count == 2 else { throw runner.mapping("\(place): \(what) must have 2 values (height, width), has \(v)") }
            try runner.checkRange(v[0], 1...ForwardRunner.maxWindow, what, place: place)
            try runner.checkRange(v[1], 1...ForwardRunner.maxWindow, what, place: place)
        }
        try runner.checkRange(c.inChannels, 1...ForwardRunner.maxChannels, "inChannels", place: place)
        try runner.checkRange(c.outChannels, 1...ForwardRunner.maxChannels, "outChannels", place: place)
        try runner.checkRange(c.groups, 1...ForwardRunner.maxChannels, "groups", place: place)
        guard c.inChannels % c.groups == 0, c.outChannels % c.groups == 0 else {
            throw runner.mapping("\(place): groups \(c.groups) must divide both inChannels \(c.inChannels) and outChannels \(c.outChannels)")
        }
        let (O, G, KH, KW) = (c.outChannels, c.groups, c.kernel[0], c.kernel[1])
        let Cg = c.inChannels / G, Og = O / G
        _ = try checkedElementCount([O, Cg, KH, KW]) { runner.mapping("\(place): weight: \($0)") }
        let w = try runner.tensor("\(c.name).weight", shape: [O, Cg, KH, KW], place: place).data
        let convBias = c.bias ? try runner.tensor("\(c.name).bias", shape: [O], place: place).data : nil

        // Folding: y = (conv(x) + b - mean) * s + beta with s = gamma / sqrt(var + eps)
        //        = conv_{w·s}(x) + ((b - mean) * s + beta).
        var scale = [Double](repeating: 1, count: O)
        var bias = (0..<O).map { Double(convBias?[$0] ?? 0) }
        if let (b, at) = bn {
            let (mean, inv) = try batchNormStatistics(b, place: at)
            let gamma = b.scale ? try runner.tensor("\(b.name).weight", shape: [O], place: at).data : nil
            let beta = b.center ? try runner.tensor("\(b.name).bias", shape: [O], place: at).data : nil
            for o in 0..<O {
                scale[o] = Double(inv[o]) * Double(gamma?[o] ?? 1)
                bias[o] = (bias[o] - Double(mean[o])) * scale[o] + Double(beta?[o] ?? 0)
            }
        }
        let K = KH * KW * Cg
        // Per group (K, Og): row (kh·KW + kw)·Cg + i, column og. The layouts the chosen kernels read
        // are derived from these when a schedule first needs them.
        // A transpose of each group's (Og, K) block: taken 16 output channels at a time, so the reads are
        // 16 sequential streams and each write fills whole cache lines, instead of writing one float per
        // line at a stride of Og floats (which made plan builds several times slower).
        var plain = [Float](repeating: 0, count: G * K * Og)
        let blocks = (Og + 15) / 16
        plain.withUnsafeMutableBufferPointer { out in
            w.withUnsafeBufferPointer { w in
                let taps = KH * KW
                parallelChunks(G * blocks, threads: threads, grain: max(1, 4096 / max(K * 16, 1))) { part in
                    for unit in part {
                        let g = unit / blocks, og0 = unit % blocks * 16
                        let og1 = min(og0 + 16, Og)
                        for i in 0..<Cg {
                            for t in 0..<taps {
                                let row = out.baseAddress! + (g * K + t * Cg + i) * Og
                                for og in og0..<og1 {
                                    let o = g * Og + og
                                    row[og] = Float(Double(w[(o * Cg + i) * taps + t]) * scale[o])
                                }
                            }
                        }
                    }
                }
            }
        }
        return ConvStep(op: c, place: place, store: ConvWeights(plain: plain, groups: G, K: K, O: O, KH: KH, KW: KW, threads: threads),
                        bias: bias.map { Float($0) }, relu: relu)
    }
}

// MARK: - Buffers

/// Activation slots (as many as the sizing walk found alive at once: five within a block — block input,
/// forked input, shortcut result and two residual temporaries — plus the whole batch's input and output
/// around a sub-batched part) and one im2col matrix, all 64-byte aligned.
final class Arena {
    /// The most slots any walk may hold; the sizing walk finds how many a run needs.
    static let maxSlots = 8
    let activationCapacity: Int
    let columnCapacity: Int
    let activations: [UnsafeMutablePointer<Float>]
    let columns: UnsafeMutablePointer<Float>
    var slotCount: Int { activations.count }

    init(activation: Int, columns: Int, slots: Int = Arena.maxSlots) {
        activationCapacity = max(activation, 1)
        columnCapacity = max(columns, 1)
        activations = (0..<max(1, min(slots, Arena.maxSlots))).map { _ in Arena.allocate(max(activation, 1)) }
        self.columns = Arena.allocate(max(columns, 1))
    }

    private static func allocate(_ count: Int) -> UnsafeMutablePointer<Float> {
        UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Float>.stride, alignment: 64)
            .bindMemory(to: Float.self, capacity: count)
    }

    deinit {
        for p in activations { UnsafeMutableRawPointer(p).deallocate() }
        UnsafeMutableRawPointer(columns).deallocate()
    }
}

/// An activation in the arena: slot, where in it (a sub-batch is a slice of the batch's buffer) and NHWC
/// dimensions (flat: (n, c)).
struct Activation {
    /// Giving it another slot starts it at that slot's beginning.
    var slot: Int { didSet { offset = 0 } }
    /// Floats from the slot's start.
    var offset: Int
    var n: Int, h: Int, w: Int, c: Int
    var flat: Bool

    init(slot: Int, offset: Int = 0, n: Int, h: Int, w: Int, c: Int, flat: Bool) {
        (self.slot, self.offset, self.n, self.h, self.w, self.c, self.flat) = (slot, offset, n, h, w, c, flat)
    }
    var count: Int { n * h * w * c }
    /// The NCHW-style shape the reference checks expect.
    var shape: [Int] { flat ? [n, c] : [n, c, h, w] }
}

/// Splits `0..<total` into at most `threads` chunks and runs them in parallel when each chunk would
/// carry at least `grain` units of work.
@inline(__always)
func parallelChunks(_ total: Int, threads: Int, grain: Int, _ body: (Range<Int>) -> Void) {
    let chunks = min(threads, total / max(grain, 1))
    if chunks <= 1 {
        if total > 0 { body(0..<total) }
        return
    }
    // The chunks write disjoint ranges of buffers the caller owns for the duration of this call.
    WorkerPool.shared.run(chunks) { i in body((total * i / chunks)..<(total * (i + 1) / chunks)) }
}

/// `parallelChunks` that also tells each chunk its worker number (0 ..< chunks), for per-worker scratch.
@inline(__always)
func parallelChunksIndexed(_ total: Int, threads: Int, grain: Int, _ body: (Int, Range<Int>) -> Void) {
    let chunks = min(threads, total / max(grain, 1))
    if chunks <= 1 {
        if total > 0 { body(0, 0..<total) }
        return
    }
    WorkerPool.shared.run(chunks) { i in body(i, (total * i / chunks)..<(total * (i + 1) / chunks)) }
}

/// How the plan picks each layer's algorithm: the dimensions it measures (KernelChoice.swift) and the
/// fixed rules for the rest, kept in one place so tests can pin them and a profiling run can override
/// them through `RESNET_PLAN_TUNING` (comma-separated `winograd=0|2|4`, `wide=N`, `min-tiles=N`,
/// `max-weights=N`, `grouped=0|1`, `grouped-width=N`, `grouped-kernel=0|1|2` (Swift, AVX2, AVX-512),
/// `gemm-kernel=0|1|2|3` (OpenBLAS, AVX2, AVX-512 12×32, AVX-512 6×64), `winograd-kernel=0|1|2` (Swift, AVX2,
/// AVX-512), each of which pins its dimension; `gemm-default=N`, the matrix kernel the fixed rules name
/// without pinning it; `measure=0`, measure nothing; `split=B:I` or `split=0`, the early blocks'
/// sub-batching; `pool-kernel=0|1` (Swift, AVX-512); `profile`); the environment is a debugging aid, not
/// an interface. `PlanTuning()` measures nothing; plans built through the public initialiser measure every
/// dimension.
struct PlanTuning: Sendable, Equatable {
    /// What is chosen by timing candidates on the layer; the fixed rules below decide the rest (and
    /// are the tie-break reference when measuring).
    var measured: Set<TunedDimension> = []
    /// Winograd output tile for eligible 3×3 convolutions: 4, 2, or 0 for none.
    var winogradTile = 4
    /// From this C·O on, the tile is 2 instead of `winogradTile`: wide layers run at small spatial sizes
    /// in ResNets (256 channels at 14×14 at 224×224 input), where F(4×4)'s 16 tiles per image cannot pay
    /// for streaming 36·C·O transformed weights and F(2×2)'s 49 tiles with 16·C·O measured faster.
    var winogradWideLayer = 256 * 256
    /// Below this many tiles (N·⌈OH/m⌉·⌈OW/m⌉) a layer keeps im2col: the transformed weights are
    /// (m+2)²/9 times larger and few tiles cannot pay for reading them.
    var winogradMinTiles = 8
    /// Largest C·O given transformed weights (memory: (m+2)²·C·O floats per layer, 16 MB for F(2×2) at
    /// 512×512 channels, kept beside the original 9.4 MB). ResNets' widest 3×3 layers (512×512 at 7×7
    /// for 224² inputs) are within it, so measurement may pick Winograd there too.
    var winogradMaxWeights = 512 * 512
    /// Tiles per Winograd block (transformed, multiplied and transformed back before the next); nil:
    /// whole layers up to 1024 tiles. Tests set it small to cover the block seams.
    var winogradBlockRows: Int?
    /// Grouped convolutions run the direct kernel (FastGrouped.swift) rather than im2col with one sgemm
    /// per group; tests turn it off to compare the two.
    var groupedDirect = true
    /// Largest Cg·Og for the direct kernel. Wider groups keep im2col: OpenBLAS's AVX-512 sgemm beat our
    /// baseline-SSE loop there (ResNeXt-50 at batch 1, per layer: 16×16 channels per group 0.65 ms
    /// im2col against 1.05 ms direct, 32×32 0.5 against 1.2), while at 4×4 and 8×8 direct won
    /// (1.7–2.5 against 4.4–5 ms, 1.1–1.25 against 1.4–1.6 ms).
    var groupedDirectMaxWidth = 128
    /// `groupedDirectMaxWidth` when the C kernel runs: with AVX2/FMA direct beat im2col at every width
    /// ResNeXt-50 has (per layer at batch 1, 2 threads: 16×16 channels per group 0.32 ms against 0.79,
    /// 32×32 0.29 against 0.49). Wider groups (ResNeXt-101 32×8d's 64×64) were not measured and keep im2col.
    var groupedDirectMaxWidthVector = 32 * 32
    /// Which implementation runs the direct kernel (the best this CPU runs by default); tests pin
    /// each in turn.
    var groupedKernel = GroupedKernel.best
    /// What multiplies ungrouped convolutions, and Winograd's per-point products (`.best` by default;
    /// `.blas` whenever the plan's parallelism is `.blas`); tests pin each in turn.
    var gemmKernel = GemmKernel.best
    /// What runs Winograd's input and output tile transforms (the best this CPU runs by default); tests
    /// pin each in turn.
    var winogradKernel = WinogradKernel.best
    /// Run the stem and the first `splitBlocks` blocks `splitImages` images at a time (0: not pinned).
    var splitBlocks = 0, splitImages = 0
    /// What runs max, average and global average pooling (the best this CPU runs by default); tests pin each in turn.
    var poolKernel = PoolKernel.best
    /// Print per-layer times to stderr after each run.
    var profile = false

    static let environment: PlanTuning = {
        var t = PlanTuning()
        t.measured = Set(TunedDimension.allCases)
        guard let text = ProcessInfo.processInfo.environment["RESNET_PLAN_TUNING"] else { return t }
        for item in text.split(separator: ",") {
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            let value = kv.count == 2 ? Int(kv[1]) : nil
            switch kv[0] {
            case "winograd": if let value, [0, 2, 4].contains(value) { t.winogradTile = value; t.measured.remove(.winograd) }
            case "wide": if let value, value >= 0 { t.winogradWideLayer = value }
            case "min-tiles": if let value, value >= 0 { t.winogradMinTiles = value }
            case "max-weights": if let value, value >= 0 { t.winogradMaxWeights = value }
            case "grouped": if let value, [0, 1].contains(value) { t.groupedDirect = value == 1; t.measured.remove(.grouped) }
            case "grouped-width":
                if let value, value >= 0 { t.groupedDirectMaxWidth = value; t.groupedDirectMaxWidthVector = value; t.measured.remove(.grouped) }
            case "grouped-kernel": if let value, let k = GroupedKernel(rawValue: value) { t.groupedKernel = k; t.measured.remove(.grouped) }
            case "gemm-kernel": if let value, let k = GemmKernel(rawValue: value) { t.gemmKernel = k; t.measured.remove(.gemm) }
            case "gemm-default": if let value, let k = GemmKernel(rawValue: value) { t.gemmKernel = k }
            case "winograd-kernel": if let value, let k = WinogradKernel(rawValue: value) { t.winogradKernel = k; t.measured.remove(.transform) }
            case "measure": if value == 0 { t.measured = [] }
            case "split":
                // "split=B:I", or "split=0" for the whole batch throughout.
                let parts = kv.count == 2 ? kv[1].split(separator: ":").compactMap { Int($0) } : []
                if parts == [0] { t.measured.remove(.split) }
                if parts.count == 2, parts[0] > 0, parts[1] > 0 { (t.splitBlocks, t.splitImages) = (parts[0], parts[1]); t.measured.remove(.split) }
            case "pool-kernel": if let value, let k = PoolKernel(rawValue: value) { t.poolKernel = k }
            case "profile": t.profile = true
            default: break
            }
        }
        return t
    }()
}

// MARK: - Execution

/// Walks a plan once. Without an arena it only resolves and checks shapes and records the buffer
/// sizes the run will need; with one it computes.
struct Executor {
    let plan: ForwardPlan
    let arena: Arena?
    let checker = ForwardRunner(tensors: [:], engine: .fast, capture: nil)
    var maxActivation = 0
    var maxColumns = 0
    var sizing: Bool { arena == nil }
    /// Per-layer wall times when profiling.
    var profile: [(String, Double)] = []

    /// Where each convolution's algorithm comes from.
    enum Mode {
        /// A settled schedule.
        case schedule(Schedule)
        /// Being settled: sizing makes room for every candidate and lists the convolutions; running
        /// times the candidates of each (KernelTuner).
        case tune(KernelTuner)
    }
    let mode: Mode
    /// Convolutions met so far (the index into a schedule).
    private var convIndex = 0
    /// In a sizing walk of `.tune`: each convolution with its geometry and what its epilogue adds.
    private(set) var surveyed: [(step: ConvStep, g: WindowGeometry, shortcut: Bool, relu: Bool)] = []

    /// Per slot, how many activations use it; the sizing walk counts too, to find how many slots a run needs.
    private var references = [Int](repeating: 0, count: Arena.maxSlots)
    /// The most slots in use at once so far.
    private(set) var maxSlots = 0
    /// Run images `images` at a time through blocks before `blocks` (and the stem), then the rest on the
    /// whole batch; nil: the whole batch throughout. Chosen by measurement (`ForwardPlan.schedule`).
    var split: (blocks: Int, images: Int)?
    /// While measuring a split: stop after this many blocks.
    var stopAfterBlocks: Int?

    init(plan: ForwardPlan, arena: Arena?, mode: Mode) {
        self.plan = plan
        self.arena = arena
        self.mode = mode
        if case let .schedule(s) = mode { split = s.split }
    }

    // Slots are reference counted so that an op may work in place only on a buffer nobody else reads.

    private mutating func acquire(_ count: Int) -> Int {
        maxActivation = max(maxActivation, count)
        let available = arena?.slotCount ?? Arena.maxSlots
        guard let i = references.prefix(available).firstIndex(of: 0) else { preconditionFailure("arena slots exhausted") }
        references[i] = 1
        if sizing { maxSlots = max(maxSlots, references.reduce(0) { $0 + ($1 > 0 ? 1 : 0) }) }
        return i
    }

    private mutating func retain(_ a: Activation) { references[a.slot] += 1 }
    private mutating func release(_ a: Activation) { references[a.slot] -= 1 }
    private func unique(_ a: Activation) -> Bool { !sizing && references[a.slot] == 1 }
    private func pointer(_ a: Activation) -> UnsafeMutablePointer<Float> { arena!.activations[a.slot] + a.offset }

    mutating func runAll(inputShape: [Int], input: UnsafePointer<Float>?) throws -> Activation {
        let (N, C, H, W) = (inputShape[0], inputShape[1], inputShape[2], inputShape[3])
        var x = Activation(slot: acquire(N * C * H * W), n: N, h: H, w: W, c: C, flat: false)
        if let input, !sizing {
            let dst = pointer(x)
            let HW = H * W
            parallelChunks(N * HW, threads: plan.loopThreads, grain: 4096) { pixels in
                for q in pixels {
                    let n = q / HW, p = q % HW
                    for c in 0..<C { dst[q * C + c] = input[(n * C + c) * HW + p] }
                }
            }
        }
        var first = 0
        if let split, split.images < N, split.blocks > 0 {
            x = try runFront(x, blocks: min(split.blocks, plan.blocks.count), images: split.images)
            first = min(split.blocks, plan.blocks.count)
        } else {
            x = try run(plan.stem, x)
        }
        let end = min(stopAfterBlocks ?? plan.blocks.count, plan.blocks.count)
        for block in plan.blocks[min(first, end)..<end] { x = try run(block, x) }
        if stopAfterBlocks != nil { return x }
        return try run(plan.head, x)
    }

    /// The stem and blocks before `blocks`, `images` images at a time: each slice of the batch's input is
    /// an activation in the same slot, and each result is copied into one buffer for the whole batch.
    /// Early layers have the largest activations and the smallest weights: a few images at a time keep
    /// a block's activations in cache, which the whole batch's do not fit, and reusing weights across
    /// the batch matters little there.
    private mutating func runFront(_ x: Activation, blocks: Int, images: Int) throws -> Activation {
        let perImage = x.h * x.w * x.c
        var out: Activation?
        for n0 in stride(from: 0, to: x.n, by: images) {
            var part = Activation(slot: x.slot, offset: x.offset + n0 * perImage, n: min(images, x.n - n0), h: x.h, w: x.w, c: x.c, flat: false)
            retain(x)                                   // each slice is one more reader of the batch's buffer
            convIndex = 0                               // every slice meets the same convolutions
            part = try run(plan.stem, part)
            for block in plan.blocks[0..<blocks] { part = try run(block, part) }
            if out == nil {
                guard !part.flat else { throw checker.mapping("blocks before \(blocks) end flat; they cannot be run a few images at a time") }
                out = Activation(slot: acquire(x.n * part.h * part.w * part.c), n: x.n, h: part.h, w: part.w, c: part.c, flat: false)
            }
            if !sizing {
                let count = part.count
                (pointer(out!) + n0 * part.h * part.w * part.c).update(from: pointer(part), count: count)
            }
            release(part)
        }
        release(x)
        return out!
    }

    /// Copies the final activation out as a tensor (NCHW again when it is still spatial).
    func output(_ a: Activation) -> Tensor {
        let src = pointer(a)
        if a.flat { return Tensor(shape: [a.n, a.c], data: Array(UnsafeBufferPointer(start: src, count: a.count))) }
        var data = [Float](repeating: 0, count: a.count)
        let HW = a.h * a.w
        for n in 0..<a.n { for p in 0..<HW { for c in 0..<a.c { data[(n * a.c + c) * HW + p] = src[(n * HW + p) * a.c + c] } } }
        return Tensor(shape: [a.n, a.c, a.h, a.w], data: data)
    }

    private mutating func run(_ steps: [Step], _ x: Activation, add: Activation? = nil, finalRelu: Bool = false) throws -> Activation {
        var x = x
        for (i, step) in steps.enumerated() {
            let last = i == steps.count - 1
            if last, add != nil, case let .conv(c) = step {
                x = try conv(c, x, add: add, relu: finalRelu)
            } else {
                x = try apply(step, x)
            }
        }
        return x
    }

    private mutating func run(_ block: BlockPlan, _ x: Activation) throws -> Activation {
        let forked = try run(block.pre, x)
        retain(forked)                                            // read by both branches
        let shortcut = try run(block.shortcut, forked)
        if block.fusesAddition {
            let out = try run(block.residual, forked, add: shortcut, finalRelu: !block.post.isEmpty)
            release(shortcut)
            return out
        }
        let residual = try run(block.residual, forked)
        guard residual.shape == shortcut.shape else {
            throw checker.mapping("\(block.place): residual branch gives shape \(residual.shape) but shortcut gives \(shortcut.shape); they cannot be added")
        }
        var sum = residual
        sum.slot = acquire(residual.count)
        if !sizing {
            let (a, b, y) = (pointer(residual), pointer(shortcut), pointer(sum))
            for i in 0..<sum.count { y[i] = a[i] + b[i] }
        }
        release(residual)
        release(shortcut)
        return try run(block.post, sum)
    }

    // MARK: one step

    private mutating func apply(_ step: Step, _ x: Activation) throws -> Activation {
        switch step {
        case let .conv(c):
            return try conv(c, x, add: nil, relu: c.relu)

        case let .affine(a):
            guard x.c == a.op.channels else {
                throw checker.mapping("\(a.place): batch norm has \(a.op.channels) channels, activation has \(x.c) (shape \(x.shape))")
            }
            var y = x
            if !unique(x) { y.slot = acquire(x.count) }
            if sizing { release(x); return y }    // in sizing every op writes a new slot
            let (src, dst, C, relu) = (pointer(x), pointer(y), x.c, a.relu)
            a.mean.withUnsafeBufferPointer { mean in a.scale.withUnsafeBufferPointer { scale in a.shift.withUnsafeBufferPointer { shift in
                parallelChunks(x.count / C, threads: plan.loopThreads, grain: 2048) { rows in
                    for r in rows {
                        for c in 0..<C {
                            var v = (src[r * C + c] - mean[c]) * scale[c] + shift[c]
                            if relu, v < 0 { v = 0 }
                            dst[r * C + c] = v
                        }
                    }
                }
            } } }
            if y.slot != x.slot { release(x) }
            return y

        case .relu:
            var y = x
            if !unique(x) { y.slot = acquire(x.count) }
            if sizing { release(x); return y }    // in sizing every op writes a new slot
            let (src, dst) = (pointer(x), pointer(y))
            for i in 0..<x.count { let v = src[i]; dst[i] = v < 0 ? 0 : v }
            if y.slot != x.slot { release(x) }
            return y

        case let .maxPool(p, place), let .avgPool(p, place):
            var isMax = false
            if case .maxPool = step { isMax = true }
            let g = try checker.poolGeometry(p, x.shape, kind: isMax ? "max pool" : "average pool", place: place)
            let y = Activation(slot: acquire(g.N * g.OH * g.OW * g.C), n: g.N, h: g.OH, w: g.OW, c: g.C, flat: false)
            if sizing { release(x); return y }    // in sizing every op writes a new slot
            pool(pointer(x), pointer(y), g, max: isMax, includePad: p.countIncludePad && p.padding != .same)
            release(x)
            return y

        case let .zeroPad(top, bottom, left, right, place):
            let (N, C, H, W) = try checker.nchw(x.shape, "zero padding", place: place)
            for (v, side) in [(top, "top"), (bottom, "bottom"), (left, "left"), (right, "right")] {
                try checker.checkRange(v, 0...ForwardRunner.maxWindow, "zero padding \(side)", place: place)
            }
            let (OH, OW) = (top + H + bottom, left + W + right)
            _ = try checkedElementCount([N, C, OH, OW]) { checker.mapping("\(place): \($0)") }
            let y = Activation(slot: acquire(N * OH * OW * C), n: N, h: OH, w: OW, c: C, flat: false)
            if sizing { release(x); return y }    // in sizing every op writes a new slot
            let (src, dst) = (pointer(x), pointer(y))
            dst.update(repeating: 0, count: y.count)
            for n in 0..<N {
                for h in 0..<H {
                    (dst + ((n * OH + h + top) * OW + left) * C).update(from: src + (n * H + h) * W * C, count: W * C)
                }
            }
            release(x)
            return y

        case let .subsample(s, place):
            let (N, C, H, W) = try checker.nchw(x.shape, "subsample", place: place)
            try checker.checkRange(s, 1...ForwardRunner.maxWindow, "subsample stride", place: place)
            let (OH, OW) = ((H + s - 1) / s, (W + s - 1) / s)
            let y = Activation(slot: acquire(N * OH * OW * C), n: N, h: OH, w: OW, c: C, flat: false)
            if sizing { release(x); return y }    // in sizing every op writes a new slot
            let (src, dst) = (pointer(x), pointer(y))
            for n in 0..<N {
                for oh in 0..<OH {
                    for ow in 0..<OW {
                        (dst + ((n * OH + oh) * OW + ow) * C).update(from: src + ((n * H + oh * s) * W + ow * s) * C, count: C)
                    }
                }
            }
            release(x)
            return y

        case let .channelPad(before, after, place):
            let (N, C, H, W) = try checker.nchw(x.shape, "channel padding", place: place)
            try checker.checkRange(before, 0...ForwardRunner.maxChannels, "channel padding before", place: place)
            try checker.checkRange(after, 0...ForwardRunner.maxChannels, "channel padding after", place: place)
            let OC = before + C + after
            _ = try checkedElementCount([N, OC, H, W]) { checker.mapping("\(place): \($0)") }
            let y = Activation(slot: acquire(N * H * W * OC), n: N, h: H, w: W, c: OC, flat: false)
            if sizing { release(x); return y }    // in sizing every op writes a new slot
            let (src, dst) = (pointer(x), pointer(y))
            dst.update(repeating: 0, count: y.count)
            for p in 0..<(N * H * W) { (dst + p * OC + before).update(from: src + p * C, count: C) }
            release(x)
            return y

        case let .globalAvgPool(place):
            let (N, C, H, W) = try checker.nchw(x.shape, "global average pool", place: place)
            let y = Activation(slot: acquire(N * C), n: N, h: 1, w: 1, c: C, flat: true)
            if sizing { release(x); return y }    // in sizing every op writes a new slot
            let (src, dst, HW) = (pointer(x), pointer(y), H * W)
            if plan.tuning.poolKernel.resolved != .swift, N > 0, HW > 0, C > 0 {
                plan.tuning.poolKernel.globalAverage(src, dst, N: N, HW: HW, C: C)
                release(x)
                return y
            }
            for n in 0..<N {
                let out = dst + n * C
                out.update(repeating: 0, count: C)
                for p in 0..<HW {                                  // same summation order as the reference
                    let row = src + (n * HW + p) * C
                    for c in 0..<C { out[c] += row[c] }
                }
                for c in 0..<C { out[c] /= Float(HW) }
            }
            release(x)
            return y

        case let .flatten(order, place):
            if x.flat { return x }
            let (N, C, H, W) = try checker.nchw(x.shape, "flatten", place: place)
            if order == .hwc {                                   // NHWC memory already is pixel-major
                return Activation(slot: x.slot, offset: x.offset, n: N, h: 1, w: 1, c: H * W * C, flat: true)
            }
            let y = Activation(slot: acquire(x.count), n: N, h: 1, w: 1, c: C * H * W, flat: true)
            if sizing { release(x); return y }    // in sizing every op writes a new slot
            let (src, dst, HW) = (pointer(x), pointer(y), H * W)
            for n in 0..<N { for p in 0..<HW { for c in 0..<C { dst[(n * C + c) * HW + p] = src[(n * HW + p) * C + c] } } }
            release(x)
            return y

        case let .dense(d):
            guard x.flat else {
                throw checker.mapping("\(d.place): dense needs a flat (N, features) activation, got \(x.shape); the spec lacks flatten or global pooling")
            }
            guard x.c == d.op.inFeatures else {
                throw checker.mapping("\(d.place): dense expects \(d.op.inFeatures) input features, activation has \(x.c)")
            }
            let (N, F, K) = (x.n, d.op.inFeatures, d.op.outFeatures)
            _ = try checkedElementCount([N, K]) { checker.mapping("\(d.place): \($0)") }
            let (m, n, k) = (try blasSize(N, "batch", d.place), try blasSize(K, "outputs", d.place), try blasSize(F, "features", d.place))
            let y = Activation(slot: acquire(N * K), n: N, h: 1, w: 1, c: K, flat: true)
            if sizing { release(x); return y }    // in sizing every op writes a new slot
            let (src, dst) = (pointer(x), pointer(y))
            for r in 0..<N { for j in 0..<K { dst[r * K + j] = d.bias[j] } }
            // At small batches this streams the weights (8 MiB for ResNet-50's classifier) for a few rows:
            // the threads split the outputs so each reads only its share.
            let units = (K + 15) / 16
            d.weight.withUnsafeBufferPointer { w in
                let weights = w.baseAddress!
                parallelChunks(units, threads: N < 64 && F * K >= 1 << 16 ? plan.loopThreads : 1, grain: 1) { part in
                    let cols = (part.lowerBound * 16)..<min(part.upperBound * 16, K)
                    copenblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, blasint(cols.count), k, 1, src, k,
                                 weights + cols.lowerBound * F, k, 1, dst + cols.lowerBound, n)
                }
            }
            release(x)
            return y

        case let .softmax(place):
            guard x.flat else { throw checker.mapping("\(place): softmax needs (N, classes), got \(x.shape)") }
            var y = x
            if !unique(x) { y.slot = acquire(x.count) }
            if sizing { release(x); return y }    // in sizing every op writes a new slot
            softmaxRows(pointer(x), pointer(y), N: x.n, K: x.c)
            if y.slot != x.slot { release(x) }
            return y
        }
    }

    func reportProfile() {
        var text = ""
        var total = 0.0
        for (place, ms) in profile {
            total += ms
            text += String(format: "%8.3f ms  %@\n", ms, place)
        }
        text += String(format: "%8.3f ms  all convolutions\n", total)
        FileHandle.standardError.write(text.data(using: .utf8)!)
    }

    private func blasSize(_ v: Int, _ what: String, _ place: String) throws -> blasint {
        guard let b = blasint(exactly: v) else {
            throw ResNetError.unsupported(file: "model", place: place, reason: "\(what) \(v) exceeds the BLAS size limit \(blasint.max)")
        }
        return b
    }

    /// Convolution by the algorithm its schedule names, or, while settling one, by each candidate in turn.
    private mutating func conv(_ c: ConvStep, _ x: Activation, add: Activation?, relu: Bool) throws -> Activation {
        let g = try checker.convGeometry(c.op, x.shape, place: c.place)
        let Cg = g.C / g.G
        let P = g.N * g.OH * g.OW
        let K = g.KH * g.KW * Cg
        let pointwise = Executor.pointwise(g)
        // The BLAS size limits hold for every algorithm (the C kernels share OpenBLAS's index width).
        _ = (try blasSize(P, "output positions", c.place), try blasSize(g.O / g.G, "output channels per group", c.place),
             try blasSize(K, "kernel size", c.place), try blasSize(pointwise ? g.C : g.G * K, "unfolded row", c.place),
             try blasSize(g.O, "output channels", c.place))
        let columnCount = pointwise ? 0 : try checkedElementCount([P, g.G * K]) { checker.mapping("\(c.place): im2col buffer: \($0)") }
        let y = Activation(slot: acquire(P * g.O), n: g.N, h: g.OH, w: g.OW, c: g.O, flat: false)
        if let add, add.shape != y.shape {
            throw checker.mapping("\(c.place): residual branch gives shape \(y.shape) but shortcut gives \(add.shape); they cannot be added")
        }
        let index = convIndex
        convIndex += 1
        if sizing {
            switch mode {
            case let .schedule(s): maxColumns = max(maxColumns, columns(s.convs[index].algorithm, g, im2col: columnCount))
            case .tune:
                surveyed.append((c, g, add != nil, relu))
                for a in plan.tuning.candidates(g) { maxColumns = max(maxColumns, columns(a, g, im2col: columnCount)) }
            }
            release(x)
            return y
        }
        let src = UnsafePointer(pointer(x)), dst = pointer(y)
        let shortcut: UnsafePointer<Float>? = add.map { UnsafePointer(pointer($0)) }
        let clock = ContinuousClock()
        switch mode {
        case let .schedule(s):
            let chosen = s.convs[index]
            let started = clock.now
            compute(c, g, chosen.algorithm, chosen.weights, src: src, shortcut: shortcut, relu: relu, dst: dst)
            if plan.tuning.profile {
                profile.append(("\(c.place) \(g.C)->\(g.O) \(g.KH)x\(g.KW)/\(g.SH) \(g.OH)x\(g.OW) \(chosen.algorithm)",
                                seconds(clock.now - started) * 1000))
            }
        case let .tune(tuner):
            let me = self
            var ran = false
            let decision = tuner.decide(g, shortcut: add != nil, relu: relu) { algorithm in
                let weights = c.store.get(algorithm.layout)
                let started = clock.now
                me.compute(c, g, algorithm, weights, src: src, shortcut: shortcut, relu: relu, dst: dst)
                ran = true
                return seconds(clock.now - started)
            }
            // Settled without running (same shape met earlier, or cached): the layers after it need its output.
            if !ran {
                let a = decision.algorithm
                compute(c, g, a, c.store.get(a.layout), src: src, shortcut: shortcut, relu: relu, dst: dst)
            }
            c.store.keep((index < tuner.otherLayouts.count ? tuner.otherLayouts[index] : []).union([decision.algorithm.layout]))
        }
        release(x)
        return y
    }

    private static func pointwise(_ g: WindowGeometry) -> Bool {
        g.KH == 1 && g.KW == 1 && g.SH == 1 && g.SW == 1 && g.PT == 0 && g.PB == 0 && g.PL == 0 && g.PR == 0
    }

    /// Scratch floats `algorithm` needs in the arena's column buffer.
    private func columns(_ algorithm: ConvAlgorithm, _ g: WindowGeometry, im2col: Int) -> Int {
        switch algorithm {
        case .direct: 0
        case .gemm: im2col
        case let .winograd(m, _, _):
            WinogradConv(g, m: m, threads: plan.loopThreads, blockRows: plan.tuning.winogradBlockRows).scratchCount
        }
    }

    /// One convolution by `algorithm` on `weights` (its layout), epilogue included.
    private func compute(_ c: ConvStep, _ g: WindowGeometry, _ algorithm: ConvAlgorithm, _ weights: LaidOutWeights,
                         src: UnsafePointer<Float>, shortcut: UnsafePointer<Float>?, relu: Bool, dst: UnsafeMutablePointer<Float>) {
        let threads = plan.loopThreads
        switch (algorithm, weights) {
        case let (.direct(kernel), .plain(w)):
            w.withUnsafeBufferPointer { w in c.bias.withUnsafeBufferPointer { bias in
                GroupedConv(g, threads: threads, kernel: kernel)
                    .run(src: src, weights: w.baseAddress!, bias: bias.baseAddress!, shortcut: shortcut, relu: relu, dst: dst)
            } }
        case let (.winograd(m, product, transform), .winograd(w)):
            let wino = WinogradConv(g, m: m, threads: threads, blockRows: plan.tuning.winogradBlockRows, kernel: transform, product: product)
            c.bias.withUnsafeBufferPointer { bias in
                wino.run(src: src, weights: w, bias: bias.baseAddress!, shortcut: shortcut, relu: relu, dst: dst, scratch: arena!.columns)
            }
        case let (.gemm(kernel), .panels(packed)):
            c.bias.withUnsafeBufferPointer { bias in
                matrixProduct(g, kernel: kernel, packed: packed, plain: nil, bias: bias.baseAddress!, src: src, shortcut: shortcut,
                              relu: relu, dst: dst)
            }
        case let (.gemm(.blas), .plain(w)):
            w.withUnsafeBufferPointer { w in c.bias.withUnsafeBufferPointer { bias in
                matrixProduct(g, kernel: .blas, packed: nil, plain: w.baseAddress!, bias: bias.baseAddress!, src: src, shortcut: shortcut,
                              relu: relu, dst: dst)
            } }
        default:
            preconditionFailure("\(c.place): \(algorithm) was handed weights in another layout")
        }
    }

    /// im2col (unless 1×1 stride 1 unpadded), then the C matrix kernel with the folded bias, the shortcut
    /// and the ReLU applied at its store, or one sgemm per group followed by one epilogue pass doing the same.
    private func matrixProduct(_ g: WindowGeometry, kernel: GemmKernel, packed: PackedWeights?, plain: UnsafePointer<Float>?,
                               bias b: UnsafePointer<Float>, src: UnsafePointer<Float>, shortcut: UnsafePointer<Float>?, relu: Bool,
                               dst: UnsafeMutablePointer<Float>) {
        let Cg = g.C / g.G, Og = g.O / g.G
        let P = g.N * g.OH * g.OW
        let K = g.KH * g.KW * Cg
        let pointwise = Executor.pointwise(g)
        let lda = pointwise ? g.C : g.G * K
        let O = g.O
        let columns = arena!.columns
        let threads = plan.loopThreads
        // Each chunk of output rows is unfolded, multiplied and finished by one thread while its
        // columns are still in cache. With `.blas` there is one chunk and OpenBLAS threads the sgemm.
        // Rows `rows` and columns `cols` of the output from A (row p at a + p·lda), epilogue included.
        func multiply(_ a: UnsafePointer<Float>, rows: Range<Int>, cols: Range<Int>, group: Int = 0) {
            if let packed {
                packed.run(kernel: kernel, a: a, lda: lda, bias: b, shortcut: shortcut, relu: relu, c: dst, ldc: O, rows: rows, columns: cols)
                return
            }
            let w = plain! + group * K * Og
            copenblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(rows.count), blasint(cols.count), blasint(K),
                            1, a + rows.lowerBound * lda + group * (pointwise ? Cg : K), blasint(lda), w + cols.lowerBound, blasint(Og),
                            0, dst + rows.lowerBound * O + group * Og + cols.lowerBound, blasint(O))
        }
        // Few rows per thread (late layers at small batches: 7×7 = 49 rows at batch 1): splitting rows
        // would make every thread pack and stream all the weights for a handful of rows, so the
        // threads split the output channels instead and each reads only its share of the weights.
        if threads > 1, g.G == 1, P < 128 * threads, O >= 32 * threads {
            if !pointwise {
                parallelChunks(P, threads: threads, grain: 16) { rows in Executor.unfold(src, g, rows: rows, into: columns) }
            }
            let a: UnsafePointer<Float> = pointwise ? src : UnsafePointer(columns)
            let width = packed?.width ?? 16
            let units = (O + width - 1) / width
            parallelChunks(units, threads: threads, grain: 1) { part in
                let cols = (part.lowerBound * width)..<min(part.upperBound * width, O)
                multiply(a, rows: 0..<P, cols: cols)
                if packed == nil { Executor.finish(dst, rows: 0..<P, columns: cols, O: O, bias: b, shortcut: shortcut, relu: relu) }
            }
            return
        }
        parallelChunks(P, threads: threads, grain: 16) { chunk in
            // Tiles of rows whose unfolded patches (~512 KiB) are still in cache when sgemm reads
            // them; ungrouped, at least 512 rows because sgemm packs all the weights again on every
            // call; grouped layers keep the earlier 256 (their per-group weights are small).
            // A 1×1 convolution reads the activation as it lies: one call per chunk.
            let tile = pointwise ? chunk.count : max(g.G == 1 ? 512 : 256, 131_072 / max(g.G * K, 1))
            var start = chunk.lowerBound
            while start < chunk.upperBound {
                let rows = start..<min(start + tile, chunk.upperBound)
                start = rows.upperBound
                if !pointwise { Executor.unfold(src, g, rows: rows, into: columns) }
                let a: UnsafePointer<Float> = pointwise ? src : UnsafePointer(columns)
                for group in 0..<g.G { multiply(a, rows: rows, cols: 0..<Og, group: group) }
                if packed == nil { Executor.finish(dst, rows: rows, columns: 0..<O, O: O, bias: b, shortcut: shortcut, relu: relu) }
            }
        }
    }

    /// The convolution epilogue on a block of the (P, O) output: folded bias, then shortcut, then ReLU.
    @inline(__always)
    private static func finish(_ dst: UnsafeMutablePointer<Float>, rows: Range<Int>, columns: Range<Int>, O: Int,
                               bias b: UnsafePointer<Float>, shortcut: UnsafePointer<Float>?, relu: Bool) {
        for p in rows {
            let row = dst + p * O
            if let shortcut {
                let s = shortcut + p * O
                if relu { for o in columns { let v = row[o] + b[o] + s[o]; row[o] = v < 0 ? 0 : v } }
                else { for o in columns { row[o] = row[o] + b[o] + s[o] } }
            } else {
                if relu { for o in columns { let v = row[o] + b[o]; row[o] = v < 0 ? 0 : v } }
                else { for o in columns { row[o] += b[o] } }
            }
        }
    }

    /// NHWC im2col: row p = (n, oh, ow), column ((g·KH + kh)·KW + kw)·Cg + i; zeros in the padding.
    private static func unfold(_ src: UnsafePointer<Float>, _ g: WindowGeometry, rows: Range<Int>, into columns: UnsafeMutablePointer<Float>) {
        let Cg = g.C / g.G
        let rowLength = g.G * g.KH * g.KW * Cg
        let OHW = g.OH * g.OW
        for p in rows {
            let n = p / OHW, oh = (p % OHW) / g.OW, ow = p % g.OW
            let row = columns + p * rowLength
            let w0 = ow * g.SW - g.PL
            for kh in 0..<g.KH {
                let h = oh * g.SH - g.PT + kh * g.DH
                // Ungrouped and undilated, a kernel row's KW taps are KW adjacent pixels: one copy of KW·C floats.
                if g.G == 1, g.DW == 1, h >= 0, h < g.H, w0 >= 0, w0 + g.KW <= g.W {
                    (row + kh * g.KW * Cg).update(from: src + ((n * g.H + h) * g.W + w0) * g.C, count: g.KW * g.C)
                    continue
                }
                for kw in 0..<g.KW {
                    let w = ow * g.SW - g.PL + kw * g.DW
                    let inside = h >= 0 && h < g.H && w >= 0 && w < g.W
                    let cell = src + ((n * g.H + max(h, 0)) * g.W + max(w, 0)) * g.C
                    for group in 0..<g.G {
                        let dst = row + ((group * g.KH + kh) * g.KW + kw) * Cg
                        if inside { dst.update(from: cell + group * Cg, count: Cg) } else { dst.update(repeating: 0, count: Cg) }
                    }
                }
            }
        }
    }

    /// NHWC max or average pooling with the reference's padding and NaN rules.
    private func pool(_ src: UnsafeMutablePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ g: WindowGeometry, max isMax: Bool, includePad: Bool) {
        let C = g.C
        let OHW = g.OH * g.OW
        let kernel = plan.tuning.poolKernel
        parallelChunks(g.N * OHW, threads: plan.loopThreads, grain: max(1, 8192 / C)) { rows in
            if kernel.resolved != .swift {
                kernel.pool(src, dst, g, max: isMax, includePad: includePad, pixels: rows)
                return
            }
            for p in rows {
                let n = p / OHW, oh = (p % OHW) / g.OW, ow = p % g.OW
                let out = dst + p * C
                out.update(repeating: isMax ? -Float.infinity : 0, count: C)
                var cells = 0
                for kh in 0..<g.KH {
                    let h = oh * g.SH - g.PT + kh
                    if h < 0 || h >= g.H { continue }
                    for kw in 0..<g.KW {
                        let w = ow * g.SW - g.PL + kw
                        if w < 0 || w >= g.W { continue }
                        let cell = src + ((n * g.H + h) * g.W + w) * C
                        cells += 1
                        if isMax {
                            for c in 0..<C { let v = cell[c]; if v > out[c] || v.isNaN { out[c] = v } }
                        } else {
                            for c in 0..<C { out[c] += cell[c] }
                        }
                    }
                }
                if !isMax {
                    let divisor = Float(includePad ? g.KH * g.KW : cells)
                    for c in 0..<C { out[c] /= divisor }
                }
            }
        }
    }
}
