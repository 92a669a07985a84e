import Foundation
import Testing
@testable import ResNetKit

/// Per-layer kernel choice by measurement (KernelChoice.swift): the search, the cache file, and plans
/// that measure. Which candidate wins on this machine is never asserted (timings are noisy); what is
/// asserted is that the fastest of the times reported wins, that every choice computes the same
/// layer, and that the cache is used only when it fits.
@Suite("Kernel choice by measurement")
struct KernelChoiceTests {
    /// A temporary cache file path, removed by the caller.
    func temporaryCachePath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("kernel-choices-\(UUID().uuidString).json").path
    }

    func geometry(C: Int, O: Int, k: Int, H: Int = 16, N: Int = 1, G: Int = 1) -> WindowGeometry {
        let pad = k / 2
        return WindowGeometry(N: N, C: C, H: H, W: H, O: O, G: G, KH: k, KW: k, SH: 1, SW: 1, DH: 1, DW: 1,
                              PT: pad, PB: pad, PL: pad, PR: pad, OH: H, OW: H)
    }

    var measuring: PlanTuning {
        var t = PlanTuning()
        t.measured = Set(TunedDimension.allCases)
        return t
    }

    @Test("candidates: every available matrix kernel, Winograd tiles only where eligible, grouped paths only for grouped layers; nothing measured gives the fixed choice alone")
    func candidateSets() {
        let t = measuring
        let pointwise = t.candidates(geometry(C: 64, O: 64, k: 1))
        #expect(Set(pointwise) == Set(GemmKernel.allCases.filter(\.available).map { ConvAlgorithm.gemm($0) }))
        let threeByThree = t.candidates(geometry(C: 64, O: 64, k: 3))
        #expect(threeByThree.contains { if case .winograd(2, _, _) = $0 { return true }; return false })
        #expect(threeByThree.contains { if case .winograd(4, _, _) = $0 { return true }; return false })
        #expect(threeByThree.allSatisfy { $0.runsHere })
        let grouped = t.candidates(geometry(C: 64, O: 64, k: 3, G: 8))
        #expect(grouped.contains(.gemm(.blas)) && grouped.contains { if case .direct = $0 { return true }; return false })
        #expect(!grouped.contains { if case .winograd = $0 { return true }; return false })
        // Past the memory bound a 3×3 layer gets no Winograd candidate.
        #expect(!t.candidates(geometry(C: 1024, O: 512, k: 3)).contains { if case .winograd = $0 { return true }; return false })
        #expect(PlanTuning().candidates(geometry(C: 64, O: 64, k: 3)) == [PlanTuning().fixedAlgorithm(geometry(C: 64, O: 64, k: 3))])
        // Pinning the matrix kernel leaves only candidates that multiply with it.
        var pinned = measuring
        pinned.measured.remove(.gemm)
        pinned.gemmKernel = .blas
        #expect(GemmKernelTests.products(pinned.candidates(geometry(C: 64, O: 64, k: 3))) == [.blas])
    }

    @Test("the fastest time reported wins; the fixed choice keeps the layer within 2%; Winograd is searched one dimension at a time")
    func searchPicksTheFastest() throws {
        let g = geometry(C: 64, O: 64, k: 3)
        let candidates = measuring.candidates(g)
        try #require(candidates.count > 2)
        // Made-up times, each dimension adding its own cost: F(4×4), the last matrix kernel and the last
        // transform listed are the cheapest, so the last candidate listed is the fastest.
        func cost(_ a: ConvAlgorithm) -> Double {
            switch a {
            case let .gemm(k): 1e-3 * (10 - Double(k.rawValue))
            case let .winograd(m, p, t): 1e-3 * ((m == 4 ? 1 : 3) + 0.1 * (3 - Double(p.rawValue)) + 0.1 * (3 - Double(t.rawValue)))
            case .direct: 1
            }
        }
        let fast = candidates.last!
        var calls: [ConvAlgorithm: Int] = [:]
        let tuner = KernelTuner(tuning: measuring, threads: 1, cache: nil)
        let d = tuner.decide(g, shortcut: false, relu: true) { a in
            calls[a, default: 0] += 1
            return cost(a)
        }
        // The search is one dimension at a time, so it reaches the fastest when the costs add up.
        #expect(d.algorithm == fast, "timed: \(d.times.map { "\($0.0) \($0.1)" })")
        #expect(d.source == .measured)
        #expect(calls.count == d.times.count && calls.count < candidates.count, "\(calls.count) of \(candidates.count) timed")
        // A second layer of the same shape reuses the decision without running anything.
        var again = 0
        let d2 = tuner.decide(g, shortcut: false, relu: true) { _ in again += 1; return 1 }
        #expect(again == 0 && d2.algorithm == fast)

        // Within 2%: the fixed choice stays.
        let fixed = candidates[0]
        let close = KernelTuner(tuning: measuring, threads: 1, cache: nil).decide(g, shortcut: false, relu: true) { a in
            a == fixed ? 1.01e-3 : 1e-3
        }
        #expect(close.algorithm == fixed)
    }

    @Test("the cache file: choices come back for the same machine, a different machine or a damaged file is ignored, an entry naming a kernel this CPU lacks is dropped")
    func cacheFile() throws {
        let path = temporaryCachePath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let g = geometry(C: 32, O: 48, k: 1)
        let key = KernelTuner.key(g, threads: 2, shortcut: true, relu: false)
        let first = KernelCache(path: path, machine: "m1")
        first.record(key, LayerDecision(algorithm: .gemm(.blas), times: [(.gemm(.blas), 0.5), (.gemm(GemmKernel.best), 0.7)], source: .measured))
        first.save()
        let again = KernelCache(path: path, machine: "m1").lookup(key)
        #expect(again?.algorithm == .gemm(.blas) && again?.times.count == 2)
        #expect(KernelCache(path: path, machine: "m2").lookup(key) == nil)
        // Damaged: truncated text.
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try String(text.prefix(text.count / 2)).write(toFile: path, atomically: false, encoding: .utf8)
        #expect(KernelCache(path: path, machine: "m1").lookup(key) == nil)
        // Too large: ignored without being parsed.
        try String(repeating: " ", count: KernelCache.maxBytes + 1).write(toFile: path, atomically: false, encoding: .utf8)
        #expect(KernelCache(path: path, machine: "m1").lookup(key) == nil)
        // A kernel name this build does not know, or a malformed choice: the entry is dropped.
        let foreign = """
        {"format": "\(KernelCache.format)", "machine": "m1", "entries": {"\(key)": {"choice": "gemm avx1024", "times": []},
         "other": {"choice": 7, "times": [["gemm blas", "x"]]}}}
        """
        try foreign.write(toFile: path, atomically: false, encoding: .utf8)
        let loaded = KernelCache(path: path, machine: "m1")
        #expect(loaded.lookup(key) == nil && loaded.lookup("other") == nil)
        for a in [ConvAlgorithm.gemm(.avx2), .winograd(m: 4, product: .blas, transform: .swift), .direct(.swift)] {
            #expect(ConvAlgorithm(a.description) == a)
        }
        #expect(ConvAlgorithm("winograd3 blas/swift") == nil && ConvAlgorithm("gemm") == nil)
    }

    @Test("a plan that measures agrees with the reference; a second plan takes every choice from the cache without timing; only the layouts in use are kept",
          arguments: [1, 2])
    func measuringPlans(threads: Int) throws {
        let path = temporaryCachePath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let model = randomModel(smallResNet(), seed: 4100)
        let x = SeededRandom(4101).tensorCopy([2, 3, 12, 12])
        let reference = try forward(model, input: x, engine: .reference)
        let machine = "test machine"
        let first = try ForwardPlan(model, threads: threads, parallelism: .own, tuning: measuring,
                                    kernelCache: KernelCache(path: path, machine: machine))
        try expectClose(try first.run(x), reference, relative: 1e-5, "measured choices, \(threads) threads")
        let choices = try first.explain(inputShape: x.shape)
        #expect(!choices.isEmpty && choices.contains { $0.source == "measured" })
        for c in choices where c.source == "measured" {
            #expect(c.candidates.contains { $0.name == c.choice }, "\(c.place): the choice is one of the candidates timed")
        }
        let second = try ForwardPlan(model, threads: threads, parallelism: .own, tuning: measuring,
                                     kernelCache: KernelCache(path: path, machine: machine))
        let reused = try second.explain(inputShape: x.shape)
        #expect(reused.allSatisfy { $0.source != "measured" } && second.measuringSeconds == 0)
        #expect(reused.map(\.choice) == choices.map(\.choice))
        try expectClose(try second.run(x), reference, relative: 1e-5, "cached choices, \(threads) threads")
        // Each convolution holds what its algorithm reads, plus one exact layout when that one is Winograd's.
        let algorithms = try second.algorithms(inputShape: x.shape)
        let steps = (second.stem + second.blocks.flatMap { $0.pre + $0.residual + $0.shortcut + $0.post }).compactMap { step -> ConvStep? in
            if case let .conv(c) = step { return c }
            return nil
        }
        try #require(steps.count == algorithms.count)
        for (step, a) in zip(steps, algorithms) {
            #expect(step.store.held.contains(a.layout) && step.store.held.filter(\.exact).count == 1, "\(step.place): \(step.store.held)")
        }
    }

    @Test("a plan for one-off calls (forward's) measures nothing on its first run at a shape, only when that shape runs again")
    func oneOffPlansMeasureOnRepeat() throws {
        let model = randomModel(smallResNet(), seed: 4300)
        let x = SeededRandom(4301).tensorCopy([1, 3, 12, 12])
        let reference = try forward(model, input: x, engine: .reference)
        let plan = try ForwardPlan(model, threads: 2, parallelism: .own, tuning: measuring, kernelCache: nil, measuresOnFirstRun: false)
        try expectClose(try plan.run(x), reference, relative: 1e-5, "first run: fixed rules")
        #expect(plan.measuringSeconds == 0)
        try expectClose(try plan.run(x), reference, relative: 1e-5, "second run: measured")
        #expect(plan.measuringSeconds > 0)
        let sources = Set(try plan.explain(inputShape: x.shape).map(\.source))
        #expect(sources.contains("measured") && !sources.contains("cached"))
    }

    @Test("the early blocks run a few images at a time (pinned: every split point and sub-batch size, batches that do not divide) and agree with the whole batch")
    func splitBatches() throws {
        let model = randomModel(smallResNet(), seed: 4400)
        for n in [2, 3, 5] {
            let x = SeededRandom(UInt64(4400 + n)).tensorCopy([n, 3, 12, 12])
            let reference = try forward(model, input: x, engine: .reference)
            let whole = try ForwardPlan(model, threads: 2, parallelism: .own, tuning: PlanTuning(), kernelCache: nil).run(x)
            for blocks in 1...3 {
                for images in 1...2 {
                    var t = PlanTuning()
                    (t.splitBlocks, t.splitImages) = (blocks, images)
                    let plan = try ForwardPlan(model, threads: 2, parallelism: .own, tuning: t, kernelCache: nil)
                    let y = try plan.run(x)
                    // Same kernels on every slice as on the whole batch: the same numbers, bit for bit.
                    #expect(y == whole, "batch \(n), first \(blocks) blocks \(images) at a time")
                    try expectClose(y, reference, relative: 1e-5)
                }
            }
        }
    }

    @Test("for a batch, the split is measured once, kept in the cache file and listed by explain")
    func splitIsMeasuredAndCached() throws {
        let path = temporaryCachePath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let model = randomModel(smallResNet(), seed: 4500)
        let x = SeededRandom(4501).tensorCopy([3, 3, 12, 12])
        let reference = try forward(model, input: x, engine: .reference)
        let plan = try ForwardPlan(model, threads: 2, parallelism: .own, tuning: measuring, kernelCache: KernelCache(path: path, machine: "m"))
        try expectClose(try plan.run(x), reference, relative: 1e-5)
        let first = try plan.explain(inputShape: x.shape).filter { $0.place == "batch" }
        #expect(first.count == 1 && first.first?.source == "measured" && first.first!.candidates.count >= 3, "\(first)")
        let again = try ForwardPlan(model, threads: 2, parallelism: .own, tuning: measuring, kernelCache: KernelCache(path: path, machine: "m"))
        let second = try again.explain(inputShape: x.shape).filter { $0.place == "batch" }
        #expect(second.first?.source == "cached" && second.first?.choice == first.first?.choice)
        try expectClose(try again.run(x), reference, relative: 1e-5)
        // Batch 1 has nothing to split.
        #expect(try again.explain(inputShape: [1, 3, 12, 12]).allSatisfy { $0.place != "batch" })
    }

    @Test("every candidate of every layer of a small ResNet computes the same layer (forced one at a time through the schedule)")
    func everyCandidateAgrees() throws {
        let model = randomModel(smallResNet(), seed: 4200)
        let x = SeededRandom(4201).tensorCopy([1, 3, 12, 12])
        let reference = try forward(model, input: x, engine: .reference)
        var t = measuring
        t.winogradMinTiles = 1
        let most = [geometry(C: 8, O: 8, k: 3), geometry(C: 8, O: 8, k: 3, G: 2)].map { t.candidates($0).count }.max()!
        for rank in 0..<most {
            let plan = try ForwardPlan(model, threads: 2, parallelism: .own, tuning: t, kernelCache: nil)
            plan.forcedChoice = { candidates in candidates[min(rank, candidates.count - 1)] }
            try expectClose(try plan.run(x), reference, relative: 1e-5, "candidate \(rank) of each layer")
        }
    }
}
