#ifndef CKERNELS_WINOGRAD_H
#define CKERNELS_WINOGRAD_H

#include <stddef.h>

/// One block of a Winograd F(m×m, 3×3) convolution (Sources/ResNetKit/Forward/FastWinograd.swift), as
/// the Swift plan's WinogradConv lays it out. α = m + 2; tile q = (n, th, tw) with q = (n·TH + th)·TW + tw
/// covers output rows th·m ..< th·m + m and columns tw·m ..< tw·m + m, and reads the α×α input patch
/// whose top-left pixel is (th·m − PT, tw·m − PL), zero outside [0, H) × [0, W).
/// The block holds `rows` tiles, block row r being tile first_tile + r. Transform point t = i·α + j of
/// block row r lies at v + (t·rows + r)·C (input side) and mm + (t·rows + r)·O (output side).
typedef struct {
    ptrdiff_t m;
    ptrdiff_t H, W, C;
    ptrdiff_t OH, OW, O;
    ptrdiff_t PT, PL;
    ptrdiff_t TH, TW;
    ptrdiff_t rows, first_tile;
} ckernels_winograd_job;

/// Input transform with AVX2 and FMA for block rows [row_begin, row_end): V[t][r] = (Bᵀ d B)[t] per channel,
/// d the tile's zero-padded α×α patch of src (N, H, W, C).
/// Call only when ckernels_has_avx2_fma() returned 1.
/// Preconditions (the caller checks them; nothing here does): m is 2 or 4; every field >= 0, C >= 1;
/// 0 <= row_begin <= row_end <= rows; every tile of the block has n < N for the N src holds;
/// v holds α²·rows·C floats and overlaps nothing else. Writes only the given rows of v, so calls for
/// disjoint row ranges may run concurrently.
void ckernels_winograd_input_avx2(const ckernels_winograd_job *job, const float *src, float *v,
                                  ptrdiff_t row_begin, ptrdiff_t row_end);

/// Output transform with AVX2 and FMA for block rows [row_begin, row_end): y = Aᵀ M A per channel, then
/// for each output pixel (oh, ow) of the tile inside OH × OW and each channel o,
/// dst = max0((y + bias[o]) + shortcut), the shortcut term only when `shortcut` is not NULL and max0
/// only when relu is not 0; max0(v) is (0 > v ? 0 : v), keeping NaN and -0 as the Swift `v < 0 ? 0 : v`.
/// Call only when ckernels_has_avx2_fma() returned 1.
/// Preconditions (the caller checks them; nothing here does): m is 2 or 4; every field >= 0, O >= 1;
/// 0 <= row_begin <= row_end <= rows; mm holds α²·rows·O floats; bias O floats; shortcut (or NULL)
/// and dst hold every output pixel of the block's tiles, (n, oh, ow, o); dst overlaps no input.
/// Writes only the pixels of the given rows' tiles, so calls for disjoint row ranges may run concurrently.
void ckernels_winograd_output_avx2(const ckernels_winograd_job *job, const float *mm, const float *bias,
                                   const float *shortcut, int relu, float *dst,
                                   ptrdiff_t row_begin, ptrdiff_t row_end);

/// `ckernels_winograd_input_avx2` built for AVX-512 F/DQ/BW/VL (16 channels per vector), with the same
/// results and preconditions. Call only when ckernels_has_avx512() returned 1.
void ckernels_winograd_input_avx512(const ckernels_winograd_job *job, const float *src, float *v,
                                    ptrdiff_t row_begin, ptrdiff_t row_end);

/// `ckernels_winograd_output_avx2` built for AVX-512 F/DQ/BW/VL (16 channels per vector), with the same
/// results and preconditions. Call only when ckernels_has_avx512() returned 1.
void ckernels_winograd_output_avx512(const ckernels_winograd_job *job, const float *mm, const float *bias,
                                     const float *shortcut, int relu, float *dst,
                                     ptrdiff_t row_begin, ptrdiff_t row_end);

#endif
