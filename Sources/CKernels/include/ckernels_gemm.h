#ifndef CKERNELS_GEMM_H
#define CKERNELS_GEMM_H

#include <stddef.h>

/// Columns per weight panel of the AVX2/FMA kernel (two 8-lane vectors).
#define CKERNELS_GEMM_NR_AVX2 16
/// Columns per weight panel of the AVX-512 kernel (two 16-lane vectors).
#define CKERNELS_GEMM_NR_AVX512 32
/// Columns per weight panel of the AVX-512 kernel with 6×64 tiles (four 16-lane vectors).
#define CKERNELS_GEMM_NR_AVX512_WIDE 64

/// One product C = epilogue(A · W) of the plan's convolutions, with W packed once in advance.
///
/// - a: rows of K floats, row r at a + r·lda (the activation or im2col rows, read as they lie);
/// - packed: W (K × O) cut into ⌈O / NR⌉ panels of NR columns, panel j holding its K rows of NR
///   floats contiguously: packed[(j·K + k)·NR + c] = W[k][j·NR + c], zero where j·NR + c >= O;
/// - bias: NULL, or O floats; shortcut: NULL, or rows of O floats at stride ldc; c: rows at stride ldc.
/// For row r and column o the kernel writes c[r·ldc + o] = max0((Σ_k a·w + bias[o]) + shortcut[r·ldc + o]),
/// each term only when its pointer is not NULL and max0 only when relu is not 0; max0(v) is
/// (0 > v ? 0 : v), so NaN and -0 pass through as in the plan's Swift epilogue `v < 0 ? 0 : v`.
typedef struct {
    ptrdiff_t K, O;
    const float *a;
    ptrdiff_t lda;
    const float *packed;
    const float *bias;
    const float *shortcut;
    float *c;
    ptrdiff_t ldc;
    int relu;
} ckernels_gemm_job;

/// Rows [row_begin, row_end) and columns [col_begin, col_end) of the job with AVX2 and FMA
/// (NR = CKERNELS_GEMM_NR_AVX2). Call only when ckernels_has_avx2_fma() returned 1.
/// Preconditions (the caller checks them; nothing here does): K >= 1, O >= 1, lda >= K, ldc >= O;
/// 0 <= row_begin <= row_end, and a, shortcut, c hold those rows; col_begin a multiple of NR,
/// col_begin <= col_end <= O; packed sized for K, O and NR as above; c overlaps none of the inputs.
/// Reads and writes only the given rows and columns of shortcut and c, so calls for disjoint
/// blocks may run concurrently on the same buffers.
void ckernels_gemm_avx2(const ckernels_gemm_job *job, ptrdiff_t row_begin, ptrdiff_t row_end,
                        ptrdiff_t col_begin, ptrdiff_t col_end);

/// `ckernels_gemm_avx2` built for AVX-512 F/DQ/BW/VL with NR = CKERNELS_GEMM_NR_AVX512 and the same
/// results and preconditions. Call only when ckernels_has_avx512() returned 1.
void ckernels_gemm_avx512(const ckernels_gemm_job *job, ptrdiff_t row_begin, ptrdiff_t row_end,
                          ptrdiff_t col_begin, ptrdiff_t col_end);

/// `ckernels_gemm_avx512` with 6×64 register tiles (24 accumulators, 4 weight vectors and a broadcast)
/// and NR = CKERNELS_GEMM_NR_AVX512_WIDE, with the same results and preconditions.
/// Call only when ckernels_has_avx512() returned 1.
void ckernels_gemm_avx512_wide(const ckernels_gemm_job *job, ptrdiff_t row_begin, ptrdiff_t row_end,
                               ptrdiff_t col_begin, ptrdiff_t col_end);

#endif
