import Foundation
import Testing
@testable import ResNetKit

/// The plan's pooling kernels (Swift loops, and the C AVX-512 one where the CPU has it) against the
/// reference definition. Both apply the reference's operations in its order, so the outputs must be the
/// same floats, NaN, infinities and signed zeros included.
@Suite("Pooling kernels")
struct PoolKernelTests {
    /// The pooling kernels this CPU runs.
    static let kernels = PoolKernel.allCases.filter(\.available)

    /// Same floats: equal bit patterns, or both NaN (a NaN's payload is not compared).
    func expectIdentical(_ a: Tensor, _ b: Tensor, _ comment: String) {
        #expect(a.shape == b.shape, "\(comment): shape \(a.shape) against \(b.shape)")
        guard a.shape == b.shape else { return }
        let mismatch = a.data.indices.first { i in a.data[i].isNaN ? !b.data[i].isNaN : a.data[i].bitPattern != b.data[i].bitPattern }
        #expect(mismatch == nil, "\(comment): first difference at \(mismatch ?? 0): \(mismatch.map { a.data[$0] } ?? 0) against \(mismatch.map { b.data[$0] } ?? 0)")
    }

    @Test("the kernel asked for resolves to one this CPU runs")
    func resolution() {
        for kernel in PoolKernel.allCases {
            #expect(kernel.resolved.available)
            if kernel.available { #expect(kernel.resolved == kernel) }
        }
        #expect(PoolKernel.best.available)
    }

    @Test("max, average (with and without padded cells counted) and global average pooling give the reference's floats, NaN, ±inf and -0 included",
          arguments: kernels, 0..<48)
    func randomPools(kernel: PoolKernel, seed: Int) throws {
        var rng = SeededRandom(UInt64(5100 + seed))
        let k = rng.int(1...4), s = rng.int(1...3)
        // Channel counts below, at and past a 16-lane vector, with remainders.
        let c = rng.pick([1, 3, 16, 17, 40, rng.int(1...70)])
        let (h, w) = (rng.int(k...13), rng.int(k...13))
        var paddings: [Padding] = [.valid, .same]
        if k >= 2 { paddings.append(.symmetric(k / 2)) }
        let padding = rng.pick(paddings)
        let op: Op
        switch seed % 3 {
        case 0: op = .maxPool(PoolOp(kernel: [k, k], stride: [s, s], padding: padding))
        case 1: op = .avgPool(PoolOp(kernel: [k, k], stride: [s, s], padding: padding, countIncludePad: rng.int(0...1) == 1))
        default: op = .globalAvgPool
        }
        let n = rng.int(1...3)
        var data = (0..<(n * c * h * w)).map { _ in rng.float() * 4 }
        // A few special values, and a run of equal maxima of both signs of zero.
        for _ in 0..<max(1, data.count / 16) {
            data[rng.int(0...(data.count - 1))] = rng.pick([Float.nan, .infinity, -.infinity, -0.0, 0.0])
        }
        let x = Tensor(shape: [n, c, h, w], data: data)
        let model = ResNetModel(spec: spec(channels: c, stem: [op]), tensors: [:])
        var tuning = PlanTuning()
        tuning.poolKernel = kernel
        let threads = 1 + seed % 2
        let plan = try ForwardPlan(model, threads: threads, parallelism: .own, tuning: tuning)
        let expected = try forward(model, input: x, engine: .reference)
        expectIdentical(try plan.run(x), expected, "seed \(seed) \(kernel) \(op) on \(x.shape), \(threads) threads")
    }
}
