/* The entropy coders' interface (see entropy.c for the stream layout). */
#ifndef BL_ENTROPY_H
#define BL_ENTROPY_H

#include "internal.h"

/* Encode n (context, symbol) pairs, pair i in lane lane[i] (NULL: lane i % 32); alphabet[c] is the alphabet size of
 * context c (<= 256). */
int rans_encode(const uint8_t *ctx, const uint8_t *sym, const uint8_t *lane, size_t n, const uint16_t *alphabet,
                bl_out *out);
int rans_decode_init(rans_model **model, rans_dec *d, bl_in *in, const uint16_t *alphabet);
int rans_decode_finish(const rans_dec *d);
void rans_model_free(rans_model *m);

/* The uniform stream: symbol sym[i] of n[i] values in lane lane[i]; u32 W, W x u16 words (the 32 final states
 * first). The kernels' urans_tile decodes it. */
int urans_encode(const uint16_t *n, const uint16_t *sym, const uint8_t *lane, size_t count, bl_out *out);
int urans_decode_init(urans_dec *d, bl_in *in);     /* d->words is the decoder's copy: free() it */
int urans_decode_finish(const urans_dec *d);

/* One symbol from a context's slot table, in lane `lane`. */
static inline void rans_step(rans_dec *d, unsigned lane, const uint32_t *slot, uint32_t *sym) {
    uint32_t *x = &d->x[lane % RANS_LANES];
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
}

/* One symbol of context c in lane `lane` (a context the stream has no table for: a corrupt stream). */
static inline int rans_get_in(const rans_model *m, rans_dec *d, unsigned lane, int c, uint32_t *sym) {
    if (!m->slot[c]) return BL_E_CORRUPT;
    rans_step(d, lane, m->slot[c], sym);
    return BL_OK;
}

/* The next symbol in stream order: symbol i of the stream in lane i % 32. */
static inline int rans_get(const rans_model *m, rans_dec *d, int c, uint32_t *sym) {
    return rans_get_in(m, d, (unsigned)(d->count++ % RANS_LANES), c, sym);
}

/* A tile of n (<= 256) symbols of context c, symbol j in lane j % 32 (the int codec's layout). With the words for all
 * of them and a SIMD kernel's overread at hand, the kernel runs; otherwise the checked loop. */
typedef void rans_tile_kernel(uint32_t *state, const uint8_t **words, const uint32_t *slot, size_t n, uint32_t *out);
static inline int rans_tile(const rans_model *m, rans_dec *d, int c, size_t n, uint32_t *out, rans_tile_kernel *simd) {
    if (!m->slot[c]) return BL_E_CORRUPT;
    if (simd && (size_t)(d->wend_p - d->wp) >= 2 * n + 64) {
        simd(d->x, &d->wp, m->slot[c], n, out);
        return BL_OK;
    }
    for (size_t j = 0; j < n; j++) rans_get_in(m, d, (unsigned)j, c, &out[j]);
    return BL_OK;
}

/* A tile whose symbols each take one of up to 4 contexts, their slot tables side by side in `tables`; symbol j (of
 * context context[j], or none where that is RANS_NO_CONTEXT) in lane j % 32. The int-int codec's layout. */
#define RANS_NO_CONTEXT 0xFFFFFFFFu
typedef void rans_mixed_kernel(uint32_t *state, const uint8_t **words, const uint32_t *tables, const uint32_t *context,
                               size_t n, uint32_t *out);
static inline void rans_tile_mixed(rans_dec *d, const uint32_t *tables, const uint32_t *context, size_t n,
                                   uint32_t *out, rans_mixed_kernel *simd) {
    if (simd && (size_t)(d->wend_p - d->wp) >= 2 * n + 64) {
        simd(d->x, &d->wp, tables, context, n, out);
        return;
    }
    for (size_t j = 0; j < n; j++)
        if (context[j] != RANS_NO_CONTEXT) rans_step(d, (unsigned)j, tables + (size_t)context[j] * RANS_TOTAL, &out[j]);
}

#endif
