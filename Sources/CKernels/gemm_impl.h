// The body of the packed-weight matrix product (see ckernels_gemm.h), included by gemm_avx2.c and
// gemm_avx512.c. Before including, define:
//   GEMM_TARGET   the target attribute string, e.g. "avx2,fma"
//   GEMM_ENTRY    the name of the exported function
//   VT, VL        the vector type and its lanes
//   NV            vectors per tile row (2, 3 or 4; 2 if not defined): NR = NV·VL columns per panel
//   MR            rows per register tile, at most 12 (MR·NV accumulators, plus NV weight vectors and a broadcast)
//   KC, MC        K block (a tile's MR·KC floats of A stay in L1 while it passes every panel) and
//                 row block (MC rows, each K block of them in turn, before the next MC rows)
//   V_ZERO, V_LOAD, V_BCAST, V_FMA, V_ADD, V_MAX0, V_STORE, MASK_T, MASK_MAKE, V_MLOAD, V_MSTORE
//
// Legend: P rows (output pixels), K inner (input channels, or an im2col row), O output columns.
// Why not sgemm: OpenBLAS packs both operands on every call (~15% of ResNet-50's forward pass), while
// here W is packed once at plan build and A is read as it lies, a row's K floats contiguous, one
// broadcast per term. The epilogue (bias, shortcut, ReLU) runs on the registers before the single
// store of the last K block, instead of as a second pass over C.

#include <immintrin.h>
#include "ckernels_gemm.h"

#define KT __attribute__((target(GEMM_TARGET)))
#define INLINE static inline __attribute__((always_inline))
#ifndef NV
#define NV 2
#endif
#define NR (NV * VL)
// Every loop over a tile's rows and vectors is unrolled, so that the accumulators are registers.
#define UNROLL _Pragma("clang loop unroll(full)")

/// One register tile: M rows (M <= MR, a constant after inlining) × NR columns over kc terms; `next`
/// (or NULL) is the panel slice the next tiles will read, prefetched one line per term.
/// `accumulate`: add what C already holds (a K block after the first); `finish`: this is the last K
/// block, so apply bias, shortcut and ReLU; `ncols` < NR: only that many columns exist.
INLINE KT void tile(const int M, ptrdiff_t kc, const float *a, ptrdiff_t lda, const float *b, const float *next, float *c, ptrdiff_t ldc,
                    int accumulate, int finish, const float *bias, const float *sc, int relu, ptrdiff_t ncols) {
    VT acc[MR][NV];
    UNROLL for (int r = 0; r < M; r++) UNROLL for (int v = 0; v < NV; v++) acc[r][v] = V_ZERO();
    if (next) {
        // The first row tile of a block also pulls each next panel slice into L1: in the late layers a slice
        // comes from memory and serves only a few tiles (49 rows at batch 1), and this took the
        // 49×512×2048 product from 74 to 97 GFLOPS on one core (AVX2), the 7×7 stem from 75 to 102.
        for (ptrdiff_t k = 0; k < kc; k++) {
            UNROLL for (int l = 0; l < NR; l += 16) _mm_prefetch((const char *)(next + k * NR + l), _MM_HINT_T0);
            VT bv[NV];
            UNROLL for (int v = 0; v < NV; v++) bv[v] = V_LOAD(b + k * NR + v * VL);
            UNROLL for (int r = 0; r < M; r++) {
                const VT x = V_BCAST(a + r * lda + k);
                UNROLL for (int v = 0; v < NV; v++) acc[r][v] = V_FMA(x, bv[v], acc[r][v]);
            }
        }
    } else {
        for (ptrdiff_t k = 0; k < kc; k++) {
            VT bv[NV];
            UNROLL for (int v = 0; v < NV; v++) bv[v] = V_LOAD(b + k * NR + v * VL);
            UNROLL for (int r = 0; r < M; r++) {
                const VT x = V_BCAST(a + r * lda + k);
                UNROLL for (int v = 0; v < NV; v++) acc[r][v] = V_FMA(x, bv[v], acc[r][v]);
            }
        }
    }
    if (ncols == NR) {
        VT bb[NV];
        UNROLL for (int v = 0; v < NV; v++) bb[v] = finish && bias ? V_LOAD(bias + v * VL) : V_ZERO();
        UNROLL for (int r = 0; r < M; r++) {
            float *cr = c + r * ldc;
            UNROLL for (int v = 0; v < NV; v++) {
                VT x = acc[r][v];
                if (accumulate) x = V_ADD(x, V_LOAD(cr + v * VL));
                if (finish) {
                    if (bias) x = V_ADD(x, bb[v]);
                    if (sc) x = V_ADD(x, V_LOAD(sc + r * ldc + v * VL));
                    if (relu) x = V_MAX0(x);
                }
                V_STORE(cr + v * VL, x);
            }
        }
        return;
    }
    // The right edge: lanes past ncols are neither read nor written (they are the next row's, or past the buffer).
    MASK_T mk[NV];
    VT bb[NV];
    UNROLL for (int v = 0; v < NV; v++) {
        const ptrdiff_t left = ncols - v * VL;
        mk[v] = MASK_MAKE(left >= VL ? VL : left > 0 ? left : 0);
        bb[v] = finish && bias ? V_MLOAD(bias + v * VL, mk[v]) : V_ZERO();
    }
    UNROLL for (int r = 0; r < M; r++) {
        float *cr = c + r * ldc;
        UNROLL for (int v = 0; v < NV; v++) {
            VT x = acc[r][v];
            if (accumulate) x = V_ADD(x, V_MLOAD(cr + v * VL, mk[v]));
            if (finish) {
                if (bias) x = V_ADD(x, bb[v]);
                if (sc) x = V_ADD(x, V_MLOAD(sc + r * ldc + v * VL, mk[v]));
                if (relu) x = V_MAX0(x);
            }
            V_MSTORE(cr + v * VL, mk[v], x);
        }
    }
}

typedef void (*tile_fn)(ptrdiff_t, const float *, ptrdiff_t, const float *, const float *, float *, ptrdiff_t, int, int,
                        const float *, const float *, int, ptrdiff_t);

/// Each row count as its own function, so that each keeps its accumulators in registers.
#define TILE(M)                                                                                                \
    static __attribute__((noinline)) KT void tile##M(ptrdiff_t kc, const float *a, ptrdiff_t lda, const float *b, const float *next, \
                                                     float *c, ptrdiff_t ldc, int accumulate, int finish,        \
                                                     const float *bias, const float *sc, int relu, ptrdiff_t ncols) { \
        tile(M, kc, a, lda, b, next, c, ldc, accumulate, finish, bias, sc, relu, ncols);                              \
    }
TILE(1) TILE(2) TILE(3) TILE(4) TILE(5) TILE(6)
#if MR > 6
TILE(7) TILE(8) TILE(9) TILE(10) TILE(11) TILE(12)
#endif
#if MR > 12
#error "MR above 12 needs more tile functions"
#endif

static const tile_fn tiles[] = {
    0, tile1, tile2, tile3, tile4, tile5, tile6,
#if MR > 6
    tile7, tile8, tile9, tile10, tile11, tile12,
#endif
};

KT void GEMM_ENTRY(const ckernels_gemm_job *j, ptrdiff_t row_begin, ptrdiff_t row_end, ptrdiff_t col_begin, ptrdiff_t col_end) {
    const ptrdiff_t K = j->K;
    // K blocks of equal size, none much shorter than the rest.
    const ptrdiff_t blocks = (K + KC - 1) / KC, kb = (K + blocks - 1) / blocks;
    for (ptrdiff_t i0 = row_begin; i0 < row_end; i0 += MC) {
        const ptrdiff_t i1 = i0 + MC < row_end ? i0 + MC : row_end;
        for (ptrdiff_t k0 = 0; k0 < K; k0 += kb) {
            const ptrdiff_t kc = k0 + kb < K ? kb : K - k0;
            const int accumulate = k0 > 0, finish = k0 + kc == K;
            // Row tiles outside, panels inside: a tile's MR rows of C and the shortcut are then written
            // and read as MR sequential streams. With the panels outside, each pass went down the rows
            // 64 bytes at a time at a stride of O floats, the prefetchers could not follow, and a fused
            // shortcut came from memory line by line (3136×128×512 with a shortcut: 67 GFLOPS against
            // 90 in this order, on one core with AVX2; shapes without a shortcut measured the same).
            for (ptrdiff_t i = i0, m = 0; i < i1; i += m) {
                // A remainder of a few rows would run a latency-bound tile: the last full tile and
                // it are split into two more even ones (e.g. 7 rows as 3 + 4 rather than 6 + 1).
                const ptrdiff_t left = i1 - i;
                m = left <= MR ? left : left < MR + 4 ? left / 2 : MR;
                for (ptrdiff_t col = col_begin; col < col_end; col += NR) {
                    const float *panel = j->packed + (col / NR) * K * NR + k0 * NR;
                    const ptrdiff_t ncols = col_end - col < NR ? col_end - col : NR;
                    const float *bias = j->bias ? j->bias + col : 0;
                    const float *sc = j->shortcut ? j->shortcut + i * j->ldc + col : 0;
                    const float *next = i == i0 && col + NR < col_end ? panel + K * NR : 0;
                    tiles[m](kc, j->a + i * j->lda + k0, j->lda, panel, next, j->c + i * j->ldc + col, j->ldc,
                             accumulate, finish, bias, sc, j->relu, ncols);
                }
            }
        }
    }
}
