// SHA-256 compression (FIPS 180-4, section 6.2.2) on the x86 SHA extensions.
//
// How the instructions are used (from their definitions in the Intel SDM):
// - SHA256RNDS2 runs two rounds. It takes the working variables split over two registers,
//   {A,B,E,F} and {C,D,G,H} (A/C in the top lane, F/H in the bottom one), plus W[t]+K[t] for
//   the two rounds in the low 64 bits of a third, and returns the new {A,B,E,F}. After two
//   rounds the new {C,D,G,H} is exactly the old {A,B,E,F}, so alternating the two registers
//   as destination runs four rounds with no extra moves.
// - SHA256MSG1 adds sigma0 of the following word to each of four schedule words, SHA256MSG2
//   adds sigma1 of the words two back (with the chain inside its four results); together with
//   the W[t-7] term (an ALIGNR of two schedule registers) they give W[t..t+3] for t >= 16.
#include "csha256.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>

int csha256_hw_available(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int ssse3 = (c >> 9) & 1, sse41 = (c >> 19) & 1;
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    const int sha = (b >> 29) & 1;
    return ssse3 && sse41 && sha;
}

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define HW __attribute__((target("sha,ssse3,sse4.1")))

// Four rounds t..t+3 with schedule words `w` (W[t] in the low lane).
#define FOUR_ROUNDS(w, t)                                                        \
    do {                                                                         \
        __m128i wk = _mm_add_epi32((w), _mm_loadu_si128((const __m128i *)&K[t])); \
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);                            \
        wk = _mm_shuffle_epi32(wk, 0x0E);                                        \
        abef = _mm_sha256rnds2_epu32(abef, cdgh, wk);                            \
    } while (0)

// The next four schedule words from the previous sixteen (w0 oldest).
#define NEXT_WORDS(w0, w1, w2, w3) \
    _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32((w0), (w1)), _mm_alignr_epi8((w3), (w2), 4)), (w3))

HW void csha256_hw_blocks(uint32_t state[8], const uint8_t *data, size_t blocks) {
    // Message words are big-endian: reverse the bytes within each 32-bit lane.
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    // state[0..3] = a b c d, state[4..7] = e f g h (lane 0 first) -> {A,B,E,F}, {C,D,G,H}.
    __m128i abcd = _mm_loadu_si128((const __m128i *)&state[0]);
    __m128i efgh = _mm_loadu_si128((const __m128i *)&state[4]);
    __m128i badc = _mm_shuffle_epi32(abcd, 0xB1);   // lanes b a d c
    __m128i hgfe = _mm_shuffle_epi32(efgh, 0x1B);   // lanes h g f e
    __m128i abef = _mm_alignr_epi8(badc, hgfe, 8);  // lanes f e b a
    __m128i cdgh = _mm_blend_epi16(hgfe, badc, 0xF0); // lanes h g d c

    for (size_t n = 0; n < blocks; n++, data += 64) {
        const __m128i saved_abef = abef, saved_cdgh = cdgh;
        __m128i w0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 0)), bswap);
        __m128i w1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16)), bswap);
        __m128i w2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 32)), bswap);
        __m128i w3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 48)), bswap);
        FOUR_ROUNDS(w0, 0);
        FOUR_ROUNDS(w1, 4);
        FOUR_ROUNDS(w2, 8);
        FOUR_ROUNDS(w3, 12);
        for (int t = 16; t < 64; t += 16) {
            w0 = NEXT_WORDS(w0, w1, w2, w3); FOUR_ROUNDS(w0, t);
            w1 = NEXT_WORDS(w1, w2, w3, w0); FOUR_ROUNDS(w1, t + 4);
            w2 = NEXT_WORDS(w2, w3, w0, w1); FOUR_ROUNDS(w2, t + 8);
            w3 = NEXT_WORDS(w3, w0, w1, w2); FOUR_ROUNDS(w3, t + 12);
        }
        abef = _mm_add_epi32(abef, saved_abef);
        cdgh = _mm_add_epi32(cdgh, saved_cdgh);
    }

    __m128i abef_r = _mm_shuffle_epi32(abef, 0x1B);  // lanes a b e f
    __m128i cdgh_r = _mm_shuffle_epi32(cdgh, 0xB1);  // lanes g h c d
    abcd = _mm_blend_epi16(abef_r, cdgh_r, 0xF0);     // lanes a b c d
    efgh = _mm_alignr_epi8(cdgh_r, abef_r, 8);        // lanes e f g h
    _mm_storeu_si128((__m128i *)&state[0], abcd);
    _mm_storeu_si128((__m128i *)&state[4], efgh);
}

#else

int csha256_hw_available(void) { return 0; }
void csha256_hw_blocks(uint32_t state[8], const uint8_t *data, size_t blocks) {
    (void)state; (void)data; (void)blocks;
}

#endif
