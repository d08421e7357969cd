/* The scalar copy of kernels.inc. */
#include "kernels.h"

#if 1

#define K(name) name##_scalar
#include "kernels.inc"
#endif
