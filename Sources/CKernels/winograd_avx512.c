// Winograd's input and output tile transforms (ckernels_winograd.h) for AVX-512 F/DQ/BW/VL: 16 channels
// per vector, partial slices under a lane mask.
#if defined(__x86_64__)
#define WINO_TARGET "avx2,fma,avx512f,avx512dq,avx512bw,avx512vl"
#define WINO_INPUT ckernels_winograd_input_avx512
#define WINO_OUTPUT ckernels_winograd_output_avx512
#define VT __m512
#define VL 16
#define MASK_T __mmask16
#define MASK_MAKE(n) ((__mmask16)((1u << (n)) - 1u))
#define V_ZERO() _mm512_setzero_ps()
#define V_SET1(x) _mm512_set1_ps(x)
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_STORE(p, v) _mm512_storeu_ps(p, v)
#define V_MLOAD(p, m) _mm512_maskz_loadu_ps(m, p)
#define V_MSTORE(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define V_ADD(x, y) _mm512_add_ps(x, y)
#define V_SUB(x, y) _mm512_sub_ps(x, y)
#define V_MUL(x, y) _mm512_mul_ps(x, y)
#define V_FMADD(a, b, c) _mm512_fmadd_ps(a, b, c)
#define V_FNMADD(a, b, c) _mm512_fnmadd_ps(a, b, c)
#define V_MAX0(x) _mm512_max_ps(_mm512_setzero_ps(), x)
#include "winograd_impl.h"
#else
#include "ckernels_winograd.h"
void ckernels_winograd_input_avx512(const ckernels_winograd_job *job, const float *src, float *v,
                                    ptrdiff_t row_begin, ptrdiff_t row_end) {
    (void)job; (void)src; (void)v; (void)row_begin; (void)row_end;
}
void ckernels_winograd_output_avx512(const ckernels_winograd_job *job, const float *mm, const float *bias,
                                     const float *shortcut, int relu, float *dst,
                                     ptrdiff_t row_begin, ptrdiff_t row_end) {
    (void)job; (void)mm; (void)bias; (void)shortcut; (void)relu; (void)dst; (void)row_begin; (void)row_end;
}
#endif
