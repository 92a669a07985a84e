// The AVX-512 F/DQ/BW/VL vector operations gemm_impl.h is built from, shared by the AVX-512 tile shapes
// (gemm_avx512*.c). Each of those defines GEMM_ENTRY, MR, NV, KC and MC before including this.
#define GEMM_TARGET "avx2,fma,avx512f,avx512dq,avx512bw,avx512vl"
#define VT __m512
#define VL 16
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
