/* Build information reported by `tinylm info`, and the fork() guard
 * described in common.h. */
#include "tinylm.h"
#include "common.h"

#if defined(_OPENMP) && (defined(__unix__) || defined(__APPLE__))
#include <pthread.h>
#define TL_HAVE_ATFORK 1
#endif

#ifndef TL_BUILD_FLAGS
#define TL_BUILD_FLAGS "unknown"
#endif

int tl_pool_used = 0;
int tl_fork_child = 0;

#ifdef TL_HAVE_ATFORK
/* In the child of a fork(): if the parent's kernels may have started the
 * OpenMP pool, run single-threaded from now on. */
static void tl_atfork_child(void) {
    if (__atomic_load_n(&tl_pool_used, __ATOMIC_RELAXED))
        __atomic_store_n(&tl_fork_child, 1, __ATOMIC_RELAXED);
}

__attribute__((constructor)) static void tl_register_atfork(void) {
    pthread_atfork(NULL, NULL, tl_atfork_child);
}
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
    return tl_fork_child ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

int tl_single_threaded_after_fork(void) { return tl_fork_child; }

const char *tl_build_flags(void) { return TL_BUILD_FLAGS; }
