// CPU feature checks for the vector kernels in this target.
//
// A kernel built with __attribute__((target(...))) may only run when the CPU has the instructions
// and the OS saves the wider registers on a context switch: CPUID leaf 1 ECX bit 27 (OSXSAVE) says
// XGETBV may be used, and XCR0 bits 1-2 (SSE, AVX state) or 5-7 (opmask, ZMM upper halves, ZMM16-31)
// say those registers are saved.
#include "ckernels_cpu.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <stdint.h>

static uint64_t xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static int leaf1_ecx(unsigned *ecx) {
    unsigned a, b, d;
    return __get_cpuid(1, &a, &b, ecx, &d);
}

static int leaf7_ebx(unsigned *ebx) {
    unsigned a, c, d;
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, *ebx, c, d);
    return 1;
}

int ckernels_has_avx2_fma(void) {
    unsigned ecx, ebx;
    if (!leaf1_ecx(&ecx) || !leaf7_ebx(&ebx)) return 0;
    const int fma = (ecx >> 12) & 1, osxsave = (ecx >> 27) & 1, avx = (ecx >> 28) & 1;
    const int avx2 = (ebx >> 5) & 1;
    if (!(fma && osxsave && avx && avx2)) return 0;
    return (xcr0() & 0x6) == 0x6;
}

int ckernels_has_avx512(void) {
    unsigned ecx, ebx;
    if (!ckernels_has_avx2_fma() || !leaf1_ecx(&ecx) || !leaf7_ebx(&ebx)) return 0;
    const int f = (ebx >> 16) & 1, dq = (ebx >> 17) & 1, bw = (ebx >> 30) & 1, vl = (ebx >> 31) & 1;
    if (!(f && dq && bw && vl)) return 0;
    return (xcr0() & 0xE6) == 0xE6;
}

#else

int ckernels_has_avx2_fma(void) { return 0; }
int ckernels_has_avx512(void) { return 0; }

#endif
