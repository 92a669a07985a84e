// Winograd's input and output tile transforms (ckernels_winograd.h) for AVX2 and FMA.
// The Swift transforms (FastWinograd.swift) gather each tile's patch into scratch and make two passes
// over it, compiled for baseline x86-64; here each 8-channel slice of a tile is loaded straight from
// the image (or the products), transformed along both axes in registers and stored once.
// Bᵀ and Aᵀ are those of FastWinograd.swift (Lavin & Gray's points 0, ±1, ∞ and 0, ±1, ±2, ∞); the
// multiply-adds are fused here, so results differ from the Swift ones by rounding only.
#if defined(__x86_64__)
#include <immintrin.h>
#include "ckernels_winograd.h"

#define KT __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

/// Lanes [0, n) on (n <= 8).
INLINE KT __m256i lanes(ptrdiff_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/// Bᵀ along one axis: α inputs x[k·xs] to α outputs y[k·ys].
INLINE KT void input_1d(const int M, const __m256 *x, int xs, __m256 *y, int ys) {
    if (M == 2) {
        const __m256 d0 = x[0], d1 = x[xs], d2 = x[2 * xs], d3 = x[3 * xs];
        y[0] = _mm256_sub_ps(d0, d2);
        y[ys] = _mm256_add_ps(d1, d2);
        y[2 * ys] = _mm256_sub_ps(d2, d1);
        y[3 * ys] = _mm256_sub_ps(d1, d3);
    } else {
        const __m256 d0 = x[0], d1 = x[xs], d2 = x[2 * xs], d3 = x[3 * xs], d4 = x[4 * xs], d5 = x[5 * xs];
        const __m256 four = _mm256_set1_ps(4), five = _mm256_set1_ps(5), two = _mm256_set1_ps(2);
        const __m256 p = _mm256_fnmadd_ps(four, d2, d4), q = _mm256_fnmadd_ps(four, d1, d3);   // rows 1 and 2
        const __m256 r = _mm256_sub_ps(d4, d2), t = _mm256_mul_ps(two, _mm256_sub_ps(d3, d1)); // rows 3 and 4
        y[0] = _mm256_fmadd_ps(four, d0, _mm256_fnmadd_ps(five, d2, d4));
        y[ys] = _mm256_add_ps(p, q);
        y[2 * ys] = _mm256_sub_ps(p, q);
        y[3 * ys] = _mm256_add_ps(r, t);
        y[4 * ys] = _mm256_sub_ps(r, t);
        y[5 * ys] = _mm256_fmadd_ps(four, d1, _mm256_fnmadd_ps(five, d3, d5));
    }
}

/// Aᵀ along one axis: α inputs x[k·xs] to m outputs y[k·ys].
INLINE KT void output_1d(const int M, const __m256 *x, int xs, __m256 *y, int ys) {
    if (M == 2) {
        const __m256 m0 = x[0], m1 = x[xs], m2 = x[2 * xs], m3 = x[3 * xs];
        y[0] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
        y[ys] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
    } else {
        const __m256 m0 = x[0], m1 = x[xs], m2 = x[2 * xs], m3 = x[3 * xs], m4 = x[4 * xs], m5 = x[5 * xs];
        const __m256 s12 = _mm256_add_ps(m1, m2), d12 = _mm256_sub_ps(m1, m2);
        const __m256 s34 = _mm256_add_ps(m3, m4), d34 = _mm256_sub_ps(m3, m4);
        y[0] = _mm256_add_ps(_mm256_add_ps(m0, s12), s34);
        y[ys] = _mm256_fmadd_ps(_mm256_set1_ps(2), d34, d12);
        y[2 * ys] = _mm256_fmadd_ps(_mm256_set1_ps(4), s34, s12);
        y[3 * ys] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8), d34, d12), m5);
    }
}

/// One tile's input transform: `pix[k·α + j]` is the patch pixel's C channels, or NULL in the padding.
INLINE KT void input_tile(const int M, const float *const *pix, ptrdiff_t C, float *out, ptrdiff_t ps) {
    const int A = M + 2;
    for (ptrdiff_t c0 = 0; c0 < C; c0 += 8) {
        const int full = C - c0 >= 8;
        const __m256i mask = lanes(full ? 8 : C - c0);
        __m256 d[36], h[36], y[6];
        for (int k = 0; k < A * A; k++) {
            const float *p = pix[k];
            d[k] = p == NULL ? _mm256_setzero_ps() : full ? _mm256_loadu_ps(p + c0) : _mm256_maskload_ps(p + c0, mask);
        }
        // Columns: h[i][j] = Σ_k Bᵀ[i][k] d[k][j]; rows: V[i·α + j] = Σ_k h[i][k] Bᵀ[j][k].
        for (int j = 0; j < A; j++) input_1d(M, d + j, A, h + j, A);
        for (int i = 0; i < A; i++) {
            input_1d(M, h + i * A, 1, y, 1);
            for (int j = 0; j < A; j++) {
                float *dst = out + (i * A + j) * ps + c0;
                if (full) _mm256_storeu_ps(dst, y[j]); else _mm256_maskstore_ps(dst, mask, y[j]);
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

void KT ckernels_winograd_input_avx2(const ckernels_winograd_job *job, const float *src, float *v,
                                     ptrdiff_t row_begin, ptrdiff_t row_end) {
    if (job->m == 2) input_rows(2, job, src, v, row_begin, row_end);
    else input_rows(4, job, src, v, row_begin, row_end);
}

INLINE KT void output_rows(const int M, const ckernels_winograd_job *g, const float *mm, const float *bias,
                           const float *shortcut, int relu, float *dst, ptrdiff_t row_begin, ptrdiff_t row_end) {
    const int A = M + 2;
    const ptrdiff_t O = g->O, ps = g->rows * O;
    const __m256 zero = _mm256_setzero_ps();
    for (ptrdiff_t r = row_begin; r < row_end; r++) {
        const ptrdiff_t q = g->first_tile + r;
        const ptrdiff_t n = q / (g->TH * g->TW), th = (q / g->TW) % g->TH, tw = q % g->TW;
        const ptrdiff_t oh0 = th * M, ow0 = tw * M;
        const int rowsIn = g->OH - oh0 < M ? (int)(g->OH - oh0) : M, colsIn = g->OW - ow0 < M ? (int)(g->OW - ow0) : M;
        const float *in = mm + r * O;
        for (ptrdiff_t o0 = 0; o0 < O; o0 += 8) {
            const int full = O - o0 >= 8;
            const __m256i mask = lanes(full ? 8 : O - o0);
            __m256 x[36], h[24], y[16];
            for (int t = 0; t < A * A; t++) {
                const float *p = in + t * ps + o0;
                x[t] = full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask);
            }
            // Columns: h[r][j] = Σ_i Aᵀ[r][i] M[i·α + j] (m×α); rows: y[r][s] = Σ_j h[r][j] Aᵀ[s][j] (m×m).
            for (int j = 0; j < A; j++) output_1d(M, x + j, A, h + j, A);
            for (int i = 0; i < M; i++) output_1d(M, h + i * A, 1, y + i * M, 1);
            const __m256 b = full ? _mm256_loadu_ps(bias + o0) : _mm256_maskload_ps(bias + o0, mask);
            for (int i = 0; i < rowsIn; i++) {
                for (int s = 0; s < colsIn; s++) {
                    const ptrdiff_t pixel = ((n * g->OH + oh0 + i) * g->OW + ow0 + s) * O + o0;
                    __m256 val = _mm256_add_ps(y[i * M + s], b);
                    if (shortcut) val = _mm256_add_ps(val, full ? _mm256_loadu_ps(shortcut + pixel) : _mm256_maskload_ps(shortcut + pixel, mask));
                    if (relu) val = _mm256_max_ps(zero, val);   // (0 > v ? 0 : v): NaN and -0 pass through
                    if (full) _mm256_storeu_ps(dst + pixel, val); else _mm256_maskstore_ps(dst + pixel, mask, val);
                }
            }
        }
    }
}

void KT ckernels_winograd_output_avx2(const ckernels_winograd_job *job, const float *mm, const float *bias,
                                      const float *shortcut, int relu, float *dst,
                                      ptrdiff_t row_begin, ptrdiff_t row_end) {
    if (job->m == 2) output_rows(2, job, mm, bias, shortcut, relu, dst, row_begin, row_end);
    else output_rows(4, job, mm, bias, shortcut, relu, dst, row_begin, row_end);
}

#else
#include "ckernels_winograd.h"
void ckernels_winograd_input_avx2(const ckernels_winograd_job *job, const float *src, float *v,
                                  ptrdiff_t row_begin, ptrdiff_t row_end) {
    (void)job; (void)src; (void)v; (void)row_begin; (void)row_end;
}
void ckernels_winograd_output_avx2(const ckernels_winograd_job *job, const float *mm, const float *bias,
                                   const float *shortcut, int relu, float *dst,
                                   ptrdiff_t row_begin, ptrdiff_t row_end) {
    (void)job; (void)mm; (void)bias; (void)shortcut; (void)relu; (void)dst; (void)row_begin; (void)row_end;
}
#endif
