/* The avx2 copy of kernels.inc, with the float32 cell pass written out in intrinsics. */
#include "kernels.h"

#if defined(__x86_64__)
#pragma GCC target("avx2,bmi2,lzcnt")
#include <immintrin.h>
#define K(name) name##_avx2
#define K_SIMD_CELLS_F32
#include "kernels.inc"

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
