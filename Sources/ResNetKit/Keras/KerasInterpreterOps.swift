import COpenBLAS
import Foundation

// NHWC numerics for the Keras graph interpreter, in the SOURCE layout Keras uses:
// activations (N, H, W, C), conv kernels HWIO (KH, KW, C/G, F), Dense kernels (in, out).
//
// Dimension legend:
//   N batch, H/W input height/width, C input channels, F output channels (filters),
//   G groups, CG = C/G channels per group, FG = F/G filters per group,
//   KH/KW kernel or pool height/width, SH/SW strides, DH/DW dilation, OH/OW output height/width.
//
// These functions never see the canonical model: they exist so that a second, independently
// written computation can check the converter's mapping. Callers (KerasInterpreter.swift) validate
// every shape and parameter taken from the file before calling; here shapes are preconditions.

/// Explicit spatial padding in pixels.
struct KPad2D: Equatable {
    var top: Int, bottom: Int, left: Int, right: Int
    static let zero = KPad2D(top: 0, bottom: 0, left: 0, right: 0)
}

/// TF `SAME` padding for one spatial axis: output = ceil(in / s), the odd pixel goes after.
/// `effectiveKernel` is (k - 1) * d + 1. Returns (output size, pad before, pad after).
func kTFSamePadding(input: Int, effectiveKernel: Int, stride: Int) -> (out: Int, before: Int, after: Int) {
    let out = (input + stride - 1) / stride
    let total = max((out - 1) * stride + effectiveKernel - input, 0)
    return (out, total / 2, total - total / 2)
}

/// Row-major strides of `shape`.
func kStrides(_ shape: [Int]) -> [Int] {
    var s = [Int](repeating: 1, count: shape.count)
    var i = shape.count - 2
    while i >= 0 { s[i] = s[i + 1] * shape[i + 1]; i -= 1 }
    return s
}

// MARK: - convolution

/// 2-D convolution, cross-correlation as Keras computes it, via im2col and sgemm.
///
/// x (N, H, W, C) · kernel (KH, KW, C/G, F) · bias (F) or nil → (N, OH, OW, F), where
/// OH = (H + top + bottom - ((KH - 1) * DH + 1)) / SH + 1 (the caller checked it is ≥ 1).
func kConv2D(_ x: Tensor, kernel: Tensor, bias: Tensor?, stride: (h: Int, w: Int),
             dilation: (h: Int, w: Int), pad: KPad2D, groups: Int) -> Tensor {
    let (N, H, W, C) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (KH, KW, CG, F) = (kernel.shape[0], kernel.shape[1], kernel.shape[2], kernel.shape[3])
    precondition(CG * groups == C && F % groups == 0)
    let FG = F / groups
    let OH = (H + pad.top + pad.bottom - ((KH - 1) * dilation.h + 1)) / stride.h + 1
    let OW = (W + pad.left + pad.right - ((KW - 1) * dilation.w + 1)) / stride.w + 1
    let M = OH * OW          // rows of the im2col matrix: one per output pixel
    let K = KH * KW * CG     // columns: (kh, kw, ci), the row order of the flattened HWIO kernel
    var out = [Float](repeating: 0, count: N * M * F)
    // A 1x1 stride-1 unpadded ungrouped conv is a plain matmul on the NHWC rows.
    let direct = KH == 1 && KW == 1 && stride == (1, 1) && pad == .zero && groups == 1
    var cols = [Float](repeating: 0, count: direct ? 0 : M * K)
    x.data.withUnsafeBufferPointer { xb in
    kernel.data.withUnsafeBufferPointer { kb in
    out.withUnsafeMutableBufferPointer { ob in
    cols.withUnsafeMutableBufferPointer { cb in
        let xp = xb.baseAddress!, kp = kb.baseAddress!, op = ob.baseAddress!
        if direct {
            kSgemm(M: N * M, N: F, K: C, a: xp, lda: C, b: kp, ldb: F, c: op, ldc: F)
            return
        }
        let cp = cb.baseAddress!
        for n in 0..<N {
            for g in 0..<groups {
                // im2col: cols[(oh * OW + ow) * K + (kh * KW + kw) * CG + ci] = x[n, ih, iw, g * CG + ci]
                for oh in 0..<OH {
                    for ow in 0..<OW {
                        var dst = cp + (oh * OW + ow) * K
                        for kh in 0..<KH {
                            let ih = oh * stride.h - pad.top + kh * dilation.h
                            if ih < 0 || ih >= H {
                                dst.update(repeating: 0, count: KW * CG)
                                dst += KW * CG
                                continue
                            }
                            for kw in 0..<KW {
                                let iw = ow * stride.w - pad.left + kw * dilation.w
                                if iw < 0 || iw >= W {
                                    dst.update(repeating: 0, count: CG)
                                } else {
                                    dst.update(from: xp + ((n * H + ih) * W + iw) * C + g * CG, count: CG)
                                }
                                dst += CG
                            }
                        }
                    }
                }
                // out[n, :, :, g*FG ..< (g+1)*FG] (M, FG) = cols (M, K) · kernel[:, :, :, g*FG ..< (g+1)*FG] (K, FG)
                kSgemm(M: M, N: FG, K: K, a: cp, lda: K, b: kp + g * FG, ldb: F,
                       c: op + n * M * F + g * FG, ldc: F)
            }
        }
    }}}}
    var y = Tensor(shape: [N, OH, OW, F], data: out)
    if let bias { kAddBiasLastAxis(&y, bias) }
    return y
}

/// The same convolution as ``kConv2D`` written as the plain seven-deep loop; tests check the
/// im2col path against it.
func kConv2DDirect(_ x: Tensor, kernel: Tensor, bias: Tensor?, stride: (h: Int, w: Int),
                   dilation: (h: Int, w: Int), pad: KPad2D, groups: Int) -> Tensor {
    let (N, H, W, C) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (KH, KW, CG, F) = (kernel.shape[0], kernel.shape[1], kernel.shape[2], kernel.shape[3])
    let FG = F / groups
    let OH = (H + pad.top + pad.bottom - ((KH - 1) * dilation.h + 1)) / stride.h + 1
    let OW = (W + pad.left + pad.right - ((KW - 1) * dilation.w + 1)) / stride.w + 1
    var out = [Float](repeating: 0, count: N * OH * OW * F)
    for n in 0..<N { for oh in 0..<OH { for ow in 0..<OW { for f in 0..<F {
        let g = f / FG
        var acc: Float = bias?.data[f] ?? 0
        for kh in 0..<KH {
            let ih = oh * stride.h - pad.top + kh * dilation.h
            if ih < 0 || ih >= H { continue }
            for kw in 0..<KW {
                let iw = ow * stride.w - pad.left + kw * dilation.w
                if iw < 0 || iw >= W { continue }
                for ci in 0..<CG {
                    acc += x.data[((n * H + ih) * W + iw) * C + g * CG + ci]
                         * kernel.data[((kh * KW + kw) * CG + ci) * F + f]
                }
            }
        }
        out[((n * OH + oh) * OW + ow) * F + f] = acc
    }}}}
    return Tensor(shape: [N, OH, OW, F], data: out)
}

/// C (M, N) = A (M, K) · B (K, N), row-major with leading dimensions; sizes fit Int32 (checked by callers).
@inline(__always)
func kSgemm(M: Int, N: Int, K: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
            c: UnsafeMutablePointer<Float>, ldc: Int) {
    copenblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(M), Int32(N), Int32(K),
                 1, a, Int32(lda), b, Int32(ldb), 0, c, Int32(ldc))
}

// MARK: - dense

/// Dense on the last axis: x (..., IN) · kernel (IN, OUT) + bias (OUT) → (..., OUT).
func kDense(_ x: Tensor, kernel: Tensor, bias: Tensor?) -> Tensor {
    let IN = kernel.shape[0], OUT = kernel.shape[1]
    let rows = x.count / IN
    var out = [Float](repeating: 0, count: rows * OUT)
    x.data.withUnsafeBufferPointer { xb in
    kernel.data.withUnsafeBufferPointer { kb in
    out.withUnsafeMutableBufferPointer { ob in
        kSgemm(M: rows, N: OUT, K: IN, a: xb.baseAddress!, lda: IN, b: kb.baseAddress!, ldb: OUT,
               c: ob.baseAddress!, ldc: OUT)
    }}}
    var y = Tensor(shape: Array(x.shape.dropLast()) + [OUT], data: out)
    if let bias { kAddBiasLastAxis(&y, bias) }
    return y
}

/// y[..., c] += bias[c].
func kAddBiasLastAxis(_ y: inout Tensor, _ bias: Tensor) {
    let C = bias.count
    bias.data.withUnsafeBufferPointer { bb in
    y.data.withUnsafeMutableBufferPointer { yb in
        var i = 0
        while i < yb.count {
            for c in 0..<C { yb[i + c] += bb[c] }
            i += C
        }
    }}
}

// MARK: - normalization and activations

/// Inference batch normalization on the last axis, as TF computes it:
/// inv = gamma / sqrt(var + eps); y = x * inv + (beta - mean * inv).
/// x (..., C); gamma, beta, mean, variance (C) (gamma 1 / beta 0 when the layer has none).
func kBatchNormLastAxis(_ x: Tensor, gamma: [Float], beta: [Float], mean: [Float], variance: [Float],
                        epsilon: Float) -> Tensor {
    let C = mean.count
    var inv = [Float](repeating: 0, count: C), shift = [Float](repeating: 0, count: C)
    for c in 0..<C {
        inv[c] = gamma[c] / (variance[c] + epsilon).squareRoot()
        shift[c] = beta[c] - mean[c] * inv[c]
    }
    var y = x
    inv.withUnsafeBufferPointer { ib in
    shift.withUnsafeBufferPointer { sb in
    y.data.withUnsafeMutableBufferPointer { yb in
        var i = 0
        while i < yb.count {
            for c in 0..<C { yb[i + c] = yb[i + c] * ib[c] + sb[c] }
            i += C
        }
    }}}
    return y
}

/// max(x, 0) elementwise.
func kReLU(_ x: Tensor) -> Tensor {
    var y = x
    y.data.withUnsafeMutableBufferPointer { b in
        for i in 0..<b.count where !(b[i] > 0) && !b[i].isNaN { b[i] = 0 }
    }
    return y
}

/// Softmax along `axis`: exp(x - max) / sum, the max taken along that axis for stability.
func kSoftmax(_ x: Tensor, axis: Int) -> Tensor {
    let D = x.shape[axis]
    let inner = x.shape[(axis + 1)...].reduce(1, *)
    let outer = x.shape[..<axis].reduce(1, *)
    var y = x
    y.data.withUnsafeMutableBufferPointer { b in
        for o in 0..<outer {
            for i in 0..<inner {
                let base = o * D * inner + i
                var m = -Float.infinity
                for d in 0..<D { m = max(m, b[base + d * inner]) }
                var sum: Float = 0
                for d in 0..<D {
                    let e = Foundation.exp(b[base + d * inner] - m)
                    b[base + d * inner] = e
                    sum += e
                }
                for d in 0..<D { b[base + d * inner] /= sum }
            }
        }
    }
    return y
}

// MARK: - pooling and padding

/// Max pooling. x (N, H, W, C) → (N, OH, OW, C); padded cells never win (TF `SAME`).
/// OH = (H + top + bottom - KH) / SH + 1.
func kMaxPool2D(_ x: Tensor, pool: (h: Int, w: Int), stride: (h: Int, w: Int), pad: KPad2D) -> Tensor {
    kPool2D(x, pool: pool, stride: stride, pad: pad, average: false)
}

/// Average pooling. x (N, H, W, C) → (N, OH, OW, C); the mean is over the cells inside the
/// input only (TF `SAME` excludes padding from the count).
func kAvgPool2D(_ x: Tensor, pool: (h: Int, w: Int), stride: (h: Int, w: Int), pad: KPad2D) -> Tensor {
    kPool2D(x, pool: pool, stride: stride, pad: pad, average: true)
}

private func kPool2D(_ x: Tensor, pool: (h: Int, w: Int), stride: (h: Int, w: Int), pad: KPad2D,
                     average: Bool) -> Tensor {
    let (N, H, W, C) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let OH = (H + pad.top + pad.bottom - pool.h) / stride.h + 1
    let OW = (W + pad.left + pad.right - pool.w) / stride.w + 1
    var out = [Float](repeating: 0, count: N * OH * OW * C)
    var acc = [Float](repeating: 0, count: C)
    x.data.withUnsafeBufferPointer { xb in
    out.withUnsafeMutableBufferPointer { ob in
    acc.withUnsafeMutableBufferPointer { ab in
        for n in 0..<N { for oh in 0..<OH { for ow in 0..<OW {
            // the window clipped to the input: rows h0 ..< h1, columns w0 ..< w1
            let h0 = max(oh * stride.h - pad.top, 0), h1 = min(oh * stride.h - pad.top + pool.h, H)
            let w0 = max(ow * stride.w - pad.left, 0), w1 = min(ow * stride.w - pad.left + pool.w, W)
            for c in 0..<C { ab[c] = average ? 0 : -Float.infinity }
            for ih in h0..<max(h0, h1) {
                for iw in w0..<max(w0, w1) {
                    let src = ((n * H + ih) * W + iw) * C
                    if average {
                        for c in 0..<C { ab[c] += xb[src + c] }
                    } else {
                        for c in 0..<C { ab[c] = max(ab[c], xb[src + c]) }
                    }
                }
            }
            let dst = ((n * OH + oh) * OW + ow) * C
            let count = Float(max(h1 - h0, 0) * max(w1 - w0, 0))
            for c in 0..<C { ob[dst + c] = average ? ab[c] / count : ab[c] }
        }}}
    }}}
    return Tensor(shape: [N, OH, OW, C], data: out)
}

/// Mean over H and W. x (N, H, W, C) → (N, C).
func kGlobalAvgPool2D(_ x: Tensor) -> Tensor {
    let (N, H, W, C) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    var out = [Float](repeating: 0, count: N * C)
    x.data.withUnsafeBufferPointer { xb in
    out.withUnsafeMutableBufferPointer { ob in
        for n in 0..<N {
            for p in 0..<(H * W) {
                let src = (n * H * W + p) * C
                for c in 0..<C { ob[n * C + c] += xb[src + c] }
            }
            for c in 0..<C { ob[n * C + c] /= Float(H * W) }
        }
    }}
    return Tensor(shape: [N, C], data: out)
}

/// Constant padding of every axis: padding[d] = (before, after) cells of value `value`.
/// x (d0, d1, …) → (d0 + b0 + a0, d1 + b1 + a1, …).
func kPad(_ x: Tensor, _ padding: [(before: Int, after: Int)], value: Float) -> Tensor {
    let rank = x.shape.count
    let outShape = (0..<rank).map { x.shape[$0] + padding[$0].before + padding[$0].after }
    var out = [Float](repeating: value, count: outShape.reduce(1, *))
    if x.count == 0 { return Tensor(shape: outShape, data: out) }
    let outStrides = kStrides(outShape)
    // Copy the innermost axis as one run; iterate the outer axes with an odometer.
    let inner = x.shape[rank - 1]
    var index = [Int](repeating: 0, count: rank)
    x.data.withUnsafeBufferPointer { xb in
    out.withUnsafeMutableBufferPointer { ob in
        var src = 0
        while src < xb.count {
            var dst = padding[rank - 1].before
            for d in 0..<(rank - 1) { dst += (index[d] + padding[d].before) * outStrides[d] }
            (ob.baseAddress! + dst).update(from: xb.baseAddress! + src, count: inner)
            src += inner
            var d = rank - 2
            while d >= 0 {
                index[d] += 1
                if index[d] < x.shape[d] { break }
                index[d] = 0
                d -= 1
            }
        }
    }}
    return Tensor(shape: outShape, data: out)
}

// MARK: - elementwise and indexing

/// a + b with NumPy broadcasting (shapes aligned on the right; a size-1 axis stretches).
/// The caller checked the shapes are compatible.
func kAdd(_ a: Tensor, _ b: Tensor) -> Tensor {
    if a.shape == b.shape {
        var y = a
        b.data.withUnsafeBufferPointer { bb in
        y.data.withUnsafeMutableBufferPointer { yb in
            for i in 0..<yb.count { yb[i] += bb[i] }
        }}
        return y
    }
    let rank = max(a.shape.count, b.shape.count)
    let sa = [Int](repeating: 1, count: rank - a.shape.count) + a.shape
    let sb = [Int](repeating: 1, count: rank - b.shape.count) + b.shape
    let outShape = (0..<rank).map { max(sa[$0], sb[$0]) }
    // strides of 0 on broadcast axes
    let stA = zip(kStrides(sa), sa).map { $1 == 1 ? 0 : $0 }
    let stB = zip(kStrides(sb), sb).map { $1 == 1 ? 0 : $0 }
    var out = [Float](repeating: 0, count: outShape.reduce(1, *))
    var index = [Int](repeating: 0, count: rank)
    for o in 0..<out.count {
        var ia = 0, ib = 0
        for d in 0..<rank { ia += index[d] * stA[d]; ib += index[d] * stB[d] }
        out[o] = a.data[ia] + b.data[ib]
        var d = rank - 1
        while d >= 0 {
            index[d] += 1
            if index[d] < outShape[d] { break }
            index[d] = 0
            d -= 1
        }
    }
    return Tensor(shape: outShape, data: out)
}

/// One axis of a strided slice: cells start, start + step, … (`count` of them), or a single
/// index that removes the axis.
struct KSliceAxis: Equatable {
    var start: Int, step: Int, count: Int
    var keepsAxis: Bool
}

/// x[spec] where spec has one entry per axis (already resolved to Python slice semantics).
/// Result shape: the counts of the axes that are kept.
func kStridedSlice(_ x: Tensor, _ spec: [KSliceAxis]) -> Tensor {
    let rank = x.shape.count
    let inStrides = kStrides(x.shape)
    let fullShape = spec.map(\.count)
    let total = fullShape.reduce(1, *)
    var out = [Float](repeating: 0, count: total)
    if total > 0 {
        var index = [Int](repeating: 0, count: rank)
        x.data.withUnsafeBufferPointer { xb in
        out.withUnsafeMutableBufferPointer { ob in
            for o in 0..<total {
                var src = 0
                for d in 0..<rank { src += (spec[d].start + index[d] * spec[d].step) * inStrides[d] }
                ob[o] = xb[src]
                var d = rank - 1
                while d >= 0 {
                    index[d] += 1
                    if index[d] < fullShape[d] { break }
                    index[d] = 0
                    d -= 1
                }
            }
        }}
    }
    let shape = spec.filter(\.keepsAxis).map(\.count)
    return Tensor(shape: shape, data: out)
}
