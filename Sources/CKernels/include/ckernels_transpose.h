#ifndef CKERNELS_TRANSPOSE_H
#define CKERNELS_TRANSPOSE_H

#include <stddef.h>

/// Keras HWIO (hw spatial positions × ni inputs × no outputs, row-major) to PyTorch OIHW for the
/// outputs o0 ..< o1: dst[o - o0][ii][k] = src[k][ii][o], so dst holds (o1 - o0) rows of ni × hw
/// floats. hw = 1 is the plain transpose of an (ni × no) matrix. Values are copied, never changed.
/// Returns 0, or -1 (nothing written) when its small row table cannot be allocated.
/// Call only when ckernels_has_avx2_fma() is 1.
int ckernels_transpose_oihw_avx2(const float *src, float *dst, ptrdiff_t hw, ptrdiff_t ni, ptrdiff_t no,
                                 ptrdiff_t o0, ptrdiff_t o1);

#endif
