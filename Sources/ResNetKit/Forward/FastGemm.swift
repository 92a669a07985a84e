// The plan's own matrix product for ungrouped convolutions: 1×1 stride-1 ("pointwise") layers on the
// activation as it lies, the others on their im2col rows, and Winograd's per-point products.
//
// Legend as in Plan.swift: P rows (output pixels), K = KH·KW·C inner, O output channels, NR columns
// per weight panel. The weights are packed once, at plan build, into ⌈O / NR⌉ panels of K × NR
// (zero-padded past O), the layout the C kernel's register tiles read (Sources/CKernels/gemm_impl.h);
// the activation rows are read where they lie, and bias, shortcut and ReLU are applied before the
// single store. OpenBLAS packed both operands on every call (~15% of ResNet-50's forward pass in
// perf) and the plan then made a second, baseline-x86-64 pass over the output for the epilogue.

import CKernels

/// Which implementation multiplies the plan's ungrouped convolutions (and Winograd's transform points).
enum GemmKernel: Int, Sendable, Equatable, KernelChoice {
    /// OpenBLAS sgemm on the plan's (K, O) weights, then the epilogue as a second pass.
    case blas
    /// The C kernel built for AVX2 and FMA: 6×16 register tiles.
    case avx2
    /// The same C kernel built for AVX-512: 12×32 register tiles.
    case avx512
    /// The C kernel built for AVX-512 with 6×64 register tiles. A tile's rows of A are read at a stride of
    /// K floats; when K·4 bytes is a multiple of 4 KiB (K = 1024, 2048) they share one L1 set, and 12 rows
    /// outnumber its 8 ways while 6 do not, so this one does not fall back to L2 there.
    case avx512Wide

    /// The choice when nothing is measured (`PlanTuning.measured` empty, as in tests that pin kernels):
    /// AVX2 wherever the CPU has it. Plans built for use measure every available kernel per layer instead
    /// (KernelChoice.swift), because which build wins depends on the CPU and the layer's shape.
    static let best: GemmKernel = CPUFeatures.avx2FMA ? .avx2 : .blas

    /// Whether this CPU and OS can run it.
    var available: Bool {
        switch self {
        case .blas: true
        case .avx2: CPUFeatures.avx2FMA
        case .avx512, .avx512Wide: CPUFeatures.avx512
        }
    }

    /// The C entry point (nil for OpenBLAS).
    var entry: (@convention(c) (UnsafePointer<ckernels_gemm_job>?, Int, Int, Int, Int) -> Void)! {
        switch self {
        case .blas: nil
        case .avx2: ckernels_gemm_avx2
        case .avx512: ckernels_gemm_avx512
        case .avx512Wide: ckernels_gemm_avx512_wide
        }
    }

    /// Columns per weight panel (0 for OpenBLAS, which takes the weights unpacked).
    var panelWidth: Int {
        switch self {
        case .blas: 0
        case .avx2: Int(CKERNELS_GEMM_NR_AVX2)
        case .avx512: Int(CKERNELS_GEMM_NR_AVX512)
        case .avx512Wide: Int(CKERNELS_GEMM_NR_AVX512_WIDE)
        }
    }
}

/// A convolution's (K, O) weights packed into panels of `width` columns, the layout the C kernels of
/// that panel width read; which of them multiplies is chosen per call.
struct PackedWeights {
    /// Columns per panel (`GemmKernel.panelWidth` of the kernels that read it).
    let width: Int
    let K: Int, O: Int
    /// ⌈O / NR⌉ panels of K rows of NR floats: data[(j·K + k)·NR + c] = W[k][j·NR + c], 0 past O.
    let data: [Float]

    /// - weights: (K, O) row-major.
    init(_ weights: UnsafeBufferPointer<Float>, K: Int, O: Int, width nr: Int) {
        precondition(nr > 0 && weights.count == K * O, "packing needs a panel width and (K, O) weights")
        let panels = (O + nr - 1) / nr
        var data = [Float](repeating: 0, count: panels * K * nr)
        data.withUnsafeMutableBufferPointer { d in
            // W is read front to back, each row scattered over the panels in runs of NR: reading a panel's
            // column run row by row instead strode O floats per row and made plan builds ~40% slower.
            let (src, dst) = (weights.baseAddress!, d.baseAddress!)
            for k in 0..<K {
                let row = src + k * O
                for j in 0..<panels {
                    let out = dst + (j * K + k) * nr, first = j * nr
                    for c in 0..<min(nr, O - first) { out[c] = row[first + c] }
                }
            }
        }
        (self.width, self.K, self.O, self.data) = (nr, K, O, data)
    }

    /// Weights already in the panel layout of `data`.
    init(panels: [Float], K: Int, O: Int, width nr: Int) {
        precondition(nr > 0 && panels.count == (O + nr - 1) / nr * K * nr, "panels must be ⌈O / NR⌉ × K × NR floats")
        (self.width, self.K, self.O, self.data) = (nr, K, O, panels)
    }

    /// The (K, O) row-major weights again: packing only moves floats, so this is exact.
    func unpacked() -> [Float] {
        let nr = width
        var out = [Float](repeating: 0, count: K * O)
        out.withUnsafeMutableBufferPointer { o in
            data.withUnsafeBufferPointer { d in
                for j in 0..<((O + nr - 1) / nr) {
                    let first = j * nr, n = min(nr, O - first)
                    for k in 0..<K {
                        let panel = d.baseAddress! + (j * K + k) * nr
                        for c in 0..<n { o[k * O + first + c] = panel[c] }
                    }
                }
            }
        }
        return out
    }

    /// Rows `rows` and columns `columns` of c = epilogue(a · W): c[r][o] = max0((Σ_k a[r][k]·W[k][o] + bias[o])
    /// + shortcut[r][o]), as `Executor.finish` computes it (max0 only when `relu`, keeping NaN and -0).
    /// `columns.lowerBound` must be a multiple of the panel width. Writes only those rows and columns.
    /// - kernel: a C kernel whose panel width is `width`.
    /// - a: rows of K floats at stride lda;  bias: (O) or nil;  shortcut, c: rows of O floats at stride ldc.
    func run(kernel: GemmKernel, a: UnsafePointer<Float>, lda: Int, bias: UnsafePointer<Float>?, shortcut: UnsafePointer<Float>?,
             relu: Bool, c: UnsafeMutablePointer<Float>, ldc: Int, rows: Range<Int>, columns: Range<Int>) {
        precondition(kernel.panelWidth == width && kernel.available, "the kernel must read this panel width and run here")
        precondition(lda >= K && ldc >= O && columns.lowerBound % width == 0 && columns.lowerBound >= 0
                     && columns.upperBound <= O && rows.lowerBound >= 0, "gemm block outside the product")
        if rows.isEmpty || columns.isEmpty { return }
        data.withUnsafeBufferPointer { packed in
            var job = ckernels_gemm_job(K: K, O: O, a: a, lda: lda, packed: packed.baseAddress!, bias: bias,
                                        shortcut: shortcut, c: c, ldc: ldc, relu: relu ? 1 : 0)
            kernel.entry(&job, rows.lowerBound, rows.upperBound, columns.lowerBound, columns.upperBound)
        }
    }
}
