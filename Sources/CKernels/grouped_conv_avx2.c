// The direct grouped convolution (ckernels_grouped.h) for AVX2 and FMA: 16 vector registers.
#if defined(__x86_64__)
#define GROUPED_TARGET "avx2,fma"
#define GROUPED_ENTRY ckernels_grouped_conv_avx2
#define P8_REGS 16
#define P8X4 2
#define P8X2 5
#define P8X1 10
#define P4 8
#define P44 6
#include "grouped_conv_impl.h"
#else
#include "ckernels_grouped.h"
void ckernels_grouped_conv_avx2(const ckernels_grouped_geometry *g, ptrdiff_t row_begin, ptrdiff_t row_end,
                                ptrdiff_t group, const float *src, const float *weights, const float *bias,
                                const float *shortcut, int relu, float *dst) {
    (void)g; (void)row_begin; (void)row_end; (void)group; (void)src; (void)weights; (void)bias;
    (void)shortcut; (void)relu; (void)dst;
}
#endif
