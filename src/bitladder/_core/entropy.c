/* Static interleaved rANS (32 lanes, 32-bit states, 16-bit words, 12-bit probabilities), with up to 256
 * contexts of up to 256 symbols each. Stream layout, little-endian:
 *     u8 C; C x { u8 context, u16 alphabet A, u16 used U, U x { varint symbol gap, varint freq-1 } }
 *     u32 W; W x u16 words (the 32 final lane states first, low word first)
 * Frequencies of a context sum to 4096; the decoder checks that, and that every lane ends in the encoder's
 * start state with every word consumed, so a stream that decodes is the stream that was written. */
#include <stdlib.h>

#include "entropy.h"

static int put_varint(bl_out *o, uint32_t v) {
    uint8_t b[5]; int n = 0;
    do { b[n++] = (uint8_t)((v & 0x7F) | (v > 0x7F ? 0x80 : 0)); v >>= 7; } while (v);
    return out_put(o, b, (size_t)n);
}

static int get_varint(bl_in *in, uint32_t *v, uint32_t max) {
    uint32_t value = 0;
    for (int shift = 0; shift <= 14; shift += 7) {             /* at most 3 bytes: values < 2^21 */
        const uint8_t *b; int rc = in_take(in, 1, &b); if (rc) return rc;
        value |= (uint32_t)(*b & 0x7F) << shift;
        if (!(*b & 0x80)) { if (value > max) return BL_E_CORRUPT; *v = value; return BL_OK; }
    }
    return BL_E_CORRUPT;
}

/* Counts -> frequencies summing to 4096, every used symbol at least 1. */
static void normalize(const uint64_t *count, int alphabet, uint16_t *freq) {
    uint64_t total = 0; int used = 0, top = 0;
    for (int s = 0; s < alphabet; s++) { total += count[s]; if (count[s]) used++; if (count[s] > count[top]) top = s; }
    int32_t sum = 0;
    for (int s = 0; s < alphabet; s++) {
        freq[s] = 0;
        if (!count[s]) continue;
        uint64_t f = count[s] * RANS_TOTAL / total;
        freq[s] = (uint16_t)(f ? f : 1);
        sum += freq[s];
    }
    (void)used;
    if (sum < (int32_t)RANS_TOTAL) { freq[top] = (uint16_t)(freq[top] + RANS_TOTAL - (uint32_t)sum); return; }
    while (sum > (int32_t)RANS_TOTAL) {                          /* take from the largest, never below 1 */
        int big = 0;
        for (int s = 1; s < alphabet; s++) if (freq[s] > freq[big]) big = s;
        int32_t take = sum - (int32_t)RANS_TOTAL;
        if (take > freq[big] - 1) take = freq[big] - 1;
        freq[big] = (uint16_t)(freq[big] - take); sum -= take;
    }
}

/* Words of a finished encoder: the final states, then the renormalisation words the encoder pushed (it ran
 * backwards, so they sit in decode order from w on). */
static int put_words(bl_out *out, const uint32_t *x, int lanes, uint16_t *w, const uint16_t *end) {
    for (int l = lanes; l-- > 0;) { *--w = (uint16_t)(x[l] >> 16); *--w = (uint16_t)x[l]; }
    size_t count = (size_t)(end - w);
    int rc = out_u32(out, (uint32_t)count);
    for (size_t i = 0; !rc && i < count; i++) {
        uint8_t b[2] = {(uint8_t)w[i], (uint8_t)(w[i] >> 8)};
        rc = out_put(out, b, 2);
    }
    return rc;
}

int rans_encode(const uint8_t *ctx, const uint8_t *sym, const uint8_t *lane, size_t n, const uint16_t *alphabet,
                bl_out *out) {
    /* Tables only for the contexts the symbols use (a block uses a handful of the 256). */
    int16_t slot_of[RANS_CONTEXTS];
    int contexts = 0;
    memset(slot_of, 0xFF, sizeof slot_of);
    for (size_t i = 0; i < n; i++)
        if (slot_of[ctx[i]] < 0) slot_of[ctx[i]] = (int16_t)contexts++;
    uint64_t (*count)[RANS_MAX_ALPHABET] = calloc((size_t)contexts + 1, sizeof *count);
    rans_table *used_tab = calloc((size_t)contexts + 1, sizeof *used_tab);
    rans_table *tab[RANS_CONTEXTS] = {0};
    uint16_t *words = malloc((n + 2 * RANS_LANES) * sizeof *words);
    int rc = BL_E_NOMEM;
    if (!count || !used_tab || !words) goto done;
    for (size_t i = 0; i < n; i++) count[slot_of[ctx[i]]][sym[i]]++;
    for (int c = 0; c < RANS_CONTEXTS; c++) {
        if (slot_of[c] < 0) continue;
        rans_table *t = tab[c] = &used_tab[slot_of[c]];
        t->alphabet = alphabet[c];
        normalize(count[slot_of[c]], alphabet[c], t->freq);
        t->cum[0] = 0;
        for (int s = 0; s < alphabet[c]; s++) {
            t->cum[s + 1] = (uint16_t)(t->cum[s] + t->freq[s]);
            t->inverse[s] = t->freq[s] ? 1.0 / t->freq[s] : 0.0;
        }
    }
    uint8_t head = (uint8_t)contexts;
    if ((rc = out_put(out, &head, 1))) goto done;
    for (int c = 0; c < RANS_CONTEXTS; c++) {
        const rans_table *t = tab[c];
        if (!t) continue;
        int used = 0;
        for (int s = 0; s < t->alphabet; s++) used += t->freq[s] != 0;
        uint8_t h[5] = {(uint8_t)c, (uint8_t)t->alphabet, (uint8_t)(t->alphabet >> 8), (uint8_t)used, (uint8_t)(used >> 8)};
        if ((rc = out_put(out, h, 5))) goto done;
        int last = -1;
        for (int s = 0; s < t->alphabet; s++) {
            if (!t->freq[s]) continue;
            if ((rc = put_varint(out, (uint32_t)(s - last - 1))) || (rc = put_varint(out, t->freq[s] - 1u))) goto done;
            last = s;
        }
    }
    uint32_t x[RANS_LANES];
    for (int l = 0; l < RANS_LANES; l++) x[l] = RANS_L;
    uint16_t *w = words + n + 2 * RANS_LANES;
    for (size_t j = n; j-- > 0;) {
        uint32_t f, c, q, *s = &x[(lane ? lane[j] : j) % RANS_LANES];
        const rans_table *t = tab[ctx[j]];
        f = t->freq[sym[j]]; c = t->cum[sym[j]];
        if ((uint64_t)*s >= (uint64_t)f << (32 - RANS_PROB_BITS)) { *--w = (uint16_t)*s; *s >>= 16; }
        /* x / f by a double reciprocal, corrected to the exact quotient (a hardware divide per symbol is slow). */
        q = (uint32_t)((double)*s * t->inverse[sym[j]]);
        q -= (uint64_t)q * f > *s;
        q += (uint64_t)(q + 1) * f <= *s;
        *s = (q << RANS_PROB_BITS) + (*s - q * f) + c;
    }
    rc = put_words(out, x, RANS_LANES, w, words + n + 2 * RANS_LANES);
done:
    free(count); free(used_tab); free(words);
    return rc;
}

void rans_model_free(rans_model *m) {
    if (!m) return;
    for (int c = 0; c < RANS_CONTEXTS; c++) free(m->slot[c]);
    free(m);
}

int rans_decode_init(rans_model **model, rans_dec *d, bl_in *in, const uint16_t *alphabet) {
    rans_model *m = calloc(1, sizeof *m);
    if (!m) return BL_E_NOMEM;
    *model = m;
    const uint8_t *b; int rc;
    if ((rc = in_take(in, 1, &b))) return rc;
    int contexts = *b;
    for (int i = 0; i < contexts; i++) {
        const uint8_t *h;
        if ((rc = in_take(in, 5, &h))) return rc;
        int c = h[0], a = h[1] | h[2] << 8, used = h[3] | h[4] << 8;
        if (m->slot[c] || a < 1 || a != alphabet[c] || used < 1 || used > a) return BL_E_CORRUPT;
        uint32_t *slot = m->slot[c] = malloc(RANS_TOTAL * sizeof *slot);
        if (!slot) return BL_E_NOMEM;
        uint32_t cum = 0; int s = -1;
        for (int k = 0; k < used; k++) {
            uint32_t gap, f;
            if ((rc = get_varint(in, &gap, RANS_MAX_ALPHABET)) || (rc = get_varint(in, &f, RANS_TOTAL - 1))) return rc;
            s += (int)gap + 1; f += 1;
            if (s >= a || cum + f > RANS_TOTAL) return BL_E_CORRUPT;
            for (uint32_t j = 0; j < f; j++) slot[cum + j] = (f - 1) << 20 | j << 8 | (uint32_t)s;
            cum += f;
        }
        if (cum != RANS_TOTAL) return BL_E_CORRUPT;
    }
    uint32_t count;
    if ((rc = in_u32(in, &count))) return rc;
    if (count < 2 * RANS_LANES) return BL_E_CORRUPT;
    const uint8_t *w;
    if ((rc = in_take(in, (size_t)count * 2, &w))) return rc;
    d->wp = w; d->wend_p = w + (size_t)count * 2;
    for (int l = 0; l < RANS_LANES; l++) {
        uint32_t lo = (uint32_t)d->wp[0] | (uint32_t)d->wp[1] << 8, hi = (uint32_t)d->wp[2] | (uint32_t)d->wp[3] << 8;
        d->wp += 4;
        d->x[l] = lo | hi << 16;
        if (d->x[l] < RANS_L) return BL_E_CORRUPT;
    }
    d->count = 0;
    d->starved = 0;
    return BL_OK;
}

int rans_decode_finish(const rans_dec *d) {
    if (d->starved || d->wp != d->wend_p) return BL_E_CORRUPT;
    for (int l = 0; l < RANS_LANES; l++) if (d->x[l] != RANS_L) return BL_E_CORRUPT;
    return BL_OK;
}

int urans_encode(const uint16_t *n, const uint16_t *sym, const uint8_t *lane, size_t count, bl_out *out) {
    uint16_t *words = malloc((count + 2 * URANS_LANES) * sizeof *words);
    if (!words) return BL_E_NOMEM;
    uint32_t x[URANS_LANES];
    for (int l = 0; l < URANS_LANES; l++) x[l] = RANS_L;
    uint16_t *end = words + count + 2 * URANS_LANES, *w = end;
    for (size_t j = count; j-- > 0;) {
        uint32_t *s = &x[lane[j] % URANS_LANES], c = uniform_cum(sym[j], n[j]), f = uniform_cum(sym[j] + 1u, n[j]) - c;
        if ((uint64_t)*s >= (uint64_t)f << (32 - RANS_PROB_BITS)) { *--w = (uint16_t)*s; *s >>= 16; }
        uint32_t q = (uint32_t)((double)*s / (double)f);          /* exact: the fraction stays 1/f from 1 */
        *s = (q << RANS_PROB_BITS) + (*s - q * f) + c;
    }
    int rc = put_words(out, x, URANS_LANES, w, end);
    free(words);
    return rc;
}

int urans_decode_init(urans_dec *d, bl_in *in) {
    uint32_t count;
    const uint8_t *w;
    int rc;
    d->words = NULL;
    if ((rc = in_u32(in, &count))) return rc;
    if (count < 2 * URANS_LANES) return BL_E_CORRUPT;
    if ((rc = in_take(in, (size_t)count * 2, &w))) return rc;
    uint8_t *copy = d->words = malloc((size_t)count * 2 + URANS_PAD);
    if (!copy) return BL_E_NOMEM;
    memcpy(copy, w, (size_t)count * 2);
    memset(copy + (size_t)count * 2, 0, URANS_PAD);
    d->wend_p = copy + (size_t)count * 2;
    for (int l = 0; l < URANS_LANES; l++, copy += 4) {
        d->x[l] = ((uint32_t)copy[0] | (uint32_t)copy[1] << 8) | ((uint32_t)copy[2] | (uint32_t)copy[3] << 8) << 16;
        if (d->x[l] < RANS_L) return BL_E_CORRUPT;
    }
    d->wp = copy;
    return BL_OK;
}

int urans_decode_finish(const urans_dec *d) {
    if (d->wp != d->wend_p) return BL_E_CORRUPT;
    for (int l = 0; l < URANS_LANES; l++) if (d->x[l] != RANS_L) return BL_E_CORRUPT;
    return BL_OK;
}
