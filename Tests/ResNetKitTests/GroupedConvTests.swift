import Foundation
import Testing
@testable import ResNetKit

/// The plan's direct kernel for grouped convolutions (FastGrouped.swift, and its C versions in
/// Sources/CKernels) against the reference definition.
@Suite("Grouped convolution direct kernel")
struct GroupedConvTests {
    /// Every implementation this CPU runs, so each is checked on its own (the C ones where the CPU has them).
    static let kernels = GroupedKernel.allCases.filter(\.available)

    func tuning(direct: Bool, kernel: GroupedKernel = .best) -> PlanTuning {
        var t = PlanTuning()
        t.groupedDirect = direct
        t.groupedDirectMaxWidth = .max          // every grouped layer, whatever the default thresholds
        t.groupedDirectMaxWidthVector = .max
        t.groupedKernel = kernel
        return t
    }

    func expectAgrees(_ model: ResNetModel, _ x: Tensor, threads: Int, kernel: GroupedKernel, _ comment: String) throws {
        let plan = try ForwardPlan(model, threads: threads, parallelism: .own, tuning: tuning(direct: true, kernel: kernel))
        try expectClose(try plan.run(x), try forward(model, input: x, engine: .reference), relative: 1e-5,
                        Comment(rawValue: "\(kernel): \(comment)"))
    }

    @Test("the kernel asked for is the one that runs when the CPU has it; otherwise the best below it")
    func kernelChoice() {
        var g = WindowGeometry(N: 1, C: 8, H: 5, W: 5, O: 8, G: 2, KH: 3, KW: 3)
        (g.OH, g.OW) = (3, 3)
        for kernel in GroupedKernel.allCases {
            let chosen = GroupedConv(g, threads: 1, kernel: kernel).kernel
            if kernel.available { #expect(chosen == kernel) }
            else { #expect(chosen.rawValue < kernel.rawValue && chosen.available) }
        }
        #expect(GroupedKernel.best.available)
        #expect(CPUFeatures.avx2FMA == Self.kernels.contains(.avx2))
        // More taps than the C kernels' lists hold: the Swift kernel runs.
        (g.KH, g.KW, g.H, g.W) = (9, 9, 9, 9)
        (g.OH, g.OW) = (1, 1)
        #expect(GroupedConv(g, threads: 1, kernel: .best).kernel == .swift)
    }

    @Test("a single grouped convolution (groups 1...64, 1...64 channels per group, strides 1 and 2, odd sizes, every padding kind) matches the reference",
          arguments: kernels, 0..<48)
    func singleConvolution(kernel: GroupedKernel, seed: Int) throws {
        var rng = SeededRandom(UInt64(4100 + seed))
        let groups = rng.pick([1, 2, 3, 4, 8, 16, 32, 64])
        // Keep C and O at most 256 so the reference stays quick; Og covers the 8-, 4- and 1-lane paths.
        let widest = max(1, min(64, 256 / groups))
        let (cg, og) = (rng.int(1...widest), rng.int(1...widest))
        let k = rng.pick([3, 3, 3, 1, 5, 2])
        let s = rng.pick([1, 2])
        let d = k > 1 && rng.int(0...4) == 0 ? 2 : 1
        let paddings: [Padding] = [.same, .symmetric(1), .symmetric(2), .explicit(top: 0, bottom: 2, left: 1, right: 0), .valid]
        let padding = rng.pick(paddings)
        let reach = (k - 1) * d + 1
        let (h, w) = (rng.int(reach...15), rng.int(reach...15))
        var stem: [Op] = [conv("c", groups * cg, groups * og, k: k, s: s, d: d, padding: padding, groups: groups, bias: rng.int(0...1) == 1)]
        if rng.int(0...1) == 1 { stem.append(bn("b", groups * og)) }
        if rng.int(0...1) == 1 { stem.append(.relu) }
        let model = randomModel(spec(channels: groups * cg, stem: stem), seed: UInt64(4200 + seed))
        let x = SeededRandom(UInt64(4300 + seed)).tensorCopy([rng.int(1...3), groups * cg, h, w])
        try expectAgrees(model, x, threads: 1 + seed % 2, kernel: kernel,
                         "seed \(seed): groups \(groups) \(cg)->\(og) per group, \(k)x\(k)/\(s) dilation \(d) \(h)x\(w) \(padding)")
    }

    @Test("every output width per group (1...40) agrees, at image widths that leave full tiles, half tiles and single pixels",
          arguments: kernels, [1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 15, 16, 17, 24, 31, 32, 33, 40])
    func outputWidths(kernel: GroupedKernel, og: Int) throws {
        for (cg, w, s) in [(4, 23, 1), (og, 14, 1), (3, 11, 2)] {
            let model = randomModel(spec(channels: 2 * cg, stem: [conv("c", 2 * cg, 2 * og, k: 3, s: s, padding: .symmetric(1), groups: 2, bias: true), .relu]),
                                    seed: UInt64(4700 + og))
            let x = SeededRandom(UInt64(4800 + og)).tensorCopy([1, 2 * cg, 4, w])
            try expectAgrees(model, x, threads: 1, kernel: kernel, "\(cg)->\(og) per group, width \(w), stride \(s)")
        }
    }

    @Test("one work unit writes its group's channels of its rows and nothing else (no write past the buffer either)",
          arguments: kernels, [1, 3, 4, 5, 8, 13, 16, 24, 32, 40])
    func unitWritesOnlyItsGroup(kernel: GroupedKernel, og: Int) {
        let cg = og == 4 ? 4 : og % 5 + 2
        var g = WindowGeometry(N: 2, C: 3 * cg, H: 4, W: 11, O: 3 * og, G: 3, KH: 3, KW: 3, PT: 1, PB: 1, PL: 1, PR: 1)
        (g.OH, g.OW) = (4, 11)
        let conv = GroupedConv(g, threads: 1, kernel: kernel)
        #expect(conv.kernel == kernel)
        var rng = SeededRandom(UInt64(5000 + og))
        let src = (0..<(g.N * g.H * g.W * g.C)).map { _ in Float(rng.int(-100...100)) / 50 }
        let weights = (0..<(g.KH * g.KW * cg * g.O)).map { _ in Float(rng.int(-100...100)) / 50 }
        let bias = (0..<g.O).map { _ in Float(rng.int(-100...100)) / 50 }
        let count = g.N * g.OH * g.OW * g.O
        let shortcut = (0..<count).map { _ in Float(rng.int(-100...100)) / 50 }
        let sentinel: Float = -12345
        var full = [Float](repeating: 0, count: count)
        full.withUnsafeMutableBufferPointer { conv.run(src: src, weights: weights, bias: bias, shortcut: shortcut, relu: true, dst: $0.baseAddress!) }
        for group in [1, 2] {
            let rows = 3..<6                                    // crosses from image 0 into image 1
            var dst = [Float](repeating: sentinel, count: count + 64)
            dst.withUnsafeMutableBufferPointer {
                conv.unit(rows: rows, group: group, src: src, weights: weights, bias: bias, shortcut: shortcut, relu: true, dst: $0.baseAddress!)
            }
            let mine = (0..<(count + 64)).filter { i in i < count && rows.contains(i / (g.OW * g.O)) && (i % g.O) / og == group }
            let stray = (0..<(count + 64)).filter { dst[$0] != sentinel && !mine.contains($0) }
            #expect(stray.isEmpty, "\(kernel) \(cg)->\(og) group \(group): writes outside its unit at \(stray.prefix(5))")
            #expect(mine.allSatisfy { dst[$0] == full[$0] }, "\(kernel) \(cg)->\(og) group \(group): unit differs from the whole run")
        }
    }

    @Test("a kernel with more taps than the C kernels take (9x9) agrees through the Swift fallback", arguments: kernels)
    func manyTaps(kernel: GroupedKernel) throws {
        let model = randomModel(spec(channels: 8, stem: [conv("c", 8, 8, k: 9, padding: .symmetric(4), groups: 2), .relu]), seed: 4900)
        try expectAgrees(model, SeededRandom(4901).tensorCopy([1, 8, 10, 11]), threads: 2, kernel: kernel, "9x9")
    }

    @Test("a grouped convolution ending a residual branch fuses bias, shortcut and ReLU and agrees",
          arguments: kernels, [(1, 1), (2, 2), (3, 2)])
    func fusedShortcut(kernel: GroupedKernel, shape: (batch: Int, threads: Int)) throws {
        let (batch, threads) = shape
        // ResNeXt's bottleneck with the grouped 3×3 moved last, so the addition lands in its epilogue.
        let block = Block(name: "layer1.0",
                          residual: [conv("layer1.0.conv1", 64, 128, k: 1, padding: .valid), bn("layer1.0.bn1", 128), .relu,
                                     conv("layer1.0.conv2", 128, 64, k: 3, padding: .symmetric(1), groups: 32, bias: true), bn("layer1.0.bn2", 64)],
                          post: [.relu])
        let model = randomModel(spec(channels: 64, stem: [], stages: [Stage(blocks: [block])]), seed: 4400)
        let plan = try ForwardPlan(model, threads: threads, parallelism: .own, tuning: tuning(direct: true, kernel: kernel))
        #expect(plan.blocks[0].fusesAddition, "the addition should be fused into the grouped convolution")
        try expectAgrees(model, SeededRandom(4401).tensorCopy([batch, 64, 13, 11]), threads: threads, kernel: kernel, "batch \(batch)")
    }

    @Test("the direct kernel and the im2col path agree on ResNeXt-shaped layers at the widths ResNeXt-50 uses",
          arguments: kernels, [(4, 1), (8, 2), (16, 1), (32, 2)])
    func resnextWidths(kernel: GroupedKernel, shape: (perGroup: Int, stride: Int)) throws {
        let (perGroup, stride) = shape
        let c = 32 * perGroup
        let model = randomModel(spec(channels: c, stem: [conv("c", c, c, k: 3, s: stride, padding: .symmetric(1), groups: 32), bn("b", c), .relu]),
                                seed: UInt64(4500 + perGroup))
        let x = SeededRandom(UInt64(4600 + perGroup)).tensorCopy([2, c, 9, 10])
        let direct = try ForwardPlan(model, threads: 2, parallelism: .own, tuning: tuning(direct: true, kernel: kernel)).run(x)
        let im2col = try ForwardPlan(model, threads: 2, parallelism: .own, tuning: tuning(direct: false)).run(x)
        try expectClose(direct, im2col, relative: 1e-5, "\(kernel): direct against im2col")
        try expectClose(direct, try forward(model, input: x, engine: .reference), relative: 1e-5, "\(kernel): direct against the reference")
    }

    /// Whether any convolution of `spec` has groups.
    func hasGroups(_ spec: ResNetSpec) -> Bool {
        let ops = spec.stem + spec.stages.flatMap { $0.blocks.flatMap { $0.pre + $0.residual + $0.shortcut + $0.post } } + spec.head
        return ops.contains { if case let .conv(c) = $0 { return c.groups > 1 }; return false }
    }

    @Test("every committed PyTorch fixture with grouped convolutions agrees with the direct kernel", arguments: TorchParityTests.committed)
    func torchFixtures(file: String) throws {
        let url = Paths.fixtures.appendingPathComponent("torch").appendingPathComponent(file)
        let mapped = try mapTorchCheckpoint(try readTorchCheckpoint(path: url.path), arch: nil, mapFile: nil)
        guard hasGroups(mapped.model.spec) else { return }
        let goldens = try Goldens(path: url.deletingLastPathComponent().appendingPathComponent("io.npz").path,
                                  inputChannels: mapped.model.spec.inputChannels)
        for kernel in Self.kernels {
            for threads in [1, 2] { try expectAgrees(mapped.model, goldens.input, threads: threads, kernel: kernel, "\(file), \(threads) threads") }
        }
    }

    @Test("the committed fixtures include a grouped model, so the fixture test above checks something")
    func fixturesIncludeGroups() throws {
        let grouped = try TorchParityTests.committed.filter { file in
            let url = Paths.fixtures.appendingPathComponent("torch").appendingPathComponent(file)
            return hasGroups(try mapTorchCheckpoint(try readTorchCheckpoint(path: url.path), arch: nil, mapFile: nil).model.spec)
        }
        #expect(!grouped.isEmpty, "no committed PyTorch fixture has grouped convolutions")
    }
}
