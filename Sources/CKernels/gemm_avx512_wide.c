// The packed-weight matrix product (ckernels_gemm.h) for AVX-512 with 6×64 register tiles:
// 24 accumulators + 4 weight vectors + 1 broadcast of the 32 vector registers. Half the broadcasts of
// the 12×32 tiles per product, and a tile's 6 rows of A fit one L1 set's 8 ways when the row stride is
// a multiple of 4 KiB (K = 1024, 2048 floats), where 12 rows keep evicting each other.
#if defined(__x86_64__)
#define GEMM_ENTRY ckernels_gemm_avx512_wide
#define MR 6
#define NV 4
#define KC 256
#define MC 120
#include "gemm_avx512_ops.h"
#include "gemm_impl.h"
#else
#include "ckernels_gemm.h"
void ckernels_gemm_avx512_wide(const ckernels_gemm_job *job, ptrdiff_t row_begin, ptrdiff_t row_end,
                               ptrdiff_t col_begin, ptrdiff_t col_end) {
    (void)job; (void)row_begin; (void)row_end; (void)col_begin; (void)col_end;
}
#endif
