// The body of the direct grouped convolution (see ckernels_grouped.h), included by grouped_conv_avx2.c
// and grouped_conv_avx512.c. Before including, define:
//   GROUPED_TARGET   the target attribute string, e.g. "avx2,fma"
//   GROUPED_ENTRY    the name of the exported function
//   P8X4, P8X2, P8X1, P4, P44   pixels per tile for each tile kind (see below)
//
// Legend as in FastGrouped.swift: r = (n, oh) an output row, og0 the first output channel a vector
// covers, P output pixels that share each weight load. Each tile keeps its P × (lanes) outputs in
// registers over all KH·KW·Cg terms, then adds bias and shortcut, applies ReLU and stores once.
//
// Tile kinds (the compiler unrolls the constant loops and keeps the arrays in registers; P is chosen
// so accumulators plus operands fit the register file: 16 vector registers with AVX2, 32 with AVX-512VL):
// - Og >= 8: one, two or four 8-lane vectors per pixel, a broadcast input times a weight row per term.
// - Cg = Og = 4 (ResNeXt-50's first stage): a broadcast term would fill half a vector, so a tap's 4×4
//   weights are transposed once per call to (o, i) and the pixel's four inputs are repeated in both
//   halves: two full FMAs per pixel and tap, and each output's four partial sums are added at the end.
// - other widths: 4-lane vectors, the last one masked (loads and stores never touch lanes past Og).
// Interior pixels (every tap inside the row) run in tiles of P, then P / 2; border pixels run one at a
// time with every tap checked, their sums split over i so the FMA latency is still hidden.

#include <immintrin.h>
#include "ckernels_grouped.h"

#define KT __attribute__((target(GROUPED_TARGET)))
#define INLINE static inline __attribute__((always_inline))

/// One call's state, with src, weights, bias, shortcut and dst already offset to the group.
typedef struct {
    const ckernels_grouped_geometry *g;
    ptrdiff_t Cg, Og;
    const float *src, *weights, *bias, *shortcut;
    float *dst;
    int relu;
    const float *t44;           // Cg = Og = 4: weights as (tap, o, i)
} job;

/// The taps of one output pixel that lie inside the image: src offsets of their input pixels and
/// their indices kh·KW + kw. `ow` and the column checks are left out for the interior list of a row,
/// which every interior tile shares (adding its own ow·SW·C).
typedef struct {
    ptrdiff_t x[CKERNELS_GROUPED_MAX_TAPS], t[CKERNELS_GROUPED_MAX_TAPS];
    int count;
} taps;

INLINE KT void find_taps(const job *j, ptrdiff_t n, ptrdiff_t oh, ptrdiff_t ow, const int checked, taps *out) {
    const ckernels_grouped_geometry *g = j->g;
    int count = 0;
    for (ptrdiff_t kh = 0; kh < g->KH; kh++) {
        const ptrdiff_t h = oh * g->SH - g->PT + kh * g->DH;
        if (h < 0 || h >= g->H) continue;
        for (ptrdiff_t kw = 0; kw < g->KW; kw++) {
            const ptrdiff_t w = ow * g->SW - g->PL + kw * g->DW;
            if (checked && (w < 0 || w >= g->W)) continue;
            out->x[count] = ((n * g->H + h) * g->W + w) * g->C;
            out->t[count++] = kh * g->KW + kw;
        }
    }
    out->count = count;
}

/// Tile kinds: 8-lane vectors per pixel (1, 2 or 4), 4-lane (full or masked), or the 4×4 transposed form.
enum { K8x1 = 1, K8x2 = 2, K8x4 = 4, K4 = 5, K4MASKED = 6, K44 = 7 };

INLINE KT __m256 finish8(__m256 sum, __m256 b, const float *sc, int relu) {
    __m256 y = _mm256_add_ps(sum, b);
    if (sc) y = _mm256_add_ps(y, _mm256_loadu_ps(sc));
    // max(0, y) is (0 > y ? 0 : y): NaN and -0 pass through as in Swift's `v < 0 ? 0 : v`.
    return relu ? _mm256_max_ps(_mm256_setzero_ps(), y) : y;
}

INLINE KT __m128 load4(const float *p, const int masked, __m128i mask) {
    return masked ? _mm_maskload_ps(p, mask) : _mm_loadu_ps(p);
}

INLINE KT void finish4(__m128 sum, __m128 b, const float *sc, int relu, float *out, const int masked, __m128i mask) {
    __m128 y = _mm_add_ps(sum, b);
    if (sc) y = _mm_add_ps(y, load4(sc, masked, mask));
    if (relu) y = _mm_max_ps(_mm_setzero_ps(), y);
    if (masked) _mm_maskstore_ps(out, mask, y);
    else _mm_storeu_ps(out, y);
}

/// P pixels from (n, oh, ow) on, 8·NV channels from og0, over the taps in `tp` (offset by `shift`).
INLINE KT void tile8(const job *j, const taps *tp, ptrdiff_t shift, ptrdiff_t at, ptrdiff_t og0, const int NV, const int P) {
    const ptrdiff_t Cg = j->Cg, Og = j->Og, O = j->g->O, step = j->g->SW * j->g->C;
    __m256 acc[4][16];
    for (int v = 0; v < NV; v++) for (int p = 0; p < P; p++) acc[v][p] = _mm256_setzero_ps();
    // One pixel has only NV accumulators, too few to hide the FMA latency: S partial sums over i.
    const int S = NV == 1 ? 4 : NV == 2 ? 3 : 2;
    __m256 part[4][4];
    if (P == 1) for (int s = 0; s < S; s++) for (int v = 0; v < NV; v++) part[s][v] = _mm256_setzero_ps();
    for (int k = 0; k < tp->count; k++) {
        const float *x = j->src + (tp->x[k] + shift);
        const float *wt = j->weights + tp->t[k] * Cg * Og + og0;
        if (P == 1) {
            ptrdiff_t i = 0;
            for (; i + S <= Cg; i += S)
                for (int s = 0; s < S; s++) {
                    const __m256 xb = _mm256_broadcast_ss(x + i + s);
                    for (int v = 0; v < NV; v++)
                        part[s][v] = _mm256_fmadd_ps(_mm256_loadu_ps(wt + (i + s) * Og + 8 * v), xb, part[s][v]);
                }
            for (; i < Cg; i++) {
                const __m256 xb = _mm256_broadcast_ss(x + i);
                for (int v = 0; v < NV; v++) acc[v][0] = _mm256_fmadd_ps(_mm256_loadu_ps(wt + i * Og + 8 * v), xb, acc[v][0]);
            }
        } else if (NV * P + NV + 1 <= P8_REGS) {
            // Weights held, inputs streamed.
            for (ptrdiff_t i = 0; i < Cg; i++) {
                __m256 wv[4];
                for (int v = 0; v < NV; v++) wv[v] = _mm256_loadu_ps(wt + i * Og + 8 * v);
                for (int p = 0; p < P; p++) {
                    const __m256 xb = _mm256_broadcast_ss(x + p * step + i);
                    for (int v = 0; v < NV; v++) acc[v][p] = _mm256_fmadd_ps(wv[v], xb, acc[v][p]);
                }
            }
        } else {
            // Inputs held, weights streamed.
            for (ptrdiff_t i = 0; i < Cg; i++) {
                __m256 xb[16];
                for (int p = 0; p < P; p++) xb[p] = _mm256_broadcast_ss(x + p * step + i);
                for (int v = 0; v < NV; v++) {
                    const __m256 wv = _mm256_loadu_ps(wt + i * Og + 8 * v);
                    for (int p = 0; p < P; p++) acc[v][p] = _mm256_fmadd_ps(wv, xb[p], acc[v][p]);
                }
            }
        }
    }
    if (P == 1)
        for (int s = 0; s < S; s++)
            for (int v = 0; v < NV; v++) acc[v][0] = _mm256_add_ps(acc[v][0], part[s][v]);
    for (int v = 0; v < NV; v++) {
        const __m256 b = _mm256_loadu_ps(j->bias + og0 + 8 * v);
        for (int p = 0; p < P; p++) {
            const ptrdiff_t o = at + p * O + og0 + 8 * v;
            _mm256_storeu_ps(j->dst + o, finish8(acc[v][p], b, j->shortcut ? j->shortcut + o : NULL, j->relu));
        }
    }
}

/// `tile8` with one 4-lane vector, the lanes past Og masked off when `masked`.
INLINE KT void tile4(const job *j, const taps *tp, ptrdiff_t shift, ptrdiff_t at, ptrdiff_t og0,
                     const int P, const int masked, __m128i mask) {
    const ptrdiff_t Cg = j->Cg, Og = j->Og, O = j->g->O, step = j->g->SW * j->g->C;
    __m128 acc[16], part[4];
    for (int p = 0; p < P; p++) acc[p] = _mm_setzero_ps();
    for (int s = 0; s < 4; s++) part[s] = _mm_setzero_ps();
    for (int k = 0; k < tp->count; k++) {
        const float *x = j->src + (tp->x[k] + shift);
        const float *wt = j->weights + tp->t[k] * Cg * Og + og0;
        if (P == 1) {
            ptrdiff_t i = 0;
            for (; i + 4 <= Cg; i += 4)
                for (int s = 0; s < 4; s++)
                    part[s] = _mm_fmadd_ps(load4(wt + (i + s) * Og, masked, mask), _mm_broadcast_ss(x + i + s), part[s]);
            for (; i < Cg; i++) acc[0] = _mm_fmadd_ps(load4(wt + i * Og, masked, mask), _mm_broadcast_ss(x + i), acc[0]);
            continue;
        }
        for (ptrdiff_t i = 0; i < Cg; i++) {
            const __m128 wv = load4(wt + i * Og, masked, mask);
            for (int p = 0; p < P; p++) acc[p] = _mm_fmadd_ps(wv, _mm_broadcast_ss(x + p * step + i), acc[p]);
        }
    }
    if (P == 1) acc[0] = _mm_add_ps(_mm_add_ps(acc[0], _mm_add_ps(part[0], part[1])), _mm_add_ps(part[2], part[3]));
    const __m128 b = load4(j->bias + og0, masked, mask);
    for (int p = 0; p < P; p++) {
        const ptrdiff_t o = at + p * O + og0;
        finish4(acc[p], b, j->shortcut ? j->shortcut + o : NULL, j->relu, j->dst + o, masked, mask);
    }
}

/// Cg = Og = 4 through the transposed weights: per tap, the [o0 | o1] and [o2 | o3] rows of four i
/// times the pixel's four inputs repeated in both halves.
INLINE KT void tile44(const job *j, const taps *tp, ptrdiff_t shift, ptrdiff_t at, const int P) {
    const ptrdiff_t O = j->g->O, step = j->g->SW * j->g->C;
    __m256 a[16][2];
    for (int p = 0; p < P; p++) a[p][0] = a[p][1] = _mm256_setzero_ps();
    for (int k = 0; k < tp->count; k++) {
        const float *x = j->src + (tp->x[k] + shift);
        const float *t = j->t44 + tp->t[k] * 16;
        const __m256 w0 = _mm256_loadu_ps(t), w1 = _mm256_loadu_ps(t + 8);
        for (int p = 0; p < P; p++) {
            const __m256 xb = _mm256_broadcast_ps((const __m128 *)(x + p * step));
            a[p][0] = _mm256_fmadd_ps(w0, xb, a[p][0]);
            a[p][1] = _mm256_fmadd_ps(w1, xb, a[p][1]);
        }
    }
    const __m128 b = _mm_loadu_ps(j->bias);
    for (int p = 0; p < P; p++) {
        // [o0 o0 o2 o2 | o1 o1 o3 o3] partial pairs, then [o0 o2 · · | o1 o3 · ·], then interleaved.
        __m256 s = _mm256_hadd_ps(a[p][0], a[p][1]);
        s = _mm256_hadd_ps(s, s);
        const __m128 sum = _mm_unpacklo_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        const ptrdiff_t o = at + p * O;
        finish4(sum, b, j->shortcut ? j->shortcut + o : NULL, j->relu, j->dst + o, 0, _mm_setzero_si128());
    }
}

INLINE KT void tile(const job *j, const taps *tp, ptrdiff_t shift, ptrdiff_t at, ptrdiff_t og0,
                    const int kind, const int P, __m128i mask) {
    switch (kind) {
    case K8x1: tile8(j, tp, shift, at, og0, 1, P); break;
    case K8x2: tile8(j, tp, shift, at, og0, 2, P); break;
    case K8x4: tile8(j, tp, shift, at, og0, 4, P); break;
    case K4: tile4(j, tp, shift, at, og0, P, 0, mask); break;
    case K4MASKED: tile4(j, tp, shift, at, og0, P, 1, mask); break;
    default: tile44(j, tp, shift, at, P); break;
    }
}

typedef void (*tile_fn)(const job *, const taps *, ptrdiff_t, ptrdiff_t, ptrdiff_t, __m128i);

/// Each tile shape as its own function: with several inlined into one loop, the register allocator
/// moved the accumulators through the stack on every iteration.
#define TILE(name, kind, P)                                                                               \
    static __attribute__((noinline)) KT void name(const job *j, const taps *tp, ptrdiff_t shift,          \
                                                  ptrdiff_t at, ptrdiff_t og0, __m128i mask) {            \
        tile(j, tp, shift, at, og0, kind, P, mask);                                                       \
    }
#define SHAPE(name, kind, P) TILE(name##_full, kind, P) TILE(name##_half, kind, ((P) >= 4 ? (P) / 2 : 1)) TILE(name##_one, kind, 1)
SHAPE(t8x4, K8x4, P8X4)
SHAPE(t8x2, K8x2, P8X2)
SHAPE(t8x1, K8x1, P8X1)
SHAPE(t4, K4, P4)
SHAPE(t4masked, K4MASKED, 4)
SHAPE(t44, K44, P44)

/// One output row for one run of channels: tiles of P interior pixels, then of P / 2, the rest one by
/// one with their taps checked. Interior columns [first, last] are those whose every tap lies inside the row.
static KT void span(const job *j, const taps *row, ptrdiff_t n, ptrdiff_t oh, ptrdiff_t first, ptrdiff_t last,
                    ptrdiff_t og0, int P, tile_fn full, tile_fn half, tile_fn one, __m128i mask) {
    const ckernels_grouped_geometry *g = j->g;
    const ptrdiff_t rowAt = (n * g->OH + oh) * g->OW * g->O, step = g->SW * g->C;
    ptrdiff_t ow = 0;
    while (ow < g->OW) {
        if (ow >= first && ow + P - 1 <= last) {
            full(j, row, ow * step, rowAt + ow * g->O, og0, mask);
            ow += P;
        } else if (P >= 4 && ow >= first && ow + P / 2 - 1 <= last) {
            half(j, row, ow * step, rowAt + ow * g->O, og0, mask);
            ow += P / 2;
        } else {
            taps own;
            find_taps(j, n, oh, ow, 1, &own);
            one(j, &own, 0, rowAt + ow * g->O, og0, mask);
            ow += 1;
        }
    }
}

KT void GROUPED_ENTRY(const ckernels_grouped_geometry *g, ptrdiff_t row_begin, ptrdiff_t row_end, ptrdiff_t group,
                      const float *src, const float *weights, const float *bias, const float *shortcut, int relu,
                      float *dst) {
    const ptrdiff_t Cg = g->C / g->G, Og = g->O / g->G, count = g->KH * g->KW;
    job j = {
        .g = g, .Cg = Cg, .Og = Og,
        .src = src + group * Cg, .weights = weights + group * count * Cg * Og, .bias = bias + group * Og,
        .shortcut = shortcut ? shortcut + group * Og : NULL, .dst = dst + group * Og, .relu = relu, .t44 = NULL,
    };
    float t44[CKERNELS_GROUPED_MAX_TAPS * 16];
    if (Cg == 4 && Og == 4) {
        for (ptrdiff_t t = 0; t < count; t++)
            for (int o = 0; o < 4; o++)
                for (int i = 0; i < 4; i++) t44[t * 16 + o * 4 + i] = j.weights[t * 16 + i * 4 + o];
        j.t44 = t44;
    }
    // Output columns whose every tap lies inside the row: ow·SW - PL >= 0 and ow·SW - PL + (KW-1)·DW <= W - 1.
    const ptrdiff_t first = (g->PL + g->SW - 1) / g->SW;
    const ptrdiff_t reach = g->W - 1 - (g->KW - 1) * g->DW + g->PL;
    const ptrdiff_t last = reach < 0 ? -1 : (reach / g->SW < g->OW - 1 ? reach / g->SW : g->OW - 1);
    const __m128i none = _mm_setzero_si128();
    // Lanes 0 ..< Og % 4 of the last vector.
    const __m128i mask = _mm_cmpgt_epi32(_mm_set1_epi32((int)(Og % 4)), _mm_setr_epi32(0, 1, 2, 3));
    for (ptrdiff_t r = row_begin; r < row_end; r++) {
        const ptrdiff_t n = r / g->OH, oh = r % g->OH;
        taps row;
        find_taps(&j, n, oh, 0, 0, &row);
#define SPAN(name, P, og0, mask) span(&j, &row, n, oh, first, last, og0, P, name##_full, name##_half, name##_one, mask)
        if (j.t44) {
            SPAN(t44, P44, 0, none);
            continue;
        }
        ptrdiff_t og0 = 0;
        for (; og0 + 32 <= Og; og0 += 32) SPAN(t8x4, P8X4, og0, none);
        for (; og0 + 16 <= Og; og0 += 16) SPAN(t8x2, P8X2, og0, none);
        for (; og0 + 8 <= Og; og0 += 8) SPAN(t8x1, P8X1, og0, none);
        for (; og0 + 4 <= Og; og0 += 4) SPAN(t4, P4, og0, none);
        if (og0 < Og) SPAN(t4masked, 4, og0, mask);
#undef SPAN
    }
}
