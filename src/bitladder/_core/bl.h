/* The bitladder native core: plain C11 kernels with no Python in them (binding.c is the only Python file).
 *
 * Every function is a pure transform of caller-owned buffers. Decoders check every bound before they read and
 * report failures as negative status codes; they never allocate more than the block they are given implies.
 * Floating point is IEEE binary32 with round-to-nearest-even and no contraction (-ffp-contract=off), so the
 * scalar and the SIMD builds of kernels.inc, and any compiler, produce the same bits.
 */
#ifndef BL_H
#define BL_H

#include <stddef.h>
#include <stdint.h>

enum bl_dtype { BL_F32 = 0, BL_F16 = 1, BL_BF16 = 2, BL_NONE = -1 };

enum bl_status {
    BL_OK = 0,
    BL_E_TRUNCATED = -1, /* the payload ends before a field it must hold */
    BL_E_CORRUPT = -2,   /* a field is out of range or the entropy stream does not close */
    BL_E_ARGUMENT = -3,  /* the caller passed inconsistent sizes (a bug, not bad data) */
    BL_E_CAPACITY = -4,  /* the output buffer is too small (a bug: use bl_bound) */
    BL_E_NOMEM = -5,
    BL_E_SCALE = -6,     /* a scale outside the range the cells are proven valid for */
    BL_E_TRAILING = -7   /* bytes left over after the last field */
};

/* Refinement kinds: the cell of the rung before, and the patterns that partition it. */
enum bl_refine { BL_INT_TO_EXACT = 0, BL_INT_TO_HALF = 1, BL_HALF_TO_EXACT = 2 };

/* One block of one tensor. Elements begin..begin+count-1 of a tensor whose scale rows hold `columns`
 * elements each; `inner` is the 16-bit format the int codes are taken from (BL_NONE: the source itself). */
typedef struct {
    int dtype;
    int inner;
    int max_code;      /* M of the finest int rung: codes lie in [-M, M] */
    uint64_t begin;
    uint64_t count;
    uint64_t columns;
} bl_block;

/* Rows of scales a block touches (scales are per row; a row may straddle two blocks). */
uint64_t bl_block_rows(const bl_block *b);
/* Bytes that suffice for any encoded payload of the block. */
size_t bl_bound(const bl_block *b);

/* One bf16 scale per row of a whole tensor (`b->begin` = 0, `b->count` = numel), the smallest that keeps the row's
 * largest finite value inside the top cell, clamped to the range the cells are valid in. */
int bl_scales(const bl_block *b, const void *src, uint16_t *scales);

int64_t bl_int_encode(const bl_block *b, int factor, const void *src, const uint16_t *scales, uint8_t *out, size_t cap);
int bl_int_decode(const bl_block *b, int factor, const uint8_t *in, size_t len, uint16_t *scales, void *held);
int64_t bl_intint_encode(const bl_block *b, int coarse, int fine, const void *src, const uint16_t *scales,
                         uint8_t *out, size_t cap);
int bl_intint_decode(const bl_block *b, int coarse, int fine, const uint8_t *in, size_t len, const uint16_t *scales,
                     const void *held, void *out);
int64_t bl_refine_encode(const bl_block *b, int kind, const void *src, const uint16_t *scales, uint8_t *out, size_t cap);
int bl_refine_decode(const bl_block *b, int kind, const uint8_t *in, size_t len, const uint16_t *scales,
                     const void *held, void *out);
int64_t bl_half_encode(const bl_block *b, const void *src, uint8_t *out, size_t cap);
int bl_half_decode(const bl_block *b, const uint8_t *in, size_t len, void *held);
/* A new version against the held one: `bits` > 0, an approximation to about that many bits of the new values'
 * scale; 0, exact; `after`, the step D of the approximate chunk that made `held` (BL_DELTA_ALONE: none). */
#define BL_DELTA_ALONE 0x7FFF
int64_t bl_delta_encode(const bl_block *b, int bits, int after, const void *src, const void *held, uint8_t *out,
                        size_t cap);
int bl_delta_decode(const bl_block *b, const uint8_t *in, size_t len, const void *held, void *out);

/* Kernel paths: 0 scalar (always), 1 AVX2, 2 AVX-512. bl_path_available tells what this CPU runs;
 * bl_set_path picks one (returns BL_E_ARGUMENT if unavailable); the default is the best available. */
int bl_path_available(int path);
int bl_set_path(int path);
int bl_get_path(void);

#endif
