// Max, average and global average pooling (ckernels_pool.h) for AVX-512 F/DQ/BW/VL: 16 channels per
// vector, the last partial vector under a lane mask. The per-channel operations and their order are
// those of the reference loops, so the results are the same floats.
#include "ckernels_pool.h"
#if defined(__x86_64__)
#include <immintrin.h>

#define KT __attribute__((target("avx2,fma,avx512f,avx512dq,avx512bw,avx512vl")))

static inline KT __mmask16 lanes(ptrdiff_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u); }

/// One pooled pixel: `max` or the sum of the window's cells inside the image, then the divisor.
static inline __attribute__((always_inline)) KT void pixel(const ckernels_pool_geometry *g, const float *src, float *dst,
                                                           ptrdiff_t p, int max, int include_pad) {
    const ptrdiff_t OHW = g->OH * g->OW, C = g->C;
    const ptrdiff_t n = p / OHW, oh = (p % OHW) / g->OW, ow = p % g->OW;
    const ptrdiff_t h0 = oh * g->SH - g->PT, w0 = ow * g->SW - g->PL;
    const ptrdiff_t kh0 = h0 < 0 ? -h0 : 0, kh1 = g->H - h0 < g->KH ? g->H - h0 : g->KH;
    const ptrdiff_t kw0 = w0 < 0 ? -w0 : 0, kw1 = g->W - w0 < g->KW ? g->W - w0 : g->KW;
    const ptrdiff_t cells = (kh1 > kh0 ? kh1 - kh0 : 0) * (kw1 > kw0 ? kw1 - kw0 : 0);
    const __m512 divisor = _mm512_set1_ps((float)(include_pad ? g->KH * g->KW : cells));
    float *out = dst + p * C;
    for (ptrdiff_t c0 = 0; c0 < C; c0 += 16) {
        const __mmask16 m = lanes(C - c0);
        __m512 acc = max ? _mm512_set1_ps(-__builtin_inff()) : _mm512_setzero_ps();
        for (ptrdiff_t kh = kh0; kh < kh1; kh++) {
            const float *row = src + ((n * g->H + h0 + kh) * g->W + w0) * C + c0;
            for (ptrdiff_t kw = kw0; kw < kw1; kw++) {
                const __m512 v = _mm512_maskz_loadu_ps(m, row + kw * C);
                if (max) {
                    // v > acc (ordered), or v is NaN.
                    const __mmask16 take = _mm512_cmp_ps_mask(v, acc, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                    acc = _mm512_mask_mov_ps(acc, take, v);
                } else {
                    acc = _mm512_add_ps(acc, v);
                }
            }
        }
        if (!max) acc = _mm512_div_ps(acc, divisor);
        _mm512_mask_storeu_ps(out + c0, m, acc);
    }
}

KT void ckernels_max_pool_avx512(const ckernels_pool_geometry *g, const float *src, float *dst,
                                 ptrdiff_t p_begin, ptrdiff_t p_end) {
    for (ptrdiff_t p = p_begin; p < p_end; p++) pixel(g, src, dst, p, 1, 0);
}

KT void ckernels_avg_pool_avx512(const ckernels_pool_geometry *g, const float *src, float *dst, int include_pad,
                                 ptrdiff_t p_begin, ptrdiff_t p_end) {
    for (ptrdiff_t p = p_begin; p < p_end; p++) pixel(g, src, dst, p, 0, include_pad);
}

KT void ckernels_global_avg_pool_avx512(const float *src, float *dst, ptrdiff_t N, ptrdiff_t HW, ptrdiff_t C) {
    const __m512 divisor = _mm512_set1_ps((float)HW);
    for (ptrdiff_t n = 0; n < N; n++) {
        for (ptrdiff_t c0 = 0; c0 < C; c0 += 16) {
            const __mmask16 m = lanes(C - c0);
            __m512 acc = _mm512_setzero_ps();
            for (ptrdiff_t p = 0; p < HW; p++) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, src + (n * HW + p) * C + c0));
            _mm512_mask_storeu_ps(dst + n * C + c0, m, _mm512_div_ps(acc, divisor));
        }
    }
}
#else
void ckernels_max_pool_avx512(const ckernels_pool_geometry *g, const float *src, float *dst,
                              ptrdiff_t p_begin, ptrdiff_t p_end) {
    (void)g; (void)src; (void)dst; (void)p_begin; (void)p_end;
}
void ckernels_avg_pool_avx512(const ckernels_pool_geometry *g, const float *src, float *dst, int include_pad,
                              ptrdiff_t p_begin, ptrdiff_t p_end) {
    (void)g; (void)src; (void)dst; (void)include_pad; (void)p_begin; (void)p_end;
}
void ckernels_global_avg_pool_avx512(const float *src, float *dst, ptrdiff_t N, ptrdiff_t HW, ptrdiff_t C) {
    (void)src; (void)dst; (void)N; (void)HW; (void)C;
}
#endif
