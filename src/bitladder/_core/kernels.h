/* The kernel paths and the dispatcher's table of them. */
#ifndef BL_KERNELS_H
#define BL_KERNELS_H

#include "entropy.h"

typedef struct {
    void (*codes)(const void *vals, size_t n, int dtype, int inner, float s, int max_code, int32_t *codes);
    void (*cells)(const int32_t *codes, size_t n, float s, int t, uint32_t *lo, uint32_t *hi);
    void (*recon)(const int32_t *codes, size_t n, float s, int32_t factor, int dtype, void *out);
    void (*cells_f32)(const void *vals, size_t n, int bf16, float s, int max_code, int tz,
                      uint32_t *flag, uint32_t *first, uint32_t *count, uint32_t *sign);
    /* The same for a float16 source, or NULL where the path has none (codes and cells then run apart). */
    void (*cells_f16)(const uint16_t *vals, size_t n, float s, int max_code, int tz,
                      uint32_t *flag, uint32_t *first, uint32_t *count, uint32_t *sign);
    void (*tb)(bl_bitr *r, const uint32_t *count, size_t n, uint32_t *index);
    uint32_t (*compose_f32)(const uint32_t *flag, const uint32_t *first, const uint32_t *count, const uint32_t *index,
                            const uint32_t *sign, int tz, const uint32_t *held, size_t n, uint32_t *out);
    uint32_t (*compose_16)(const uint32_t *flag, const uint32_t *first, const uint32_t *count, const uint32_t *index,
                           const uint32_t *sign, int tz, const uint16_t *held, size_t n, uint16_t *out);
    void (*urans)(urans_dec *d, const uint32_t *flag, const uint32_t *count, size_t n, uint32_t *index);
    /* A tile of one rANS context 32 symbols at a time, or NULL where the path has none (entropy.h's loop runs). */
    rans_tile_kernel *rans_tile;
    rans_mixed_kernel *rans_mixed;
} bl_kernels;

#define BL_DECLARE_PATH(p) \
    void codes_tile_##p(const void *, size_t, int, int, float, int, int32_t *); \
    void cells_tile_##p(const int32_t *, size_t, float, int, uint32_t *, uint32_t *); \
    void recon_tile_##p(const int32_t *, size_t, float, int32_t, int, void *); \
    void cells_f32_##p(const void *, size_t, int, float, int, int, uint32_t *, uint32_t *, uint32_t *, uint32_t *); \
    void tb_tile_##p(bl_bitr *, const uint32_t *, size_t, uint32_t *); \
    uint32_t compose_f32_##p(const uint32_t *, const uint32_t *, const uint32_t *, const uint32_t *, const uint32_t *, \
                             int, const uint32_t *, size_t, uint32_t *); \
    uint32_t compose_16_##p(const uint32_t *, const uint32_t *, const uint32_t *, const uint32_t *, const uint32_t *, \
                            int, const uint16_t *, size_t, uint16_t *); \
    void urans_tile_##p(urans_dec *, const uint32_t *, const uint32_t *, size_t, uint32_t *);
BL_DECLARE_PATH(scalar)
BL_DECLARE_PATH(avx2)
BL_DECLARE_PATH(avx512)

rans_tile_kernel rans_tile_avx2, rans_tile_avx512;
rans_mixed_kernel rans_mixed_avx2, rans_mixed_avx512;
void cells_f16_avx512(const uint16_t *, size_t, float, int, int, uint32_t *, uint32_t *, uint32_t *, uint32_t *);
void recon_f16_avx512(const int32_t *, size_t, float, int32_t, uint16_t *);

const bl_kernels *bl_kernels_now(void);

#endif
