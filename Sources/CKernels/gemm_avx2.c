// The packed-weight matrix product (ckernels_gemm.h) for AVX2 and FMA: 6×16 register tiles,
// 12 accumulators + 2 weight vectors + 1 broadcast of the 16 vector registers.
#if defined(__x86_64__)
#define GEMM_TARGET "avx2,fma"
#define GEMM_ENTRY ckernels_gemm_avx2
#define VT __m256
#define VL 8
#define MR 6
#define KC 384
#define MC 120
#define V_ZERO() _mm256_setzero_ps()
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_BCAST(p) _mm256_broadcast_ss(p)
#define V_FMA(x, y, z) _mm256_fmadd_ps(x, y, z)
#define V_ADD(x, y) _mm256_add_ps(x, y)
#define V_MAX0(x) _mm256_max_ps(_mm256_setzero_ps(), x)
#define V_STORE(p, v) _mm256_storeu_ps(p, v)
#define MASK_T __m256i
#define MASK_MAKE(n) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define V_MLOAD(p, m) _mm256_maskload_ps(p, m)
#define V_MSTORE(p, m, v) _mm256_maskstore_ps(p, m, v)
#include "gemm_impl.h"
#else
#include "ckernels_gemm.h"
void ckernels_gemm_avx2(const ckernels_gemm_job *job, ptrdiff_t row_begin, ptrdiff_t row_end,
                        ptrdiff_t col_begin, ptrdiff_t col_end) {
    (void)job; (void)row_begin; (void)row_end; (void)col_begin; (void)col_end;
}
#endif
