// The packed-weight matrix product (ckernels_gemm.h) for AVX-512: 12×32 register tiles,
// 24 accumulators + 2 weight vectors + 1 broadcast of the 32 vector registers.
#if defined(__x86_64__)
#define GEMM_TARGET "avx2,fma,avx512f,avx512dq,avx512bw,avx512vl"
#define GEMM_ENTRY ckernels_gemm_avx512
#define VT __m512
#define VL 16
#define MR 12
#define KC 256
#define MC 120
#define V_ZERO() _mm512_setzero_ps()
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_BCAST(p) _mm512_set1_ps(*(p))
#define V_FMA(x, y, z) _mm512_fmadd_ps(x, y, z)
#define V_ADD(x, y) _mm512_add_ps(x, y)
#define V_MAX0(x) _mm512_max_ps(_mm512_setzero_ps(), x)
#define V_STORE(p, v) _mm512_storeu_ps(p, v)
#define MASK_T __mmask16
#define MASK_MAKE(n) ((__mmask16)((1u << (n)) - 1u))
#define V_MLOAD(p, m) _mm512_maskz_loadu_ps(m, p)
#define V_MSTORE(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#include "gemm_impl.h"
#else
#include "ckernels_gemm.h"
void ckernels_gemm_avx512(const ckernels_gemm_job *job, ptrdiff_t row_begin, ptrdiff_t row_end,
                          ptrdiff_t col_begin, ptrdiff_t col_end) {
    (void)job; (void)row_begin; (void)row_end; (void)col_begin; (void)col_end;
}
#endif
