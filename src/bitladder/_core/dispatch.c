/* Picks the kernel path at run time: the best this CPU has, unless a caller (a test) asks for another. */
#include "kernels.h"

static const bl_kernels paths[3] = {
    {codes_tile_scalar, cells_tile_scalar, recon_tile_scalar, cells_f32_scalar, NULL, tb_tile_scalar, compose_f32_scalar, compose_16_scalar, urans_tile_scalar, NULL, NULL},
#if defined(__x86_64__)
    {codes_tile_avx2, cells_tile_avx2, recon_tile_avx2, cells_f32_avx2, NULL, tb_tile_avx2, compose_f32_avx2, compose_16_avx2, urans_tile_avx2, rans_tile_avx2, rans_mixed_avx2},
    {codes_tile_avx512, cells_tile_avx512, recon_tile_avx512, cells_f32_avx512, cells_f16_avx512, tb_tile_avx512, compose_f32_avx512, compose_16_avx512, urans_tile_avx512, rans_tile_avx512, rans_mixed_avx512},
#endif
};

static int current = -1;

int bl_path_available(int path) {
    if (path == 0) return 1;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (path == 1) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2");
    if (path == 2) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
    return 0;
}

int bl_set_path(int path) {
    if (path < 0 || path > 2 || !bl_path_available(path)) return BL_E_ARGUMENT;
    current = path;
    return BL_OK;
}

int bl_get_path(void) {
    if (current < 0) current = bl_path_available(2) ? 2 : bl_path_available(1) ? 1 : 0;
    return current;
}

const bl_kernels *bl_kernels_now(void) { return &paths[bl_get_path()]; }
