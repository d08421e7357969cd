/* The avx2 copy of kernels.inc. */
#include "kernels.h"

#if defined(__x86_64__)
#pragma GCC target("avx2,bmi2")
#define K(name) name##_avx2
#include "kernels.inc"
#endif
