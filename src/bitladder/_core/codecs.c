/* The block codecs: the payload of one chunk (one block of one tensor moving up one rung).
 *
 * Every rung's cells partition the cells of the rung before, and a refinement sends, per element, the index of
 * its sub-cell inside the cell the decoder already holds (docs/FORMAT.md, "Cells"). The decoder derives that
 * cell from the value it holds, so its whole state is the current values and the scales.
 *
 *   int        scales (u16 bf16 per touched row) | escapes | rANS(code + C)
 *   int-int    rANS(index of the finer code, context min(|coarse|, 3))
 *   refine     rANS(trailing-zero count per row segment; top 8 bits of zero-cell indices) | bits(indices)
 *   half       escapes | rANS(exponent) | bits(mantissa, sign)
 *   escapes    u32 count | u32 positions, increasing | source patterns
 *   bits       u32 byte length | bytes (LSB first; truncated binary codes)
 */
#include <math.h>
#include <stdlib.h>

#include "entropy.h"
#include "kernels.h"

#define CTX_TZ 255
#define CTX_ZERO 64
#define ZERO_TOP_BITS 8
#define CTX_SPREAD 254
#ifndef SPREADS
#define SPREADS 4
#endif
#ifndef SPREAD_SKIP
#define SPREAD_SKIP 2
#endif

/* Rows differ in how wide their codes spread (a row with an outlier has small codes): the encoder tells each row
 * segment's class, mean |code| in half octaves, and codes it with that class's table. */
static int spread_class(uint64_t total, uint64_t used) {
    if (!used) return 0;
    uint64_t mean = (2 * total + used) / (2 * used);          /* mean |code|, rounded */
    int c = bitlen64(mean) - SPREAD_SKIP;
    return c < 0 ? 0 : c >= SPREADS ? SPREADS - 1 : c;
}

uint64_t bl_block_rows(const bl_block *b) {
    if (!b->count || !b->columns) return 0;
    return (b->begin + b->count - 1) / b->columns - b->begin / b->columns + 1;
}

size_t bl_bound(const bl_block *b) { return (size_t)(16 * b->count + 4 * bl_block_rows(b) + 300000); }

static int check_block(const bl_block *b) {
    if (b->dtype != BL_F32 && b->dtype != BL_F16 && b->dtype != BL_BF16) return BL_E_ARGUMENT;
    if (b->inner != BL_NONE && (b->dtype != BL_F32 || (b->inner != BL_F16 && b->inner != BL_BF16))) return BL_E_ARGUMENT;
    if (b->max_code < 1 || b->max_code > 127 || !b->columns || b->count > ((uint64_t)1 << 32)) return BL_E_ARGUMENT;
    return BL_OK;
}

/* The dtype int codes are taken in, and the scale range in which every cell holds its reconstruction point
 * (so the decoder can find a value's cell from the value: proven for M <= 127, checked by bl_scales). */
static int code_dtype(const bl_block *b) { return b->inner != BL_NONE ? b->inner : b->dtype; }
static void scale_range(int cdt, uint16_t *lo, uint16_t *hi) {
    if (cdt == BL_F16) { *lo = 0x3580; *hi = 0x4400; }          /* 2^-20 .. 512 */
    else { *lo = 0x0D80; *hi = 0x7180; }                         /* 2^-100 .. 2^100 */
}
static int scale_value(const bl_block *b, uint16_t s16, float *s) {
    uint16_t lo, hi;
    scale_range(code_dtype(b), &lo, &hi);
    if (s16 < lo || s16 > hi) return BL_E_SCALE;
    *s = u2f((uint32_t)s16 << 16);
    return BL_OK;
}

/* Iterate over the row segments of a block: [start, end) relative to the block, with its row's offset. */
typedef struct { uint64_t row, start, end; } segment;
static int next_segment(const bl_block *b, segment *g) {
    uint64_t at = g->end;
    if (at >= b->count) return 0;
    uint64_t global = b->begin + at;
    g->row = global / b->columns - b->begin / b->columns;
    uint64_t row_end = (global / b->columns + 1) * b->columns - b->begin;
    g->start = at;
    g->end = row_end < b->count ? row_end : b->count;
    return 1;
}

/* ---- int codes of coarser rungs: a function of the finest code --------------------------------------- */

static int32_t coarse_code(int32_t k, int32_t factor, int32_t top) {
    int32_t a = k < 0 ? -k : k, j = (a + (factor - 1) / 2) / factor;
    if (j > top) j = top;
    return k < 0 ? -j : j;
}

/* Range of finest codes [kmin, kmax] that coarse code j >= 0 covers. */
static void coarse_range(int32_t j, int32_t factor, int32_t top, int32_t max_code, int32_t *kmin, int32_t *kmax) {
    int32_t half = (factor - 1) / 2;
    *kmin = j ? j * factor - half : -half;
    *kmax = j == top ? max_code : j * factor + half;
}

static int check_factor(const bl_block *b, int32_t factor) {
    return factor >= 1 && (factor & 1) && factor <= b->max_code ? BL_OK : BL_E_ARGUMENT;
}

int bl_scales(const bl_block *b, const void *src, uint16_t *scales) {
    int rc = check_block(b);
    if (rc) return rc;
    const bl_kernels *k = bl_kernels_now();
    int cdt = code_dtype(b);
    uint16_t lo, hi;
    scale_range(cdt, &lo, &hi);
    segment g = {0, 0, 0};
    int32_t codes[128];
    uint32_t probe[128];
    while (next_segment(b, &g)) {
        float peak = 0.0f;
        for (uint64_t i = g.start; i < g.end; i++) {
            uint32_t f = widen(load_bits(src, i, b->dtype), b->dtype);
            if (b->inner != BL_NONE) f = widen(narrow(f, b->inner), b->inner);
            float a = u2f(f & 0x7FFFFFFFu);
            if ((f & 0x7FFFFFFFu) < 0x7F800000u && a > peak) peak = a;   /* finite values only */
        }
        uint32_t q = f2u(peak / (float)b->max_code);
        uint32_t s16 = (q + 0xFFFFu) >> 16;                           /* bf16, rounded up */
        if (s16 < lo) s16 = lo;
        if (s16 > hi) s16 = hi;
        /* Every reconstruction point must fall in its own cell, after rounding to the source dtype. */
        for (;;) {
            float s = u2f(s16 << 16);
            for (int32_t c = 0; c <= b->max_code; c++) {
                uint32_t v = narrow(f2u((float)c * s), b->dtype);
                probe[c] = v;
            }
            int32_t *out = codes;
            if (b->dtype == BL_F32) k->codes(probe, (size_t)b->max_code + 1, BL_F32, b->inner, s, b->max_code, out);
            else {
                uint16_t p16[128];
                for (int32_t c = 0; c <= b->max_code; c++) p16[c] = (uint16_t)probe[c];
                k->codes(p16, (size_t)b->max_code + 1, b->dtype, b->inner, s, b->max_code, out);
            }
            int ok = 1;
            for (int32_t c = 0; c <= b->max_code; c++) ok &= codes[c] == c;
            if (ok) break;
            if (s16 >= hi) return BL_E_SCALE;
            s16 += 0x80;                                              /* double it */
        }
        scales[g.row] = (uint16_t)s16;
    }
    return BL_OK;
}

/* ---- escapes ----------------------------------------------------------------------------------------- */

static int put_escapes(bl_out *o, const bl_block *b, const void *src, const int32_t *codes) {
    uint32_t n = 0;
    for (uint64_t i = 0; i < b->count; i++) n += codes[i] == BL_ESC;
    int rc = out_u32(o, n);
    for (uint64_t i = 0; !rc && i < b->count; i++) if (codes[i] == BL_ESC) rc = out_u32(o, (uint32_t)i);
    int w = width_bits(b->dtype) / 8;
    for (uint64_t i = 0; !rc && i < b->count; i++) {
        if (codes[i] != BL_ESC) continue;
        uint32_t v = load_bits(src, i, b->dtype);
        uint8_t by[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
        rc = out_put(o, by, (size_t)w);
    }
    return rc;
}

typedef struct { const uint8_t *pos, *val; uint32_t n, next; } escapes;

static int get_escapes(bl_in *in, const bl_block *b, escapes *e) {
    int rc = in_u32(in, &e->n);
    if (rc) return rc;
    if (e->n > b->count) return BL_E_CORRUPT;
    int w = width_bits(b->dtype) / 8;
    if ((rc = in_take(in, (size_t)e->n * 4, &e->pos)) || (rc = in_take(in, (size_t)e->n * (size_t)w, &e->val))) return rc;
    uint64_t last = 0;
    for (uint32_t i = 0; i < e->n; i++) {
        const uint8_t *p = e->pos + 4 * i;
        uint64_t at = (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24;
        if (at >= b->count || (i && at <= last)) return BL_E_CORRUPT;
        last = at;
    }
    e->next = 0;
    return BL_OK;
}

static int is_escape(const escapes *e, uint64_t i, const bl_block *b, uint32_t *value) {
    if (e->next >= e->n) return 0;
    const uint8_t *p = e->pos + 4 * e->next;
    uint64_t at = (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24;
    if (at != i) return 0;
    const uint8_t *v = e->val + (size_t)e->next * (size_t)(width_bits(b->dtype) / 8);
    *value = b->dtype == BL_F32 ? (uint32_t)v[0] | (uint32_t)v[1] << 8 | (uint32_t)v[2] << 16 | (uint32_t)v[3] << 24
                                : (uint32_t)v[0] | (uint32_t)v[1] << 8;
    return 1;
}

/* Whether the next escape lies before element `end`. */
static int escape_within(const escapes *e, uint64_t end) {
    if (e->next >= e->n) return 0;
    const uint8_t *p = e->pos + 4 * e->next;
    return ((uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24) < end;
}

/* Codes of the finest grid for a whole block, from values in the source dtype (source or held). */
static int block_codes(const bl_block *b, const void *vals, const uint16_t *scales, int32_t *codes) {
    const bl_kernels *k = bl_kernels_now();
    int w = width_bits(b->dtype) / 8;
    segment g = {0, 0, 0};
    while (next_segment(b, &g)) {
        float s;
        int rc = scale_value(b, scales[g.row], &s);
        if (rc) return rc;
        for (uint64_t t = g.start; t < g.end; t += BL_TILE) {
            uint64_t n = g.end - t < BL_TILE ? g.end - t : BL_TILE;
            k->codes((const uint8_t *)vals + t * (uint64_t)w, (size_t)n, b->dtype, b->inner, s, b->max_code, codes + t);
        }
    }
    return BL_OK;
}

/* ---- scales: u8 mode, then (mode 0) a u16 per row, or (mode 1) rANS: per row its high byte (context 0), then
 * its low byte (context 1). The encoder keeps whichever is shorter: a few rows do not pay for two tables. */

static int put_scales(bl_out *o, const uint16_t *scales, uint64_t rows) {
    uint8_t *sym = malloc(2 * rows + 1), *ctx = malloc(2 * rows + 1);
    size_t cap = 4 * rows + 2 * 1100 + 64;
    uint8_t *coded = malloc(cap);
    uint16_t alphabet[RANS_CONTEXTS] = {256, 256};
    int rc = BL_E_NOMEM;
    if (!sym || !ctx || !coded) goto done;
    for (uint64_t r = 0; r < rows; r++) {
        sym[2 * r] = (uint8_t)(scales[r] >> 8); ctx[2 * r] = 0;
        sym[2 * r + 1] = (uint8_t)scales[r]; ctx[2 * r + 1] = 1;
    }
    bl_out c = {coded, coded + cap};
    int entropy = rans_encode(ctx, sym, NULL, 2 * rows, alphabet, &c) == BL_OK && (uint64_t)(c.p - coded) < 2 * rows;
    uint8_t mode = (uint8_t)entropy;
    if ((rc = out_put(o, &mode, 1))) goto done;
    if (entropy) { rc = out_put(o, coded, (size_t)(c.p - coded)); goto done; }
    for (uint64_t r = 0; !rc && r < rows; r++) {
        uint8_t v[2] = {(uint8_t)scales[r], (uint8_t)(scales[r] >> 8)};
        rc = out_put(o, v, 2);
    }
done:
    free(sym); free(ctx); free(coded);
    return rc;
}

static int get_scales(bl_in *in, uint16_t *scales, uint64_t rows) {
    const uint8_t *mode, *p;
    int rc = in_take(in, 1, &mode);
    if (rc) return rc;
    if (*mode == 0) {
        if ((rc = in_take(in, 2 * rows, &p))) return rc;
        for (uint64_t r = 0; r < rows; r++) scales[r] = (uint16_t)(p[2 * r] | p[2 * r + 1] << 8);
        return BL_OK;
    }
    if (*mode != 1) return BL_E_CORRUPT;
    uint16_t alphabet[RANS_CONTEXTS] = {256, 256};
    rans_model *m = NULL;
    rans_dec d;
    if ((rc = rans_decode_init(&m, &d, in, alphabet))) goto done;
    for (uint64_t r = 0; !rc && r < rows; r++) {
        uint32_t high, low;
        if (!(rc = rans_get(m, &d, 0, &high)) && !(rc = rans_get(m, &d, 1, &low))) scales[r] = (uint16_t)(high << 8 | low);
    }
    if (!rc) rc = rans_decode_finish(&d);
done:
    rans_model_free(m);
    return rc;
}

/* ---- int: the first int rung ------------------------------------------------------------------------- */

int64_t bl_int_encode(const bl_block *b, int factor, const void *src, const uint16_t *scales, uint8_t *out, size_t cap) {
    int rc = check_block(b);
    if (rc || (rc = check_factor(b, factor))) return rc;
    uint64_t rows = bl_block_rows(b), row0 = b->begin / b->columns;
    int32_t *codes = malloc(b->count * sizeof *codes + 1);
    uint8_t *sym = malloc(b->count + rows + 1), *ctx = malloc(b->count + rows + 1), *lane = malloc(b->count + rows + 1);
    bl_out o = {out, out + cap};
    int32_t top = b->max_code / factor;
    uint16_t alphabet[RANS_CONTEXTS] = {0};
    for (int c = 0; c < SPREADS; c++) alphabet[c] = (uint16_t)(2 * top + 1);
    alphabet[CTX_SPREAD] = SPREADS;
    size_t n = 0;
    if (!codes || !sym || !ctx || !lane) { rc = BL_E_NOMEM; goto done; }
    if ((rc = put_scales(&o, scales + row0, rows)) || (rc = block_codes(b, src, scales + row0, codes)) ||
        (rc = put_escapes(&o, b, src, codes)))
        goto done;
    segment g = {0, 0, 0};
    while (next_segment(b, &g)) {        /* a spread class per row segment, then its codes in that context */
        uint64_t total = 0, used = 0;
        for (uint64_t i = g.start; i < g.end; i++) {
            if (codes[i] == BL_ESC) continue;
            int32_t j = coarse_code(codes[i], factor, top);
            total += (uint64_t)(j < 0 ? -j : j); used++;
        }
        int spread = spread_class(total, used);
        sym[n] = (uint8_t)spread; ctx[n] = CTX_SPREAD; lane[n++] = 0;
        for (uint64_t i = g.start; i < g.end; i++) {     /* element j of a tile in lane j % 32 */
            if (codes[i] == BL_ESC) continue;
            sym[n] = (uint8_t)(coarse_code(codes[i], factor, top) + top); ctx[n] = (uint8_t)spread;
            lane[n++] = (uint8_t)((i - g.start) % RANS_LANES);
        }
    }
    rc = rans_encode(ctx, sym, lane, n, alphabet, &o);
done:
    free(codes); free(sym); free(ctx); free(lane);
    return rc ? rc : (int64_t)(o.p - out);
}

int bl_int_decode(const bl_block *b, int factor, const uint8_t *in, size_t len, uint16_t *scales, void *held) {
    int rc = check_block(b);
    if (rc || (rc = check_factor(b, factor))) return rc;
    bl_in i = {in, in + len};
    uint64_t rows = bl_block_rows(b);
    if ((rc = get_scales(&i, scales, rows))) return rc;
    for (uint64_t r = 0; r < rows; r++) {
        float s;
        if ((rc = scale_value(b, scales[r], &s))) return rc;
    }
    escapes e;
    if ((rc = get_escapes(&i, b, &e))) return rc;
    int32_t top = b->max_code / factor;
    uint16_t alphabet[RANS_CONTEXTS] = {0};
    for (int c = 0; c < SPREADS; c++) alphabet[c] = (uint16_t)(2 * top + 1);
    alphabet[CTX_SPREAD] = SPREADS;
    rans_model *m = NULL;
    rans_dec d;
    int32_t codes[BL_TILE];
    const bl_kernels *k = bl_kernels_now();
    int w = width_bits(b->dtype) / 8;
    if ((rc = rans_decode_init(&m, &d, &i, alphabet))) goto done;
    segment g = {0, 0, 0};
    while (!rc && next_segment(b, &g)) {
        float s = u2f((uint32_t)scales[g.row] << 16);
        uint32_t spread;
        if ((rc = rans_get_in(m, &d, 0, CTX_SPREAD, &spread))) break;
        for (uint64_t t = g.start; !rc && t < g.end; t += BL_TILE) {
            uint64_t n = g.end - t < BL_TILE ? g.end - t : BL_TILE;
            if (!escape_within(&e, t + n)) {              /* the usual tile: no escapes, one context */
                uint32_t symbols[BL_TILE];
                if ((rc = rans_tile(m, &d, (int)spread, (size_t)n, symbols, k->rans_tile))) break;
                for (uint64_t j = 0; j < n; j++) codes[j] = (int32_t)symbols[j] - top;
            } else {
                for (uint64_t j = 0; j < n; j++) {
                    uint32_t v, symbol;
                    if (is_escape(&e, t + j, b, &v)) { store_bits(held, t + j, b->dtype, v); e.next++; codes[j] = BL_ESC; continue; }
                    if ((rc = rans_get_in(m, &d, (unsigned)j, (int)spread, &symbol))) break;
                    codes[j] = (int32_t)symbol - top;
                }
            }
            if (!rc) k->recon(codes, (size_t)n, s, factor, b->dtype, (uint8_t *)held + t * (uint64_t)w);
        }
    }
    if (!rc) rc = rans_decode_finish(&d);
    if (!rc && i.p != i.end) rc = BL_E_TRAILING;
done:
    rans_model_free(m);
    return rc;
}

/* ---- int-int: a finer int rung ----------------------------------------------------------------------- */

/* A pair of int rungs, with every finest code's coarse code, its fine code and the fine codes its coarse cell spans
 * tabulated (indexed by k + 127), so that the per-element work is lookups, not divisions. */
typedef struct {
    int32_t coarse, fine, top_c, top_f;
    uint16_t alphabet;
    int16_t jc[255], jf[255], first[255], count[255];
} int_pair;

static int make_pair(const bl_block *b, int coarse, int fine, int_pair *p) {
    if (check_factor(b, coarse) || check_factor(b, fine) || coarse <= fine || coarse % fine || !((coarse / fine) & 1))
        return BL_E_ARGUMENT;
    p->coarse = coarse; p->fine = fine;
    p->top_c = b->max_code / coarse; p->top_f = b->max_code / fine;
    int32_t widest = 0;
    for (int32_t j = 0; j <= p->top_c; j++) {
        int32_t kmin, kmax;
        coarse_range(j, coarse, p->top_c, b->max_code, &kmin, &kmax);
        int32_t n = coarse_code(kmax, fine, p->top_f) - coarse_code(kmin, fine, p->top_f) + 1;
        if (n > widest) widest = n;
    }
    if (widest > RANS_MAX_ALPHABET) return BL_E_ARGUMENT;
    p->alphabet = (uint16_t)widest;
    for (int32_t k = -b->max_code; k <= b->max_code; k++) {
        int32_t c = coarse_code(k, coarse, p->top_c), a = c < 0 ? -c : c, kmin, kmax;
        coarse_range(a, coarse, p->top_c, b->max_code, &kmin, &kmax);
        int32_t first = coarse_code(kmin, fine, p->top_f);
        p->jc[k + 127] = (int16_t)c;
        p->jf[k + 127] = (int16_t)coarse_code(k, fine, p->top_f);
        p->first[k + 127] = (int16_t)first;
        p->count[k + 127] = (int16_t)(coarse_code(kmax, fine, p->top_f) - first + 1);
    }
    return BL_OK;
}

/* The finer code's index inside the coarse cell of finest code k (mirrored for negative cells). */
static void pair_index(const int_pair *p, int32_t k, int32_t *jc, int32_t *first, int32_t *count) {
    *jc = p->jc[k + 127]; *first = p->first[k + 127]; *count = p->count[k + 127];
}

int64_t bl_intint_encode(const bl_block *b, int coarse, int fine, const void *src, const uint16_t *scales,
                         uint8_t *out, size_t cap) {
    int_pair p;
    int rc = check_block(b);
    if (rc || (rc = make_pair(b, coarse, fine, &p))) return rc;
    uint64_t row0 = b->begin / b->columns;
    int32_t *codes = malloc(b->count * sizeof *codes + 1);
    uint8_t *sym = malloc(b->count + 1), *ctx = malloc(b->count + 1), *lane = malloc(b->count + 1);
    uint16_t alphabet[RANS_CONTEXTS] = {0};
    for (int c = 0; c < 4; c++) alphabet[c] = p.alphabet;
    bl_out o = {out, out + cap};
    size_t n = 0;
    if (!codes || !sym || !ctx || !lane) { rc = BL_E_NOMEM; goto done; }
    if ((rc = block_codes(b, src, scales + row0, codes))) goto done;
    segment g = {0, 0, 0};
    while (next_segment(b, &g)) for (uint64_t i = g.start; i < g.end; i++) {   /* element j of a tile: lane j % 32 */
        if (codes[i] == BL_ESC) continue;
        lane[n] = (uint8_t)((i - g.start) % RANS_LANES);
        int32_t jc, first, count, jf = p.jf[codes[i] + 127];
        pair_index(&p, codes[i], &jc, &first, &count);
        int32_t index = (jc < 0 ? -jf : jf) - first;
        if (index < 0 || index >= count) { rc = BL_E_ARGUMENT; goto done; }
        sym[n] = (uint8_t)index;
        ctx[n++] = (uint8_t)((jc < 0 ? -jc : jc) < 3 ? (jc < 0 ? -jc : jc) : 3);
    }
    rc = rans_encode(ctx, sym, lane, n, alphabet, &o);
done:
    free(codes); free(sym); free(ctx); free(lane);
    return rc ? rc : (int64_t)(o.p - out);
}

int bl_intint_decode(const bl_block *b, int coarse, int fine, const uint8_t *in, size_t len, const uint16_t *scales,
                     const void *held, void *out) {
    int_pair p;
    int rc = check_block(b);
    if (rc || (rc = make_pair(b, coarse, fine, &p))) return rc;
    uint16_t alphabet[RANS_CONTEXTS] = {0};
    for (int c = 0; c < 4; c++) alphabet[c] = p.alphabet;
    bl_in i = {in, in + len};
    rans_model *m = NULL;
    rans_dec d;
    int32_t codes[BL_TILE];
    const bl_kernels *k = bl_kernels_now();
    int w = width_bits(b->dtype) / 8;
    uint64_t row0 = b->begin / b->columns;
    if ((rc = rans_decode_init(&m, &d, &i, alphabet))) goto done;
    uint32_t *tables = malloc(4 * RANS_TOTAL * sizeof *tables);   /* the 4 contexts' tables side by side */
    if (!tables) { rc = BL_E_NOMEM; goto done; }
    for (int c = 0; c < 4; c++)         /* an absent context's table is never read: its elements are refused first */
        if (m->slot[c]) memcpy(tables + c * RANS_TOTAL, m->slot[c], RANS_TOTAL * sizeof *tables);
    uint32_t contexts[BL_TILE], indices[BL_TILE];
    segment g = {0, 0, 0};
    while (!rc && next_segment(b, &g)) {
        float s;
        if ((rc = scale_value(b, scales[row0 + g.row], &s))) break;
        for (uint64_t t = g.start; !rc && t < g.end; t += BL_TILE) {
            uint64_t n = g.end - t < BL_TILE ? g.end - t : BL_TILE;
            const uint8_t *from = (const uint8_t *)held + t * (uint64_t)w;
            uint8_t *to = (uint8_t *)out + t * (uint64_t)w;
            if (to != from) memcpy(to, from, (size_t)n * (size_t)w);   /* escaped elements keep their value */
            k->codes(from, (size_t)n, b->dtype, b->inner, s, b->max_code, codes);
            uint32_t bad = 0;
            for (uint64_t j = 0; j < n; j++) {           /* each element's context, or none for an escape */
                int32_t count, jc = 0, first;
                if (codes[j] != BL_ESC) pair_index(&p, codes[j], &jc, &first, &count);
                int a = jc < 0 ? -jc : jc;
                contexts[j] = codes[j] == BL_ESC ? RANS_NO_CONTEXT : (uint32_t)(a < 3 ? a : 3);
                bad |= codes[j] != BL_ESC && !m->slot[contexts[j]];
            }
            if (bad) { rc = BL_E_CORRUPT; break; }
            memset(indices, 0, (size_t)n * sizeof *indices);
            rans_tile_mixed(&d, tables, contexts, (size_t)n, indices, k->rans_mixed);
            for (uint64_t j = 0; j < n; j++) {           /* selects, not branches: the signs are coin flips */
                int escaped = codes[j] == BL_ESC;
                int32_t jc, first, count;
                pair_index(&p, escaped ? 0 : codes[j], &jc, &first, &count);
                bad |= !escaped & ((int32_t)indices[j] >= count);
                int32_t jf = first + (int32_t)indices[j], negative = jc >> 31;
                codes[j] = escaped ? BL_ESC : (jf ^ negative) - negative;
            }
            if (bad) { rc = BL_E_CORRUPT; break; }
            k->recon(codes, (size_t)n, s, fine, b->dtype, to);
        }
    }
    if (!rc) rc = rans_decode_finish(&d);
    if (!rc && i.p != i.end) rc = BL_E_TRAILING;
    free(tables);
done:
    rans_model_free(m);
    return rc;
}

/* ---- refine: int -> exact, int -> half, half -> exact ------------------------------------------------ */

/* Smallest float32 magnitude that rounds (to nearest even) to half magnitude h or above. */
static uint32_t half_floor_f32(uint32_t h, int half) {
    if (!h) return 0;
    uint32_t mid;
    /* bf16 patterns are float32 patterns cut short, so the midpoint is one half-ulp up; summing the two values
     * would overflow in the top binade (h >= 0x7F01). */
    if (half == BL_BF16) mid = widen(h - 1, half) + 0x8000u;
    else if (h >= inf_mag(half)) mid = widen(h - 1, half) + 0x1000u;
    else mid = f2u((u2f(widen(h - 1, half)) + u2f(widen(h, half))) * 0.5f);   /* exact: 12 significant bits */
    return mid + (h & 1);                                                      /* a tie goes to the even one */
}

typedef struct {
    int kind, target;        /* target: dtype of the refined patterns */
    int exact;               /* trailing zeros per segment are coded */
} refine_kind;

static int make_refine(const bl_block *b, int kind, refine_kind *r) {
    r->kind = kind;
    if (kind == BL_INT_TO_EXACT && b->inner == BL_NONE) { r->target = b->dtype; r->exact = 1; return BL_OK; }
    if (kind == BL_INT_TO_HALF && b->inner != BL_NONE) { r->target = b->inner; r->exact = 0; return BL_OK; }
    if (kind == BL_HALF_TO_EXACT && b->inner != BL_NONE) { r->target = BL_F32; r->exact = 1; return BL_OK; }
    return BL_E_ARGUMENT;
}

static uint32_t ceil_shift(uint32_t x, int tz) { return (uint32_t)(((uint64_t)x + (1ull << tz) - 1) >> tz); }

/* Per element of one tile: flag (0: a cell of known sign, 1: a zero cell, either sign, 2: escaped, already exact),
 * the cell's first sub-cell `first` and its size `count`, after dropping `tz` trailing zero bits. Zero cells keep
 * count 1 (nothing in the main streams) and their half-size in `first`; escaped elements count 1 too. */
static void tile_cells(const bl_block *b, const refine_kind *r, const void *vals, size_t n, float s, int tz,
                       uint32_t *flag, uint32_t *first, uint32_t *count, uint32_t *sign) {
    int32_t codes[BL_TILE];
    uint32_t lo[BL_TILE], hi[BL_TILE];
    uint32_t sign_t = sign_bit(r->target);
    const bl_kernels *k = bl_kernels_now();
    if (r->kind == BL_INT_TO_EXACT && b->dtype != BL_F16) {      /* the common cases, fused (and SIMD) */
        k->cells_f32(vals, n, b->dtype == BL_BF16, s, b->max_code, tz, flag, first, count, sign);
        return;
    }
    if (r->kind == BL_INT_TO_EXACT && k->cells_f16) {
        k->cells_f16((const uint16_t *)vals, n, s, b->max_code, tz, flag, first, count, sign);
        return;
    }
    if (r->kind != BL_HALF_TO_EXACT) {
        k->codes(vals, n, b->dtype, b->inner, s, b->max_code, codes);
        k->cells(codes, n, s, r->target, lo, hi);
        for (size_t i = 0; i < n; i++) {
            uint32_t f = ceil_shift(lo[i], tz), l = ceil_shift(hi[i], tz);
            int zero = codes[i] == 0, escaped = codes[i] == BL_ESC;
            flag[i] = escaped ? 2u : (uint32_t)zero;
            first[i] = zero ? l : f;
            count[i] = zero || escaped ? 1 : l - f;
            sign[i] = codes[i] < 0 && !escaped ? sign_t : 0;
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t h = narrow(load_bits(vals, i, BL_F32), b->inner), m = h & 0x7FFFu;
        if (m >= inf_mag(b->inner)) { flag[i] = 2; first[i] = 0; count[i] = 1; sign[i] = 0; continue; }
        uint32_t f = ceil_shift(half_floor_f32(m, b->inner), tz), l = ceil_shift(half_floor_f32(m + 1, b->inner), tz);
        flag[i] = 0; first[i] = f; count[i] = l - f; sign[i] = (h & 0x8000u) ? 0x80000000u : 0;
    }
}

/* The patterns the refinement must reach, in the target dtype. */
static uint32_t target_of(const bl_block *b, const refine_kind *r, const void *src, uint64_t i) {
    uint32_t v = load_bits(src, i, b->dtype);
    return r->kind == BL_INT_TO_HALF ? narrow(v, b->inner) : v;
}

/* Bit streams of a refinement: element j of a tile writes its index to stream j % 4; a zero cell's low bits go to
 * stream 4 (after the top bits, which go through rANS). */
#define MAIN_STREAMS 4
#define ZERO_STREAM 4
#define REFINE_STREAMS 5

/* A zero cell's index: sign in the lowest bit, the top 8 bits of the rest through rANS, the remainder in bits. */
typedef struct { uint64_t count; int low; } zero_split;
static zero_split zero_cell(uint32_t half) {
    zero_split z;
    z.count = 2ull * half;
    int nb = bitlen64(z.count - 1), top = nb < ZERO_TOP_BITS ? nb : ZERO_TOP_BITS;
    z.low = nb - top;
    return z;
}
static int zero_context(uint64_t count) { return CTX_ZERO + bitlen64(count - 1); }

int64_t bl_refine_encode(const bl_block *b, int kind, const void *src, const uint16_t *scales, uint8_t *out, size_t cap) {
    refine_kind r;
    int rc = check_block(b);
    if (rc || (rc = make_refine(b, kind, &r))) return rc;
    uint64_t row0 = b->begin / b->columns, rows = bl_block_rows(b);
    uint8_t *sym = malloc(b->count + rows + 1), *ctx = malloc(b->count + rows + 1), *ulane = malloc(b->count + 1);
    uint16_t *uniform = malloc((b->count + 1) * sizeof *uniform), *usym = malloc((b->count + 1) * sizeof *usym);
    /* Element j of a tile goes to main stream j % 4, at <= 34 bits, and tiles restart at each row segment: a stream
     * takes at most a quarter of the elements plus one per tile (short rows fill stream 0 first). The zero stream
     * takes any of them at <= 33 bits. */
    uint64_t tiles = rows + b->count / BL_TILE + 1;
    size_t lane_cap = 5 * (b->count / MAIN_STREAMS + tiles + 1) + 16, zero_cap = 5 * b->count + 16;
    size_t lane_at[REFINE_STREAMS + 1];
    for (int l = 0; l <= REFINE_STREAMS; l++) lane_at[l] = (size_t)(l < ZERO_STREAM ? l : ZERO_STREAM) * lane_cap +
                                                           (l > ZERO_STREAM ? zero_cap : 0);
    uint8_t *bits = malloc(lane_at[REFINE_STREAMS]);
    uint16_t alphabet[RANS_CONTEXTS] = {0};
    for (int c = CTX_ZERO; c < CTX_ZERO + 40; c++) alphabet[c] = 1u << ZERO_TOP_BITS;
    alphabet[CTX_TZ] = 32;
    bl_out o = {out, out + cap};
    bl_bitw w[REFINE_STREAMS];
    for (int l = 0; l < REFINE_STREAMS; l++) w[l] = (bl_bitw){bits + lane_at[l], bits + lane_at[l + 1], 0, 0, 0};
    uint32_t flag[BL_TILE], first[BL_TILE], sign[BL_TILE], count[BL_TILE];
    size_t n = 0, u = 0;
    int width = width_bits(b->dtype) / 8;
    uint32_t sign_t = sign_bit(r.target);
    if (!sym || !ctx || !bits || !uniform || !usym || !ulane) { rc = BL_E_NOMEM; goto done; }
    segment g = {0, 0, 0};
    while (!rc && next_segment(b, &g)) {
        float s = 1.0f;
        if (r.kind != BL_HALF_TO_EXACT && (rc = scale_value(b, scales[row0 + g.row], &s))) break;
        int tz = 0;
        if (r.exact) {              /* trailing zeros all values of the segment share (fp16-origin rows) */
            tz = 31;                /* over every finite value: escaped ones too, which can only lower it */
            uint32_t inf = inf_mag(r.target);
            for (uint64_t j = g.start; j < g.end; j++) {
                uint32_t mag = target_of(b, &r, src, j) & (sign_t - 1);
                if (mag && mag < inf) { int z = __builtin_ctz(mag); tz = z < tz ? z : tz; }
            }
            if (tz == 31) tz = 0;
            sym[n] = (uint8_t)tz; ctx[n++] = CTX_TZ;
        }
        for (uint64_t t = g.start; !rc && t < g.end; t += BL_TILE) {
            uint64_t m = g.end - t < BL_TILE ? g.end - t : BL_TILE;
            tile_cells(b, &r, (const uint8_t *)src + t * (uint64_t)width, (size_t)m, s, tz, flag, first, count, sign);
            for (uint64_t j = 0; j < m; j++) {
                if (flag[j] == 2) continue;
                uint32_t x = target_of(b, &r, src, t + j), mag = (x & (sign_t - 1)) >> tz;
                if (flag[j] == 1) {
                    zero_split z = zero_cell(first[j]);
                    uint64_t index = (uint64_t)mag << 1 | (x >> (width_bits(r.target) - 1)), head = index >> z.low;
                    uint64_t rest = z.count - (head << z.low);
                    if (mag >= first[j]) { rc = BL_E_ARGUMENT; break; }   /* not in its cell: a bug, never data */
                    sym[n] = (uint8_t)head; ctx[n++] = (uint8_t)zero_context(z.count);
                    tb_put(&w[ZERO_STREAM], index - (head << z.low), rest < (1ull << z.low) ? rest : (1ull << z.low));
                    continue;
                }
                if (mag < first[j] || mag - first[j] >= count[j] || (x & sign_t) != (sign[j] ? sign_t : 0)) {
                    rc = BL_E_ARGUMENT; break;
                }
                if (count[j] >= 2 && count[j] <= URANS_MAX) {          /* small cells: exact uniform coding */
                    usym[u] = (uint16_t)(mag - first[j]); ulane[u] = (uint8_t)j; uniform[u++] = (uint16_t)count[j];
                } else {
                    tb_put(&w[j % MAIN_STREAMS], mag - first[j], count[j]);
                }
            }
        }
    }
    for (int l = 0; l < REFINE_STREAMS; l++) { bitw_flush(&w[l]); if (!rc && w[l].overflow) rc = BL_E_CAPACITY; }
    if (!rc) rc = rans_encode(ctx, sym, NULL, n, alphabet, &o);
    if (!rc) rc = urans_encode(uniform, usym, ulane, u, &o);
    for (int l = 0; !rc && l < REFINE_STREAMS; l++) rc = out_u32(&o, (uint32_t)(w[l].p - (bits + lane_at[l])));
    for (int l = 0; !rc && l < REFINE_STREAMS; l++) rc = out_put(&o, bits + lane_at[l], (size_t)(w[l].p - (bits + lane_at[l])));
done:
    free(sym); free(ctx); free(bits); free(uniform); free(usym); free(ulane);
    return rc ? rc : (int64_t)(o.p - out);
}

/* The bit streams of a payload, copied with room to read past their ends: a tile reads at most 34 bits per
 * element before the decoder checks where the readers stand. */
#define STREAM_PAD (BL_TILE * 5 + 16)

static int open_streams(bl_in *in, bl_bitr *r, int streams, uint8_t **padded) {
    uint32_t len[REFINE_STREAMS];
    size_t total = 0;
    int rc;
    for (int l = 0; l < streams; l++) { if ((rc = in_u32(in, &len[l]))) return rc; total += len[l]; }
    const uint8_t *bits;
    if ((rc = in_take(in, total, &bits))) return rc;
    if (in->p != in->end) return BL_E_TRAILING;
    uint8_t *copy = *padded = malloc(total + STREAM_PAD * (size_t)streams);
    if (!copy) return BL_E_NOMEM;
    for (int l = 0; l < streams; l++) {
        memcpy(copy, bits, len[l]);
        memset(copy + len[l], 0, STREAM_PAD);
        r[l] = (bl_bitr){copy, copy + len[l], 0, 0, copy};
        copy += len[l] + STREAM_PAD; bits += len[l];
    }
    return BL_OK;
}

/* Bits a reader consumed: the bytes it loaded less what is still in its accumulator. */
static size_t stream_used(const bl_bitr *r) { return 8 * (size_t)(r->p - r->start) - (size_t)r->n; }

/* Every stream must end in its last byte: no bits missing, no bytes left over. */
static int close_streams(const bl_bitr *r, int streams) {
    for (int l = 0; l < streams; l++)
        if ((stream_used(&r[l]) + 7) / 8 != (size_t)(r[l].end - r[l].start)) return BL_E_CORRUPT;
    return BL_OK;
}

int bl_refine_decode(const bl_block *b, int kind, const uint8_t *in, size_t len, const uint16_t *scales,
                     const void *held, void *out) {
    refine_kind r;
    int rc = check_block(b);
    if (rc || (rc = make_refine(b, kind, &r))) return rc;
    uint16_t alphabet[RANS_CONTEXTS] = {0};
    for (int c = CTX_ZERO; c < CTX_ZERO + 40; c++) alphabet[c] = 1u << ZERO_TOP_BITS;
    alphabet[CTX_TZ] = 32;
    bl_in i = {in, in + len};
    rans_model *m = NULL;
    rans_dec d;
    urans_dec ud = {.words = NULL};
    uint8_t *padded = NULL;
    bl_bitr br[REFINE_STREAMS];
    if ((rc = rans_decode_init(&m, &d, &i, alphabet)) || (rc = urans_decode_init(&ud, &i)) ||
        (rc = open_streams(&i, br, REFINE_STREAMS, &padded))) goto done;
    uint32_t flag[BL_TILE], first[BL_TILE], sign[BL_TILE], count[BL_TILE], index[BL_TILE], wide[BL_TILE];
    uint32_t zero_at[BL_TILE];
    const bl_kernels *kern = bl_kernels_now();
    int width = width_bits(b->dtype) / 8;
    uint32_t sign_t = sign_bit(r.target);
    uint64_t row0 = b->begin / b->columns;
    segment g = {0, 0, 0};
    while (!rc && next_segment(b, &g)) {
        float s = 1.0f;
        uint32_t tzs = 0;
        if (r.kind != BL_HALF_TO_EXACT && (rc = scale_value(b, scales[row0 + g.row], &s))) break;
        if (r.exact && (rc = rans_get(m, &d, CTX_TZ, &tzs))) break;
        int tz = (int)tzs;
        for (uint64_t t = g.start; !rc && t < g.end; t += BL_TILE) {
            uint64_t n = g.end - t < BL_TILE ? g.end - t : BL_TILE;
            const uint8_t *from = (const uint8_t *)held + t * (uint64_t)width;
            tile_cells(b, &r, from, (size_t)n, s, tz, flag, first, count, sign);
            uint32_t any_wide = 0, zeros = 0;
            for (uint64_t j = 0; j < n; j++) {
                wide[j] = count[j] <= URANS_MAX ? 1 : count[j];
                index[j] = 0;                                    /* a cell of one pattern reads nothing */
                any_wide |= count[j] > URANS_MAX;
                zero_at[zeros] = (uint32_t)j;                    /* the zero cells' places, without a branch */
                zeros += flag[j] == 1;
            }
            if (any_wide) kern->tb(br, wide, (size_t)n, index);   /* cells of more than 4096: truncated binary */
            kern->urans(&ud, flag, count, (size_t)n, index);     /* cells of 2..4096: the uniform stream */
            for (uint32_t z_at = 0; z_at < zeros; z_at++) {      /* zero cells, in order, through rANS */
                uint32_t j = zero_at[z_at];
                zero_split z = zero_cell(first[j]);
                uint32_t head;
                if (!z.count) { rc = BL_E_CORRUPT; break; }
                if ((rc = rans_get(m, &d, zero_context(z.count), &head))) break;
                uint64_t start = (uint64_t)head << z.low;
                if (start >= z.count) { rc = BL_E_CORRUPT; break; }
                uint64_t rest = z.count - start;
                index[j] = (uint32_t)(start + tb_get(&br[ZERO_STREAM], rest < (1ull << z.low) ? rest : (1ull << z.low)));
            }
            for (int l = 0; l < REFINE_STREAMS; l++) if (br[l].p > br[l].end + 8) rc = BL_E_CORRUPT;
            if (ud.wp > ud.wend_p) rc = BL_E_CORRUPT;
            if (rc) break;
            uint32_t empty = 0;                          /* a cell of no patterns: only a corrupt payload has one */
            if (b->dtype == BL_F32 && r.kind != BL_INT_TO_HALF) {
                empty = kern->compose_f32(flag, first, count, index, sign, tz, (const uint32_t *)(const void *)from, (size_t)n,
                                          (uint32_t *)out + t);
            } else if (r.kind == BL_INT_TO_EXACT) {      /* a 16-bit source refined in its own dtype */
                empty = kern->compose_16(flag, first, count, index, sign, tz, (const uint16_t *)(const void *)from, (size_t)n,
                                         (uint16_t *)out + t);
            } else {                                     /* int -> half, widened to float32; masks, not branches */
                for (uint64_t j = 0; j < n; j++) {
                    uint32_t zero = ((index[j] >> 1) << tz) | (sign_t & (0u - (index[j] & 1)));
                    uint32_t cell = ((first[j] + index[j]) << tz) | (sign_t & (0u - (uint32_t)(sign[j] != 0)));
                    uint32_t is_zero = 0u - (uint32_t)(flag[j] == 1), kept = 0u - (uint32_t)(flag[j] == 2);
                    uint32_t x = widen((zero & is_zero) | (cell & ~is_zero), r.target);
                    ((uint32_t *)out)[t + j] = (((const uint32_t *)(const void *)from)[j] & kept) | (x & ~kept);
                    empty |= (flag[j] == 0) & (count[j] == 0);
                }
            }
            if (empty) rc = BL_E_CORRUPT;
        }
    }
    if (!rc) rc = rans_decode_finish(&d);
    if (!rc) rc = urans_decode_finish(&ud);
    if (!rc) rc = close_streams(br, REFINE_STREAMS);
done:
    rans_model_free(m);
    free(padded);
    free(ud.words);
    return rc;
}

/* ---- half: a 16-bit first rung of a float32 tensor --------------------------------------------------- */

int64_t bl_half_encode(const bl_block *b, const void *src, uint8_t *out, size_t cap) {
    int rc = check_block(b);
    if (rc || b->inner == BL_NONE) return rc ? rc : BL_E_ARGUMENT;
    int mant = b->inner == BL_BF16 ? 7 : 10;
    int32_t *codes = malloc(b->count * sizeof *codes + 1);
    uint8_t *sym = malloc(b->count + 1), *ctx = calloc(b->count + 1, 1), *bits = malloc(2 * b->count + 16);
    uint16_t alphabet[RANS_CONTEXTS] = {0};
    alphabet[0] = (uint16_t)(1u << (15 - mant));
    bl_out o = {out, out + cap};
    bl_bitw w = {bits, bits + 2 * b->count + 16, 0, 0, 0};
    size_t n = 0;
    if (!codes || !sym || !ctx || !bits) { rc = BL_E_NOMEM; goto done; }
    for (uint64_t i = 0; i < b->count; i++) {
        uint32_t h = narrow(load_bits(src, i, BL_F32), b->inner);
        codes[i] = (h & 0x7FFFu) >= inf_mag(b->inner) ? BL_ESC : (int32_t)h;
    }
    if ((rc = put_escapes(&o, b, src, codes))) goto done;
    for (uint64_t i = 0; i < b->count; i++) {
        if (codes[i] == BL_ESC) continue;
        uint32_t h = (uint32_t)codes[i];
        sym[n++] = (uint8_t)((h & 0x7FFFu) >> mant);
        bitw_put(&w, (h & ((1u << mant) - 1)) | (h >> 15) << mant, mant + 1);
    }
    bitw_flush(&w);
    if (w.overflow) { rc = BL_E_CAPACITY; goto done; }
    if (!(rc = rans_encode(ctx, sym, NULL, n, alphabet, &o)) && !(rc = out_u32(&o, (uint32_t)(w.p - bits))))
        rc = out_put(&o, bits, (size_t)(w.p - bits));
done:
    free(codes); free(sym); free(ctx); free(bits);
    return rc ? rc : (int64_t)(o.p - out);
}

int bl_half_decode(const bl_block *b, const uint8_t *in, size_t len, void *held) {
    int rc = check_block(b);
    if (rc || b->inner == BL_NONE) return rc ? rc : BL_E_ARGUMENT;
    int mant = b->inner == BL_BF16 ? 7 : 10;
    uint16_t alphabet[RANS_CONTEXTS] = {0};
    alphabet[0] = (uint16_t)(1u << (15 - mant));
    bl_in i = {in, in + len};
    escapes e;
    rans_model *m = NULL;
    rans_dec d;
    uint8_t *padded = NULL;
    bl_bitr br;
    if ((rc = get_escapes(&i, b, &e)) || (rc = rans_decode_init(&m, &d, &i, alphabet)) ||
        (rc = open_streams(&i, &br, 1, &padded)))
        goto done;
    if ((uint64_t)(br.end - br.start) != ((b->count - e.n) * (uint64_t)(mant + 1) + 7) / 8) { rc = BL_E_CORRUPT; goto done; }
    for (uint64_t k = 0; k < b->count; k++) {
        uint32_t v, head;
        if (is_escape(&e, k, b, &v)) { store_bits(held, k, BL_F32, v); e.next++; continue; }
        if ((rc = rans_get(m, &d, 0, &head))) break;
        uint32_t low = (uint32_t)bitr_get(&br, mant + 1);
        uint32_t h = head << mant | (low & ((1u << mant) - 1)) | (low >> mant) << 15;
        if ((h & 0x7FFFu) >= inf_mag(b->inner)) { rc = BL_E_CORRUPT; break; }
        store_bits(held, k, BL_F32, widen(h, b->inner));
    }
    if (!rc) rc = rans_decode_finish(&d);
    if (!rc) rc = close_streams(&br, 1);
done:
    rans_model_free(m);
    free(padded);
    return rc;
}

/* ---- delta: a new version coded against the values the decoder holds ------------------------------------
 *
 * A pattern's ordinal is its place in the order of the values (-0 just below +0, NaNs beyond the infinities),
 * a bijection onto [-2^(W-1), 2^(W-1)). The change of element i is d = ord(new) - ord(held). An exact chunk sends
 * d; an approximate one sends c = round(d / 2^t) with t = max(D - ulp exponent of the held value, 0), a step of
 * about 2^D in value whatever the element's binade (D from the RMS of the new values and the bits asked for), and
 * the decoder holds ord(held) + c 2^t (c = 0 where that would leave the range); where t would exceed the mantissa
 * (a held value below the step), c = round((new - held) / 2^D) and the decoder holds held + c 2^D, rounded. A later
 * exact chunk corrects it. Each c is its symbol (0, or 2L-1 / 2L for a positive / negative c of bit length L) through rANS, then its L-1
 * low bits. The context of a symbol: for an approximate chunk, the bit length before it; for an exact chunk, the
 * held value's ulp exponent (a change of a given size spans more ordinals in a smaller binade) and that bit length;
 * for an exact chunk after an approximate one, the shift t the approximation has at the held value (the rest lies
 * within 2^(t-1)) and that bit length. A block that does not change is empty.
 *     u8 kind (0 exact, 1 approximate, 2 exact after approximate) | i16 D (kinds 1, 2) | rANS(symbols) | bits(1) */
#define DELTA_LENGTHS 34                             /* bit lengths 0..33 of |c| (|d| < 2^33) */
#define DELTA_ALPHABET (2 * DELTA_LENGTHS - 1)
#define DELTA_MAX_STEP 400                           /* |D|: beyond any float's exponent range */
#define DELTA_EXPONENTS 16                           /* ulp exponent classes of kind 0 (two binades each) */
#define DELTA_PREVIOUS 9                             /* classes of the bit length before: kind 0 (4 lengths each) */
#define DELTA_PREVIOUS_AFTER 7                       /* and kind 2 (5 lengths each); a chunk uses one kind's contexts */

static inline int64_t ordinal(uint32_t p, int d) {
    uint32_t s = sign_bit(d);
    return (p & s) ? -(int64_t)(p ^ s) - 1 : (int64_t)p;
}
static inline uint32_t from_ordinal(int64_t o, int d) {
    return o >= 0 ? (uint32_t)o : (uint32_t)(-(o + 1)) | sign_bit(d);
}
static inline int in_ordinals(int64_t o, int d) { return o >= -(int64_t)sign_bit(d) && o < (int64_t)sign_bit(d); }
static inline int64_t floor_shift(int64_t x, int t) { return x >= 0 ? x >> t : -((-x - 1) >> t) - 1; }

/* The ulp exponent of a held pattern (subnormals as the smallest normal; INT32_MIN for a non-finite value). */
static inline int ulp_exponent(uint32_t held, int d) {
    int mant = d == BL_F32 ? 23 : d == BL_BF16 ? 7 : 10, bias = d == BL_F16 ? 15 : 127;
    int e = (int)((held & (sign_bit(d) - 1)) >> mant);
    if (e == (d == BL_F16 ? 31 : 255)) return INT32_MIN;
    return (e ? e : 1) - bias - mant;
}

static inline int mantissa_bits(int d) { return d == BL_F32 ? 23 : d == BL_BF16 ? 7 : 10; }

/* The shift of element i at step D: 0 for a non-finite held value; DELTA_IN_VALUE where a step is more than the
 * held value's binade (ordinals there are no measure of the step), so that the approximation is held + c 2^D. */
#define DELTA_IN_VALUE (-1)
static inline int delta_shift(int step, uint32_t held, int d) {
    int u = ulp_exponent(held, d);
    if (u == INT32_MIN) return 0;
    int t = step - u;
    return t < 0 ? 0 : t > mantissa_bits(d) ? DELTA_IN_VALUE : t;
}

/* held + c 2^D in dtype d: IEEE double, then rounded to nearest even (the same bits on every machine); c = 0 keeps
 * the held pattern (so -0 stays -0). */
static inline uint32_t in_value(uint32_t held, int64_t c, int step, int d) {
    if (!c) return held;
    return narrow(f2u((float)((double)u2f(widen(held, d)) + ldexp((double)c, step))), d);
}

static inline int delta_context(int kind, int step, uint32_t held, int d, int previous) {
    if (kind == 1) return previous;                                     /* < DELTA_LENGTHS */
    if (kind == 2) {                                                    /* < 7 * 25 */
        int t = delta_shift(step, held, d);
        return DELTA_PREVIOUS_AFTER * (t == DELTA_IN_VALUE ? mantissa_bits(d) + 1 : t) + previous / 5;
    }
    int u = ulp_exponent(held, d), top = d == BL_F32 ? -23 : d == BL_BF16 ? -7 : -10;  /* the ulp of 1.0 */
    int c = u == INT32_MIN ? 0 : (top - u) / 2;     /* 0: values of 1 and above, then two binades a class down */
    c = c < 0 ? 0 : c >= DELTA_EXPONENTS ? DELTA_EXPONENTS - 1 : c;
    return DELTA_PREVIOUS * c + (previous / 4 < DELTA_PREVIOUS - 1 ? previous / 4 : DELTA_PREVIOUS - 1);   /* < 144 */
}

static uint16_t *delta_alphabet(uint16_t *alphabet) {
    for (int c = 0; c < RANS_CONTEXTS; c++) alphabet[c] = c < DELTA_PREVIOUS_AFTER * 25 ? DELTA_ALPHABET : 0;
    return alphabet;
}

/* D for a step of about 2^(1-bits) times the RMS of the block's new finite values: the approximation holds the new
 * version to about `bits` bits of its own scale, as an int rung of that many bits would, and a change smaller than
 * half a step is not sent before the exact rung (a block whose old values are that close already sends nothing). */
static int delta_step(const bl_block *b, int bits, const void *src) {
    double total = 0;
    uint64_t finite = 0;
    for (uint64_t i = 0; i < b->count; i++) {
        double n = (double)u2f(widen(load_bits(src, i, b->dtype), b->dtype));
        if (n - n == 0) { total += n * n; finite++; }
    }
    if (!finite || total == 0) return -DELTA_MAX_STEP;
    int e;
    frexp(sqrt(total / (double)finite), &e);
    int step = e - bits;
    return step < -DELTA_MAX_STEP ? -DELTA_MAX_STEP : step > DELTA_MAX_STEP ? DELTA_MAX_STEP : step;
}

int64_t bl_delta_encode(const bl_block *b, int bits, int after, const void *src, const void *held, uint8_t *out,
                        size_t cap) {
    int rc = check_block(b);
    int follows = after != BL_DELTA_ALONE;
    if (rc || b->inner != BL_NONE || bits < 0 || bits > 32 ||
        (follows && (bits || after < -DELTA_MAX_STEP || after > DELTA_MAX_STEP)))
        return rc ? rc : BL_E_ARGUMENT;
    int kind = bits ? 1 : follows ? 2 : 0;
    int step = bits ? delta_step(b, bits, src) : follows ? after : 0;
    uint8_t *sym = malloc(b->count + 1), *ctx = malloc(b->count + 1), *stream = malloc(5 * b->count + 16);
    uint16_t alphabet[RANS_CONTEXTS];
    bl_out o = {out, out + cap};
    bl_bitw w = {stream, stream + 5 * b->count + 16, 0, 0, 0};
    if (!sym || !ctx || !stream) { rc = BL_E_NOMEM; goto done; }
    int previous = 0, changes = 0;
    for (uint64_t i = 0; i < b->count; i++) {
        uint32_t h = load_bits(held, i, b->dtype);
        int64_t base = ordinal(h, b->dtype);
        int64_t d = ordinal(load_bits(src, i, b->dtype), b->dtype) - base;
        int t = kind == 1 ? delta_shift(step, h, b->dtype) : 0;
        int64_t c;
        if (t == DELTA_IN_VALUE) {
            double v = ldexp((double)u2f(widen(load_bits(src, i, b->dtype), b->dtype)) - (double)u2f(widen(h, b->dtype)),
                             -step);
            c = v - v == 0 && fabs(v) < 0x1p32 ? (int64_t)floor(v + 0.5) : 0;
        } else {
            c = t ? floor_shift(d + ((int64_t)1 << (t - 1)), t) : d;
            if (!in_ordinals(base + c * ((int64_t)1 << t), b->dtype)) c = 0;
        }
        uint64_t mag = (uint64_t)(c < 0 ? -c : c);
        int length = bitlen64(mag);
        ctx[i] = (uint8_t)delta_context(kind, step, h, b->dtype, previous);
        sym[i] = (uint8_t)(length ? 2 * length - 1 + (c < 0) : 0);
        changes |= length;
        if (length > 1) {
            uint64_t low = mag - ((uint64_t)1 << (length - 1));
            if (length - 1 > 32) { bitw_put(&w, low & 0xFFFFFFFFu, 32); bitw_put(&w, low >> 32, length - 33); }
            else bitw_put(&w, low, length - 1);
        }
        previous = length;
    }
    bitw_flush(&w);
    if (w.overflow) { rc = BL_E_CAPACITY; goto done; }
    if (!changes) goto done;
    uint8_t head[3] = {(uint8_t)kind, (uint8_t)(uint16_t)(int16_t)step, (uint8_t)((uint16_t)(int16_t)step >> 8)};
    if (!(rc = out_put(&o, head, kind ? 3 : 1)) &&
        !(rc = rans_encode(ctx, sym, NULL, b->count, delta_alphabet(alphabet), &o)) &&
        !(rc = out_u32(&o, (uint32_t)(w.p - stream))))
        rc = out_put(&o, stream, (size_t)(w.p - stream));
done:
    free(sym); free(ctx); free(stream);
    return rc ? rc : (int64_t)(o.p - out);
}

int bl_delta_decode(const bl_block *b, const uint8_t *in, size_t len, const void *held, void *out) {
    int rc = check_block(b);
    if (rc || b->inner != BL_NONE) return rc ? rc : BL_E_ARGUMENT;
    uint16_t alphabet[RANS_CONTEXTS];
    bl_in i = {in, in + len};
    const uint8_t *kind, *field;
    rans_model *m = NULL;
    rans_dec d;
    uint8_t *padded = NULL;
    bl_bitr br;
    int step = 0;
    if (!len) { memmove(out, held, b->count * (size_t)(width_bits(b->dtype) / 8)); return BL_OK; }
    if ((rc = in_take(&i, 1, &kind))) return rc;
    if (*kind > 2) return BL_E_CORRUPT;
    if (*kind) {
        if ((rc = in_take(&i, 2, &field))) return rc;
        step = (int16_t)(uint16_t)(field[0] | field[1] << 8);
        if (step < -DELTA_MAX_STEP || step > DELTA_MAX_STEP) return BL_E_CORRUPT;
    }
    if ((rc = rans_decode_init(&m, &d, &i, delta_alphabet(alphabet))) || (rc = open_streams(&i, &br, 1, &padded)))
        goto done;
    int previous = 0;
    for (uint64_t k = 0; k < b->count; k++) {
        uint32_t symbol, h = load_bits(held, k, b->dtype);
        if ((rc = rans_get(m, &d, delta_context(*kind, step, h, b->dtype, previous), &symbol))) break;
        int length = (int)(symbol + 1) / 2;
        int t = *kind == 1 ? delta_shift(step, h, b->dtype) : 0;
        if (length + (t > 0 ? t : 0) > 34 || stream_used(&br) > 8 * (size_t)(br.end - br.start)) { rc = BL_E_CORRUPT; break; }
        uint64_t mag = 0;
        if (length) {
            mag = (uint64_t)1 << (length - 1);
            if (length - 1 > 32) { mag |= bitr_get(&br, 32); mag |= bitr_get(&br, length - 33) << 32; }
            else if (length > 1) mag |= bitr_get(&br, length - 1);
        }
        int64_t c = (symbol && !(symbol & 1)) ? -(int64_t)mag : (int64_t)mag;
        if (t == DELTA_IN_VALUE) {
            store_bits(out, k, b->dtype, in_value(h, c, step, b->dtype));
        } else {
            int64_t o = ordinal(h, b->dtype) + c * ((int64_t)1 << t);
            if (!in_ordinals(o, b->dtype)) { rc = BL_E_CORRUPT; break; }
            store_bits(out, k, b->dtype, from_ordinal(o, b->dtype));
        }
        previous = length;
    }
    if (!rc) rc = rans_decode_finish(&d);
    if (!rc) rc = close_streams(&br, 1);
done:
    rans_model_free(m);
    free(padded);
    return rc;
}
