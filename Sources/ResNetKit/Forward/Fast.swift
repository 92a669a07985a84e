// Fast convolution and dense layers: im2col + OpenBLAS sgemm. Same semantics and same legend as
// Reference.swift (whose functions define the results); tests hold the two together.
// Everything else (BN, pools, padding ops) is cheap next to the convolutions and shares the
// reference functions.

import COpenBLAS

/// Unfolds one group of one image into a matrix so that a convolution becomes one matrix product.
/// - image: (C, H, W) of one batch item;  columns: (Cg·KH·KW, OH·OW), row (i·KH + kh)·KW + kw
///   holds, for every output position, the input cell that kernel tap multiplies (0 in the padding).
private func im2col(image: UnsafePointer<Float>, group: Int, _ g: WindowGeometry, columns: UnsafeMutablePointer<Float>) {
    let Cg = g.C / g.G
    let P = g.OH * g.OW
    for i in 0..<Cg {
        let plane = image + (group * Cg + i) * g.H * g.W
        for kh in 0..<g.KH {
            for kw in 0..<g.KW {
                let row = columns + ((i * g.KH + kh) * g.KW + kw) * P
                for oh in 0..<g.OH {
                    let h = oh * g.SH - g.PT + kh * g.DH
                    let dst = row + oh * g.OW
                    if h < 0 || h >= g.H {
                        dst.update(repeating: 0, count: g.OW)
                        continue
                    }
                    let src = plane + h * g.W
                    for ow in 0..<g.OW {
                        let w = ow * g.SW - g.PL + kw * g.DW
                        dst[ow] = (w >= 0 && w < g.W) ? src[w] : 0
                    }
                }
            }
        }
    }
}

/// Converts a matrix dimension for BLAS, whose sizes are 32-bit.
private func blasInt(_ v: Int, _ what: String, place: String) throws -> blasint {
    guard let b = blasint(exactly: v) else {
        throw ResNetError.unsupported(file: "model", place: place, reason: "\(what) \(v) exceeds the BLAS size limit \(blasint.max)")
    }
    return b
}

/// Convolution as, per image and group, weight (Og, Cg·KH·KW) × columns (Cg·KH·KW, OH·OW).
/// A 1×1, stride-1, unpadded convolution needs no unfolding: the image already is the column matrix.
/// - input: (N, C, H, W);  weight: (O, Cg, KH, KW);  bias: (O) or nil
/// - returns: (N, O, OH, OW)
func conv2dForwardFast(input: [Float], weight: [Float], bias: [Float]?, _ g: WindowGeometry, place: String) throws -> [Float] {
    try requireOpenBLAS()
    let Cg = g.C / g.G, Og = g.O / g.G
    let P = g.OH * g.OW
    let K = Cg * g.KH * g.KW
    let (m, n, k) = (try blasInt(Og, "output channels per group", place: place),
                     try blasInt(P, "output positions", place: place),
                     try blasInt(K, "kernel size", place: place))
    let pointwise = g.KH == 1 && g.KW == 1 && g.SH == 1 && g.SW == 1 && g.PT == 0 && g.PB == 0 && g.PL == 0 && g.PR == 0

    // Start from the bias (or zero) and let sgemm accumulate onto it (beta = 1).
    var out = [Float](repeating: 0, count: g.N * g.O * P)
    if let bias {
        for row in 0..<(g.N * g.O) {
            let v = bias[row % g.O]
            for p in 0..<P { out[row * P + p] = v }
        }
    }
    var columns = [Float](repeating: 0, count: pointwise ? 0 : K * P)

    input.withUnsafeBufferPointer { x in
        weight.withUnsafeBufferPointer { w in
            out.withUnsafeMutableBufferPointer { y in
                columns.withUnsafeMutableBufferPointer { col in
                    for item in 0..<g.N {
                        let image = x.baseAddress! + item * g.C * g.H * g.W
                        for group in 0..<g.G {
                            let b: UnsafePointer<Float>
                            if pointwise {
                                b = image + group * Cg * g.H * g.W
                            } else {
                                im2col(image: image, group: group, g, columns: col.baseAddress!)
                                b = UnsafePointer(col.baseAddress!)
                            }
                            let a = w.baseAddress! + group * Og * K
                            let c = y.baseAddress! + (item * g.O + group * Og) * P
                            copenblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k,
                                         1, a, k, b, n, 1, c, n)
                        }
                    }
                }
            }
        }
    }
    return out
}

/// Dense layer as input (N, F) × weightᵀ (F, K).
/// - input: (N, F);  weight: (K, F);  bias: (K) or nil;  returns: (N, K)
func denseForwardFast(input: [Float], weight: [Float], bias: [Float]?, N: Int, F: Int, K: Int, place: String) throws -> [Float] {
    try requireOpenBLAS()
    let (m, n, k) = (try blasInt(N, "batch", place: place), try blasInt(K, "outputs", place: place),
                     try blasInt(F, "features", place: place))
    var out = [Float](repeating: 0, count: N * K)
    if let bias {
        for row in 0..<N { for j in 0..<K { out[row * K + j] = bias[j] } }
    }
    input.withUnsafeBufferPointer { x in
        weight.withUnsafeBufferPointer { w in
            out.withUnsafeMutableBufferPointer { y in
                copenblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k,
                             1, x.baseAddress!, k, w.baseAddress!, k, 1, y.baseAddress!, n)
            }
        }
    }
    return out
}
