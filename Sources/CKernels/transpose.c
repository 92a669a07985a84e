// HWIO → OIHW kernel transposes (see ckernels_transpose.h) on AVX2.
//
// Each output channel's destination row is ni × hw floats, input-channel-major with hw spatial
// values together. Destination column c = ii·hw + k comes from source row k·ni + ii (a row of no
// floats), so a tile is 8 consecutive destination columns × 8 output channels: 8 source rows
// read at the outputs' offset, transposed in registers, stored as 8 floats into each output's row.
// Every destination row is then written front to back, and a block of BLOCK outputs takes whole
// 64-byte lines from each source row in one pass over the tensor (the Swift fallback walks one input
// channel at a time, writing hw floats into every output's row, and does the 9th row of a 3×3
// kernel one float at a time).
#include "ckernels_transpose.h"

#include <stdint.h>
#include <stdlib.h>

// Source offsets (in floats) of the rows behind destination columns 0 ..< ni·hw, padded with
// zeros to a multiple of 8 so a tile may read eight entries. Caller frees it.
static ptrdiff_t *row_table(ptrdiff_t hw, ptrdiff_t ni, ptrdiff_t no) {
    const ptrdiff_t cols = ni * hw, padded = (cols + 7) / 8 * 8;
    ptrdiff_t *t = malloc((size_t)padded * sizeof *t);
    if (!t) return NULL;
    ptrdiff_t c = 0;
    for (ptrdiff_t ii = 0; ii < ni; ii++)
        for (ptrdiff_t k = 0; k < hw; k++) t[c++] = (k * ni + ii) * no;
    for (; c < padded; c++) t[c] = 0;
    return t;
}

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

// Outputs per pass over the source rows: 16 floats, one 64-byte line of each row. (Measured on
// ResNet-50's kernels: 8-column tiles of 16 outputs beat 16×16 tiles, 512-bit registers, software
// prefetching and wider passes, all of which came out equal or slower.)
enum { BLOCK = 16 };

// r[j][x] → r[x][j] for an 8×8 block (in-lane unpacks and shuffles, then 128-bit halves swapped).
AVX2 static inline void transpose8(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20); r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20); r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20); r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20); r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

AVX2 static inline __m256i first_lanes(ptrdiff_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// One full tile: 8 columns (source rows at s + rows[j]) × 8 outputs, into d (stride dstRow).
AVX2 static inline void tile8(const float *s, const ptrdiff_t *rows, float *d, ptrdiff_t dstRow) {
    __m256 r[8];
    for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_ps(s + rows[j]);
    transpose8(r);
    for (int j = 0; j < 8; j++) _mm256_storeu_ps(d + j * dstRow, r[j]);
}

// A tile at the edge: only `nc` columns and `nout` outputs exist. Masked loads never touch the
// floats past the outputs (which may lie past the end of the source).
AVX2 static inline void edge8(const float *s, const ptrdiff_t *rows, float *d, ptrdiff_t dstRow, ptrdiff_t nc, ptrdiff_t nout) {
    const __m256i lanes = first_lanes(nout), cols = first_lanes(nc);
    __m256 r[8];
    for (int j = 0; j < 8; j++) r[j] = j < nc ? _mm256_maskload_ps(s + rows[j], lanes) : _mm256_setzero_ps();
    transpose8(r);
    for (int j = 0; j < nout; j++) _mm256_maskstore_ps(d + j * dstRow, cols, r[j]);
}

AVX2 int ckernels_transpose_oihw_avx2(const float *src, float *dst, ptrdiff_t hw, ptrdiff_t ni, ptrdiff_t no,
                                      ptrdiff_t o0, ptrdiff_t o1) {
    const ptrdiff_t cols = ni * hw;
    if (cols == 0 || o1 <= o0) return 0;
    ptrdiff_t *rows = row_table(hw, ni, no);
    if (!rows) return -1;
    for (ptrdiff_t ob = o0; ob < o1; ob += BLOCK) {
        const ptrdiff_t oe = ob + BLOCK < o1 ? ob + BLOCK : o1;
        float *const d = dst + (ob - o0) * cols;
        ptrdiff_t c = 0;
        for (; c + 8 <= cols; c += 8) {
            ptrdiff_t o = ob;
            for (; o + 8 <= oe; o += 8) tile8(src + o, rows + c, d + (o - ob) * cols + c, cols);
            if (o < oe) edge8(src + o, rows + c, d + (o - ob) * cols + c, cols, 8, oe - o);
        }
        if (c < cols)
            for (ptrdiff_t o = ob; o < oe; o += 8)
                edge8(src + o, rows + c, d + (o - ob) * cols + c, cols, cols - c, oe - o < 8 ? oe - o : 8);
    }
    free(rows);
    return 0;
}

#else

int ckernels_transpose_oihw_avx2(const float *src, float *dst, ptrdiff_t hw, ptrdiff_t ni, ptrdiff_t no,
                                 ptrdiff_t o0, ptrdiff_t o1) {
    (void)src; (void)dst; (void)hw; (void)ni; (void)no; (void)o0; (void)o1;
    return -1;
}

#endif
