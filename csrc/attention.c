/* PLACEHOLDER (correct, slow): replaced by the flash-style tiled kernel. */
#include <math.h>
#include "tinylm.h"
#include "common.h"

#define DEFINE_ATTN(FWD, BWD, T, EXP, LOG)                                          \
int FWD(int64_t bh, int64_t tq, int64_t tk, int64_t d, T scale, int causal,        \
        const T *q, const T *k, const T *v, T *o, T *lse, int nthreads) {           \
    (void)nthreads;                                                                 \
    T *s = (T *)tl_alloc(sizeof(T) * (size_t)(tk > 0 ? tk : 1));                   \
    if (!s) return TL_ENOMEM;                                                       \
    for (int64_t b = 0; b < bh; b++)                                                \
    for (int64_t i = 0; i < tq; i++) {                                              \
        const T *qi = q + (b * tq + i) * d; T *oi = o + (b * tq + i) * d;          \
        int64_t jmax = causal ? i + (tk - tq) + 1 : tk;                             \
        if (jmax > tk) jmax = tk;                                                   \
        T mx = -INFINITY;                                                           \
        for (int64_t j = 0; j < jmax; j++) {                                        \
            T acc = 0; const T *kj = k + (b * tk + j) * d;                          \
            for (int64_t x = 0; x < d; x++) acc += qi[x] * kj[x];                   \
            s[j] = acc * scale; if (s[j] > mx) mx = s[j];                           \
        }                                                                           \
        for (int64_t x = 0; x < d; x++) oi[x] = 0;                                  \
        if (jmax <= 0) { lse[b * tq + i] = -INFINITY; continue; }                   \
        T sum = 0;                                                                  \
        for (int64_t j = 0; j < jmax; j++) { s[j] = EXP(s[j] - mx); sum += s[j]; }  \
        for (int64_t j = 0; j < jmax; j++) {                                        \
            const T *vj = v + (b * tk + j) * d; T p = s[j] / sum;                   \
            for (int64_t x = 0; x < d; x++) oi[x] += p * vj[x];                     \
        }                                                                           \
        lse[b * tq + i] = mx + LOG(sum);                                            \
    }                                                                               \
    tl_free(s);                                                                     \
    return TL_OK;                                                                   \
}                                                                                   \
int BWD(int64_t bh, int64_t tq, int64_t tk, int64_t d, T scale, int causal,        \
        const T *q, const T *k, const T *v, const T *o, const T *dout,              \
        const T *lse, T *dq, T *dk, T *dv, int nthreads) {                          \
    (void)nthreads;                                                                 \
    for (int64_t x = 0; x < bh * tq * d; x++) dq[x] = 0;                            \
    for (int64_t x = 0; x < bh * tk * d; x++) { dk[x] = 0; dv[x] = 0; }             \
    for (int64_t b = 0; b < bh; b++)                                                \
    for (int64_t i = 0; i < tq; i++) {                                              \
        const T *qi = q + (b * tq + i) * d, *oi = o + (b * tq + i) * d;             \
        const T *doi = dout + (b * tq + i) * d; T *dqi = dq + (b * tq + i) * d;     \
        int64_t jmax = causal ? i + (tk - tq) + 1 : tk;                             \
        if (jmax > tk) jmax = tk;                                                   \
        T delta = 0;                                                                \
        for (int64_t x = 0; x < d; x++) delta += doi[x] * oi[x];                    \
        for (int64_t j = 0; j < jmax; j++) {                                        \
            const T *kj = k + (b * tk + j) * d, *vj = v + (b * tk + j) * d;         \
            T acc = 0, dp = 0;                                                      \
            for (int64_t x = 0; x < d; x++) { acc += qi[x] * kj[x]; dp += doi[x] * vj[x]; } \
            T p = EXP(acc * scale - lse[b * tq + i]);                               \
            T ds = p * (dp - delta) * scale;                                        \
            T *dkj = dk + (b * tk + j) * d, *dvj = dv + (b * tk + j) * d;           \
            for (int64_t x = 0; x < d; x++) {                                       \
                dvj[x] += p * doi[x]; dqi[x] += ds * kj[x]; dkj[x] += ds * qi[x];   \
            }                                                                       \
        }                                                                           \
    }                                                                               \
    return TL_OK;                                                                   \
}

DEFINE_ATTN(tl_attn_fwd_f32, tl_attn_bwd_f32, float, expf, logf)
DEFINE_ATTN(tl_attn_fwd_f64, tl_attn_bwd_f64, double, exp, log)
