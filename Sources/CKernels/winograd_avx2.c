// Winograd's input and output tile transforms (ckernels_winograd.h) for AVX2 and FMA: 8 channels per vector.
#if defined(__x86_64__)
#define WINO_TARGET "avx2,fma"
#define WINO_INPUT ckernels_winograd_input_avx2
#define WINO_OUTPUT ckernels_winograd_output_avx2
#define VT __m256
#define VL 8
#define MASK_T __m256i
#define MASK_MAKE(n) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define V_ZERO() _mm256_setzero_ps()
#define V_SET1(x) _mm256_set1_ps(x)
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_storeu_ps(p, v)
#define V_MLOAD(p, m) _mm256_maskload_ps(p, m)
#define V_MSTORE(p, m, v) _mm256_maskstore_ps(p, m, v)
#define V_ADD(x, y) _mm256_add_ps(x, y)
#define V_SUB(x, y) _mm256_sub_ps(x, y)
#define V_MUL(x, y) _mm256_mul_ps(x, y)
#define V_FMADD(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_FNMADD(a, b, c) _mm256_fnmadd_ps(a, b, c)
#define V_MAX0(x) _mm256_max_ps(_mm256_setzero_ps(), x)
#include "winograd_impl.h"
#else
#include "ckernels_winograd.h"
void ckernels_winograd_input_avx2(const ckernels_winograd_job *job, const float *src, float *v,
                                  ptrdiff_t row_begin, ptrdiff_t row_end) {
    (void)job; (void)src; (void)v; (void)row_begin; (void)row_end;
}
void ckernels_winograd_output_avx2(const ckernels_winograd_job *job, const float *mm, const float *bias,
                                   const float *shortcut, int relu, float *dst,
                                   ptrdiff_t row_begin, ptrdiff_t row_end) {
    (void)job; (void)mm; (void)bias; (void)shortcut; (void)relu; (void)dst; (void)row_begin; (void)row_end;
}
#endif
