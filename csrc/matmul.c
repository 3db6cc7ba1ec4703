/* PLACEHOLDER (correct, slow): replaced by the blocked SIMD kernel. */
#include "tinylm.h"
#include "common.h"

#define DEFINE_MATMUL(NAME, T)                                                      \
int NAME(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,                \
         const T *a, const T *b, T *c, int accumulate, int nthreads) {              \
    (void)nthreads;                                                                 \
    for (int64_t i = 0; i < m; i++) {                                               \
        T *crow = c + i * n;                                                        \
        if (!accumulate) for (int64_t j = 0; j < n; j++) crow[j] = 0;               \
        for (int64_t p = 0; p < k; p++) {                                           \
            T aip = trans_a ? a[p * m + i] : a[i * k + p];                          \
            for (int64_t j = 0; j < n; j++)                                         \
                crow[j] += aip * (trans_b ? b[j * k + p] : b[p * n + j]);           \
        }                                                                           \
    }                                                                               \
    return TL_OK;                                                                   \
}

DEFINE_MATMUL(tl_matmul_f32, float)
DEFINE_MATMUL(tl_matmul_f64, double)
