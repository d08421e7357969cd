/* The entropy coders' interface (see entropy.c for the stream layout). */
#ifndef BL_ENTROPY_H
#define BL_ENTROPY_H

#include "internal.h"

/* A context of no table: symbol s of n equally likely values (2 <= n <= 4096) takes slots [cum(s), cum(s + 1)),
 * cum(s) = ceil(4096 s / n), so the decoder finds s as (slot n) >> 12 and nothing is sent for the distribution. */
#define RANS_UNIFORM 253
#define RANS_UNIFORM_MAX 4096
#define RANS_UNIFORM_RCP 256   /* up to here cum() is a multiply by a reciprocal, above a double division */
static inline uint32_t uniform_cum(uint32_t s, uint32_t n) { return (s * RANS_TOTAL + n - 1) / n; }

/* Encode n (context, symbol) pairs; alphabet[c] is the alphabet size of context c (<= 256); a pair of context
 * RANS_UNIFORM codes usym[i] of uniform[i] values (both may be NULL when there are none). */
int rans_encode(const uint8_t *ctx, const uint8_t *sym, size_t n, const uint16_t *alphabet, const uint16_t *uniform,
                const uint16_t *usym, bl_out *out);
int rans_decode_init(rans_model **model, rans_dec *d, bl_in *in, const uint16_t *alphabet);
int rans_decode_finish(const rans_dec *d);
void rans_model_free(rans_model *m);

/* One symbol of context c (which must be present: the caller checks m->slot[c]). */
static inline int rans_get(const rans_model *m, rans_dec *d, int c, uint32_t *sym) {
    const uint32_t *slot = m->slot[c];
    if (!slot) return BL_E_CORRUPT;
    uint32_t *x = &d->x[d->count++ % RANS_LANES];
    uint32_t e = slot[*x & (RANS_TOTAL - 1)];
    *sym = e & 0xFF;
    uint32_t v = ((e >> 20) + 1) * (*x >> RANS_PROB_BITS) + ((e >> 8) & 0xFFF);
    /* Renormalise without a branch on the data: a word is taken when the state fell below L. */
    int left = d->wp < d->wend_p;
    uint32_t more = 0u - (uint32_t)(v < RANS_L);
    uint32_t word = left ? (uint32_t)d->wp[0] | (uint32_t)d->wp[1] << 8 : 0;
    *x = (v << (16 & more)) | (word & more);
    d->wp += 2 & more & (0u - (uint32_t)left);
    d->starved |= (int)(more & 1) & !left;
    return BL_OK;
}

/* A uniform symbol of n values (2..4096). For n <= 256, rcp = ceil(2^32 / n) makes cum() a multiply, exact for
 * arguments below 2^24; above, a double division is exact (the quotient's fraction stays 1/n away from 1). */
static inline uint32_t uniform_rcp(uint32_t n) { return (uint32_t)((0xFFFFFFFFull + n) / n); }
static inline uint32_t uniform_floor(uint32_t a, uint32_t n, uint32_t rcp) {
    return n <= RANS_UNIFORM_RCP ? (uint32_t)(((uint64_t)a * rcp) >> 32) : (uint32_t)((double)a / (double)n);
}
static inline void rans_uniform(rans_dec *d, uint32_t n, uint32_t rcp, uint32_t *sym) {
    uint32_t *x = &d->x[d->count++ % RANS_LANES];
    uint32_t slot = *x & (RANS_TOTAL - 1), s = (slot * n) >> RANS_PROB_BITS;
    uint32_t c0 = uniform_floor(s * RANS_TOTAL + n - 1, n, rcp);
    uint32_t c1 = uniform_floor((s + 1) * RANS_TOTAL + n - 1, n, rcp);
    uint32_t v = (c1 - c0) * (*x >> RANS_PROB_BITS) + slot - c0;
    int left = d->wp < d->wend_p;
    uint32_t more = 0u - (uint32_t)(v < RANS_L);
    uint32_t word = left ? (uint32_t)d->wp[0] | (uint32_t)d->wp[1] << 8 : 0;
    *x = (v << (16 & more)) | (word & more);
    d->wp += 2 & more & (0u - (uint32_t)left);
    d->starved |= (int)(more & 1) & !left;
    *sym = s;
}

/* n symbols of context c. When the stream holds a word for each of them (a symbol takes at most one), the loop
 * needs no bound check; otherwise it goes symbol by symbol. */
static inline int rans_run(const rans_model *m, rans_dec *d, int c, size_t n, uint32_t *out,
                           void (*simd)(uint32_t *, uint64_t *, const uint8_t **, const uint32_t *, size_t, uint32_t *)) {
    const uint32_t *slot = m->slot[c];
    if (!slot) return BL_E_CORRUPT;
    if (simd && (size_t)(d->wend_p - d->wp) >= 2 * n + 32) {
        simd(d->x, &d->count, &d->wp, slot, n, out);
        return BL_OK;
    }
    if ((size_t)(d->wend_p - d->wp) < 2 * n) {
        for (size_t i = 0; i < n; i++) { int rc = rans_get(m, d, c, &out[i]); if (rc) return rc; }
        return BL_OK;
    }
    const uint8_t *wp = d->wp;
    unsigned lane = (unsigned)(d->count % RANS_LANES);
    for (size_t i = 0; i < n; i++) {
        uint32_t x = d->x[lane];
        uint32_t e = slot[x & (RANS_TOTAL - 1)];
        out[i] = e & 0xFF;
        x = ((e >> 20) + 1) * (x >> RANS_PROB_BITS) + ((e >> 8) & 0xFFF);
        uint32_t word = (uint32_t)wp[0] | (uint32_t)wp[1] << 8;
        uint32_t more = 0u - (uint32_t)(x < RANS_L);     /* a mask, not a branch: the data decide it */
        d->x[lane] = (x << (16 & more)) | (word & more);
        wp += 2 & more;
        lane = (lane + 1) % RANS_LANES;
    }
    d->wp = wp;
    d->count += n;
    return BL_OK;
}

#endif
