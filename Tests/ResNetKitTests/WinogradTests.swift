import Foundation
import Testing
@testable import ResNetKit

/// Winograd F(2×2, 3×3) and F(4×4, 3×3), and the plan's channel-split sgemm, against the reference definition.
/// Every Winograd check runs with each tile-transform kernel this CPU has (Swift, and the C AVX2/FMA one).
@Suite("Winograd and small-layer convolution paths")
struct WinogradTests {
    /// The transform kernels this CPU runs; a CPU without AVX2/FMA says so, as only Swift is then tested.
    static let kernels: [WinogradKernel] = {
        let available = WinogradKernel.allCases.filter(\.available)
        if available.count < WinogradKernel.allCases.count {
            print("WinogradTests: this CPU lacks AVX2/FMA; only the Swift tile transforms are tested")
        }
        return available
    }()

    /// Winograd on every eligible layer, however few tiles, in blocks of `blockRows` tiles, transformed by `kernel`.
    func forced(_ m: Int, blockRows: Int? = nil, kernel: WinogradKernel = .swift) -> PlanTuning {
        var t = PlanTuning()
        t.winogradTile = m
        t.winogradMinTiles = 1
        t.winogradWideLayer = .max
        t.winogradBlockRows = blockRows
        t.winogradKernel = kernel
        return t
    }

    func expectAgrees(_ model: ResNetModel, _ x: Tensor, threads: Int, tuning: PlanTuning, _ comment: String) throws {
        let plan = try ForwardPlan(model, threads: threads, parallelism: .own, tuning: tuning)
        try expectClose(try plan.run(x), try forward(model, input: x, engine: .reference), relative: 1e-5, Comment(rawValue: comment))
    }

    @Test("a single 3×3 convolution (bias, folded BN, ReLU; odd sizes, TF same and asymmetric padding) matches the reference",
          arguments: 0..<32)
    func singleConvolution(seed: Int) throws {
        var rng = SeededRandom(UInt64(900 + seed))
        let (c, o) = (rng.int(1...20), rng.int(1...20))
        let paddings: [Padding] = [.same, .symmetric(1), .symmetric(2), .explicit(top: 0, bottom: 2, left: 1, right: 0), .valid]
        let padding = rng.pick(paddings)
        let minimum = padding == .valid ? 3 : padding == .explicit(top: 0, bottom: 2, left: 1, right: 0) ? 2 : 1
        let (h, w) = (rng.int(minimum...17), rng.int(minimum...17))
        var stem: [Op] = [conv("c", c, o, k: 3, padding: padding, bias: rng.int(0...1) == 1)]
        if rng.int(0...1) == 1 { stem.append(bn("b", o)) }
        if rng.int(0...1) == 1 { stem.append(.relu) }
        let model = randomModel(spec(channels: c, stem: stem), seed: UInt64(1000 + seed))
        let x = SeededRandom(UInt64(1100 + seed)).tensorCopy([rng.int(1...3), c, h, w])
        let m = seed % 2 == 0 ? 4 : 2
        let blockRows = rng.pick([nil, 1, 2, 5])
        for kernel in Self.kernels {
            let tuning = forced(m, blockRows: blockRows, kernel: kernel)
            let plan = try ForwardPlan(model, threads: 1 + seed % 3 / 2, parallelism: .own, tuning: tuning)
            guard case let .winograd(chosen, _, _)? = try plan.algorithms(inputShape: x.shape).first, chosen == m else {
                Issue.record("the convolution should run Winograd F(\(m))"); return
            }
            try expectAgrees(model, x, threads: plan.threads, tuning: tuning,
                             "seed \(seed) \(kernel): F(\(m)) \(c)->\(o) \(h)x\(w) \(padding) blocks \(blockRows.map(String.init) ?? "auto")")
        }
    }

    @Test("a basic block whose second 3×3 convolution takes the shortcut (identity or projection) and maybe the ReLU into its output transform",
          arguments: 0..<16)
    func fusedShortcut(seed: Int) throws {
        var rng = SeededRandom(UInt64(1200 + seed))
        // Channel counts below, at and past one 8-lane vector, with a tail; odd sizes; padding that keeps the size.
        let c = rng.pick([3, 8, 13, 16, 21])
        let o = seed % 4 == 3 ? rng.pick([5, 8, 19]) : c
        let padding = rng.pick([Padding.same, .symmetric(1), .explicit(top: 0, bottom: 2, left: 2, right: 0)])
        let (h, w) = (rng.int(2...15), rng.int(2...15))
        let shortcut: [Op] = o == c ? [] : [conv("b.down", c, o, k: 1, padding: .valid), bn("b.down.bn", o)]
        let block = Block(name: "b", residual: [conv("b.conv1", c, o, k: 3, padding: padding), bn("b.bn1", o), .relu,
                                                conv("b.conv2", o, o, k: 3, padding: padding, bias: rng.int(0...1) == 1), bn("b.bn2", o)],
                          shortcut: shortcut, post: seed % 2 == 0 ? [.relu] : [])
        let model = randomModel(spec(channels: c, stem: [], stages: [Stage(blocks: [block])]), seed: UInt64(1300 + seed))
        let x = SeededRandom(UInt64(1400 + seed)).tensorCopy([rng.int(1...3), c, h, w])
        let m = seed % 3 == 0 ? 2 : 4
        let blockRows = rng.pick([nil, 1, 3])
        for kernel in Self.kernels {
            try expectAgrees(model, x, threads: 1 + seed % 2, tuning: forced(m, blockRows: blockRows, kernel: kernel),
                             "seed \(seed) \(kernel): F(\(m)) \(c)->\(o) \(h)x\(w) \(padding) relu \(seed % 2 == 0)")
        }
    }

    @Test("a NaN bias makes its channel NaN after the ReLU (the epilogue is `v < 0 ? 0 : v`), in both transform kernels", arguments: [2, 4])
    func nanBiasPassesReLU(m: Int) throws {
        let (c, o) = (5, 11)                                // both channel counts leave an 8-lane tail
        var model = randomModel(spec(channels: c, stem: [conv("c", c, o, k: 3, padding: .same, bias: true), .relu]), seed: 55)
        model.tensors["c.bias"]!.data[9] = .nan
        let x = SeededRandom(56).tensorCopy([1, c, 9, 7])
        for kernel in Self.kernels {
            let y = try ForwardPlan(model, threads: 1, parallelism: .own, tuning: forced(m, kernel: kernel)).run(x)
            for ch in 0..<o {
                for h in 0..<9 {
                    for w in 0..<7 {
                        let v = at(y, 0, ch, h, w)
                        #expect(ch == 9 ? v.isNaN : (v.isFinite && v >= 0), "\(kernel) F(\(m)) channel \(ch) at (\(h), \(w)): \(v)")
                    }
                }
            }
        }
    }

    @Test("a constant image through an all-ones 3×3 kernel counts the taps inside the image", arguments: [2, 4])
    func countsTaps(m: Int) throws {
        // Output at (h, w) = number of kernel taps over real pixels: 9 inside, 6 on an edge, 4 in a corner.
        let model = ResNetModel(spec: spec(channels: 1, stem: [conv("c", 1, 1, k: 3, padding: .symmetric(1))]),
                                tensors: ["c.weight": Tensor(shape: [1, 1, 3, 3], data: [Float](repeating: 1, count: 9))])
        for kernel in Self.kernels {
            let plan = try ForwardPlan(model, threads: 1, parallelism: .own, tuning: forced(m, kernel: kernel))
            let y = try plan.run(Tensor(shape: [1, 1, 5, 7], data: [Float](repeating: 1, count: 35)))
            for h in 0..<5 {
                for w in 0..<7 {
                    let rows = (h == 0 || h == 4) ? 2 : 3, cols = (w == 0 || w == 6) ? 2 : 3
                    #expect(abs(at(y, 0, 0, h, w) - Float(rows * cols)) < 1e-5, "\(kernel) (\(h), \(w))")
                }
            }
        }
    }

    @Test("the small ResNet and random ResNets agree with Winograd forced on every eligible layer",
          arguments: [(2, 1), (4, 1), (2, 2), (4, 2)])
    func wholeModels(m: Int, threads: Int) throws {
        for kernel in Self.kernels { try wholeModels(m: m, threads: threads, kernel: kernel) }
    }

    func wholeModels(m: Int, threads: Int, kernel: WinogradKernel) throws {
        try expectAgrees(randomModel(smallResNet(), seed: 31), SeededRandom(32).tensorCopy([2, 3, 12, 12]), threads: threads,
                         tuning: forced(m, blockRows: 3, kernel: kernel), "small ResNet \(kernel)")
        for seed in 0..<8 {
            var (s, size) = ForwardPlanTests().randomResNet(seed: seed)
            let probe = try forward(randomModel(s, seed: 1), input: Tensor(zeros: [1, 3, size, size]), engine: .reference)
            s.head.append(.dense(DenseOp(name: "fc", inFeatures: probe.shape[1], outFeatures: 5, bias: true)))
            s.classes = 5
            let model = randomModel(s, seed: UInt64(600 + seed))
            let x = SeededRandom(UInt64(700 + seed)).tensorCopy([1 + seed % 3, 3, size, size])
            try expectAgrees(model, x, threads: threads, tuning: forced(m, blockRows: seed % 2 == 0 ? nil : 2, kernel: kernel),
                             "random ResNet seed \(seed) \(kernel)")
        }
    }

    @Test("every committed Keras fixture agrees with Winograd F(4×4) forced", arguments: KerasFixtureTests.files)
    func fixtures(relative: String) throws {
        let model = String(relative.split(separator: "/")[0])
        let path = Paths.fixtures.appendingPathComponent("keras/\(relative)").path
        let kind = try readKerasFile(path: path).kind
        let needsArch = kind == .legacyWeights || kind == .v3Weights
        guard !needsArch || KerasFixtureTests.presets[model] != nil else { return }
        let loaded = try loadModel(path: path, arch: needsArch ? KerasFixtureTests.presets[model] : nil)
        let io = Paths.fixtures.appendingPathComponent("keras/\(model)/io.npz").path
        let goldens = try Goldens(path: io, inputChannels: loaded.model.spec.inputChannels)
        for kernel in Self.kernels { try expectAgrees(loaded.model, goldens.input, threads: 2, tuning: forced(4, kernel: kernel), "\(relative) \(kernel)") }
    }

    /// A PyTorch file through the plan with Winograd forced (F(4×4) and F(2×2)) against the reference, on its golden input.
    func expectTorchFileAgrees(_ path: String, golden: String) throws {
        let mapped = try mapTorchCheckpoint(try readTorchCheckpoint(path: path), arch: nil, mapFile: nil)
        let goldens = try Goldens(path: golden, inputChannels: mapped.model.spec.inputChannels)
        for m in [4, 2] {
            for kernel in Self.kernels {
                try expectAgrees(mapped.model, goldens.input, threads: 2, tuning: forced(m, kernel: kernel), "\(path) F(\(m)) \(kernel)")
            }
        }
    }

    @Test("every committed PyTorch fixture agrees with Winograd forced", arguments: TorchParityTests.committed)
    func torchFixtures(file: String) throws {
        let url = Paths.fixtures.appendingPathComponent("torch").appendingPathComponent(file)
        try expectTorchFileAgrees(url.path, golden: url.deletingLastPathComponent().appendingPathComponent("io.npz").path)
    }

    @Test("the external PyTorch checkpoints (real trained weights) agree with Winograd forced", arguments: TorchParityTests.external)
    func externalTorchCheckpoints(file: String) throws {
        guard let path = Paths.externalFile(file),
              let golden = Paths.externalFile((file as NSString).deletingLastPathComponent + "/io.npz") else { return }
        try expectTorchFileAgrees(path, golden: golden)
    }

    @Test("grouped, dilated and strided 3×3 convolutions keep im2col and still agree")
    func ineligibleLayersKeepIm2col() throws {
        let stem: [Op] = [conv("g", 8, 8, k: 3, padding: .same, groups: 4), conv("d", 8, 8, k: 3, d: 2, padding: .symmetric(2)),
                          conv("s", 8, 8, k: 3, s: 2, padding: .same), conv("w", 8, 8, k: 3, padding: .same)]
        let model = randomModel(spec(channels: 8, stem: stem), seed: 77)
        let plan = try ForwardPlan(model, threads: 2, parallelism: .own, tuning: forced(4))
        let transformed = try plan.algorithms(inputShape: [2, 8, 11, 9]).map { a -> Bool in
            if case .winograd = a { return true }
            return false
        }
        #expect(transformed == [false, false, false, true])
        for kernel in Self.kernels {
            try expectAgrees(model, SeededRandom(78).tensorCopy([2, 8, 11, 9]), threads: 2, tuning: forced(4, kernel: kernel), "mixed 3x3 layers \(kernel)")
        }
    }

    @Test("late-layer shapes (few rows, many channels) and a wide classifier split the output channels over threads and agree", arguments: [1, 2])
    func channelSplit(threads: Int) throws {
        // 7×7 at batch 1 is 49 rows: below 128 per thread, with ≥ 64 output channels, so two threads split columns.
        let block = Block(name: "layer1.0",
                          residual: [conv("layer1.0.conv1", 24, 80, k: 1, padding: .valid), bn("layer1.0.bn1", 80), .relu,
                                     conv("layer1.0.conv2", 80, 80, k: 3, s: 2, padding: .symmetric(1)), bn("layer1.0.bn2", 80), .relu,
                                     conv("layer1.0.conv3", 80, 72, k: 1, padding: .valid), bn("layer1.0.bn3", 72)],
                          shortcut: [conv("layer1.0.downsample.0", 24, 72, k: 1, s: 2, padding: .valid), bn("layer1.0.downsample.1", 72)],
                          post: [.relu])
        // A classifier with F·K ≥ 2^16 at batch < 64 splits its outputs over the threads too.
        let s = spec(channels: 24, stem: [], stages: [Stage(blocks: [block])],
                     head: [.globalAvgPool, .dense(DenseOp(name: "fc", inFeatures: 72, outFeatures: 1000, bias: true))], classes: 1000)
        let model = randomModel(s, seed: 88)
        var off = PlanTuning()
        off.winogradTile = 0
        try expectAgrees(model, SeededRandom(89).tensorCopy([1, 24, 13, 13]), threads: threads, tuning: off, "batch 1")
        try expectAgrees(model, SeededRandom(90).tensorCopy([2, 24, 13, 13]), threads: threads, tuning: off, "batch 2")
    }

    @Test("weights transformed straight into a C kernel's panels equal the (α², C, O) ones packed afterwards",
          arguments: [2, 4])
    func directPacking(m: Int) {
        var rng = SeededRandom(UInt64(1500 + m))
        for kernel in GemmKernel.allCases where kernel.panelWidth > 0 {
            // O below, at and past a panel width (16, 32 or 64), with a remainder; C odd and even.
            for (C, O) in [(1, 1), (3, 17), (8, 32), (13, 45), (5, 64), (6, 77)] {
                let w = (0..<(O * C * 9)).map { _ in Double(rng.float()) }
                let weight: (Int, Int, Int, Int) -> Double = { o, c, kh, kw in w[((o * C + c) * 3 + kh) * 3 + kw] }
                let plain = WinogradWeights(m: m, C: C, O: O, weight: weight)
                let direct = WinogradWeights(m: m, C: C, O: O, width: kernel.panelWidth, weight: weight)
                let later = plain.packed(width: kernel.panelWidth, C: C, O: O)
                #expect(direct.u.isEmpty && plain.points == nil)
                #expect(direct.points?.map(\.data) == later.points?.map(\.data), "\(kernel) F(\(m)) \(C)->\(O)")
                #expect(direct.points?.allSatisfy { $0.width == kernel.panelWidth && $0.K == C && $0.O == O } == true)
            }
        }
    }

    @Test("transformed weights reproduce the kernel: U = G g Gᵀ with g a single tap is the outer product of G's columns", arguments: [2, 4])
    func weightTransform(m: Int) {
        let a = m + 2
        let G = WinogradWeights.kernelTransform(m: m)
        for kh in 0..<3 {
            for kw in 0..<3 {
                let u = WinogradWeights(m: m, C: 1, O: 1) { _, _, h, w in h == kh && w == kw ? 1 : 0 }
                for i in 0..<a {
                    for j in 0..<a {
                        #expect(abs(Double(u.u[i * a + j]) - G[i * 3 + kh] * G[j * 3 + kw]) < 1e-7)
                    }
                }
            }
        }
    }
}

@Suite("Plan worker pool")
struct WorkerPoolTests {
    @Test("every chunk runs exactly once, over many regions of varying width and from concurrent callers")
    func everyChunkOnce() async {
        let callers = 4, regions = 300
        let totals = await withTaskGroup(of: [Int].self) { group in
            for caller in 0..<callers {
                group.addTask {
                    var counts = [Int](repeating: 0, count: 3)
                    for r in 0..<regions {
                        let width = 1 + (r + caller) % 3
                        let hits = UnsafeMutablePointer<Int>.allocate(capacity: width)
                        hits.initialize(repeating: 0, count: width)
                        // Each chunk writes only its own slot, as the plan's chunks do.
                        WorkerPool.shared.run(width) { i in hits[i] += 1 }
                        for i in 0..<width { counts[i] += hits[i] }
                        hits.deallocate()
                    }
                    return counts
                }
            }
            var all = [Int](repeating: 0, count: 3)
            for await c in group { for i in 0..<3 { all[i] += c[i] } }
            return all
        }
        // Chunk 0 runs in every region, chunk 1 in widths 2 and 3, chunk 2 in width 3.
        #expect(totals == [callers * regions, callers * regions * 2 / 3, callers * regions / 3])
    }
}
