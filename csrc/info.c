/* Build information reported by `tinylm info`. */
#include "tinylm.h"
#include "common.h"

#ifndef TL_BUILD_FLAGS
#define TL_BUILD_FLAGS "unknown"
#endif

const char *tl_simd_name(void) { return TL_SIMD_NAME; }

int tl_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int tl_omp_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

const char *tl_build_flags(void) { return TL_BUILD_FLAGS; }
