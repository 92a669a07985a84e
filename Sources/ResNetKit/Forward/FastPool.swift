// The plan's pooling (max, average, global average) on NHWC activations: the Swift loops in Plan.swift,
// or the C kernel built for AVX-512 (Sources/CKernels/pool_avx512.c), 16 channels per vector.
// Both apply the reference's per-channel operations in its order, so they give the same floats.

import CKernels

/// Which implementation runs the plan's pooling steps.
enum PoolKernel: Int, Sendable, Equatable, KernelChoice {
    /// The plan's Swift loops, compiled for baseline x86-64.
    case swift
    /// The C kernel built for AVX-512 F/DQ/BW/VL.
    case avx512

    /// The fastest this CPU runs.
    static let best: PoolKernel = CPUFeatures.avx512 ? .avx512 : .swift

    /// Whether this CPU and OS can run it.
    var available: Bool {
        switch self {
        case .swift: true
        case .avx512: CPUFeatures.avx512
        }
    }
}

extension PoolKernel {
    /// Max or average pooling of output pixels `pixels` through the C kernel; `self.resolved` must not be `.swift`.
    /// - src: (N, H, W, C);  dst: (N, OH, OW, C), written only at `pixels`.
    func pool(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ g: WindowGeometry, max isMax: Bool,
              includePad: Bool, pixels: Range<Int>) {
        precondition(resolved == .avx512 && g.C >= 1 && pixels.lowerBound >= 0 && pixels.upperBound <= g.N * g.OH * g.OW,
                     "pooling block outside the output")
        var geometry = ckernels_pool_geometry(N: g.N, H: g.H, W: g.W, C: g.C, OH: g.OH, OW: g.OW, KH: g.KH, KW: g.KW,
                                              SH: g.SH, SW: g.SW, PT: g.PT, PL: g.PL)
        if isMax {
            ckernels_max_pool_avx512(&geometry, src, dst, pixels.lowerBound, pixels.upperBound)
        } else {
            ckernels_avg_pool_avx512(&geometry, src, dst, includePad ? 1 : 0, pixels.lowerBound, pixels.upperBound)
        }
    }

    /// Global average pooling through the C kernel; `self.resolved` must not be `.swift`.
    /// - src: (N, HW, C);  dst: (N, C).
    func globalAverage(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, N: Int, HW: Int, C: Int) {
        precondition(resolved == .avx512 && N >= 1 && HW >= 1 && C >= 1, "global pooling needs a non-empty activation")
        ckernels_global_avg_pool_avx512(src, dst, N, HW, C)
    }
}
