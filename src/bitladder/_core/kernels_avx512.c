/* The avx512 copy of kernels.inc, with the float32 cell pass written out in intrinsics. */
#include "kernels.h"

#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,bmi2,lzcnt")
#include <immintrin.h>
#define K(name) name##_avx512
#define K_SIMD_CELLS_F32
#define K_SIMD_URANS
#define K_SIMD_RECON_F16
#include "kernels.inc"

/* The lanes of symbols j..j+15 that exist (below n). */
static inline __mmask16 tile_lanes(size_t j, size_t n) {
    return j + 16 <= n ? (__mmask16)0xFFFF : j < n ? (__mmask16)((1u << (n - j)) - 1) : 0;
}

/* 16 rANS lanes, those in `valid`, each decoding the entry of `tables` at `at`: step the state, and let the lanes
 * that fell below L take the next words in lane order (an expand of the next 16), as the scalar loop does. */
static inline __attribute__((always_inline)) __m512i
rans_lanes(__m512i x, __mmask16 valid, __m512i at, const uint32_t *tables, const uint8_t **wp, uint32_t *out) {
    const __m512i mask12 = _mm512_set1_epi32(RANS_TOTAL - 1), mask8 = _mm512_set1_epi32(0xFF);
    const __m512i one = _mm512_set1_epi32(1), low = _mm512_set1_epi32((int)RANS_L);
    __m512i e = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, at, (const void *)tables, 4);
    _mm512_mask_storeu_epi32(out, valid, _mm512_and_si512(e, mask8));
    __m512i f = _mm512_add_epi32(_mm512_srli_epi32(e, 20), one);
    __m512i bias = _mm512_and_si512(_mm512_srli_epi32(e, 8), mask12);
    __m512i v = _mm512_add_epi32(_mm512_mullo_epi32(f, _mm512_srli_epi32(x, RANS_PROB_BITS)), bias);
    __mmask16 more = valid & _mm512_cmplt_epu32_mask(v, low);
    __m512i next = _mm512_maskz_expand_epi32(more, _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)*wp)));
    x = _mm512_mask_mov_epi32(x, valid, v);
    x = _mm512_mask_or_epi32(x, more, _mm512_slli_epi32(x, 16), next);
    *wp += 2 * (unsigned)__builtin_popcount((unsigned)more);
    return x;
}

static inline __attribute__((always_inline)) __m512i
rans_vector(__m512i x, const uint32_t *slot, size_t j, size_t n, const uint8_t **wp, uint32_t *out) {
    __m512i at = _mm512_and_si512(x, _mm512_set1_epi32(RANS_TOTAL - 1));
    return rans_lanes(x, tile_lanes(j, n), at, slot, wp, out + j);
}

/* Symbols of mixed contexts: each lane reads its context's table; an element of no context has no symbol. */
static inline __attribute__((always_inline)) __m512i
rans_mixed_vector(__m512i x, const uint32_t *tables, const uint32_t *context, size_t j, size_t n, const uint8_t **wp,
                  uint32_t *out) {
    __mmask16 valid = tile_lanes(j, n);
    __m512i c = _mm512_maskz_loadu_epi32(valid, context + j);
    valid &= _mm512_cmpneq_epi32_mask(c, _mm512_set1_epi32((int)RANS_NO_CONTEXT));
    if (!valid) return x;
    __m512i at = _mm512_or_si512(_mm512_slli_epi32(c, RANS_PROB_BITS), _mm512_and_si512(x, _mm512_set1_epi32(RANS_TOTAL - 1)));
    return rans_lanes(x, valid, at, tables, wp, out + j);
}

void rans_mixed_avx512(uint32_t *state, const uint8_t **words, const uint32_t *tables, const uint32_t *context,
                       size_t n, uint32_t *out) {
    const uint8_t *wp = *words;
    __m512i xa = _mm512_loadu_si512(state), xb = _mm512_loadu_si512(state + 16);
    for (size_t j = 0; j < n; j += RANS_LANES) {
        xa = rans_mixed_vector(xa, tables, context, j, n, &wp, out);
        xb = rans_mixed_vector(xb, tables, context, j + 16, n, &wp, out);
    }
    _mm512_storeu_si512(state, xa);
    _mm512_storeu_si512(state + 16, xb);
    *words = wp;
}

/* A tile of one context, symbol j in lane j % 32: two vectors of 16 lanes side by side, so that their dependency
 * chains overlap. The caller guarantees 2 n + 64 readable bytes of words. */
void rans_tile_avx512(uint32_t *state, const uint8_t **words, const uint32_t *slot, size_t n, uint32_t *out) {
    const uint8_t *wp = *words;
    __m512i xa = _mm512_loadu_si512(state), xb = _mm512_loadu_si512(state + 16);
    for (size_t j = 0; j < n; j += RANS_LANES) {
        xa = rans_vector(xa, slot, j, n, &wp, out);
        xb = rans_vector(xb, slot, j + 16, n, &wp, out);
    }
    _mm512_storeu_si512(state, xa);
    _mm512_storeu_si512(state + 16, xb);
    *words = wp;
}

/* The finest-grid codes of 16 magnitudes (codes_tile's IEEE operations); `escaped`: not finite or beyond max_code. */
static inline __attribute__((always_inline)) __m512i
code_vector(__m512 a, __m512 vs, int max_code, __mmask16 *escaped) {
    const __m512 half = _mm512_set1_ps(0.5f), big = _mm512_set1_ps(0x1p23f), limit = _mm512_set1_ps(256.0f);
    const __m512i one = _mm512_set1_epi32(1), zero = _mm512_setzero_si512();
    __m512 q = _mm512_div_ps(a, vs);
    __mmask16 inside = _mm512_cmp_ps_mask(q, limit, _CMP_LT_OQ);
    __m512 r = _mm512_sub_ps(_mm512_add_ps(_mm512_maskz_mov_ps(inside, q), big), big);
    __m512i k = _mm512_cvttps_epi32(r);
    __mmask16 down = _mm512_cmp_ps_mask(a, _mm512_mul_ps(_mm512_sub_ps(r, half), vs), _CMP_LT_OQ) &
                     _mm512_cmpgt_epi32_mask(k, zero);
    __mmask16 up = _mm512_cmp_ps_mask(a, _mm512_mul_ps(_mm512_add_ps(r, half), vs), _CMP_GE_OQ);
    k = _mm512_mask_sub_epi32(k, down, k, one);
    k = _mm512_mask_add_epi32(k, up, k, one);
    *escaped = (__mmask16)(~inside | _mm512_cmpgt_epi32_mask(k, _mm512_set1_epi32(max_code)));
    return _mm512_maskz_mov_epi32((__mmask16)~*escaped, k);            /* cells_tile takes an escape as code 0 */
}

/* Flag, first sub-cell, count and sign of 16 elements from their cells [lo, hi) in target patterns (see kernels.inc
 * cells_f32). */
static inline __attribute__((always_inline)) void
store_cells(size_t i, __mmask16 valid, __m512i k, __m512i lo, __m512i hi, __mmask16 escaped, __mmask16 negative,
            __m512i sign_value, int tz, uint32_t *flag, uint32_t *first, uint32_t *count, uint32_t *sign) {
    const __m512i one = _mm512_set1_epi32(1), two = _mm512_set1_epi32(2), zero = _mm512_setzero_si512();
    const __m512i round_up = _mm512_set1_epi32((int)((1u << tz) - 1));
    const __m128i shift = _mm_cvtsi32_si128(tz);
    __mmask16 nonzero = _mm512_cmpneq_epi32_mask(k, zero);
    __m512i fl = _mm512_srl_epi32(_mm512_add_epi32(_mm512_maskz_mov_epi32(nonzero, lo), round_up), shift);
    __m512i la = _mm512_srl_epi32(_mm512_add_epi32(hi, round_up), shift);
    __mmask16 is_zero = (__mmask16)(~escaped & ~nonzero);
    __m512i f = _mm512_mask_mov_epi32(fl, is_zero, la);
    f = _mm512_mask_mov_epi32(f, escaped, zero);
    __m512i c = _mm512_mask_mov_epi32(_mm512_sub_epi32(la, fl), (__mmask16)(escaped | is_zero), one);
    __m512i fg = _mm512_mask_mov_epi32(_mm512_maskz_mov_epi32(is_zero, one), escaped, two);
    _mm512_mask_storeu_epi32(flag + i, valid, fg);
    _mm512_mask_storeu_epi32(first + i, valid, f);
    _mm512_mask_storeu_epi32(count + i, valid, c);
    _mm512_mask_storeu_epi32(sign + i, valid, _mm512_maskz_mov_epi32(negative & nonzero & (__mmask16)~escaped, sign_value));
}

void cells_f32_avx512(const void *vals, size_t n, int bf16, float s, int max_code, int tz,
                      uint32_t *flag, uint32_t *first, uint32_t *count, uint32_t *sign) {
    const __m512 vs = _mm512_set1_ps(s), half = _mm512_set1_ps(0.5f);
    const __m512i magnitude = _mm512_set1_epi32(0x7FFFFFFF), sign_bit = _mm512_set1_epi32((int)0x80000000u);
    const __m512i ceil16 = _mm512_set1_epi32(0xFFFF);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 valid = tile_lanes(i, n), escaped;
        __m512i v = bf16 ? _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(valid, (const uint16_t *)vals + i)), 16)
                         : _mm512_maskz_loadu_epi32(valid, (const uint32_t *)vals + i);
        __m512i k = code_vector(_mm512_castsi512_ps(_mm512_and_si512(v, magnitude)), vs, max_code, &escaped);
        __m512 kk = _mm512_cvtepi32_ps(k);
        __m512i lo = _mm512_castps_si512(_mm512_mul_ps(_mm512_sub_ps(kk, half), vs));
        __m512i hi = _mm512_castps_si512(_mm512_mul_ps(_mm512_add_ps(kk, half), vs));
        if (bf16) {                                                      /* the bf16 patterns of the cell */
            lo = _mm512_srli_epi32(_mm512_add_epi32(lo, ceil16), 16);
            hi = _mm512_srli_epi32(_mm512_add_epi32(hi, ceil16), 16);
        }
        store_cells(i, valid, k, lo, hi, escaped, _mm512_test_epi32_mask(v, sign_bit), sign_bit, tz, flag, first, count,
                    sign);
    }
}

/* One vector of 16 uniform lanes over elements j..j+15 (those below n); see urans_tile in kernels.inc. */
static inline __attribute__((always_inline)) __m512i
urans_vector(__m512i x, const uint32_t *flag, const uint32_t *count, size_t j, size_t n, const uint8_t **wp,
             uint32_t *index) {
    const __m512i mask12 = _mm512_set1_epi32(RANS_TOTAL - 1), one = _mm512_set1_epi32(1);
    const __m512i two = _mm512_set1_epi32(2), most = _mm512_set1_epi32(URANS_MAX), low = _mm512_set1_epi32((int)RANS_L);
    const __m512i total = _mm512_set1_epi32(RANS_TOTAL);
    __mmask16 valid = tile_lanes(j, n);
    __m512i fl = _mm512_maskz_loadu_epi32(valid, flag + j), c = _mm512_maskz_loadu_epi32(valid, count + j);
    __mmask16 act = valid & _mm512_cmpeq_epi32_mask(fl, _mm512_setzero_si512()) & _mm512_cmpge_epu32_mask(c, two) &
                    _mm512_cmple_epu32_mask(c, most);
    if (!act) return x;
    __m512i nn = _mm512_mask_mov_epi32(one, act, c);
    __m512 nf = _mm512_cvtepi32_ps(nn);
    __m512i slot = _mm512_and_si512(x, mask12);
    __m512i sym = _mm512_srli_epi32(_mm512_mullo_epi32(slot, nn), RANS_PROB_BITS);
    __m512i a0 = _mm512_slli_epi32(sym, RANS_PROB_BITS), a1 = _mm512_add_epi32(a0, total);
    __m512i q0 = _mm512_cvttps_epi32(_mm512_div_ps(_mm512_cvtepi32_ps(a0), nf));
    __m512i q1 = _mm512_cvttps_epi32(_mm512_div_ps(_mm512_cvtepi32_ps(a1), nf));
    q0 = _mm512_mask_add_epi32(q0, _mm512_cmpneq_epi32_mask(_mm512_mullo_epi32(q0, nn), a0), q0, one);
    q1 = _mm512_mask_add_epi32(q1, _mm512_cmpneq_epi32_mask(_mm512_mullo_epi32(q1, nn), a1), q1, one);
    __m512i v = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_sub_epi32(q1, q0), _mm512_srli_epi32(x, RANS_PROB_BITS)),
                                 _mm512_sub_epi32(slot, q0));
    __mmask16 more = act & _mm512_cmplt_epu32_mask(v, low);
    __m512i next = _mm512_maskz_expand_epi32(more, _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)*wp)));
    x = _mm512_mask_mov_epi32(x, act, v);
    x = _mm512_mask_or_epi32(x, more, _mm512_slli_epi32(x, 16), next);
    *wp += 2 * (unsigned)__builtin_popcount((unsigned)more);
    _mm512_mask_storeu_epi32(index + j, act, sym);
    return x;
}

/* Two vectors of 16 lanes side by side (elements j..j+15 in lanes 0..15, j+16..j+31 in lanes 16..31), so that
 * their dependency chains overlap. */
void urans_tile_avx512(urans_dec *d, const uint32_t *flag, const uint32_t *count, size_t n, uint32_t *index) {
    const uint8_t *wp = d->wp;
    __m512i xa = _mm512_loadu_si512(d->x), xb = _mm512_loadu_si512(d->x + 16);
    for (size_t j = 0; j < n; j += URANS_LANES) {
        xa = urans_vector(xa, flag, count, j, n, &wp, index);
        xb = urans_vector(xb, flag, count, j + 16, n, &wp, index);
    }
    _mm512_storeu_si512(d->x, xa);
    _mm512_storeu_si512(d->x + 16, xb);
    d->wp = wp;
}
/* recon for a float16 tile: vcvtps2ph rounds to nearest even (overflow to infinity), as f32_to_f16 does; the values
 * are finite. Escaped elements keep what the caller stored. */
void recon_f16_avx512(const int32_t *codes, size_t n, float s, int32_t factor, uint16_t *out) {
    const __m512 vs = _mm512_set1_ps(s);
    const __m512i vf = _mm512_set1_epi32(factor), esc = _mm512_set1_epi32(BL_ESC);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 valid = tile_lanes(i, n);
        __m512i c = _mm512_maskz_loadu_epi32(valid, codes + i);
        __mmask16 keep = valid & (__mmask16)~_mm512_cmpeq_epi32_mask(c, esc);
        __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_mullo_epi32(c, vf)), vs);
        __m256i h = _mm512_cvt_roundps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_mask_storeu_epi16(out + i, keep, h);
    }
}

/* Smallest float16 magnitudes whose values are >= the positive float32 magnitudes t (ceil_mag for F16): convert
 * toward zero, then step up where that fell below t (above 65504 it gives 0x7BFF, which steps up to infinity). */
static inline __attribute__((always_inline)) __m512i ceil_f16(__m512 t) {
    __m256i h = _mm512_cvt_roundps_ph(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m512i wide = _mm512_cvtepu16_epi32(h);
    __mmask16 below = _mm512_cmp_ps_mask(_mm512_cvtph_ps(h), t, _CMP_LT_OQ);
    return _mm512_mask_add_epi32(wide, below, wide, _mm512_set1_epi32(1));
}

/* cells_f32's pass for a float16 source (int -> exact): the same codes on the widened values (exact), cells in
 * float16 patterns as codes_tile + cells_tile + tile_cells compute them; the sign is bit 15. */
void cells_f16_avx512(const uint16_t *vals, size_t n, float s, int max_code, int tz,
                      uint32_t *flag, uint32_t *first, uint32_t *count, uint32_t *sign) {
    const __m512 vs = _mm512_set1_ps(s), half = _mm512_set1_ps(0.5f);
    const __m512i magnitude = _mm512_set1_epi32(0x7FFFFFFF), sign_bit = _mm512_set1_epi32((int)0x80000000u);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 valid = tile_lanes(i, n), escaped;
        __m512i v = _mm512_castps_si512(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(valid, vals + i)));
        __m512i k = code_vector(_mm512_castsi512_ps(_mm512_and_si512(v, magnitude)), vs, max_code, &escaped);
        __m512 kk = _mm512_cvtepi32_ps(k);
        __m512i lo = ceil_f16(_mm512_mul_ps(_mm512_sub_ps(kk, half), vs));
        __m512i hi = ceil_f16(_mm512_mul_ps(_mm512_add_ps(kk, half), vs));
        store_cells(i, valid, k, lo, hi, escaped, _mm512_test_epi32_mask(v, sign_bit), _mm512_set1_epi32(0x8000), tz,
                    flag, first, count, sign);
    }
}
#endif
