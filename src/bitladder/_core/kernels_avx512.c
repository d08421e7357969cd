/* The avx512 copy of kernels.inc. */
#include "kernels.h"

#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,bmi2")
#define K(name) name##_avx512
#include "kernels.inc"
#endif
