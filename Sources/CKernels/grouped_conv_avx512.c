// The direct grouped convolution (ckernels_grouped.h) built for AVX-512 F/DQ/BW/VL: the same 8-lane
// code with 32 vector registers: the 16- and 32-lane tiles hold more pixels (larger tiles made the
// register allocator shuffle accumulators through the stack, and measured slower).
#if defined(__x86_64__)
#define GROUPED_TARGET "avx2,fma,avx512f,avx512dq,avx512bw,avx512vl"
#define GROUPED_ENTRY ckernels_grouped_conv_avx512
#define P8_REGS 32
#define P8X4 4
#define P8X2 6
#define P8X1 10
#define P4 8
#define P44 6
#include "grouped_conv_impl.h"
#else
#include "ckernels_grouped.h"
void ckernels_grouped_conv_avx512(const ckernels_grouped_geometry *g, ptrdiff_t row_begin, ptrdiff_t row_end,
                                  ptrdiff_t group, const float *src, const float *weights, const float *bias,
                                  const float *shortcut, int relu, float *dst) {
    (void)g; (void)row_begin; (void)row_end; (void)group; (void)src; (void)weights; (void)bias;
    (void)shortcut; (void)relu; (void)dst;
}
#endif
