import Foundation
import Testing
@testable import ResNetKit

/// The plan's own matrix kernel (FastGemm.swift, Sources/CKernels/gemm_impl.h) against a naive
/// product in double, and whole plans on it against the reference definition.
@Suite("Packed-weight matrix kernel")
struct GemmKernelTests {
    /// The C kernels this CPU runs, each checked on its own.
    static let kernels = GemmKernel.allCases.filter { $0 != .blas && $0.available }
    /// Every choice, OpenBLAS (the path forced off) included.
    static let choices = GemmKernel.allCases.filter(\.available)

    /// One product through `kernel`, in the blocks `split` gives (rows or panel-aligned columns), with
    /// row strides lda ≥ K and ldc ≥ O; returns the whole (P, ldc) output buffer plus a guard row.
    func product(_ kernel: GemmKernel, P: Int, K: Int, O: Int, lda: Int, ldc: Int, a: [Float], w: [Float], bias: [Float],
                 shortcut: [Float]?, relu: Bool, splitRows: Int?, splitPanels: Int?, sentinel: Float) -> [Float] {
        let packed = w.withUnsafeBufferPointer { PackedWeights($0, K: K, O: O, width: kernel.panelWidth) }
        var c = [Float](repeating: sentinel, count: (P + 1) * ldc)
        let nr = kernel.panelWidth
        let rowCuts = splitRows.map { [0..<$0, $0..<P] } ?? [0..<P]
        let colCuts = splitPanels.map { [0..<min(O, $0 * nr), min(O, $0 * nr)..<O] } ?? [0..<O]
        c.withUnsafeMutableBufferPointer { c in
            for rows in rowCuts {
                for columns in colCuts {
                    packed.run(kernel: kernel, a: a, lda: lda, bias: bias, shortcut: shortcut, relu: relu, c: c.baseAddress!, ldc: ldc,
                               rows: rows, columns: columns)
                }
            }
        }
        return c
    }

    @Test("the kernel pinned is the one the schedule runs and the layout it keeps (Winograd's points too); `.blas` parallelism and grouped layers keep OpenBLAS's layout")
    func kernelChoice() throws {
        for kernel in GemmKernel.allCases {
            #expect(kernel.resolved.available)
            if kernel.available { #expect(kernel.resolved == kernel) }
        }
        #expect(GemmKernel.best.available)
        let stem: [Op] = [conv("p", 8, 40, k: 1, padding: .valid), conv("s", 40, 24, k: 3, s: 2, padding: .same),
                          conv("g", 24, 24, k: 3, padding: .same, groups: 4), conv("w", 24, 16, k: 3, padding: .same)]
        let model = randomModel(spec(channels: 8, stem: stem), seed: 3100)
        for kernel in Self.choices {
            for parallelism in ForwardPlan.Parallelism.allCases {
                var t = PlanTuning()
                t.gemmKernel = kernel
                let plan = try ForwardPlan(model, threads: 2, parallelism: parallelism, tuning: t)
                let expected: GemmKernel = parallelism == .blas ? .blas : kernel
                // 20×20 → 10×10 after the stride: 18 F(4×4) tiles at batch 2, enough for Winograd.
                let chosen = try plan.algorithms(inputShape: [2, 8, 20, 20])
                #expect(chosen == [.gemm(expected), .gemm(expected), .direct(GroupedKernel.best),
                                   .winograd(m: 4, product: expected, transform: WinogradKernel.best)], "\(kernel), \(parallelism)")
                // Each convolution keeps only the layout its algorithm reads.
                let held = plan.stem.compactMap { step -> Set<WeightLayout>? in
                    if case let .conv(c) = step { return c.store.held }
                    return nil
                }
                let panels: WeightLayout = expected == .blas ? .plain : .panels(width: expected.panelWidth)
                #expect(held == [[panels], [panels], [.plain], [.winograd(m: 4, width: expected.panelWidth), .plain]], "\(kernel), \(parallelism)")
            }
        }
    }

    @Test("random shapes (P, K, O in 1...300, tile remainders, row strides, split blocks) match a naive product in double",
          arguments: kernels, 0..<40)
    func randomShapes(kernel: GemmKernel, seed: Int) {
        var rng = SeededRandom(UInt64(3200 + seed))
        // Every few seeds a shape at the edges: 1 row, 1 column, 1 term.
        let P = seed % 8 == 0 ? 1 : rng.int(1...300)
        let K = seed % 8 == 1 ? 1 : rng.pick([rng.int(1...300), rng.int(1...16), 64, 256])
        let O = seed % 8 == 2 ? 1 : rng.pick([rng.int(1...300), rng.int(1...40), 32, 48])
        let lda = K + rng.pick([0, 0, 3]), ldc = O + rng.pick([0, 0, 5])
        let hasShortcut = rng.int(0...1) == 1, relu = rng.int(0...1) == 1
        let a = (0..<(P * lda)).map { _ in rng.float() }
        let w = (0..<(K * O)).map { _ in rng.float() }
        let bias = (0..<O).map { _ in rng.float() }
        let shortcut = hasShortcut ? (0..<(P * ldc)).map { _ in rng.float() } : nil
        let splitRows = P > 1 && rng.int(0...1) == 1 ? rng.int(1...(P - 1)) : nil
        let panels = (O + kernel.panelWidth - 1) / kernel.panelWidth
        let splitPanels = panels > 1 && rng.int(0...1) == 1 ? rng.int(1...(panels - 1)) : nil
        let sentinel: Float = -98765
        let c = product(kernel, P: P, K: K, O: O, lda: lda, ldc: ldc, a: a, w: w, bias: bias, shortcut: shortcut, relu: relu,
                        splitRows: splitRows, splitPanels: splitPanels, sentinel: sentinel)
        var worst = 0.0, worstAt = (0, 0), stray = 0
        for r in 0...P {
            for o in 0..<ldc {
                guard r < P, o < O else { if c[r * ldc + o] != sentinel { stray += 1 }; continue }
                var sum = 0.0, magnitude = 0.0
                for k in 0..<K {
                    let t = Double(a[r * lda + k]) * Double(w[k * O + o])
                    sum += t
                    magnitude += abs(t)
                }
                var v = sum + Double(bias[o])
                magnitude += abs(Double(bias[o]))
                if let shortcut { v += Double(shortcut[r * ldc + o]); magnitude += abs(Double(shortcut[r * ldc + o])) }
                if relu, v < 0 { v = 0 }
                let error = abs(Double(c[r * ldc + o]) - v) / max(magnitude, 1e-30)
                if !(error <= worst) { worst = error; worstAt = (r, o) }
            }
        }
        let shape = "P \(P) K \(K) O \(O) lda \(lda) ldc \(ldc) shortcut \(hasShortcut) relu \(relu) split rows \(splitRows.map(String.init) ?? "-") panels \(splitPanels.map(String.init) ?? "-")"
        #expect(worst <= 1e-5, "\(kernel) \(shape): error \(worst) of the terms' magnitude at \(worstAt)")
        #expect(stray == 0, "\(kernel) \(shape): \(stray) writes outside the product")
    }

    @Test("NaN, infinities and signed zeros in activations, bias and shortcut come out as the plan's Swift epilogue gives them",
          arguments: kernels, [(1, 1, 1), (7, 5, 17), (13, 40, 33), (30, 300, 70)])
    func specialValues(kernel: GemmKernel, shape: (P: Int, K: Int, O: Int)) {
        let (P, K, O) = shape
        var rng = SeededRandom(UInt64(3300 + P))
        let specials: [Float] = [.nan, .infinity, -.infinity, -0.0, 0, 1, -1]
        // Small integers: every partial sum is exact in float, so the result is fixed bit for bit.
        var a = (0..<(P * K)).map { _ in Float(rng.int(-3...3)) }
        let w = (0..<(K * O)).map { _ in Float(rng.int(-3...3)) }
        for _ in 0..<max(1, P * K / 50) { a[rng.int(0...(P * K - 1))] = rng.pick(specials) }
        let bias = (0..<O).map { _ in rng.int(0...3) == 0 ? rng.pick(specials) : Float(rng.int(-3...3)) }
        let shortcut = (0..<(P * O)).map { _ in rng.int(0...2) == 0 ? rng.pick(specials) : Float(rng.int(-3...3)) }
        for relu in [false, true] {
            for withShortcut in [false, true] {
                let c = product(kernel, P: P, K: K, O: O, lda: K, ldc: O, a: a, w: w, bias: bias, shortcut: withShortcut ? shortcut : nil,
                                relu: relu, splitRows: nil, splitPanels: nil, sentinel: 0)
                var mismatches: [String] = []
                for r in 0..<P {
                    for o in 0..<O {
                        // Executor.finish on an sgemm result: (sum + bias) + shortcut, then `v < 0 ? 0 : v`.
                        var sum: Float = 0
                        for k in 0..<K { sum += a[r * K + k] * w[k * O + o] }
                        var v = sum + bias[o]
                        if withShortcut { v = v + shortcut[r * O + o] }
                        if relu { v = v < 0 ? 0 : v }
                        let got = c[r * O + o]
                        let same = v.isNaN ? got.isNaN : got.bitPattern == v.bitPattern
                        if !same && mismatches.count < 5 { mismatches.append("(\(r), \(o)): \(got) instead of \(v)") }
                    }
                }
                #expect(mismatches.isEmpty, "\(kernel) P \(P) K \(K) O \(O) relu \(relu) shortcut \(withShortcut): \(mismatches)")
            }
        }
    }

    /// How many of the plan's convolutions run on packed weights (Winograd's transform points included).
    /// The matrix kernels a schedule multiplies with (directly or at Winograd's points).
    static func products(_ algorithms: [ConvAlgorithm]) -> Set<GemmKernel> {
        Set(algorithms.compactMap { a -> GemmKernel? in
            switch a {
            case let .gemm(k): k
            case let .winograd(_, p, _): p
            case .direct: nil
            }
        })
    }

    @Test("the small ResNet and random bottlenecks agree with the reference on every kernel, batch 1–3, one and two threads, with and without Winograd",
          arguments: choices, 0..<6)
    func plansAgree(kernel: GemmKernel, seed: Int) throws {
        var rng = SeededRandom(UInt64(3400 + seed))
        let model: ResNetModel
        let x: Tensor
        if seed == 0 {
            model = randomModel(smallResNet(), seed: 3401)
            x = SeededRandom(3402).tensorCopy([3, 3, 12, 12])
        } else {
            // A bottleneck at widths that leave panel and tile remainders, ending in the fused addition.
            let (c, mid) = (rng.int(3...70), rng.int(1...90))
            let out = rng.pick([c, rng.int(1...130)])
            let stride = rng.pick([1, 2])
            let block = Block(name: "layer1.0",
                              residual: [conv("layer1.0.conv1", c, mid, k: 1, padding: .valid), bn("layer1.0.bn1", mid), .relu,
                                         conv("layer1.0.conv2", mid, mid, k: 3, s: stride, padding: .same), bn("layer1.0.bn2", mid), .relu,
                                         conv("layer1.0.conv3", mid, out, k: 1, padding: .valid, bias: rng.int(0...1) == 1), bn("layer1.0.bn3", out)],
                              shortcut: out == c && stride == 1 ? [] : [conv("layer1.0.downsample.0", c, out, k: 1, s: stride, padding: .valid),
                                                                        bn("layer1.0.downsample.1", out)],
                              post: rng.pick([[.relu], []]))
            model = randomModel(spec(channels: c, stem: [], stages: [Stage(blocks: [block])]), seed: UInt64(3500 + seed))
            x = SeededRandom(UInt64(3600 + seed)).tensorCopy([rng.int(1...3), c, rng.int(1...15), rng.int(1...15)])
        }
        let reference = try forward(model, input: x, engine: .reference)
        for (threads, winograd) in [(1, 0), (2, 0), (1, 4), (2, 2)] {
            var t = PlanTuning()
            t.gemmKernel = kernel
            // 0: every 3×3 through the matrix kernel too; 2 or 4: every eligible 3×3 through Winograd,
            // whose per-point products run on the same kernel, in blocks of a few tiles.
            t.winogradTile = winograd
            t.winogradMinTiles = 1
            t.winogradWideLayer = .max
            t.winogradBlockRows = winograd == 0 ? nil : 1 + seed % 3 * 3
            let plan = try ForwardPlan(model, threads: threads, parallelism: .own, tuning: t)
            #expect(Self.products(try plan.algorithms(inputShape: x.shape)) == [kernel], "\(kernel): the plan should run \(kernel)")
            try expectClose(try plan.run(x), reference, relative: 1e-5,
                            "\(kernel), seed \(seed), \(threads) threads, Winograd \(winograd), input \(x.shape)")
        }
    }
}
