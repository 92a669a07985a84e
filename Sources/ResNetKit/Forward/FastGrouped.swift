// Direct NHWC convolution for the plan's grouped convolutions (ResNeXt: 32 groups of 4–32 channels).
//
// Legend as in Plan.swift, plus: r = (n, oh) one output row, og0 = first of the output channels one
// vector covers, V = lanes per vector (8 or 4). Weights are the plan's usual per-group layout
// (G, KH·KW·Cg, Og), which is already what this loop reads: for tap (kh, kw) and input channel i, the
// group's Og outputs are one contiguous run.
//
// Why not im2col: it ran one sgemm per group and row tile with n = Og = 4..32 and k = 9·Cg = 36..288;
// OpenBLAS packs both operands on every call and its kernels are built for wide n, so ResNeXt-50's
// grouped layers took more time than its ungrouped ones at a tenth of the flops. Here every output
// vector stays in registers over all KH·KW·Cg terms, four output pixels (eight for Og = 4) share each weight load, and
// bias, shortcut and ReLU are applied before the single store.
//
// Work is split over (band of output rows, group) units, band-major: a band's input rows stay in cache
// while every group reads its channels from them (group-major, each group streamed the whole image
// again, and ResNeXt-50 at batch 8 ran slower than with im2col). With a single band (few rows) the
// threads split the groups instead.
//
// On CPUs with AVX2 and FMA each work unit runs the C twin of `row` (Sources/CKernels/grouped_conv_impl.h):
// this Swift code is compiled for baseline x86-64, where a SIMD8 is two SSE registers and there is no
// fused multiply-add. The Swift code stays as the fallback and is tested on its own.

import CKernels

/// Which implementation runs the direct grouped kernel's work units.
enum GroupedKernel: Int, Sendable, Equatable, KernelChoice {
    /// This file's SIMD code, for baseline x86-64.
    case swift
    /// The C kernel built for AVX2 and FMA (16 vector registers).
    case avx2
    /// The same C kernel built for AVX-512VL (32 vector registers, larger tiles).
    case avx512

    /// The fastest this CPU runs.
    static let best: GroupedKernel = CPUFeatures.avx512 ? .avx512 : CPUFeatures.avx2FMA ? .avx2 : .swift

    /// Whether this CPU and OS can run it.
    var available: Bool {
        switch self {
        case .swift: true
        case .avx2: CPUFeatures.avx2FMA
        case .avx512: CPUFeatures.avx512
        }
    }
}

/// One grouped convolution at one input shape.
struct GroupedConv {
    let g: WindowGeometry
    let threads: Int
    /// What runs the work units (see `kernel(_:for:)`).
    let kernel: GroupedKernel
    /// Output pixels per work unit before the rows are cut into bands.
    static let bandPixels = 256

    init(_ g: WindowGeometry, threads: Int, kernel: GroupedKernel = .best) {
        self.g = g
        self.kernel = Self.kernel(kernel, for: g)
        // A few µs of wake-up per parallel region: not worth it for tiny layers.
        let work = g.N * g.OH * g.OW * g.O * g.KH * g.KW * (g.C / g.G)
        self.threads = work >= 1 << 17 ? threads : 1
    }

    /// The kernel that runs when `asked` is: itself if this CPU runs it and the C kernels take the
    /// geometry, else the best one below it.
    static func kernel(_ asked: GroupedKernel, for g: WindowGeometry) -> GroupedKernel {
        guard g.KH * g.KW <= Int(CKERNELS_GROUPED_MAX_TAPS) else { return .swift }
        return asked.resolved
    }

    /// - src: (N, H, W, C);  weights: (G, KH·KW·Cg, Og);  bias: (O);  shortcut: (N, OH, OW, O) or nil;
    ///   dst: (N, OH, OW, O)
    func run(src: UnsafePointer<Float>, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>,
             shortcut: UnsafePointer<Float>?, relu: Bool, dst: UnsafeMutablePointer<Float>) {
        let rows = g.N * g.OH
        let bandRows = max(1, min(rows, Self.bandPixels / max(g.OW, 1)))
        let bands = (rows + bandRows - 1) / bandRows
        parallelChunks(g.G * bands, threads: threads, grain: 1) { units in
            for unit in units {
                let band = unit / g.G, group = unit % g.G
                self.unit(rows: (band * bandRows)..<min(rows, (band + 1) * bandRows), group: group,
                          src: src, weights: weights, bias: bias, shortcut: shortcut, relu: relu, dst: dst)
            }
        }
    }

    /// One work unit: output rows `rows` (r = n·OH + oh) of one group. Writes the group's channels of
    /// those rows and nothing else, so units run concurrently on one dst. Arguments as in `run`.
    func unit(rows: Range<Int>, group: Int, src: UnsafePointer<Float>, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>,
              shortcut: UnsafePointer<Float>?, relu: Bool, dst: UnsafeMutablePointer<Float>) {
        if kernel == .swift {
            for r in rows { row(r, group: group, src: src, weights: weights, bias: bias, shortcut: shortcut, relu: relu, dst: dst) }
            return
        }
        // The plan resolved and checked this geometry (the preconditions in ckernels_grouped.h; the
        // tap count in `kernel(_:for:)`) and sized src, weights, bias, shortcut and dst from it.
        var cg = ckernels_grouped_geometry(N: g.N, C: g.C, H: g.H, W: g.W, O: g.O, G: g.G, KH: g.KH, KW: g.KW,
                                           SH: g.SH, SW: g.SW, DH: g.DH, DW: g.DW, PT: g.PT, PL: g.PL, OH: g.OH, OW: g.OW)
        let entry = kernel == .avx512 ? ckernels_grouped_conv_avx512 : ckernels_grouped_conv_avx2
        entry(&cg, rows.lowerBound, rows.upperBound, group, src, weights, bias, shortcut, relu ? 1 : 0, dst)
    }

    /// One output row of one group: blocks of four horizontally interior pixels, the rest one by one.
    @inline(__always)
    private func row(_ r: Int, group: Int, src: UnsafePointer<Float>, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                     shortcut: UnsafePointer<Float>?, relu: Bool, dst: UnsafeMutablePointer<Float>) {
        let Og = g.O / g.G
        // Output columns whose every tap lies inside the row: ow·SW - PL >= 0 and ow·SW - PL + (KW-1)·DW <= W - 1.
        let first = (g.PL + g.SW - 1) / g.SW
        let reach = g.W - 1 - (g.KW - 1) * g.DW + g.PL
        let last = reach < 0 ? -1 : min(g.OW - 1, reach / g.SW)
        var og0 = 0
        while og0 + 8 <= Og { span(SIMD8<Float>.self, r, group, og0, first, last, src, weights, bias, shortcut, relu, dst); og0 += 8 }
        while og0 + 4 <= Og { span(SIMD4<Float>.self, r, group, og0, first, last, src, weights, bias, shortcut, relu, dst); og0 += 4 }
        while og0 < Og {                                        // Og not a multiple of 4: the last lanes one at a time
            for ow in 0..<g.OW { scalar(r, ow, group, og0, src, weights, bias, shortcut, relu, dst) }
            og0 += 1
        }
    }

    @inline(__always)
    private func span<V: SIMD>(_: V.Type, _ r: Int, _ group: Int, _ og0: Int, _ first: Int, _ last: Int,
                               _ src: UnsafePointer<Float>, _ weights: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
                               _ shortcut: UnsafePointer<Float>?, _ relu: Bool, _ dst: UnsafeMutablePointer<Float>) where V.Scalar == Float {
        var ow = 0
        while ow < g.OW {
            if V.scalarCount == 4, ow >= first && ow + 7 <= last {
                block8(r, ow, group, og0, src, weights, bias, shortcut, relu, dst)
                ow += 8
            } else if ow >= first && ow + 3 <= last {
                block4(V.self, r, ow, group, og0, src, weights, bias, shortcut, relu, dst)
                ow += 4
            } else {
                single(V.self, r, ow, group, og0, src, weights, bias, shortcut, relu, dst)
                ow += 1
            }
        }
    }

    /// Four adjacent output pixels of row r, all of whose taps are inside the row (rows may still be padding).
    @inline(__always)
    private func block4<V: SIMD>(_: V.Type, _ r: Int, _ ow: Int, _ group: Int, _ og0: Int,
                                 _ src: UnsafePointer<Float>, _ weights: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
                                 _ shortcut: UnsafePointer<Float>?, _ relu: Bool, _ dst: UnsafeMutablePointer<Float>) where V.Scalar == Float {
        let (C, Cg, Og) = (g.C, g.C / g.G, g.O / g.G)
        let n = r / g.OH, oh = r % g.OH
        let step = g.SW * C                                     // from one output pixel's input to the next's
        let wGroup = weights + group * g.KH * g.KW * Cg * Og + og0
        var a0 = V(), a1 = V(), a2 = V(), a3 = V()
        for kh in 0..<g.KH {
            let h = oh * g.SH - g.PT + kh * g.DH
            if h < 0 || h >= g.H { continue }
            let line = src + ((n * g.H + h) * g.W + ow * g.SW - g.PL) * C + group * Cg
            for kw in 0..<g.KW {
                let x = line + kw * g.DW * C
                let w = wGroup + (kh * g.KW + kw) * Cg * Og
                for i in 0..<Cg {
                    let wv = load(V.self, w + i * Og)
                    a0 += wv * V(repeating: x[i])
                    a1 += wv * V(repeating: x[step + i])
                    a2 += wv * V(repeating: x[2 * step + i])
                    a3 += wv * V(repeating: x[3 * step + i])
                }
            }
        }
        let pixel = (r * g.OW + ow) * g.O + group * Og + og0
        let b = load(V.self, bias + group * Og + og0)
        store(a0, b, pixel, shortcut, relu, dst)
        store(a1, b, pixel + g.O, shortcut, relu, dst)
        store(a2, b, pixel + 2 * g.O, shortcut, relu, dst)
        store(a3, b, pixel + 3 * g.O, shortcut, relu, dst)
    }

    /// `block4` for eight pixels of four-lane vectors (Og = 4): one weight load per eight broadcasts
    /// instead of four, with eight accumulators still in registers.
    @inline(__always)
    private func block8(_ r: Int, _ ow: Int, _ group: Int, _ og0: Int,
                        _ src: UnsafePointer<Float>, _ weights: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
                        _ shortcut: UnsafePointer<Float>?, _ relu: Bool, _ dst: UnsafeMutablePointer<Float>) {
        typealias V = SIMD4<Float>
        let (C, Cg, Og) = (g.C, g.C / g.G, g.O / g.G)
        let n = r / g.OH, oh = r % g.OH
        let step = g.SW * C
        let wGroup = weights + group * g.KH * g.KW * Cg * Og + og0
        var a0 = V(), a1 = V(), a2 = V(), a3 = V(), a4 = V(), a5 = V(), a6 = V(), a7 = V()
        for kh in 0..<g.KH {
            let h = oh * g.SH - g.PT + kh * g.DH
            if h < 0 || h >= g.H { continue }
            let line = src + ((n * g.H + h) * g.W + ow * g.SW - g.PL) * C + group * Cg
            for kw in 0..<g.KW {
                let x = line + kw * g.DW * C
                let w = wGroup + (kh * g.KW + kw) * Cg * Og
                for i in 0..<Cg {
                    let wv = load(V.self, w + i * Og)
                    let p = x + i
                    a0 += wv * V(repeating: p[0])
                    a1 += wv * V(repeating: p[step])
                    a2 += wv * V(repeating: p[2 * step])
                    a3 += wv * V(repeating: p[3 * step])
                    a4 += wv * V(repeating: p[4 * step])
                    a5 += wv * V(repeating: p[5 * step])
                    a6 += wv * V(repeating: p[6 * step])
                    a7 += wv * V(repeating: p[7 * step])
                }
            }
        }
        let pixel = (r * g.OW + ow) * g.O + group * Og + og0
        let b = load(V.self, bias + group * Og + og0)
        store(a0, b, pixel, shortcut, relu, dst)
        store(a1, b, pixel + g.O, shortcut, relu, dst)
        store(a2, b, pixel + 2 * g.O, shortcut, relu, dst)
        store(a3, b, pixel + 3 * g.O, shortcut, relu, dst)
        store(a4, b, pixel + 4 * g.O, shortcut, relu, dst)
        store(a5, b, pixel + 5 * g.O, shortcut, relu, dst)
        store(a6, b, pixel + 6 * g.O, shortcut, relu, dst)
        store(a7, b, pixel + 7 * g.O, shortcut, relu, dst)
    }

    /// One output pixel, checking every tap against the image (borders, and rows too short for a block).
    @inline(__always)
    private func single<V: SIMD>(_: V.Type, _ r: Int, _ ow: Int, _ group: Int, _ og0: Int,
                                 _ src: UnsafePointer<Float>, _ weights: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
                                 _ shortcut: UnsafePointer<Float>?, _ relu: Bool, _ dst: UnsafeMutablePointer<Float>) where V.Scalar == Float {
        let (C, Cg, Og) = (g.C, g.C / g.G, g.O / g.G)
        let n = r / g.OH, oh = r % g.OH
        let wGroup = weights + group * g.KH * g.KW * Cg * Og + og0
        var a = V()
        for kh in 0..<g.KH {
            let h = oh * g.SH - g.PT + kh * g.DH
            if h < 0 || h >= g.H { continue }
            for kw in 0..<g.KW {
                let w = ow * g.SW - g.PL + kw * g.DW
                if w < 0 || w >= g.W { continue }
                let x = src + ((n * g.H + h) * g.W + w) * C + group * Cg
                let wt = wGroup + (kh * g.KW + kw) * Cg * Og
                for i in 0..<Cg { a += load(V.self, wt + i * Og) * V(repeating: x[i]) }
            }
        }
        store(a, load(V.self, bias + group * Og + og0), (r * g.OW + ow) * g.O + group * Og + og0, shortcut, relu, dst)
    }

    /// `single` for one output channel.
    private func scalar(_ r: Int, _ ow: Int, _ group: Int, _ og: Int,
                        _ src: UnsafePointer<Float>, _ weights: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
                        _ shortcut: UnsafePointer<Float>?, _ relu: Bool, _ dst: UnsafeMutablePointer<Float>) {
        let (C, Cg, Og) = (g.C, g.C / g.G, g.O / g.G)
        let n = r / g.OH, oh = r % g.OH
        let wGroup = weights + group * g.KH * g.KW * Cg * Og + og
        var a: Float = 0
        for kh in 0..<g.KH {
            let h = oh * g.SH - g.PT + kh * g.DH
            if h < 0 || h >= g.H { continue }
            for kw in 0..<g.KW {
                let w = ow * g.SW - g.PL + kw * g.DW
                if w < 0 || w >= g.W { continue }
                let x = src + ((n * g.H + h) * g.W + w) * C + group * Cg
                let wt = wGroup + (kh * g.KW + kw) * Cg * Og
                for i in 0..<Cg { a += wt[i * Og] * x[i] }
            }
        }
        let at = (r * g.OW + ow) * g.O + group * Og + og
        var v = a + bias[group * Og + og]
        if let shortcut { v += shortcut[at] }
        dst[at] = relu && v < 0 ? 0 : v
    }

    /// The epilogue in Executor.finish's order: (sum + bias) + shortcut, then ReLU (NaN passes through).
    /// The sums are stored first and finished lane by lane: the generic SIMD mask operations compile to a
    /// loop over lanes here (baseline x86-64), while this fixed-length scalar loop vectorises.
    @inline(__always)
    private func store<V: SIMD>(_ sum: V, _ b: V, _ at: Int, _ shortcut: UnsafePointer<Float>?, _ relu: Bool,
                                _ dst: UnsafeMutablePointer<Float>) where V.Scalar == Float {
        let out = dst + at
        UnsafeMutableRawPointer(out).storeBytes(of: sum + b, as: V.self)
        if let shortcut {
            let s = shortcut + at
            if relu { for j in 0..<V.scalarCount { let v = out[j] + s[j]; out[j] = v < 0 ? 0 : v } }
            else { for j in 0..<V.scalarCount { out[j] += s[j] } }
        } else if relu {
            for j in 0..<V.scalarCount { let v = out[j]; out[j] = v < 0 ? 0 : v }
        }
    }

    @inline(__always)
    private func load<V: SIMD>(_: V.Type, _ p: UnsafePointer<Float>) -> V where V.Scalar == Float {
        UnsafeRawPointer(p).loadUnaligned(as: V.self)
    }
}
