import Foundation
import Testing
@testable import ResNetKit

/// The plan's direct kernel for grouped convolutions (FastGrouped.swift) against the reference definition.
@Suite("Grouped convolution direct kernel")
struct GroupedConvTests {
    func tuning(direct: Bool) -> PlanTuning {
        var t = PlanTuning()
        t.groupedDirect = direct
        t.groupedDirectMaxWidth = .max          // every grouped layer, whatever the default threshold
        return t
    }

    func expectAgrees(_ model: ResNetModel, _ x: Tensor, threads: Int, _ comment: String) throws {
        let plan = try ForwardPlan(model, threads: threads, parallelism: .own, tuning: tuning(direct: true))
        try expectClose(try plan.run(x), try forward(model, input: x, engine: .reference), relative: 1e-5, Comment(rawValue: comment))
    }

    @Test("a single grouped convolution (groups 1...64, 1...64 channels per group, strides 1 and 2, odd sizes, every padding kind) matches the reference",
          arguments: 0..<48)
    func singleConvolution(seed: Int) throws {
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
        try expectAgrees(model, x, threads: 1 + seed % 2,
                         "seed \(seed): groups \(groups) \(cg)->\(og) per group, \(k)x\(k)/\(s) dilation \(d) \(h)x\(w) \(padding)")
    }

    @Test("a grouped convolution ending a residual branch fuses bias, shortcut and ReLU and agrees",
          arguments: [(1, 1), (2, 2), (3, 2)])
    func fusedShortcut(batch: Int, threads: Int) throws {
        // ResNeXt's bottleneck with the grouped 3×3 moved last, so the addition lands in its epilogue.
        let block = Block(name: "layer1.0",
                          residual: [conv("layer1.0.conv1", 64, 128, k: 1, padding: .valid), bn("layer1.0.bn1", 128), .relu,
                                     conv("layer1.0.conv2", 128, 64, k: 3, padding: .symmetric(1), groups: 32, bias: true), bn("layer1.0.bn2", 64)],
                          post: [.relu])
        let model = randomModel(spec(channels: 64, stem: [], stages: [Stage(blocks: [block])]), seed: 4400)
        let plan = try ForwardPlan(model, threads: threads, parallelism: .own, tuning: tuning(direct: true))
        #expect(plan.blocks[0].fusesAddition, "the addition should be fused into the grouped convolution")
        try expectAgrees(model, SeededRandom(4401).tensorCopy([batch, 64, 13, 11]), threads: threads, "batch \(batch)")
    }

    @Test("the direct kernel and the im2col path agree on ResNeXt-shaped layers at the widths ResNeXt-50 uses",
          arguments: [(4, 1), (8, 2), (16, 1), (32, 2)])
    func resnextWidths(perGroup: Int, stride: Int) throws {
        let c = 32 * perGroup
        let model = randomModel(spec(channels: c, stem: [conv("c", c, c, k: 3, s: stride, padding: .symmetric(1), groups: 32), bn("b", c), .relu]),
                                seed: UInt64(4500 + perGroup))
        let x = SeededRandom(UInt64(4600 + perGroup)).tensorCopy([2, c, 9, 10])
        let direct = try ForwardPlan(model, threads: 2, parallelism: .own, tuning: tuning(direct: true)).run(x)
        let im2col = try ForwardPlan(model, threads: 2, parallelism: .own, tuning: tuning(direct: false)).run(x)
        try expectClose(direct, im2col, relative: 1e-5, "direct against im2col")
        try expectClose(direct, try forward(model, input: x, engine: .reference), relative: 1e-5, "direct against the reference")
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
        for threads in [1, 2] { try expectAgrees(mapped.model, goldens.input, threads: threads, "\(file), \(threads) threads") }
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
