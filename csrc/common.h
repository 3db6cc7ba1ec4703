/* Shared helpers for the kernels: vector width, OpenMP shims, aligned allocation. */
#ifndef TINYLM_COMMON_H
#define TINYLM_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Threads and fork().  libgomp is not fork-safe: a child process forked after
 * OpenMP started its thread pool (multiprocessing's default on Linux) hangs
 * in its first parallel region, waiting for threads that were not copied.
 * info.c registers a pthread_atfork handler that sets tl_fork_child in such
 * a child; from then on every kernel runs on one thread (team of 1: the pool
 * is never touched).  tl_pool_used records that a kernel asked for more than
 * one thread, so a child forked before that keeps its threads. */
extern int tl_pool_used;
extern int tl_fork_child;

/* Threads a kernel uses for the request n (n <= 0: OpenMP's default). */
static inline int tl_nthreads(int n) {
#ifdef _OPENMP
    if (__atomic_load_n(&tl_fork_child, __ATOMIC_RELAXED)) return 1;
    n = n > 0 ? n : omp_get_max_threads();
    if (n > 1 && !__atomic_load_n(&tl_pool_used, __ATOMIC_RELAXED))
        __atomic_store_n(&tl_pool_used, 1, __ATOMIC_RELAXED);
    return n;
#else
    (void)n;
    return 1;
#endif
}

/* Vector width in bytes for the GCC/Clang vector extensions, chosen from what
 * the compiler was told the target supports.  A 64-byte vector type compiled
 * without AVX-512 would silently become scalar code, so never hard-code it. */
#if defined(__AVX512F__)
#define TL_VBYTES 64
#define TL_SIMD_NAME "avx512f"
#elif defined(__AVX2__) && defined(__FMA__)
#define TL_VBYTES 32
#define TL_SIMD_NAME "avx2+fma"
#elif defined(__AVX__)
#define TL_VBYTES 32
#define TL_SIMD_NAME "avx"
#elif defined(__ARM_NEON) || defined(__aarch64__)
#define TL_VBYTES 16
#define TL_SIMD_NAME "neon"
#elif defined(__SSE2__)
#define TL_VBYTES 16
#define TL_SIMD_NAME "sse2"
#else
#define TL_VBYTES 16
#define TL_SIMD_NAME "generic"
#endif

#if defined(__GNUC__) || defined(__clang__)
#define TL_RESTRICT __restrict__
#define TL_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define TL_RESTRICT
#define TL_ALWAYS_INLINE static inline
#endif

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t clamp64(int64_t x, int64_t lo, int64_t hi) { return min64(max64(x, lo), hi); }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

/* This thread's number inside an OpenMP parallel region (0 in a serial build). */
static inline int tl_thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* 64-byte aligned scratch, portable (no aligned_alloc / posix_memalign).
 * NULL on failure (the caller returns TL_ENOMEM).  Free with tl_free. */
static inline void *tl_alloc(size_t bytes) {
    unsigned char *raw = (unsigned char *)malloc(bytes + 64 + sizeof(void *));
    if (raw == NULL) return NULL;
    uintptr_t p = ((uintptr_t)(raw + sizeof(void *)) + 63) & ~(uintptr_t)63;
    ((void **)p)[-1] = raw;
    return (void *)p;
}

static inline void tl_free(void *p) {
    if (p != NULL) free(((void **)p)[-1]);
}

#endif
