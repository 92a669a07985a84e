// The body of Winograd's input and output tile transforms (ckernels_winograd.h), included by
// winograd_avx2.c and winograd_avx512.c. Before including, define:
//   WINO_TARGET            the target attribute string, e.g. "avx2,fma"
//   WINO_INPUT, WINO_OUTPUT the names of the exported functions
//   VT, VL                 the vector type and its lanes (channels per vector)
//   MASK_T, MASK_MAKE(n)   a mask with lanes [0, n) on
//   V_ZERO, V_SET1, V_LOAD, V_STORE, V_MLOAD(p, m), V_MSTORE(p, m, v), V_ADD, V_SUB, V_MUL,
//   V_FMADD(a, b, c) = a·b + c, V_FNMADD(a, b, c) = c − a·b, V_MAX0(v) = (0 > v ? 0 : v)
//
// The Swift transforms (FastWinograd.swift) gather each tile's patch into scratch and make two passes
// over it, compiled for baseline x86-64; here each VL-channel slice of a tile is loaded straight from
// the image (or the products), transformed along both axes in registers and stored once.
// Bᵀ and Aᵀ are those of FastWinograd.swift (Lavin & Gray's points 0, ±1, ∞ and 0, ±1, ±2, ∞); the
// multiply-adds are fused here, so results differ from the Swift ones by rounding only.

#include <immintrin.h>
#include "ckernels_winograd.h"

#define KT __attribute__((target(WINO_TARGET)))
#define INLINE static inline __attribute__((always_inline))

/// Bᵀ along one axis: α inputs x[k·xs] to α outputs y[k·ys].
INLINE KT void input_1d(const int M, const VT *x, int xs, VT *y, int ys) {
    if (M == 2) {
        const VT d0 = x[0], d1 = x[xs], d2 = x[2 * xs], d3 = x[3 * xs];
        y[0] = V_SUB(d0, d2);
        y[ys] = V_ADD(d1, d2);
        y[2 * ys] = V_SUB(d2, d1);
        y[3 * ys] = V_SUB(d1, d3);
    } else {
        const VT d0 = x[0], d1 = x[xs], d2 = x[2 * xs], d3 = x[3 * xs], d4 = x[4 * xs], d5 = x[5 * xs];
        const VT four = V_SET1(4), five = V_SET1(5), two = V_SET1(2);
        const VT p = V_FNMADD(four, d2, d4), q = V_FNMADD(four, d1, d3);   // rows 1 and 2
        const VT r = V_SUB(d4, d2), t = V_MUL(two, V_SUB(d3, d1));          // rows 3 and 4
        y[0] = V_FMADD(four, d0, V_FNMADD(five, d2, d4));
        y[ys] = V_ADD(p, q);
        y[2 * ys] = V_SUB(p, q);
        y[3 * ys] = V_ADD(r, t);
        y[4 * ys] = V_SUB(r, t);
        y[5 * ys] = V_FMADD(four, d1, V_FNMADD(five, d3, d5));
    }
}

/// Aᵀ along one axis: α inputs x[k·xs] to m outputs y[k·ys].
INLINE KT void output_1d(const int M, const VT *x, int xs, VT *y, int ys) {
    if (M == 2) {
        const VT m0 = x[0], m1 = x[xs], m2 = x[2 * xs], m3 = x[3 * xs];
        y[0] = V_ADD(V_ADD(m0, m1), m2);
        y[ys] = V_SUB(V_SUB(m1, m2), m3);
    } else {
        const VT m0 = x[0], m1 = x[xs], m2 = x[2 * xs], m3 = x[3 * xs], m4 = x[4 * xs], m5 = x[5 * xs];
        const VT s12 = V_ADD(m1, m2), d12 = V_SUB(m1, m2);
        const VT s34 = V_ADD(m3, m4), d34 = V_SUB(m3, m4);
        y[0] = V_ADD(V_ADD(m0, s12), s34);
        y[ys] = V_FMADD(V_SET1(2), d34, d12);
        y[2 * ys] = V_FMADD(V_SET1(4), s34, s12);
        y[3 * ys] = V_ADD(V_FMADD(V_SET1(8), d34, d12), m5);
    }
}

/// One tile's input transform: `pix[k·α + j]` is the patch pixel's C channels, or NULL in the padding.
INLINE KT void input_tile(const int M, const float *const *pix, ptrdiff_t C, float *out, ptrdiff_t ps) {
    const int A = M + 2;
    for (ptrdiff_t c0 = 0; c0 < C; c0 += VL) {
        const int full = C - c0 >= VL;
        const MASK_T mask = MASK_MAKE(full ? VL : C - c0);
        VT d[36], h[36], y[6];
        for (int k = 0; k < A * A; k++) {
            const float *p = pix[k];
            d[k] = p == NULL ? V_ZERO() : full ? V_LOAD(p + c0) : V_MLOAD(p + c0, mask);
        }
        // Columns: h[i][j] = Σ_k Bᵀ[i][k] d[k][j]; rows: V[i·α + j] = Σ_k h[i][k] Bᵀ[j][k].
        for (int j = 0; j < A; j++) input_1d(M, d + j, A, h + j, A);
        for (int i = 0; i < A; i++) {
            input_1d(M, h + i * A, 1, y, 1);
            for (int j = 0; j < A; j++) {
                float *dst = out + (i * A + j) * ps + c0;
                if (full) V_STORE(dst, y[j]); else V_MSTORE(dst, mask, y[j]);
            }
        }
    }
}

INLINE KT void input_rows(const int M, const ckernels_winograd_job *g, const float *src, float *v,
                          ptrdiff_t row_begin, ptrdiff_t row_end) {
    const int A = M + 2;
    const ptrdiff_t C = g->C, ps = g->rows * C;
    for (ptrdiff_t r = row_begin; r < row_end; r++) {
        const ptrdiff_t q = g->first_tile + r;
        const ptrdiff_t n = q / (g->TH * g->TW), th = (q / g->TW) % g->TH, tw = q % g->TW;
        const ptrdiff_t h0 = th * M - g->PT, w0 = tw * M - g->PL;
        const float *pix[36];
        for (int k = 0; k < A; k++) {
            const ptrdiff_t h = h0 + k;
            for (int j = 0; j < A; j++) {
                const ptrdiff_t w = w0 + j;
                pix[k * A + j] = h < 0 || h >= g->H || w < 0 || w >= g->W ? NULL : src + ((n * g->H + h) * g->W + w) * C;
            }
        }
        input_tile(M, pix, C, v + r * C, ps);
    }
}

void KT WINO_INPUT(const ckernels_winograd_job *job, const float *src, float *v, ptrdiff_t row_begin, ptrdiff_t row_end) {
    if (job->m == 2) input_rows(2, job, src, v, row_begin, row_end);
    else input_rows(4, job, src, v, row_begin, row_end);
}

INLINE KT void output_rows(const int M, const ckernels_winograd_job *g, const float *mm, const float *bias,
                           const float *shortcut, int relu, float *dst, ptrdiff_t row_begin, ptrdiff_t row_end) {
    const int A = M + 2;
    const ptrdiff_t O = g->O, ps = g->rows * O;
    for (ptrdiff_t r = row_begin; r < row_end; r++) {
        const ptrdiff_t q = g->first_tile + r;
        const ptrdiff_t n = q / (g->TH * g->TW), th = (q / g->TW) % g->TH, tw = q % g->TW;
        const ptrdiff_t oh0 = th * M, ow0 = tw * M;
        const int rowsIn = g->OH - oh0 < M ? (int)(g->OH - oh0) : M, colsIn = g->OW - ow0 < M ? (int)(g->OW - ow0) : M;
        const float *in = mm + r * O;
        for (ptrdiff_t o0 = 0; o0 < O; o0 += VL) {
            const int full = O - o0 >= VL;
            const MASK_T mask = MASK_MAKE(full ? VL : O - o0);
            VT x[36], h[24], y[16];
            for (int t = 0; t < A * A; t++) {
                const float *p = in + t * ps + o0;
                x[t] = full ? V_LOAD(p) : V_MLOAD(p, mask);
            }
            // Columns: h[r][j] = Σ_i Aᵀ[r][i] M[i·α + j] (m×α); rows: y[r][s] = Σ_j h[r][j] Aᵀ[s][j] (m×m).
            for (int j = 0; j < A; j++) output_1d(M, x + j, A, h + j, A);
            for (int i = 0; i < M; i++) output_1d(M, h + i * A, 1, y + i * M, 1);
            const VT b = full ? V_LOAD(bias + o0) : V_MLOAD(bias + o0, mask);
            for (int i = 0; i < rowsIn; i++) {
                for (int s = 0; s < colsIn; s++) {
                    const ptrdiff_t pixel = ((n * g->OH + oh0 + i) * g->OW + ow0 + s) * O + o0;
                    VT val = V_ADD(y[i * M + s], b);
                    if (shortcut) val = V_ADD(val, full ? V_LOAD(shortcut + pixel) : V_MLOAD(shortcut + pixel, mask));
                    if (relu) val = V_MAX0(val);   // (0 > v ? 0 : v): NaN and -0 pass through
                    if (full) V_STORE(dst + pixel, val); else V_MSTORE(dst + pixel, mask, val);
                }
            }
        }
    }
}

void KT WINO_OUTPUT(const ckernels_winograd_job *job, const float *mm, const float *bias, const float *shortcut, int relu,
                    float *dst, ptrdiff_t row_begin, ptrdiff_t row_end) {
    if (job->m == 2) output_rows(2, job, mm, bias, shortcut, relu, dst, row_begin, row_end);
    else output_rows(4, job, mm, bias, shortcut, relu, dst, row_begin, row_end);
}
