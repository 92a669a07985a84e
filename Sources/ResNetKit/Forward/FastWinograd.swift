// Winograd convolution F(m×m, 3×3) for the plan's 3×3, stride-1, undilated, ungrouped convolutions.
//
// Legend as in Plan.swift (NHWC activations), plus:
//   m = output tile side (2 or 4), α = m + 2 = input tile side, t = (i, j) one of α² transform points,
//   q = tile index over (n, th, tw) with TH = ⌈OH/m⌉, TW = ⌈OW/m⌉, T = N·TH·TW tiles.
// Per tile, every channel's α×α input patch d becomes V = Bᵀ d B, every (c, o) kernel g becomes
// U = G g Gᵀ (once, at plan build), and the output tile is Aᵀ (Σ_c V ⊙ U) A. The channel sum at each
// transform point t is one matrix product (tiles × C)·(C × O), so a layer is α² sgemm calls instead of
// one with 9/m²·α²/9 times the multiplications: 2.25× fewer for m = 2, 4× fewer for m = 4.
// The transforms run along the channel axis (contiguous in NHWC), so they vectorise.
//
// Points: m = 2 uses 0, ±1, ∞; m = 4 uses 0, ±1, ±2, ∞ (the matrices of Lavin & Gray, "Fast Algorithms
// for Convolutional Neural Networks", 2015). F(4×4) rounds more: tests bound its error against the
// reference on random layers and whole models.

import CKernels
import COpenBLAS

/// Which implementation runs Winograd's input and output tile transforms (the products are `GemmKernel`'s).
enum WinogradKernel: Int, Sendable, Equatable, KernelChoice {
    /// This file's Swift loops, compiled for baseline x86-64.
    case swift
    /// The C transforms built for AVX2 and FMA (Sources/CKernels/winograd_avx2.c): 8 channels per vector,
    /// each tile slice transformed in registers without the Swift path's patch copy and second pass.
    case avx2
    /// The same C transforms built for AVX-512 (Sources/CKernels/winograd_avx512.c): 16 channels per vector.
    case avx512

    /// The fastest this CPU runs.
    static let best: WinogradKernel = CPUFeatures.avx2FMA ? .avx2 : .swift

    /// Whether this CPU and OS can run it.
    var available: Bool {
        switch self {
        case .swift: true
        case .avx2: CPUFeatures.avx2FMA
        case .avx512: CPUFeatures.avx512
        }
    }
}

/// Transformed 3×3 weights for one convolution: U[t][c][o], t = i·α + j, with the batch norm already folded.
struct WinogradWeights {
    /// Output tile side: 2 or 4.
    let m: Int
    /// (α², C, O); empty when `points` holds them.
    let u: [Float]
    /// Each point's (C, O) packed in panels for the C matrix kernels (then `u` is empty).
    let points: [PackedWeights]?

    var alpha: Int { m + 2 }

    /// G (α×3) of F(m×m, 3×3), row-major.
    static func kernelTransform(m: Int) -> [Double] {
        if m == 2 {
            return [1, 0, 0,
                    0.5, 0.5, 0.5,
                    0.5, -0.5, 0.5,
                    0, 0, 1]
        }
        return [1.0 / 4, 0, 0,
                -1.0 / 6, -1.0 / 6, -1.0 / 6,
                -1.0 / 6, 1.0 / 6, -1.0 / 6,
                1.0 / 24, 1.0 / 12, 1.0 / 6,
                1.0 / 24, -1.0 / 12, 1.0 / 6,
                0, 0, 1]
    }

    /// - weight: (O, C, 3, 3) folded, in double, as `weight(o, c, kh, kw)`.
    /// - width: a panel width writes each point straight into panels of that width (`points`, the layout
    ///   `packed(width:C:O:)` gives, without the (α², C, O) pass in between); 0 keeps `u` for OpenBLAS.
    /// - threads: output channels are transformed on this many threads (the closure is only read).
    init(m: Int, C: Int, O: Int, width nr: Int = 0, threads: Int = 1, weight: (Int, Int, Int, Int) -> Double) {
        precondition(m == 2 || m == 4, "Winograd tile must be 2 or 4")
        self.m = m
        let a = m + 2
        let G = WinogradWeights.kernelTransform(m: m)
        // Point t's (c, o) goes to u[t·size + index(c, o)]: (C, O) row-major, or the panels of NR columns.
        let size = nr > 0 ? (O + nr - 1) / nr * C * nr : C * O
        var u = [Float](repeating: 0, count: a * a * size)
        u.withUnsafeMutableBufferPointer { u in
            // Each output channel writes its own entries; plan builds measured this transform as their
            // largest cost for wide layers, so the channels are spread over the plan's threads.
            parallelChunks(O, threads: threads, grain: max(1, 4096 / max(C, 1))) { channels in
                var g = [Double](repeating: 0, count: 9)
                var gg = [Double](repeating: 0, count: a * 3)          // G·g, (α, 3)
                for o in channels {
                    for c in 0..<C {
                        for kh in 0..<3 { for kw in 0..<3 { g[kh * 3 + kw] = weight(o, c, kh, kw) } }
                        for i in 0..<a {
                            for l in 0..<3 { gg[i * 3 + l] = G[i * 3] * g[l] + G[i * 3 + 1] * g[3 + l] + G[i * 3 + 2] * g[6 + l] }
                        }
                        for i in 0..<a {
                            for j in 0..<a {
                                let v = gg[i * 3] * G[j * 3] + gg[i * 3 + 1] * G[j * 3 + 1] + gg[i * 3 + 2] * G[j * 3 + 2]
                                u[(i * a + j) * size + (nr > 0 ? ((o / nr) * C + c) * nr + o % nr : c * O + o)] = Float(v)
                            }
                        }
                    }
                }
            }
        }
        if nr > 0 {
            self.u = []
            points = (0..<(a * a)).map { t in PackedWeights(panels: Array(u[(t * size)..<((t + 1) * size)]), K: C, O: O, width: nr) }
        } else {
            self.u = u
            points = nil
        }
    }

    private init(m: Int, u: [Float], points: [PackedWeights]?) { (self.m, self.u, self.points) = (m, u, points) }

    /// The same weights with each point's (C, O) packed in panels of `width` instead of kept as they are.
    func packed(width: Int, C: Int, O: Int) -> WinogradWeights {
        precondition(u.count == alpha * alpha * C * O, "Winograd weights are (α², C, O)")
        let points = u.withUnsafeBufferPointer { u in
            (0..<(alpha * alpha)).map { t in
                PackedWeights(UnsafeBufferPointer(rebasing: u[(t * C * O)..<((t + 1) * C * O)]), K: C, O: O, width: width)
            }
        }
        return WinogradWeights(m: m, u: [], points: points)
    }
}

/// One Winograd convolution at one input shape: tiling, scratch layout and the three phases
/// (input transform, α² sgemms, output transform with bias, shortcut and ReLU).
struct WinogradConv {
    let g: WindowGeometry
    let m: Int, alpha: Int
    let TH: Int, TW: Int, T: Int
    /// Tiles per block: each block is transformed, multiplied and transformed back before the next.
    let blockRows: Int
    let threads: Int
    /// What runs the tile transforms: the one asked for if this CPU runs it, else Swift.
    let kernel: WinogradKernel
    /// What multiplies at each transform point: a C kernel reading the weights' panels, or OpenBLAS on `u`.
    let product: GemmKernel

    init(_ g: WindowGeometry, m: Int, threads: Int, blockRows: Int? = nil, kernel: WinogradKernel = .best,
         product: GemmKernel = .blas) {
        self.g = g
        self.m = m
        self.kernel = kernel.resolved
        self.product = product.resolved
        alpha = m + 2
        TH = (g.OH + m - 1) / m
        TW = (g.OW + m - 1) / m
        T = g.N * TH * TW
        self.threads = threads
        // sgemm packs U_t (C·O floats) on every call, so a call must carry many tiles for that copy to be
        // cheap next to its 2·tiles·C·O flops: whole layers up to 1024 tiles (ResNet at 224×224, batch 4),
        // larger ones in equal blocks of at most 768.
        let blocks = T <= 1024 ? 1 : (T + 767) / 768
        self.blockRows = max(1, min(T, blockRows ?? (T + blocks - 1) / blocks))
    }

    private static func round16(_ v: Int) -> Int { (v + 15) / 16 * 16 }

    /// Per-thread floats for one tile's patch, the half-transformed tile and the output tile.
    private var tileScratch: Int {
        let a2 = alpha * alpha
        return Self.round16(a2 * g.C) + Self.round16(a2 * max(g.C, g.O)) + Self.round16(m * m * g.O)
    }

    /// Floats of scratch one run needs: V and M of one block, then each thread's tile scratch.
    var scratchCount: Int {
        Self.round16(alpha * alpha * blockRows * g.C) + Self.round16(alpha * alpha * blockRows * g.O) + threads * tileScratch
    }

    /// - src: (N, H, W, C);  u: (α², C, O);  bias: (O);  shortcut: (N, OH, OW, O) or nil;  dst: (N, OH, OW, O)
    /// Per block, three phases each split over the threads: input transform (by tiles), the α² sgemms
    /// (by transform point, so each thread streams only its share of U) and output transform (by tiles).
    func run(src: UnsafePointer<Float>, weights: WinogradWeights, bias: UnsafePointer<Float>, shortcut: UnsafePointer<Float>?,
             relu: Bool, dst: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        let a2 = alpha * alpha
        let v = scratch, mm = scratch + Self.round16(a2 * blockRows * g.C)
        let perThread = mm + Self.round16(a2 * blockRows * g.O)
        var start = 0
        while start < T {
            let block = start..<min(start + blockRows, T)
            start = block.upperBound
            let rows = block.count
            let job = ckernels_winograd_job(m: m, H: g.H, W: g.W, C: g.C, OH: g.OH, OW: g.OW, O: g.O, PT: g.PT, PL: g.PL,
                                            TH: TH, TW: TW, rows: rows, first_tile: block.lowerBound)
            parallelChunksIndexed(rows, threads: threads, grain: 2) { worker, part in
                if kernel != .swift {
                    let input = kernel == .avx512 ? ckernels_winograd_input_avx512 : ckernels_winograd_input_avx2
                    withUnsafePointer(to: job) { input($0, src, v, part.lowerBound, part.upperBound) }
                    return
                }
                let local = perThread + worker * tileScratch
                for r in part { transformInput(src, tile: block.lowerBound + r, row: r, rows: rows, v: v, local: local) }
            }
            weights.u.withUnsafeBufferPointer { u in
                parallelChunksIndexed(a2, threads: threads, grain: 1) { _, points in
                    for t in points { multiply(point: t, rows: rows, v: v, weights: weights, u: u, m: mm) }
                }
            }
            parallelChunksIndexed(rows, threads: threads, grain: 2) { worker, part in
                if kernel != .swift {
                    let output = kernel == .avx512 ? ckernels_winograd_output_avx512 : ckernels_winograd_output_avx2
                    withUnsafePointer(to: job) { output($0, mm, bias, shortcut, relu ? 1 : 0, dst, part.lowerBound, part.upperBound) }
                    return
                }
                let local = perThread + worker * tileScratch
                for r in part {
                    transformOutput(tile: block.lowerBound + r, row: r, rows: rows, m: mm, bias: bias, shortcut: shortcut,
                                    relu: relu, dst: dst, local: local)
                }
            }
        }
    }

    /// M_t (rows, O) = V_t (rows, C) · U_t (C, O), on the point's packed panels when it has them.
    private func multiply(point t: Int, rows: Int, v: UnsafeMutablePointer<Float>, weights: WinogradWeights,
                          u: UnsafeBufferPointer<Float>, m: UnsafeMutablePointer<Float>) {
        if let points = weights.points {
            points[t].run(kernel: product, a: v + t * rows * g.C, lda: g.C, bias: nil, shortcut: nil, relu: false, c: m + t * rows * g.O, ldc: g.O,
                          rows: 0..<rows, columns: 0..<g.O)
            return
        }
        let u = u.baseAddress!                      // (α², C, O) whenever there are no packed points
        copenblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(rows), blasint(g.O), blasint(g.C),
                     1, v + t * rows * g.C, blasint(g.C), u + t * g.C * g.O, blasint(g.O), 0, m + t * rows * g.O, blasint(g.O))
    }

    /// Gathers tile q's α×α×C input patch (zeros outside the image) and writes Bᵀ d B into V[t][row].
    private func transformInput(_ src: UnsafePointer<Float>, tile q: Int, row: Int, rows: Int, v: UnsafeMutablePointer<Float>,
                                local: UnsafeMutablePointer<Float>) {
        let C = g.C, a = alpha
        let n = q / (TH * TW), th = (q / TW) % TH, tw = q % TW
        let h0 = th * m - g.PT, w0 = tw * m - g.PL
        let d = local, half = local + Self.round16(a * a * C)
        for k in 0..<a {
            let h = h0 + k
            let dRow = d + k * a * C
            if h < 0 || h >= g.H { dRow.update(repeating: 0, count: a * C); continue }
            let image = src + (n * g.H + h) * g.W * C
            if w0 >= 0 && w0 + a <= g.W {
                dRow.update(from: image + w0 * C, count: a * C)
            } else {
                for j in 0..<a {
                    let w = w0 + j
                    if w < 0 || w >= g.W { (dRow + j * C).update(repeating: 0, count: C) } else { (dRow + j * C).update(from: image + w * C, count: C) }
                }
            }
        }
        // Columns: half[i][j] = Σ_k Bᵀ[i][k] d[k][j]; rows: V[i·α + j] = Σ_k half[i][k] Bᵀ[j][k].
        for j in 0..<a { inputTransform1D(d + j * C, stride: a * C, half + j * C, stride: a * C, count: C) }
        let pointStride = rows * C
        for i in 0..<a { inputTransform1D(half + i * a * C, stride: C, v + i * a * pointStride + row * C, stride: pointStride, count: C) }
    }

    /// Aᵀ M A for tile q, then bias, shortcut and ReLU into the output pixels the tile covers.
    private func transformOutput(tile q: Int, row: Int, rows: Int, m mm: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>,
                                 shortcut: UnsafePointer<Float>?, relu: Bool, dst: UnsafeMutablePointer<Float>,
                                 local: UnsafeMutablePointer<Float>) {
        let O = g.O, a = alpha
        let n = q / (TH * TW), th = (q / TW) % TH, tw = q % TW
        let half = local + Self.round16(a * a * g.C)
        let y = half + Self.round16(a * a * max(g.C, O))
        let pointStride = rows * O
        // Columns: half[r][j] = Σ_i Aᵀ[r][i] M[i·α + j] (m×α); rows: y[r][s] = Σ_j half[r][j] Aᵀ[s][j] (m×m).
        for j in 0..<a { outputTransform1D(mm + j * pointStride + row * O, stride: a * pointStride, half + j * O, stride: a * O, count: O) }
        for r in 0..<m { outputTransform1D(half + r * a * O, stride: O, y + r * m * O, stride: O, count: O) }
        for r in 0..<m {
            let oh = th * m + r
            if oh >= g.OH { break }
            for s in 0..<m {
                let ow = tw * m + s
                if ow >= g.OW { break }
                let pixel = ((n * g.OH + oh) * g.OW + ow) * O
                let out = dst + pixel, value = y + (r * m + s) * O
                if let shortcut {
                    let add = shortcut + pixel
                    if relu { for o in 0..<O { let x = value[o] + bias[o] + add[o]; out[o] = x < 0 ? 0 : x } }
                    else { for o in 0..<O { out[o] = value[o] + bias[o] + add[o] } }
                } else {
                    if relu { for o in 0..<O { let x = value[o] + bias[o]; out[o] = x < 0 ? 0 : x } }
                    else { for o in 0..<O { out[o] = value[o] + bias[o] } }
                }
            }
        }
    }

    /// Bᵀ applied along one axis: α inputs at `src + k·stride` to α outputs at `dst + k·dstStride`, per channel.
    @inline(__always)
    private func inputTransform1D(_ src: UnsafePointer<Float>, stride s: Int, _ dst: UnsafeMutablePointer<Float>, stride ds: Int, count: Int) {
        if m == 2 {
            for c in 0..<count {
                let d0 = src[c], d1 = src[s + c], d2 = src[2 * s + c], d3 = src[3 * s + c]
                dst[c] = d0 - d2
                dst[ds + c] = d1 + d2
                dst[2 * ds + c] = d2 - d1
                dst[3 * ds + c] = d1 - d3
            }
        } else {
            for c in 0..<count {
                let d0 = src[c], d1 = src[s + c], d2 = src[2 * s + c], d3 = src[3 * s + c], d4 = src[4 * s + c], d5 = src[5 * s + c]
                let p = d4 - 4 * d2, q = d3 - 4 * d1          // shared by rows 1 and 2
                let r = d4 - d2, t = 2 * (d3 - d1)              // shared by rows 3 and 4
                dst[c] = 4 * d0 - 5 * d2 + d4
                dst[ds + c] = p + q
                dst[2 * ds + c] = p - q
                dst[3 * ds + c] = r + t
                dst[4 * ds + c] = r - t
                dst[5 * ds + c] = 4 * d1 - 5 * d3 + d5
            }
        }
    }

    /// Aᵀ applied along one axis: α inputs to m outputs, per channel.
    @inline(__always)
    private func outputTransform1D(_ src: UnsafePointer<Float>, stride s: Int, _ dst: UnsafeMutablePointer<Float>, stride ds: Int, count: Int) {
        if m == 2 {
            for c in 0..<count {
                let m0 = src[c], m1 = src[s + c], m2 = src[2 * s + c], m3 = src[3 * s + c]
                dst[c] = m0 + m1 + m2
                dst[ds + c] = m1 - m2 - m3
            }
        } else {
            for c in 0..<count {
                let m0 = src[c], m1 = src[s + c], m2 = src[2 * s + c], m3 = src[3 * s + c], m4 = src[4 * s + c], m5 = src[5 * s + c]
                let sum12 = m1 + m2, diff12 = m1 - m2, sum34 = m3 + m4, diff34 = m3 - m4
                dst[c] = m0 + sum12 + sum34
                dst[ds + c] = diff12 + 2 * diff34
                dst[2 * ds + c] = sum12 + 4 * sum34
                dst[3 * ds + c] = diff12 + 8 * diff34 + m5
            }
        }
    }
}
