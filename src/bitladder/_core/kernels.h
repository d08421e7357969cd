/* The kernel paths and the dispatcher's table of them. */
#ifndef BL_KERNELS_H
#define BL_KERNELS_H

#include "internal.h"

typedef struct {
    void (*codes)(const void *vals, size_t n, int dtype, int inner, float s, int max_code, int32_t *codes);
    void (*cells)(const int32_t *codes, size_t n, float s, int t, uint32_t *lo, uint32_t *hi);
    void (*recon)(const int32_t *codes, size_t n, float s, int32_t factor, int dtype, void *out);
} bl_kernels;

#define BL_DECLARE_PATH(p) \
    void codes_tile_##p(const void *, size_t, int, int, float, int, int32_t *); \
    void cells_tile_##p(const int32_t *, size_t, float, int, uint32_t *, uint32_t *); \
    void recon_tile_##p(const int32_t *, size_t, float, int32_t, int, void *);
BL_DECLARE_PATH(scalar)
BL_DECLARE_PATH(avx2)
BL_DECLARE_PATH(avx512)

const bl_kernels *bl_kernels_now(void);

#endif
