#ifndef CKERNELS_POOL_H
#define CKERNELS_POOL_H

#include <stddef.h>

/// A pooling window over an NHWC image (Sources/ResNetKit/Forward/Plan.swift): output pixel
/// p = (n·OH + oh)·OW + ow reads rows oh·SH − PT + kh (kh < KH) and columns ow·SW − PL + kw (kw < KW),
/// skipping those outside [0, H) × [0, W).
typedef struct {
    ptrdiff_t N, H, W, C;
    ptrdiff_t OH, OW;
    ptrdiff_t KH, KW, SH, SW, PT, PL;
} ckernels_pool_geometry;

/// Max pooling of output pixels [p_begin, p_end) with AVX-512 F/DQ/BW/VL: per channel, starting from
/// -inf, each cell v in (kh, kw) order replaces the result when v > result or v is NaN (so a NaN
/// propagates and ±0 ties keep the first), as the reference's scalar loop does.
/// Call only when ckernels_has_avx512() returned 1.
/// Preconditions (the caller checks them; nothing here does): every field >= 0, C >= 1;
/// 0 <= p_begin <= p_end <= N·OH·OW; src (N, H, W, C) and dst (N, OH, OW, C) do not overlap.
/// Writes only the given pixels of dst, so calls for disjoint ranges may run concurrently.
void ckernels_max_pool_avx512(const ckernels_pool_geometry *g, const float *src, float *dst,
                              ptrdiff_t p_begin, ptrdiff_t p_end);

/// Average pooling of output pixels [p_begin, p_end) with AVX-512: per channel the sum, from 0, of the
/// cells in (kh, kw) order, divided by KH·KW when include_pad is not 0 and else by the number of cells
/// inside the image. Same preconditions and guarantees as ckernels_max_pool_avx512.
void ckernels_avg_pool_avx512(const ckernels_pool_geometry *g, const float *src, float *dst, int include_pad,
                              ptrdiff_t p_begin, ptrdiff_t p_end);

/// Global average pooling with AVX-512: dst[n·C + c] = (Σ_p src[(n·HW + p)·C + c], from 0 in p order) / HW.
/// Call only when ckernels_has_avx512() returned 1. N, HW, C >= 1; src and dst do not overlap.
void ckernels_global_avg_pool_avx512(const float *src, float *dst, ptrdiff_t N, ptrdiff_t HW, ptrdiff_t C);

#endif
