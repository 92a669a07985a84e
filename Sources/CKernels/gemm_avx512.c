// The packed-weight matrix product (ckernels_gemm.h) for AVX-512: 12×32 register tiles,
// 24 accumulators + 2 weight vectors + 1 broadcast of the 32 vector registers.
#if defined(__x86_64__)
#define GEMM_ENTRY ckernels_gemm_avx512
#define MR 12
#define NV 2
#define KC 256
#define MC 120
#include "gemm_avx512_ops.h"
#include "gemm_impl.h"
#else
#include "ckernels_gemm.h"
void ckernels_gemm_avx512(const ckernels_gemm_job *job, ptrdiff_t row_begin, ptrdiff_t row_end,
                          ptrdiff_t col_begin, ptrdiff_t col_end) {
    (void)job; (void)row_begin; (void)row_end; (void)col_begin; (void)col_end;
}
#endif
