/* The entropy coders' interface (see entropy.c for the stream layout). */
#ifndef BL_ENTROPY_H
#define BL_ENTROPY_H

#include "internal.h"

/* Encode n (context, symbol) pairs; alphabet[c] is the alphabet size of context c (<= 256). */
int rans_encode(const uint8_t *ctx, const uint8_t *sym, size_t n, const uint16_t *alphabet, bl_out *out);
int rans_decode_init(rans_model **model, rans_dec *d, bl_in *in, const uint16_t *alphabet);
int rans_decode_finish(const rans_dec *d);
void rans_model_free(rans_model *m);

/* The uniform stream: symbol sym[i] of n[i] values in lane lane[i]; u32 W, W x u16 words (the 32 final states
 * first). The kernels' urans_tile decodes it. */
int urans_encode(const uint16_t *n, const uint16_t *sym, const uint8_t *lane, size_t count, bl_out *out);
int urans_decode_init(urans_dec *d, bl_in *in);     /* d->words is the decoder's copy: free() it */
int urans_decode_finish(const urans_dec *d);

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
