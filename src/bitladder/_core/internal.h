/* Shared inline helpers of the core: float bit conversions, the bit stream, the interleaved rANS coder. */
#ifndef BL_INTERNAL_H
#define BL_INTERNAL_H

#include <string.h>

#include "bl.h"

#define BL_ESC INT32_MIN     /* code of an escaped element (non-finite, or beyond the top cell) */
#define BL_TILE 256          /* elements per kernel call: the passes run in L1 */

/* ---- float bit patterns -------------------------------------------------------------------------------- */

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline uint32_t f16_to_f32(uint32_t h) {
    uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    if (exp == 0x1F) return sign | 0x7F800000u | (man << 13);
    if (exp) return sign | ((exp + 112) << 23) | (man << 13);
    if (!man) return sign;
    int shift = 0;            /* subnormal: normalise the mantissa */
    while (!(man & 0x400)) { man <<= 1; shift++; }
    return sign | ((uint32_t)(113 - shift) << 23) | ((man & 0x3FF) << 13);
}

/* float32 -> float16, round to nearest even; NaN stays NaN (quiet), overflow is infinity. */
static inline uint32_t f32_to_f16(uint32_t x) {
    uint32_t sign = (x >> 16) & 0x8000u, mag = x & 0x7FFFFFFFu;
    if (mag > 0x7F800000u) return sign | 0x7E00u | ((mag >> 13) & 0x3FF);
    if (mag >= 0x477FF000u) return sign | 0x7C00u;            /* >= 65520 rounds to infinity */
    if (mag >= 0x38800000u) {                                 /* normal half */
        uint32_t r = mag - 0x38000000u;                       /* rebias 127 -> 15 */
        r += 0xFFFu + ((r >> 13) & 1);
        return sign | (r >> 13);
    }
    if (mag < 0x33000000u) return sign;                       /* below half the smallest subnormal */
    uint32_t e = mag >> 23, m = (mag & 0x7FFFFF) | 0x800000;
    uint32_t shift = 126 - e;                                 /* 14..24 */
    uint32_t half = m >> shift, rest = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rest > mid || (rest == mid && (half & 1))) half++;
    return sign | half;
}

/* float32 -> bfloat16, round to nearest even; NaN stays NaN (quiet). */
static inline uint32_t f32_to_bf16(uint32_t x) {
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (x >> 16) | 0x40u;
    return (x + 0x7FFFu + ((x >> 16) & 1)) >> 16;
}

/* The float32 value of a pattern of dtype d. */
static inline uint32_t widen(uint32_t bits, int d) {
    return d == BL_F32 ? bits : d == BL_BF16 ? bits << 16 : f16_to_f32(bits);
}
static inline uint32_t narrow(uint32_t f32bits, int d) {
    return d == BL_F32 ? f32bits : d == BL_BF16 ? f32_to_bf16(f32bits) : f32_to_f16(f32bits);
}
static inline int width_bits(int d) { return d == BL_F32 ? 32 : 16; }
static inline uint32_t sign_bit(int d) { return d == BL_F32 ? 0x80000000u : 0x8000u; }
static inline uint32_t inf_mag(int d) { return d == BL_F32 ? 0x7F800000u : d == BL_BF16 ? 0x7F80u : 0x7C00u; }

/* Smallest magnitude pattern of dtype d whose value is >= the positive float32 magnitude t. */
static inline uint32_t ceil_mag(uint32_t t, int d) {
    if (d == BL_F32) return t;
    if (d == BL_BF16) return (t + 0xFFFFu) >> 16;
    if (t > 0x477FE000u) return 0x7C00u;                      /* above the largest half, 65504 */
    uint32_t h;                                               /* truncate, then step up if below */
    if (t >= 0x38800000u) h = (t - 0x38000000u) >> 13;
    else if (t < 0x33800000u) h = 0;
    else { uint32_t e = t >> 23, m = (t & 0x7FFFFF) | 0x800000; h = m >> (126 - e); }
    if (f16_to_f32(h) < t) h++;
    return h;
}

static inline uint32_t load_bits(const void *p, size_t i, int d) {
    return d == BL_F32 ? ((const uint32_t *)p)[i] : ((const uint16_t *)p)[i];
}
static inline void store_bits(void *p, size_t i, int d, uint32_t v) {
    if (d == BL_F32) ((uint32_t *)p)[i] = v; else ((uint16_t *)p)[i] = (uint16_t)v;
}

/* ---- little-endian fields ------------------------------------------------------------------------------ */

typedef struct { const uint8_t *p, *end; } bl_in;
typedef struct { uint8_t *p, *end; } bl_out;

static inline int in_take(bl_in *in, size_t n, const uint8_t **at) {
    if ((size_t)(in->end - in->p) < n) return BL_E_TRUNCATED;
    *at = in->p; in->p += n; return BL_OK;
}
static inline int in_u32(bl_in *in, uint32_t *v) {
    const uint8_t *a; int rc = in_take(in, 4, &a); if (rc) return rc;
    *v = (uint32_t)a[0] | (uint32_t)a[1] << 8 | (uint32_t)a[2] << 16 | (uint32_t)a[3] << 24; return BL_OK;
}
static inline int out_put(bl_out *o, const void *src, size_t n) {
    if ((size_t)(o->end - o->p) < n) return BL_E_CAPACITY;
    memcpy(o->p, src, n); o->p += n; return BL_OK;
}
static inline int out_u32(bl_out *o, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return out_put(o, b, 4);
}

/* ---- bit stream: LSB first, 64-bit accumulator ---------------------------------------------------------- */

typedef struct { uint8_t *p, *end; uint64_t acc; int n; int overflow; } bl_bitw;
typedef struct { const uint8_t *p, *end; uint64_t acc; int n; const uint8_t *start; } bl_bitr;

static inline void bitw_put(bl_bitw *w, uint64_t v, int bits) {     /* bits <= 32 */
    w->acc |= v << w->n; w->n += bits;
    if (w->n < 32) return;
    if (w->end - w->p < 8) { w->overflow = 1; w->acc = 0; w->n = 0; return; }   /* 8 bytes at a time */
    memcpy(w->p, &w->acc, 8);
    w->p += w->n >> 3;
    w->acc >>= w->n & 56;                                             /* n >= 32: a shift of 32..56 */
    w->n &= 7;
}
static inline void bitw_flush(bl_bitw *w) {
    while (w->n > 0) {
        if (w->p == w->end) { w->overflow = 1; break; }
        *w->p++ = (uint8_t)w->acc; w->acc >>= 8; w->n -= 8;
    }
    w->acc = 0; w->n = 0;
}
/* The reader's buffer has readable zero padding past `end` (the decoder reads from a padded copy and checks where
 * the reader stands before it can run off the padding), so a refill never branches. Bits consumed so far:
 * 8 * (p - start) - n. */
static inline uint64_t bitr_peek(bl_bitr *r, int bits) {              /* bits <= 33 */
    uint64_t word;
    memcpy(&word, r->p, 8);
    r->acc |= word << r->n;
    r->p += (63 - r->n) >> 3;
    r->n |= 56;
    return r->acc & ((1ull << bits) - 1);
}
static inline void bitr_skip(bl_bitr *r, int bits) { r->acc >>= bits; r->n -= bits; }
static inline uint64_t bitr_get(bl_bitr *r, int bits) {
    uint64_t v = bitr_peek(r, bits);
    bitr_skip(r, bits);
    return v;
}

/* Truncated binary code of v in [0, n), n >= 1 (n < 2^34). */
static inline int bitlen64(uint64_t x) { return x ? 64 - __builtin_clzll(x) : 0; }
static inline void tb_put(bl_bitw *w, uint64_t v, uint64_t n) {
    int k = bitlen64(n) - 1;                      /* floor(log2 n) */
    uint64_t u = (2ull << k) - n;
    if (v < u) { if (k > 32) { bitw_put(w, v & 0xFFFFFFFFu, 32); bitw_put(w, v >> 32, k - 32); } else bitw_put(w, v, k); return; }
    uint64_t y = v + u;
    uint64_t x = y >> 1;
    if (k > 32) { bitw_put(w, x & 0xFFFFFFFFu, 32); bitw_put(w, x >> 32, k - 32); } else bitw_put(w, x, k);
    bitw_put(w, y & 1, 1);
}
static inline uint64_t tb_get(bl_bitr *r, uint64_t n) {
    int k = bitlen64(n) - 1;
    uint64_t u = (2ull << k) - n;
    if (k >= 32) {
        uint64_t x = bitr_get(r, 32) | bitr_get(r, k - 32) << 32;
        return x < u ? x : ((x << 1) | bitr_get(r, 1)) - u;
    }
    /* No branch on the data: peek k + 1 bits, keep the last one only for a long code. */
    uint64_t y = bitr_peek(r, k + 1), x = y & ((1ull << k) - 1);
    uint64_t wide = x >= u;
    bitr_skip(r, k + (int)wide);
    uint64_t longer = ((x << 1) | (y >> k)) - u;
    return wide ? longer : x;
}

/* ---- static interleaved rANS: 32 lanes, 32-bit states, 16-bit words, 12-bit probabilities ------------- */

#define RANS_LANES 32
#define RANS_PROB_BITS 12
#define RANS_TOTAL (1u << RANS_PROB_BITS)
#define RANS_L (1u << 16)
#define RANS_MAX_ALPHABET 256
#define RANS_CONTEXTS 256

typedef struct {                    /* an encoder's table for one context */
    uint16_t freq[RANS_MAX_ALPHABET], cum[RANS_MAX_ALPHABET + 1];
    double inverse[RANS_MAX_ALPHABET];
    uint16_t alphabet;
} rans_table;

/* A decoder's tables: per context, slot -> (freq-1) << 20 | (slot - cum) << 8 | symbol; NULL when absent. */
typedef struct { uint32_t *slot[RANS_CONTEXTS]; } rans_model;

typedef struct { uint32_t x[RANS_LANES]; const uint8_t *wp, *wend_p; uint64_t count; int starved; } rans_dec;

/* The uniform stream: symbol s of n equally likely values (2 <= n <= 4096) takes slots [cum(s), cum(s + 1)),
 * cum(s) = ceil(4096 s / n), no table sent; its own words, element j of a tile in lane j % 32. */
#define URANS_LANES RANS_LANES
#define URANS_MAX 4096
typedef struct { uint32_t x[URANS_LANES]; const uint8_t *wp, *wend_p; uint8_t *words; } urans_dec;
/* A tile takes at most one word per element; the decoder's copy of the words has room to read a tile past the end
 * (zeros), and the codec checks after each tile that the reader is still inside. */
#define URANS_PAD (2 * BL_TILE + 64)

/* cum(s) in binary32: s * 4096 <= 2^24 is exact, and the quotient, below 4096 unless s = n, is at least 1/n > half
 * an ulp from any integer it is not, so truncating it gives the floor and one product check gives the ceiling. The
 * SIMD decoders compute these same IEEE operations. */
static inline uint32_t uniform_cum(uint32_t s, uint32_t n) {
    uint32_t a = s << RANS_PROB_BITS, q = (uint32_t)(int32_t)((float)(int32_t)a / (float)(int32_t)n);  /* < 2^25 */
    return q + (q * n != a);
}

#endif
