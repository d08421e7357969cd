/* The avx2 copy of kernels.inc, with the float32 cell pass and the rANS decoders written out in intrinsics. */
#include "kernels.h"

#if defined(__x86_64__)
#pragma GCC target("avx2,bmi2,lzcnt")
#include <immintrin.h>
#define K(name) name##_avx2
#define K_SIMD_CELLS_F32
#define K_SIMD_URANS
#include "kernels.inc"

/* Lanes 0..7 of a mask vector for elements j..j+7 that exist (below n). */
static inline __m256i tile_lanes8(size_t j, size_t n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    size_t left = j < n ? n - j : 0;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(left < 8 ? left : 8)), lane);
}

/* Unsigned v < limit, lane by lane (AVX2 compares signed). */
static inline __m256i below_u32(__m256i v, __m256i limit) {
    const __m256i flip = _mm256_set1_epi32((int)0x80000000u);
    return _mm256_cmpgt_epi32(_mm256_xor_si256(limit, flip), _mm256_xor_si256(v, flip));
}

/* The lanes in `more` take the next words in lane order: lane i takes word popcount(more below i). The indices
 * are the bytes 0, 1, 2, ... deposited at the set lanes (pdep), which permute the 8 words widened to 32 bits. */
static inline __m256i refill(__m256i x, __m256i more, const uint8_t **wp) {
    unsigned bits = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(more));
    uint64_t bytes = _pdep_u64(bits, 0x0101010101010101ull) * 0xFF;
    __m256i at = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)_pdep_u64(0x0706050403020100ull, bytes)));
    __m256i words = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)*wp));
    __m256i next = _mm256_permutevar8x32_epi32(words, at);
    *wp += 2 * (unsigned)__builtin_popcount(bits);
    return _mm256_blendv_epi8(x, _mm256_or_si256(_mm256_slli_epi32(x, 16), next), more);
}

/* The 32 lane states as four vectors of 8, and back. */
static inline void load_lanes(const uint32_t *state, __m256i x[4]) {
    for (int v = 0; v < 4; v++) x[v] = _mm256_loadu_si256((const __m256i *)(state + 8 * v));
}
static inline void store_lanes(const __m256i x[4], uint32_t *state) {
    for (int v = 0; v < 4; v++) _mm256_storeu_si256((__m256i *)(state + 8 * v), x[v]);
}

/* 8 rANS lanes, those in `valid`, each decoding the entry of `tables` at `at` (an in-table index in every lane):
 * rans_lanes of the avx512 path, 8 lanes wide. */
static inline __attribute__((always_inline)) __m256i
rans_lanes8(__m256i x, __m256i valid, __m256i at, const uint32_t *tables, const uint8_t **wp, uint32_t *out) {
    const __m256i mask12 = _mm256_set1_epi32(RANS_TOTAL - 1), mask8 = _mm256_set1_epi32(0xFF);
    const __m256i one = _mm256_set1_epi32(1), low = _mm256_set1_epi32((int)RANS_L);
    __m256i e = _mm256_i32gather_epi32((const int *)(const void *)tables, at, 4);
    _mm256_maskstore_epi32((int *)(void *)out, valid, _mm256_and_si256(e, mask8));
    __m256i f = _mm256_add_epi32(_mm256_srli_epi32(e, 20), one);
    __m256i bias = _mm256_and_si256(_mm256_srli_epi32(e, 8), mask12);
    __m256i v = _mm256_add_epi32(_mm256_mullo_epi32(f, _mm256_srli_epi32(x, RANS_PROB_BITS)), bias);
    __m256i more = _mm256_and_si256(valid, below_u32(v, low));
    x = _mm256_blendv_epi8(x, v, valid);
    return refill(x, more, wp);
}

/* A tile of one context, symbol j in lane j % 32: four vectors of 8 lanes. The caller guarantees 2 n + 64
 * readable bytes of words. */
void rans_tile_avx2(uint32_t *state, const uint8_t **words, const uint32_t *slot, size_t n, uint32_t *out) {
    const __m256i mask12 = _mm256_set1_epi32(RANS_TOTAL - 1);
    const uint8_t *wp = *words;
    __m256i x[4];
    load_lanes(state, x);
    for (size_t j = 0; j < n; j += RANS_LANES)
        for (int v = 0; v < 4; v++) {
            size_t at = j + 8 * (size_t)v;
            x[v] = rans_lanes8(x[v], tile_lanes8(at, n), _mm256_and_si256(x[v], mask12), slot, &wp, out + at);
        }
    store_lanes(x, state);
    *words = wp;
}

/* Symbols of mixed contexts: each lane reads its context's table; an element of no context has no symbol. */
void rans_mixed_avx2(uint32_t *state, const uint8_t **words, const uint32_t *tables, const uint32_t *context,
                     size_t n, uint32_t *out) {
    const __m256i mask12 = _mm256_set1_epi32(RANS_TOTAL - 1), none = _mm256_set1_epi32((int)RANS_NO_CONTEXT);
    const uint8_t *wp = *words;
    __m256i x[4];
    load_lanes(state, x);
    for (size_t j = 0; j < n; j += RANS_LANES)
        for (int v = 0; v < 4; v++) {
            size_t at = j + 8 * (size_t)v;
            __m256i valid = tile_lanes8(at, n);
            __m256i c = _mm256_maskload_epi32((const int *)(const void *)(context + at), valid);
            valid = _mm256_andnot_si256(_mm256_cmpeq_epi32(c, none), valid);
            if (_mm256_testz_si256(valid, valid)) continue;
            __m256i index = _mm256_or_si256(_mm256_slli_epi32(c, RANS_PROB_BITS), _mm256_and_si256(x[v], mask12));
            x[v] = rans_lanes8(x[v], valid, _mm256_and_si256(index, valid), tables, &wp, out + at);
        }
    store_lanes(x, state);
    *words = wp;
}

/* One vector of 8 uniform lanes over elements j..j+7 (those below n); urans_vector of the avx512 path. */
static inline __attribute__((always_inline)) __m256i
urans_vector8(__m256i x, const uint32_t *flag, const uint32_t *count, size_t j, size_t n, const uint8_t **wp,
              uint32_t *index) {
    const __m256i mask12 = _mm256_set1_epi32(RANS_TOTAL - 1), one = _mm256_set1_epi32(1);
    const __m256i two = _mm256_set1_epi32(2), most = _mm256_set1_epi32(URANS_MAX), low = _mm256_set1_epi32((int)RANS_L);
    const __m256i total = _mm256_set1_epi32(RANS_TOTAL);
    __m256i valid = tile_lanes8(j, n);
    __m256i fl = _mm256_maskload_epi32((const int *)(const void *)(flag + j), valid);
    __m256i c = _mm256_maskload_epi32((const int *)(const void *)(count + j), valid);
    __m256i act = _mm256_and_si256(_mm256_and_si256(valid, _mm256_cmpeq_epi32(fl, _mm256_setzero_si256())),
                                   _mm256_and_si256(_mm256_cmpeq_epi32(_mm256_max_epu32(c, two), c),
                                                    _mm256_cmpeq_epi32(_mm256_min_epu32(c, most), c)));
    if (_mm256_testz_si256(act, act)) return x;
    __m256i nn = _mm256_blendv_epi8(one, c, act);
    __m256 nf = _mm256_cvtepi32_ps(nn);
    __m256i slot = _mm256_and_si256(x, mask12);
    __m256i sym = _mm256_srli_epi32(_mm256_mullo_epi32(slot, nn), RANS_PROB_BITS);
    __m256i a0 = _mm256_slli_epi32(sym, RANS_PROB_BITS), a1 = _mm256_add_epi32(a0, total);
    __m256i q0 = _mm256_cvttps_epi32(_mm256_div_ps(_mm256_cvtepi32_ps(a0), nf));
    __m256i q1 = _mm256_cvttps_epi32(_mm256_div_ps(_mm256_cvtepi32_ps(a1), nf));
    /* where q n != a, one more (masks are -1: subtract them) */
    q0 = _mm256_sub_epi32(q0, _mm256_xor_si256(_mm256_cmpeq_epi32(_mm256_mullo_epi32(q0, nn), a0), _mm256_set1_epi32(-1)));
    q1 = _mm256_sub_epi32(q1, _mm256_xor_si256(_mm256_cmpeq_epi32(_mm256_mullo_epi32(q1, nn), a1), _mm256_set1_epi32(-1)));
    __m256i v = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_sub_epi32(q1, q0), _mm256_srli_epi32(x, RANS_PROB_BITS)),
                                 _mm256_sub_epi32(slot, q0));
    __m256i more = _mm256_and_si256(act, below_u32(v, low));
    x = _mm256_blendv_epi8(x, v, act);
    x = refill(x, more, wp);
    _mm256_maskstore_epi32((int *)(void *)(index + j), act, sym);
    return x;
}

/* Four vectors of 8 lanes (elements j..j+31 in lanes 0..31). */
void urans_tile_avx2(urans_dec *d, const uint32_t *flag, const uint32_t *count, size_t n, uint32_t *index) {
    const uint8_t *wp = d->wp;
    __m256i x[4];
    load_lanes(d->x, x);
    for (size_t j = 0; j < n; j += URANS_LANES)
        for (int v = 0; v < 4; v++) x[v] = urans_vector8(x[v], flag, count, j + 8 * (size_t)v, n, &wp, index);
    store_lanes(x, d->x);
    d->wp = wp;
}

void cells_f32_avx2(const void *vals, size_t n, int bf16, float s, int max_code, int tz,
                    uint32_t *flag, uint32_t *first, uint32_t *count, uint32_t *sign) {
    const __m256 vs = _mm256_set1_ps(s), half = _mm256_set1_ps(0.5f), big = _mm256_set1_ps(0x1p23f);
    const __m256 limit = _mm256_set1_ps(256.0f);
    const __m256i magnitude = _mm256_set1_epi32(0x7FFFFFFF), one = _mm256_set1_epi32(1), zero = _mm256_setzero_si256();
    const __m256i top = _mm256_set1_epi32(max_code), round_up = _mm256_set1_epi32((int)((1u << tz) - 1));
    const __m256i sign_bit = _mm256_set1_epi32((int)0x80000000u), two = _mm256_set1_epi32(2);
    const __m128i shift = _mm_cvtsi32_si128(tz);
    const __m256i ceil16 = _mm256_set1_epi32(0xFFFF);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = bf16 ? _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)vals + i))), 16)
                         : _mm256_loadu_si256((const __m256i *)((const uint32_t *)vals + i));
        __m256 a = _mm256_castsi256_ps(_mm256_and_si256(v, magnitude));
        __m256 q = _mm256_div_ps(a, vs);
        __m256i inside = _mm256_castps_si256(_mm256_cmp_ps(q, limit, _CMP_LT_OQ));
        __m256 r = _mm256_sub_ps(_mm256_add_ps(_mm256_and_ps(q, _mm256_castsi256_ps(inside)), big), big);
        __m256i k = _mm256_cvttps_epi32(r);
        __m256i down = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(a, _mm256_mul_ps(_mm256_sub_ps(r, half), vs), _CMP_LT_OQ)),
                                        _mm256_cmpgt_epi32(k, zero));
        __m256i up = _mm256_castps_si256(_mm256_cmp_ps(a, _mm256_mul_ps(_mm256_add_ps(r, half), vs), _CMP_GE_OQ));
        k = _mm256_sub_epi32(_mm256_add_epi32(k, down), up);          /* masks are -1: subtract down, add up */
        __m256i escaped = _mm256_or_si256(_mm256_xor_si256(inside, _mm256_set1_epi32(-1)), _mm256_cmpgt_epi32(k, top));
        __m256i is_k0 = _mm256_cmpeq_epi32(k, zero);
        __m256 kk = _mm256_cvtepi32_ps(k);
        __m256i lo = _mm256_andnot_si256(is_k0, _mm256_castps_si256(_mm256_mul_ps(_mm256_sub_ps(kk, half), vs)));
        __m256i hi = _mm256_castps_si256(_mm256_mul_ps(_mm256_add_ps(kk, half), vs));
        if (bf16) {                                                      /* the bf16 patterns of the cell */
            lo = _mm256_srli_epi32(_mm256_add_epi32(lo, ceil16), 16);
            hi = _mm256_srli_epi32(_mm256_add_epi32(hi, ceil16), 16);
        }
        __m256i fl = _mm256_srl_epi32(_mm256_add_epi32(lo, round_up), shift);
        __m256i la = _mm256_srl_epi32(_mm256_add_epi32(hi, round_up), shift);
        __m256i is_zero = _mm256_andnot_si256(escaped, is_k0);
        __m256i f = _mm256_andnot_si256(escaped, _mm256_blendv_epi8(fl, la, is_zero));
        __m256i c = _mm256_blendv_epi8(_mm256_sub_epi32(la, fl), one, _mm256_or_si256(escaped, is_zero));
        __m256i negative = _mm256_andnot_si256(_mm256_or_si256(escaped, is_k0), _mm256_srai_epi32(v, 31));
        __m256i fg = _mm256_blendv_epi8(_mm256_and_si256(is_zero, one), two, escaped);
        _mm256_storeu_si256((__m256i *)(first + i), f);
        _mm256_storeu_si256((__m256i *)(count + i), c);
        _mm256_storeu_si256((__m256i *)(sign + i), _mm256_and_si256(negative, sign_bit));
        _mm256_storeu_si256((__m256i *)(flag + i), fg);
    }
    if (i < n) cells_f32_scalar((const uint8_t *)vals + i * (bf16 ? 2 : 4), n - i, bf16, s, max_code, tz, flag + i, first + i,
                                count + i, sign + i);
}
#endif
