#ifndef CKERNELS_GROUPED_H
#define CKERNELS_GROUPED_H

#include <stddef.h>

/// The resolved geometry of one grouped convolution, as the Swift plan's WindowGeometry (PB and PR
/// are implied by OH and OW). Cg = C / G input and Og = O / G output channels per group.
typedef struct {
    ptrdiff_t N, C, H, W, O, G;
    ptrdiff_t KH, KW, SH, SW, DH, DW;
    ptrdiff_t PT, PL;
    ptrdiff_t OH, OW;
} ckernels_grouped_geometry;

/// Most taps (KH·KW) a convolution may have for these kernels.
#define CKERNELS_GROUPED_MAX_TAPS 64

/// Direct NHWC grouped convolution for output rows [row_begin, row_end) of one group, with AVX2 and
/// FMA; row r is (n, oh) = (r / OH, r % OH). For each output pixel and each of the group's Og channels
/// o it writes dst = max0((Σ taps w·x + bias[o]) + shortcut), the shortcut term only when `shortcut`
/// is not NULL and max0 only when `relu` is not 0 (max0 keeps NaN and -0).
///
/// Call only when ckernels_has_avx2_fma() returned 1.
/// Preconditions (the caller checks them; nothing here does):
/// - KH·KW <= CKERNELS_GROUPED_MAX_TAPS;
/// - every geometry field >= 0; G >= 1, C and O multiples of G, KH, KW, SH, SW, DH, DW >= 1;
///   OH and OW are the output size this geometry implies for some PB, PR >= 0, so every tap of
///   every output pixel with a row or column in range lies in [-PT, H + PB) × [-PL, W + PR)
///   and taps outside [0, H) × [0, W) are skipped (zero padding);
/// - 0 <= row_begin <= row_end <= N·OH and 0 <= group < G;
/// - src holds N·H·W·C floats (n, h, w, c); weights G·KH·KW·Cg·Og floats (group, (kh·KW + kw)·Cg + i, o);
///   bias O floats; shortcut (if not NULL) and dst N·OH·OW·O floats (n, oh, ow, o);
/// - dst does not overlap src, weights, bias or shortcut.
/// Only the group's channels of the given rows are read from shortcut and written to dst, so calls
/// for different (rows, group) pairs may run concurrently on the same buffers.
void ckernels_grouped_conv_avx2(const ckernels_grouped_geometry *g, ptrdiff_t row_begin, ptrdiff_t row_end,
                                ptrdiff_t group, const float *src, const float *weights, const float *bias,
                                const float *shortcut, int relu, float *dst);

/// `ckernels_grouped_conv_avx2` built for AVX-512 F/DQ/BW/VL (32 vector registers, larger tiles), with
/// the same results and preconditions. Call only when ckernels_has_avx512() returned 1.
void ckernels_grouped_conv_avx512(const ckernels_grouped_geometry *g, ptrdiff_t row_begin, ptrdiff_t row_end,
                                  ptrdiff_t group, const float *src, const float *weights, const float *bias,
                                  const float *shortcut, int relu, float *dst);

#endif
