#ifndef CKERNELS_CPU_H
#define CKERNELS_CPU_H

/// 1 when the CPU has AVX2 and FMA and the OS saves the YMM registers (CPUID and XGETBV), else 0.
/// Swift code is built for the baseline x86-64 instruction set; kernels in this target that use
/// wider vectors are called only after this check.
int ckernels_has_avx2_fma(void);

/// 1 when the CPU has AVX-512F/BW/DQ/VL and the OS saves the ZMM and mask registers, else 0.
int ckernels_has_avx512(void);

#endif
