/* Fused scaled-dot-product attention, forward and backward ("flash" style).
 *
 * For one (batch*head) problem, with q: (tq, d), k, v: (tk, d):
 *
 *     S = scale * q k^T                      (tq, tk)   scores
 *     P = softmax(S) row by row              (tq, tk)   probabilities
 *     o = P v                                (tq, d)    output
 *     lse[i] = log sum_j exp(S[i, j])        (tq,)      saved for the backward
 *
 * Causal masking is bottom-right aligned: key j is visible to query i iff
 * j <= i + (tk - tq).  A query row with no visible key gets o = 0, lse = -inf
 * and zero gradients.  The NumPy specification is attention_reference /
 * attention_backward_reference in tinylm/kernels.py.
 *
 * The (tq, tk) matrices S and P are never stored whole.  The work is cut into
 * tiles of BQ query rows by BK keys that live in a small per-thread scratch:
 *
 *   forward   one task per (bh, query block).  Walk over the key blocks with an
 *             ONLINE SOFTMAX: keep, per row, the running max m and running sum
 *             l = sum_j exp(S[i, j] - m) and an unnormalised accumulator
 *             acc = sum_j exp(S[i, j] - m) v[j].  When a new block raises the
 *             max from m to m', everything so far is rescaled by exp(m - m').
 *             At the end o = acc / l and lse = m + log(l).
 *
 *   backward  recomputes P = exp(S - lse) tile by tile, with
 *             delta[i] = sum_x dout[i, x] o[i, x]   (= rowsum(dP * P)),
 *                 dv = P^T dout        dP = dout v^T
 *                 dS = P * (dP - delta)
 *                 dq = scale * dS k    dk = scale * dS^T q
 *             Every task owns the rows it writes, so no two threads ever
 *             add into the same memory (no atomics):
 *             - with at least two problems per thread, one task per problem
 *               walks the key blocks and makes dk, dv and dq together
 *               (5 tile products per (query, key) tile pair);
 *             - otherwise, for parallelism within a problem, two kinds of task:
 *                 (bh, key block)   -> dk, dv rows of that key block
 *                 (bh, query block) -> dq rows of that query block
 *               each recomputing the S and dP tiles it needs (7 products).
 *             Both add every sum in the same order, so the results are the
 *             same bits whatever the thread count or the split.
 *
 * Causal tiles that are entirely masked are never visited.  Threads: OpenMP
 * over the tasks, dynamic schedule (causal tasks have unequal sizes).  The
 * forward likewise uses one task per problem when there are enough problems.
 *
 * The arithmetic lives in two tile kernels, vectorised with GCC/Clang vector
 * extensions (TL_VBYTES wide, see common.h), and one vector exp():
 *   tile_scores  C = alpha * A B^T   for a row block A (user memory) and a
 *                transposed copy BT of the other block (scratch):  S and dP
 *   tile_axpy    C += P B            row by row, each row over its own range
 *                of columns (its visible keys or queries), so a masked entry
 *                never contributes: not even a NaN in a key or value that a
 *                query cannot see reaches that query's output
 *   vexp         exp() by range reduction and a Taylor polynomial
 * User arrays are only read with scalar loads or copied into 64-byte aligned
 * scratch first, so their alignment (8/16 bytes from NumPy) does not matter.
 * (A task copies the blocks it needs, or a whole problem's operands when
 * they fit in L2; the memory stays a few tiles per thread otherwise.)
 * No -ffast-math anywhere: NaN and inf propagate.
 *
 * This file is compiled once but instantiates its typed part twice (float
 * and double): the part after "#else" below is included from this same file
 * with `real`, `vec`, `VL` and FN() defined for each type.
 */
#ifndef TL_ATTN_TYPED_PART

#include <math.h>
#include <string.h>
#include "tinylm.h"
#include "common.h"

/* Tile sizes.  64 is a multiple of 2 vectors for every vector width we
 * build for (4 floats on SSE/NEON ... 16 floats on AVX-512), which
 * tile_scores relies on for its column blocks. */
#define BQ 64  /* query rows per tile */
#define BK 64  /* keys per tile */

#define TL_ALWAYS_INLINE static inline __attribute__((always_inline))

static const int64_t tl_zeros[BQ];   /* "every row starts at column 0" for tile_axpy */

/* A task that owns a whole problem lays out that problem's operands once,
 * instead of block by block, if they take at most this much: they must stay
 * in the L2 cache (512 KiB per core here), or block copies are faster. */
#define TL_ATTN_WHOLE_BYTES ((size_t)256 << 10)

/* Row stride for a whole problem's transposed (d, len) operand: len rounded
 * up to whole tiles, plus 16 elements.  Without the 16, a stride of a power
 * of two such as 1024 floats (4 KiB) puts the d rows a tile kernel walks
 * down into the same few L1 cache sets, and they evict each other. */
static inline int64_t whole_ld(int64_t len) { return (len + BK - 1) / BK * BK + 16; }

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t clamp64(int64_t x, int64_t lo, int64_t hi) { return min64(max64(x, lo), hi); }

static inline int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Carve `bytes` (rounded up to 64) out of a scratch buffer at *offset.
 * With base == NULL it only counts, which is how scratch sizes are measured. */
static void *carve(unsigned char *base, size_t *offset, size_t bytes) {
    void *p = base ? (void *)(base + *offset) : NULL;
    *offset += (bytes + 63) & ~(size_t)63;
    return p;
}

/* ---- float instantiation ---------------------------------------------- */
#define TL_ATTN_TYPED_PART
#define real float
#define VL (TL_VBYTES / 4)                     /* lanes per vector */
typedef float tl_vf32 __attribute__((vector_size(TL_VBYTES)));
typedef uint32_t tl_vu32 __attribute__((vector_size(TL_VBYTES)));
#define vec tl_vf32
#define uvec tl_vu32
#define FN(name) name##_f32
#define SCALAR_EXP expf
#define SCALAR_LOG logf
/* vexp: 2^n scaling via the exponent bits of a float */
#define EXP_LO (-87.0f)          /* exp(-87) = 1.6e-38 is still a normal float */
#define EXP_HI (88.0f)           /* exp(88) = 1.7e38 < FLT_MAX */
#define EXP_MAGIC 12582912.0f    /* 1.5 * 2^23: adding it rounds to an integer */
#define EXP_MAGIC_BITS 0x4B400000u
#define EXP_BIAS 127u
#define EXP_MANT_BITS 23
#define EXP_LN2_HI 0.693359375f  /* ln 2 = LN2_HI + LN2_LO (Cody-Waite) */
#define EXP_LN2_LO (-2.12194440e-4f)
#define EXP_DEGREE 7             /* Taylor degree: error < 1e-8 on |r| <= ln2/2 */
#include "attention.c"
#undef real
#undef VL
#undef vec
#undef uvec
#undef FN
#undef SCALAR_EXP
#undef SCALAR_LOG
#undef EXP_LO
#undef EXP_HI
#undef EXP_MAGIC
#undef EXP_MAGIC_BITS
#undef EXP_BIAS
#undef EXP_MANT_BITS
#undef EXP_LN2_HI
#undef EXP_LN2_LO
#undef EXP_DEGREE

/* ---- double instantiation --------------------------------------------- */
#define real double
#define VL (TL_VBYTES / 8)
typedef double tl_vf64 __attribute__((vector_size(TL_VBYTES)));
typedef uint64_t tl_vu64 __attribute__((vector_size(TL_VBYTES)));
#define vec tl_vf64
#define uvec tl_vu64
#define FN(name) name##_f64
#define SCALAR_EXP exp
#define SCALAR_LOG log
#define EXP_LO (-708.0)          /* exp(-708) = 3.3e-308 is still a normal double */
#define EXP_HI (709.0)           /* exp(709) = 8.2e307 < DBL_MAX */
#define EXP_MAGIC 6755399441055744.0  /* 1.5 * 2^52 */
#define EXP_MAGIC_BITS 0x4338000000000000ull
#define EXP_BIAS 1023ull
#define EXP_MANT_BITS 52
#define EXP_LN2_HI 6.93147180369123816490e-01
#define EXP_LN2_LO 1.90821492927058770002e-10
#define EXP_DEGREE 13            /* error < 1e-17 on |r| <= ln2/2 */
#include "attention.c"

#else /* ================= typed part: `real` is float or double ============ */

/* ---- vector helpers ----------------------------------------------------- */

/* Loads and stores through memcpy: correct for any alignment, and a single
 * vector move once compiled. */
TL_ALWAYS_INLINE vec FN(vload)(const real *p) { vec v; memcpy(&v, p, sizeof v); return v; }
TL_ALWAYS_INLINE void FN(vstore)(real *p, vec v) { memcpy(p, &v, sizeof v); }
TL_ALWAYS_INLINE vec FN(vsplat)(real x) { return (vec){0} + x; }

/* Lane-wise  mask ? a : b,  where mask lanes are all ones or all zeros. */
TL_ALWAYS_INLINE vec FN(vselect)(uvec mask, vec a, vec b) {
    return (vec)(((uvec)a & mask) | ((uvec)b & ~mask));
}

/* Lane-wise max that keeps NaN: a NaN in either argument gives NaN, as
 * np.max does.  (A plain `b > a ? b : a` would drop a NaN in b.) */
TL_ALWAYS_INLINE vec FN(vmax_nan)(vec a, vec b) {
    uvec take_b = (uvec)(b > a) | (uvec)(b != b);
    return FN(vselect)(take_b, b, a);
}

static inline real FN(hsum)(vec v) {
    real s = 0;
    for (int i = 0; i < VL; i++) s += v[i];
    return s;
}

/* Largest lane, or NaN if any lane is NaN (branch-free: a plain max and a
 * separate "saw a NaN" flag). */
static inline real FN(hmax_nan)(vec v) {
    real m = v[0];
    int nan = 0;
    for (int i = 0; i < VL; i++) {
        m = v[i] > m ? v[i] : m;
        nan |= v[i] != v[i];
    }
    return nan ? (real)NAN : m;
}

/* exp(x), lane by lane.
 *   x = n ln2 + r  with n = round(x / ln2) an integer and |r| <= ln2 / 2,
 *   exp(x) = 2^n * exp(r),
 *   exp(r) ~ 1 + r + r^2/2! + ... + r^D/D!   (Horner; D = EXP_DEGREE),
 *   2^n is built directly in the exponent bits.
 * x < EXP_LO gives 0 (instead of a subnormal), x > EXP_HI gives +inf, NaN
 * stays NaN.  Relative error ~1 ulp in between.  No float->int conversion
 * is used: n is read out of the bits of x/ln2 + 1.5*2^MANT_BITS. */
TL_ALWAYS_INLINE vec FN(vexp)(vec x) {
    const vec lo = FN(vsplat)(EXP_LO), hi = FN(vsplat)(EXP_HI);
    uvec under = (uvec)(x < lo), over = (uvec)(x > hi);
    vec xc = FN(vselect)(under, lo, FN(vselect)(over, hi, x)); /* NaN passes */
    /* n = round(x / ln2): adding 1.5*2^MANT rounds away the fraction */
    vec t = xc * (real)1.44269504088896340736 + EXP_MAGIC;
    vec n = t - EXP_MAGIC;
    /* r = x - n ln2, in two steps so that n * LN2_HI is exact */
    vec r = (xc - n * EXP_LN2_HI) - n * EXP_LN2_LO;
    /* exp(r) by Horner: p = 1/D!; p = p r + 1/(D-1)!; ... ; p = p r + 1 */
    static const double inv_fact[14] = {
        1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040,
        1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800,
        1.0 / 479001600, 1.0 / 6227020800.0};
    vec p = FN(vsplat)((real)inv_fact[EXP_DEGREE]);
    for (int i = EXP_DEGREE - 1; i >= 0; i--) p = p * r + (real)inv_fact[i];
    /* 2^n: integer n sits in the low bits of t; move n + bias into the exponent */
    uvec two_n = ((uvec)t - EXP_MAGIC_BITS + EXP_BIAS) << EXP_MANT_BITS;
    vec e = p * (vec)two_n;
    e = FN(vselect)(under, FN(vsplat)(0), e);
    return FN(vselect)(over, FN(vsplat)((real)INFINITY), e);
}

/* ---- tile kernel 1: scores ---------------------------------------------- */

/* One register block: for NR (1 to 6) rows r and 2 vectors of columns,
 *     C[r, 0 : 2VL] = alpha * sum_x A[r, x] * BT[x, 0 : 2VL]
 * A: NR rows with stride lda (user memory; scalar loads, broadcast)
 * BT: (d, ldb) scratch, row x holds element x of each column's vector.
 * 6 x 2 = 12 accumulators: enough independent FMA chains to hide the FMA
 * latency, and with the 2 loaded vectors and 1 broadcast, 15 of the 16
 * vector registers of AVX2. */
TL_ALWAYS_INLINE void FN(scores_block)(const int NR, int64_t d, real alpha,
                                       const real *A, int64_t lda,
                                       const real *BT, int64_t ldb,
                                       real *C, int64_t ldc) {
    vec acc[6][2];
    for (int r = 0; r < NR; r++) acc[r][0] = acc[r][1] = (vec){0};
    for (int64_t x = 0; x < d; x++) {
        const real *b = BT + x * ldb;
        vec b0 = FN(vload)(b), b1 = FN(vload)(b + VL);
        for (int r = 0; r < NR; r++) {
            real a = A[r * lda + x];
            acc[r][0] += a * b0;
            acc[r][1] += a * b1;
        }
    }
    for (int r = 0; r < NR; r++) {
        FN(vstore)(C + r * ldc, alpha * acc[r][0]);
        FN(vstore)(C + r * ldc + VL, alpha * acc[r][1]);
    }
}

/* C = alpha * A B^T  as a (R, NC) tile:
 *     C[r, c] = alpha * sum_x A[r, x] * BT[x, c]        r < R, c < NC
 * A: (R, d) rows of a user array (row stride lda)
 * BT: (d, >= NC) transposed copy of B (row stride ldbt), NC a multiple of
 *     2 vectors
 * C: (R, NC) scratch.  Each C element sums x = 0 .. d-1 in order. */
static void FN(tile_scores)(int64_t R, int64_t NC, int64_t d, real alpha,
                            const real *A, int64_t lda, const real *BT, int64_t ldbt,
                            real *C) {
    for (int64_t c0 = 0; c0 < NC; c0 += 2 * VL) {   /* 2-vector column block */
        int64_t r = 0;
        for (; r + 6 <= R; r += 6)
            FN(scores_block)(6, d, alpha, A + r * lda, lda, BT + c0, ldbt, C + r * NC + c0, NC);
        const real *Ar = A + r * lda;
        real *Cr = C + r * NC + c0;
        switch (R - r) {   /* 0 to 5 rows left */
        case 5: FN(scores_block)(5, d, alpha, Ar, lda, BT + c0, ldbt, Cr, NC); break;
        case 4: FN(scores_block)(4, d, alpha, Ar, lda, BT + c0, ldbt, Cr, NC); break;
        case 3: FN(scores_block)(3, d, alpha, Ar, lda, BT + c0, ldbt, Cr, NC); break;
        case 2: FN(scores_block)(2, d, alpha, Ar, lda, BT + c0, ldbt, Cr, NC); break;
        case 1: FN(scores_block)(1, d, alpha, Ar, lda, BT + c0, ldbt, Cr, NC); break;
        default: break;
        }
    }
}

/* ---- tile kernel 2: accumulate P B ---------------------------------------- */

/* One register block: for NR rows and NV vectors of columns (NR * NV <= 12),
 *     C[r, 0 : NV*VL] += sum_{c = lo .. hi-1} P(r, c) * B[c, 0 : NV*VL]
 * where P(r, c) = P[r * prs + c * pcs]  (pcs = 1: row-major; prs = 1: P is
 * stored transposed, as the backward's dS^T tile is when it makes dq). */
TL_ALWAYS_INLINE void FN(axpy_block)(const int NR, const int NV, int64_t lo, int64_t hi,
                                     const real *P, int64_t prs, int64_t pcs,
                                     const real *B, int64_t ldb,
                                     real *C, int64_t ldc) {
    vec acc[6][4];
    for (int r = 0; r < NR; r++)
        for (int u = 0; u < NV; u++) acc[r][u] = FN(vload)(C + r * ldc + u * VL);
    for (int64_t c = lo; c < hi; c++) {
        vec b[4];
        for (int u = 0; u < NV; u++) b[u] = FN(vload)(B + c * ldb + u * VL);
        for (int r = 0; r < NR; r++) {
            real p = P[r * prs + c * pcs];
            for (int u = 0; u < NV; u++) acc[r][u] += p * b[u];
        }
    }
    for (int r = 0; r < NR; r++)
        for (int u = 0; u < NV; u++) FN(vstore)(C + r * ldc + u * VL, acc[r][u]);
}

/* 6 rows over the column range [lo, hi), all of C's dp columns, in blocks of
 * 6 rows x 2 vectors: 12 accumulators. */
static void FN(axpy_rows6)(int64_t lo, int64_t hi, int64_t dp, const real *P, int64_t prs,
                           int64_t pcs, const real *B, real *C) {
    int64_t x0 = 0;
    for (; x0 + 2 * VL <= dp; x0 += 2 * VL)
        FN(axpy_block)(6, 2, lo, hi, P, prs, pcs, B + x0, dp, C + x0, dp);
    if (x0 < dp)
        FN(axpy_block)(6, 1, lo, hi, P, prs, pcs, B + x0, dp, C + x0, dp);
}

/* NR (1 or 2) rows over the column range [lo, hi), all of C's dp columns. */
TL_ALWAYS_INLINE void FN(axpy_rows)(const int NR, int64_t lo, int64_t hi, int64_t dp,
                                    const real *P, int64_t prs, int64_t pcs, const real *B, real *C) {
    if (lo >= hi) return;
    int64_t x0 = 0;
    for (; x0 + 4 * VL <= dp; x0 += 4 * VL)
        FN(axpy_block)(NR, 4, lo, hi, P, prs, pcs, B + x0, dp, C + x0, dp);
    /* 1 to 3 vectors left (NV must be a constant for the registers to stay registers) */
    switch ((dp - x0) / VL) {
    case 3: FN(axpy_block)(NR, 3, lo, hi, P, prs, pcs, B + x0, dp, C + x0, dp); break;
    case 2: FN(axpy_block)(NR, 2, lo, hi, P, prs, pcs, B + x0, dp, C + x0, dp); break;
    case 1: FN(axpy_block)(NR, 1, lo, hi, P, prs, pcs, B + x0, dp, C + x0, dp); break;
    default: break;
    }
}

/* C += P B, each row over its own range of P's columns:
 *     C[r, :] += sum_{c = lo[r] .. hi[r]-1} P(r, c) * B[c, :]      r < R
 * P(r, c) = P[r * prs + c * pcs] scratch   B: (*, dp)   C: (R, dp), dp a
 * multiple of VL.  Rows are done in groups of 6, then pairs, sharing each
 * load of B over the columns the group has in common; every row still adds
 * its terms in increasing c, as a lone row would. */
static void FN(tile_axpy)(int64_t R, int64_t dp, const int64_t *lo, const int64_t *hi,
                          const real *P, int64_t prs, int64_t pcs, const real *B, real *C) {
    int64_t r = 0;
    for (; r + 6 <= R; r += 6) {
        int64_t a = lo[r], z = hi[r];              /* columns all 6 rows have */
        for (int g = 1; g < 6; g++) {
            a = max64(a, lo[r + g]);
            z = min64(z, hi[r + g]);
        }
        if (a >= z) {   /* none: one row at a time */
            for (int g = 0; g < 6; g++)
                FN(axpy_rows)(1, lo[r + g], hi[r + g], dp, P + (r + g) * prs, prs, pcs,
                              B, C + (r + g) * dp);
            continue;
        }
        for (int g = 0; g < 6; g++)                /* before the common part */
            FN(axpy_rows)(1, lo[r + g], a, dp, P + (r + g) * prs, prs, pcs, B, C + (r + g) * dp);
        FN(axpy_rows6)(a, z, dp, P + r * prs, prs, pcs, B, C + r * dp);
        for (int g = 0; g < 6; g++)                /* after it */
            FN(axpy_rows)(1, z, hi[r + g], dp, P + (r + g) * prs, prs, pcs, B, C + (r + g) * dp);
    }
    for (; r + 2 <= R; r += 2) {
        const real *P0 = P + r * prs, *P1 = P0 + prs;
        real *C0 = C + r * dp, *C1 = C0 + dp;
        int64_t a = max64(lo[r], lo[r + 1]), z = min64(hi[r], hi[r + 1]);
        if (a >= z) {   /* no common columns: one row at a time */
            FN(axpy_rows)(1, lo[r], hi[r], dp, P0, prs, pcs, B, C0);
            FN(axpy_rows)(1, lo[r + 1], hi[r + 1], dp, P1, prs, pcs, B, C1);
            continue;
        }
        FN(axpy_rows)(1, lo[r], a, dp, P0, prs, pcs, B, C0);      /* before the common part */
        FN(axpy_rows)(1, lo[r + 1], a, dp, P1, prs, pcs, B, C1);
        FN(axpy_rows)(2, a, z, dp, P0, prs, pcs, B, C0);          /* both rows */
        FN(axpy_rows)(1, z, hi[r], dp, P0, prs, pcs, B, C0);      /* after it */
        FN(axpy_rows)(1, z, hi[r + 1], dp, P1, prs, pcs, B, C1);
    }
    if (r < R) FN(axpy_rows)(1, lo[r], hi[r], dp, P + r * prs, prs, pcs, B, C + r * dp);
}

/* ---- copies into scratch ------------------------------------------------- */

/* XT[x, c] = X[c, x] for c < n (n rows of length d, user memory); XT is (d, ld).
 * Columns n .. ld-1 are left as they are (never used). */
static void FN(copy_transposed)(int64_t n, int64_t d, const real *X, real *XT, int64_t ld) {
    for (int64_t c = 0; c < n; c++)
        for (int64_t x = 0; x < d; x++) XT[x * ld + c] = X[c * d + x];
}

/* Xp[c, 0:d] = X[c, 0:d] for c < n; Xp has dp >= d columns whose padding
 * d .. dp-1 stays zero (the scratch is zeroed once, and never written there). */
static void FN(copy_padded)(int64_t n, int64_t d, int64_t dp, const real *X, real *Xp) {
    for (int64_t c = 0; c < n; c++) memcpy(Xp + c * dp, X + c * d, sizeof(real) * (size_t)d);
}

/* ======================= forward ======================================== */

typedef struct {
    /* K and V of one key block (whole = 0, ld = BK), or of the whole problem
     * (whole = 1, ld = whole_ld(tk)), laid out for the tile kernels: */
    int whole;
    int64_t ld;
    real *kt;   /* (d, ld)   K, transposed                 */
    real *vp;   /* (ld, dp)  V, rows padded to dp          */
    real *s;    /* (BQ, BK)  scores, then probabilities     */
    real *acc;  /* (BQ, dp)  unnormalised output rows       */
    real *m;    /* (BQ,)     running row max                */
    real *l;    /* (BQ,)     running row sum of exp(S - m)  */
    int64_t *hi;/* (BQ,)     visible keys of the block, per row */
} FN(fwd_scratch);

/* ld_whole: 0 for block layout, else whole_ld(tk) for whole problems */
static size_t FN(fwd_layout)(unsigned char *base, int64_t d, int64_t dp, int64_t ld_whole,
                             FN(fwd_scratch) *sc) {
    size_t off = 0;
    sc->whole = ld_whole > 0;
    sc->ld = sc->whole ? ld_whole : BK;
    sc->kt = (real *)carve(base, &off, sizeof(real) * (size_t)(d * sc->ld));
    sc->vp = (real *)carve(base, &off, sizeof(real) * (size_t)(sc->ld * dp));
    sc->s = (real *)carve(base, &off, sizeof(real) * BQ * BK);
    sc->acc = (real *)carve(base, &off, sizeof(real) * (size_t)(BQ * dp));
    sc->m = (real *)carve(base, &off, sizeof(real) * BQ);
    sc->l = (real *)carve(base, &off, sizeof(real) * BQ);
    sc->hi = (int64_t *)carve(base, &off, sizeof(int64_t) * BQ);
    return off;
}

/* Forward for query rows i0 .. i0+R-1 of one (batch*head) problem.
 * q, o: (tq, d)   k, v: (tk, d)   lse: (tq,)   (already offset to the problem)
 * With sc->whole, sc->kt and sc->vp already hold this problem's K and V. */
static void FN(fwd_block)(const FN(fwd_scratch) *sc, int64_t tq, int64_t tk, int64_t d,
                          int64_t dp, real scale, int causal,
                          const real *q, const real *k, const real *v,
                          real *o, real *lse, int64_t i0, int64_t R) {
    const int64_t shift = tk - tq;           /* causal: key j visible iff j <= i + shift */
    const real neg_inf = (real)-INFINITY;
    real *S = sc->s, *acc = sc->acc, *m = sc->m, *l = sc->l;
    for (int64_t r = 0; r < R; r++) {
        m[r] = neg_inf;                      /* max over nothing */
        l[r] = 0;
        memset(acc + r * dp, 0, sizeof(real) * (size_t)dp);
    }
    /* Keys from j_end on are invisible to every row of the block: skip them. */
    const int64_t j_end = causal ? clamp64(i0 + R + shift, 0, tk) : tk;

    for (int64_t j0 = 0; j0 < j_end; j0 += BK) {
        const int64_t C = min64(BK, tk - j0);            /* keys in this block */
        const real *kt = sc->kt, *vp = sc->vp;          /* this block's K^T and V */
        if (sc->whole) {
            kt += j0;
            vp += j0 * dp;
        } else {
            FN(copy_transposed)(C, d, k + j0 * d, sc->kt, BK);
            FN(copy_padded)(C, d, dp, v + j0 * d, sc->vp);
        }

        /* S[r, c] = scale * q[i0+r] . k[j0+c]                      (R, BK) */
        FN(tile_scores)(R, BK, d, scale, q + i0 * d, d, kt, sc->ld, S);

        for (int64_t r = 0; r < R; r++) {
            real *Sr = S + r * BK;
            /* n = number of visible keys of this block for row i0 + r */
            int64_t n = causal ? clamp64(i0 + r + shift + 1 - j0, 0, C) : C;
            for (int64_t c = n; c < BK; c++) Sr[c] = neg_inf;  /* mask the rest */
            sc->hi[r] = 0;
            if (n == 0) continue;
            const int64_t nvec = (n + VL - 1) / VL;        /* vectors covering 0 .. n-1 */

            /* m' = max(m, max_c S[r, c]) */
            vec vm = FN(vsplat)(m[r]);
            for (int64_t u = 0; u < nvec; u++) vm = FN(vmax_nan)(vm, FN(vload)(Sr + u * VL));
            real m_new = FN(hmax_nan)(vm);
            if (m_new == neg_inf) continue;   /* every score so far is -inf: P = 0 */

            /* P[r, c] = exp(S[r, c] - m')  (masked lanes: exp(-inf) = 0),
             * block_sum = sum_c P[r, c] */
            vec vsum = (vec){0}, vmn = FN(vsplat)(m_new);
            for (int64_t u = 0; u < nvec; u++) {
                vec p = FN(vexp)(FN(vload)(Sr + u * VL) - vmn);
                FN(vstore)(Sr + u * VL, p);
                vsum += p;
            }

            /* Rescale what was accumulated under the old max:
             *   l = exp(m - m') l + block_sum,   acc = exp(m - m') acc      */
            real alpha = SCALAR_EXP(m[r] - m_new);   /* m = -inf (first block): 0 */
            l[r] = alpha * l[r] + FN(hsum)(vsum);
            if (alpha != 1) {
                vec va = FN(vsplat)(alpha);
                real *ar = acc + r * dp;
                for (int64_t x = 0; x < dp; x += VL) FN(vstore)(ar + x, va * FN(vload)(ar + x));
            }
            m[r] = m_new;
            sc->hi[r] = n;
        }
        /* acc[r, :] += sum_{c < n_r} P[r, c] v[j0 + c, :] */
        FN(tile_axpy)(R, dp, tl_zeros, sc->hi, S, BK, 1, vp, acc);
    }

    /* o = acc / l,  lse = m + log(l);  a row that saw no key: o = 0, lse = -inf */
    for (int64_t r = 0; r < R; r++) {
        real *orow = o + (i0 + r) * d;
        const real *ar = acc + r * dp;
        if (m[r] == neg_inf) {
            for (int64_t x = 0; x < d; x++) orow[x] = 0;
            lse[i0 + r] = neg_inf;
        } else {
            for (int64_t x = 0; x < d; x++) orow[x] = ar[x] / l[r];
            lse[i0 + r] = m[r] + SCALAR_LOG(l[r]);
        }
    }
}

int FN(tl_attn_fwd)(int64_t bh, int64_t tq, int64_t tk, int64_t d, real scale, int causal,
                    const real *q, const real *k, const real *v,
                    real *o, real *lse, int nthreads) {
    (void)nthreads;   /* used by the OpenMP pragma; a serial build ignores it */
    if (bh < 0 || tq < 0 || tk < 0 || d < 0) return TL_EINVAL;
    const int64_t dp = (d + VL - 1) / VL * VL;      /* d padded to whole vectors */
    const int64_t nqb = (tq + BQ - 1) / BQ;         /* query blocks per problem */
    const int64_t tkp = whole_ld(tk);               /* row stride of a whole K^T */
    int nt = TL_NTHREADS(nthreads);
    if (nt < 1) nt = 1;
    /* Tasks: with at least two problems per thread, and K, V of a problem
     * within TL_ATTN_WHOLE_BYTES, one task per problem lays out K and V once
     * for all its query blocks.  Otherwise one task per (problem, query
     * block), each copying the key blocks it uses.  Same arithmetic, same bits. */
    const int whole = bh >= 2 * (int64_t)nt &&
                      sizeof(real) * (size_t)(tkp * (d + dp)) <= TL_ATTN_WHOLE_BYTES;
    const int64_t ntasks = whole ? bh : bh * nqb;
    if (ntasks == 0) return TL_OK;
    if ((int64_t)nt > ntasks) nt = (int)ntasks;

    FN(fwd_scratch) layout;
    const int64_t ld_whole = whole ? tkp : 0;
    const size_t per_thread = FN(fwd_layout)(NULL, d, dp, ld_whole, &layout);
    unsigned char *scratch = (unsigned char *)tl_alloc(per_thread * (size_t)nt);
    if (scratch == NULL) return TL_ENOMEM;
    memset(scratch, 0, per_thread * (size_t)nt);

#pragma omp parallel num_threads(nt)
    {
        FN(fwd_scratch) sc;
        FN(fwd_layout)(scratch + per_thread * (size_t)thread_id(), d, dp, ld_whole, &sc);
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < ntasks; t++) {
            if (whole) {   /* problem t: K^T and V once, then every query block */
                FN(copy_transposed)(tk, d, k + t * tk * d, sc.kt, tkp);
                FN(copy_padded)(tk, d, dp, v + t * tk * d, sc.vp);
                for (int64_t i0 = 0; i0 < tq; i0 += BQ)
                    FN(fwd_block)(&sc, tq, tk, d, dp, scale, causal,
                                  q + t * tq * d, k + t * tk * d, v + t * tk * d,
                                  o + t * tq * d, lse + t * tq, i0, min64(BQ, tq - i0));
                continue;
            }
            /* (problem, query block): heaviest causal blocks (the last) first */
            const int64_t b = t / nqb, qb = nqb - 1 - t % nqb;
            const int64_t i0 = qb * BQ, R = min64(BQ, tq - i0);
            FN(fwd_block)(&sc, tq, tk, d, dp, scale, causal,
                          q + b * tq * d, k + b * tk * d, v + b * tk * d,
                          o + b * tq * d, lse + b * tq, i0, R);
        }
    }
    tl_free(scratch);
    return TL_OK;
}

/* ======================= backward ======================================= */

typedef struct {
    /* dk/dv task: one key block against all query blocks that can see it.
     * Q and dout of one query block (whole = 0, ld = BQ), or of the whole
     * problem (whole = 1, ld = whole_ld(tq)): */
    int whole;
    int64_t ld;
    real *qt;      /* (d, ld)   Q, transposed                    */
    real *dot;     /* (d, ld)   dout, transposed                 */
    real *qp;      /* (ld, dp)  Q, rows padded                   */
    real *dop;     /* (ld, dp)  dout, rows padded                */
    real *pt;      /* (BK, BQ)  S^T, then P^T                    */
    real *dst;     /* (BK, BQ)  dP^T, then dS^T                  */
    real *dk_acc;  /* (BK, dp)  sum_i dS[i, j] q[i]              */
    real *dv_acc;  /* (BK, dp)  sum_i P[i, j] dout[i]            */
    real *lse_t;   /* (BQ,)     lse of the query block           */
    real *delta_t; /* (BQ,)     delta of the query block         */
    uvec *keep;    /* (BQ/VL,)  lanes of queries with lse > -inf */
    int64_t *lo;   /* (BK,)     first visible query, per key     */
    int64_t *hi;   /* (BK,)     end of the visible queries (R)   */
    /* dq task: one query block against all visible key blocks */
    real *kt;      /* (d, BK)   K block, transposed              */
    real *vt;      /* (d, BK)   V block, transposed              */
    real *kp;      /* (BK, dp)  K block, padded                  */
    real *s;       /* (BQ, BK)  S, then P                        */
    real *dps;     /* (BQ, BK)  dP, then dS                      */
    real *dq_acc;  /* (BQ, dp)  sum_j dS[i, j] k[j]              */
    int64_t *n;    /* (BQ,)     visible keys of the block, per row */
    /* one task per problem */
    real *dq_all;  /* (tq, dp)  sum_j dS[i, j] k[j], whole problem */
} FN(bwd_scratch);

/* ld_whole: 0 to lay out Q and dout block by block, else whole_ld(tq).
 * tq_acc: rows of the dq accumulator dq_all (tq for one task per problem). */
static size_t FN(bwd_layout)(unsigned char *base, int64_t d, int64_t dp, int64_t ld_whole,
                             int64_t tq_acc, FN(bwd_scratch) *sc) {
    size_t off = 0;
    const size_t tile_d = sizeof(real) * (size_t)(d * BQ);   /* BQ == BK */
    const size_t tile_dp = sizeof(real) * (size_t)(BQ * dp);
    sc->whole = ld_whole > 0;
    sc->ld = sc->whole ? ld_whole : BQ;
    sc->qt = (real *)carve(base, &off, sizeof(real) * (size_t)(d * sc->ld));
    sc->dot = (real *)carve(base, &off, sizeof(real) * (size_t)(d * sc->ld));
    sc->qp = (real *)carve(base, &off, sizeof(real) * (size_t)(sc->ld * dp));
    sc->dop = (real *)carve(base, &off, sizeof(real) * (size_t)(sc->ld * dp));
    sc->pt = (real *)carve(base, &off, sizeof(real) * BK * BQ);
    sc->dst = (real *)carve(base, &off, sizeof(real) * BK * BQ);
    sc->dk_acc = (real *)carve(base, &off, tile_dp);
    sc->dv_acc = (real *)carve(base, &off, tile_dp);
    sc->lse_t = (real *)carve(base, &off, sizeof(real) * BQ);
    sc->delta_t = (real *)carve(base, &off, sizeof(real) * BQ);
    sc->keep = (uvec *)carve(base, &off, sizeof(real) * BQ);
    sc->lo = (int64_t *)carve(base, &off, sizeof(int64_t) * BK);
    sc->hi = (int64_t *)carve(base, &off, sizeof(int64_t) * BK);
    sc->kt = (real *)carve(base, &off, tile_d);
    sc->vt = (real *)carve(base, &off, tile_d);
    sc->kp = (real *)carve(base, &off, tile_dp);
    sc->s = (real *)carve(base, &off, sizeof(real) * BQ * BK);
    sc->dps = (real *)carve(base, &off, sizeof(real) * BQ * BK);
    sc->dq_acc = (real *)carve(base, &off, tile_dp);
    sc->n = (int64_t *)carve(base, &off, sizeof(int64_t) * BQ);
    sc->dq_all = (real *)carve(base, &off, sizeof(real) * (size_t)(tq_acc * dp));
    return off;
}

/* dk, dv for keys j0 .. j0+C-1 of one problem, summing over every query
 * block that can see them.  Works on transposed tiles (keys are rows):
 *     S^T[c, r]  = scale * k[j0+c] . q[i0+r]
 *     P^T[c, r]  = exp(S^T[c, r] - lse[i0+r])
 *     dP^T[c, r] = v[j0+c] . dout[i0+r]
 *     dS^T[c, r] = P^T[c, r] * (dP^T[c, r] - delta[i0+r])
 *     dv[j0+c] += sum_r P^T[c, r] dout[i0+r]
 *     dk[j0+c] += sum_r dS^T[c, r] q[i0+r]        (times scale at the end)
 * and, if dq_all is not NULL (the task owns the whole problem), also
 *     dq_all[i0+r] += sum_c dS^T[c, r] k[j0+c]   (dq before the scale),
 * adding the terms in the same order as dq_block does. */
static void FN(dkv_block)(const FN(bwd_scratch) *sc, int64_t tq, int64_t tk, int64_t d,
                          int64_t dp, real scale, int causal,
                          const real *q, const real *k, const real *v,
                          const real *dout, const real *lse, const real *delta,
                          real *dk, real *dv, real *dq_all, int64_t j0, int64_t C) {
    const int64_t shift = tk - tq;            /* key j visible to query i iff i >= j - shift */
    memset(sc->dk_acc, 0, sizeof(real) * (size_t)(C * dp));
    memset(sc->dv_acc, 0, sizeof(real) * (size_t)(C * dp));
    if (dq_all != NULL) FN(copy_padded)(C, d, dp, k + j0 * d, sc->kp);
    /* Queries before i_start see none of these keys: start at its block. */
    const int64_t i_start = causal ? clamp64(j0 - shift, 0, tq) : 0;

    for (int64_t i0 = i_start / BQ * BQ; i0 < tq; i0 += BQ) {
        const int64_t R = min64(BQ, tq - i0);              /* queries in this block */
        const real *qt = sc->qt, *dot = sc->dot, *qp = sc->qp, *dop = sc->dop;
        if (sc->whole) {   /* already laid out for the whole problem */
            qt += i0;
            dot += i0;
            qp += i0 * dp;
            dop += i0 * dp;
        } else {
            FN(copy_transposed)(R, d, q + i0 * d, sc->qt, BQ);
            FN(copy_transposed)(R, d, dout + i0 * d, sc->dot, BQ);
            FN(copy_padded)(R, d, dp, q + i0 * d, sc->qp);
            FN(copy_padded)(R, d, dp, dout + i0 * d, sc->dop);
        }
        real *keep_lanes = (real *)sc->keep;
        for (int64_t r = 0; r < BQ; r++) {
            const int valid = r < R && lse[i0 + r] != (real)-INFINITY;
            sc->lse_t[r] = r < R ? lse[i0 + r] : 0;
            sc->delta_t[r] = r < R ? delta[i0 + r] : 0;
            /* all-ones bits where the query has a key at all (P = 0 rows otherwise) */
            memset(keep_lanes + r, valid ? 0xff : 0, sizeof(real));
        }

        /* S^T = scale * k q^T   and   dP^T = v dout^T                  (C, BQ) */
        FN(tile_scores)(C, BQ, d, scale, k + j0 * d, d, qt, sc->ld, sc->pt);
        FN(tile_scores)(C, BQ, d, 1, v + j0 * d, d, dot, sc->ld, sc->dst);

        for (int64_t c = 0; c < C; c++) {
            /* visible queries of key j0+c in this block: r in [lo, R) */
            const int64_t lo = causal ? clamp64(j0 + c - shift - i0, 0, R) : 0;
            sc->lo[c] = lo;
            sc->hi[c] = R;
            real *Pc = sc->pt + c * BQ, *dSc = sc->dst + c * BQ;
            for (int64_t u = lo / VL; u * VL < R; u++) {
                vec p = FN(vexp)(FN(vload)(Pc + u * VL) - FN(vload)(sc->lse_t + u * VL));
                p = FN(vselect)(sc->keep[u], p, FN(vsplat)(0));
                vec dpv = FN(vload)(dSc + u * VL);
                FN(vstore)(Pc + u * VL, p);
                FN(vstore)(dSc + u * VL, p * (dpv - FN(vload)(sc->delta_t + u * VL)));
            }
        }
        /* dv_acc += P^T dout,   dk_acc += dS^T q   (each key over its visible queries) */
        FN(tile_axpy)(C, dp, sc->lo, sc->hi, sc->pt, BQ, 1, dop, sc->dv_acc);
        FN(tile_axpy)(C, dp, sc->lo, sc->hi, sc->dst, BQ, 1, qp, sc->dk_acc);

        if (dq_all != NULL) {
            /* dq_all[i0+r] += sum_{c < n_r} dS^T[c, r] k[j0+c]: query r sees the
             * first n_r keys of the block (none if lse = -inf), and those
             * dS^T[c, r] were all computed above (r >= lo[c] iff c < n_r). */
            for (int64_t r = 0; r < R; r++) {
                int64_t n = causal ? clamp64(i0 + r + shift + 1 - j0, 0, C) : C;
                sc->n[r] = lse[i0 + r] == (real)-INFINITY ? 0 : n;
            }
            FN(tile_axpy)(R, dp, tl_zeros, sc->n, sc->dst, 1, BQ, sc->kp, dq_all + i0 * dp);
        }
    }

    for (int64_t c = 0; c < C; c++) {
        real *dkrow = dk + (j0 + c) * d, *dvrow = dv + (j0 + c) * d;
        const real *ka = sc->dk_acc + c * dp, *va = sc->dv_acc + c * dp;
        for (int64_t x = 0; x < d; x++) {
            dkrow[x] = scale * ka[x];
            dvrow[x] = va[x];
        }
    }
}

/* dq for queries i0 .. i0+R-1 of one problem, summing over visible key blocks:
 *     S[r, c]  = scale * q[i0+r] . k[j0+c]      P = exp(S - lse[i0+r])
 *     dP[r, c] = dout[i0+r] . v[j0+c]           dS = P * (dP - delta[i0+r])
 *     dq[i0+r] += sum_c dS[r, c] k[j0+c]        (times scale at the end) */
static void FN(dq_block)(const FN(bwd_scratch) *sc, int64_t tq, int64_t tk, int64_t d,
                         int64_t dp, real scale, int causal,
                         const real *q, const real *k, const real *v,
                         const real *dout, const real *lse, const real *delta,
                         real *dq, int64_t i0, int64_t R) {
    const int64_t shift = tk - tq;
    memset(sc->dq_acc, 0, sizeof(real) * (size_t)(R * dp));
    const int64_t j_end = causal ? clamp64(i0 + R + shift, 0, tk) : tk;

    for (int64_t j0 = 0; j0 < j_end; j0 += BK) {
        const int64_t C = min64(BK, tk - j0);
        FN(copy_transposed)(C, d, k + j0 * d, sc->kt, BK);
        FN(copy_transposed)(C, d, v + j0 * d, sc->vt, BK);
        FN(copy_padded)(C, d, dp, k + j0 * d, sc->kp);

        /* S = scale * q k^T   and   dP = dout v^T                       (R, BK) */
        FN(tile_scores)(R, BK, d, scale, q + i0 * d, d, sc->kt, BK, sc->s);
        FN(tile_scores)(R, BK, d, 1, dout + i0 * d, d, sc->vt, BK, sc->dps);

        for (int64_t r = 0; r < R; r++) {
            const real l = lse[i0 + r];
            /* visible keys of this block: c in [0, n); none if the row has no key */
            int64_t n = causal ? clamp64(i0 + r + shift + 1 - j0, 0, C) : C;
            if (l == (real)-INFINITY) n = 0;
            sc->n[r] = n;
            const vec vl = FN(vsplat)(l), vdelta = FN(vsplat)(delta[i0 + r]);
            real *Sr = sc->s + r * BK, *dSr = sc->dps + r * BK;
            for (int64_t u = 0; u * VL < n; u++) {
                vec p = FN(vexp)(FN(vload)(Sr + u * VL) - vl);
                FN(vstore)(dSr + u * VL, p * (FN(vload)(dSr + u * VL) - vdelta));
            }
        }
        /* dq_acc += dS k */
        FN(tile_axpy)(R, dp, tl_zeros, sc->n, sc->dps, BK, 1, sc->kp, sc->dq_acc);
    }

    for (int64_t r = 0; r < R; r++) {
        real *dqrow = dq + (i0 + r) * d;
        const real *a = sc->dq_acc + r * dp;
        for (int64_t x = 0; x < d; x++) dqrow[x] = scale * a[x];
    }
}

/* The whole backward of one problem in one task: every key block through
 * dkv_block, which also accumulates dq (5 tile products per tile pair).
 * With sc->whole, q and dout are laid out once here, not per tile pair. */
static void FN(bwd_problem)(const FN(bwd_scratch) *sc, int64_t tq, int64_t tk, int64_t d,
                            int64_t dp, real scale, int causal,
                            const real *q, const real *k, const real *v,
                            const real *dout, const real *lse, const real *delta,
                            real *dq, real *dk, real *dv) {
    if (sc->whole) {
        FN(copy_transposed)(tq, d, q, sc->qt, sc->ld);
        FN(copy_transposed)(tq, d, dout, sc->dot, sc->ld);
        FN(copy_padded)(tq, d, dp, q, sc->qp);
        FN(copy_padded)(tq, d, dp, dout, sc->dop);
    }
    memset(sc->dq_all, 0, sizeof(real) * (size_t)(tq * dp));
    for (int64_t j0 = 0; j0 < tk; j0 += BK)
        FN(dkv_block)(sc, tq, tk, d, dp, scale, causal, q, k, v, dout, lse, delta,
                      dk, dv, sc->dq_all, j0, min64(BK, tk - j0));
    for (int64_t i = 0; i < tq; i++)
        for (int64_t x = 0; x < d; x++) dq[i * d + x] = scale * sc->dq_all[i * dp + x];
}

int FN(tl_attn_bwd)(int64_t bh, int64_t tq, int64_t tk, int64_t d, real scale, int causal,
                    const real *q, const real *k, const real *v,
                    const real *o, const real *dout, const real *lse,
                    real *dq, real *dk, real *dv, int nthreads) {
    (void)nthreads;   /* used by the OpenMP pragma; a serial build ignores it */
    if (bh < 0 || tq < 0 || tk < 0 || d < 0) return TL_EINVAL;
    const int64_t dp = (d + VL - 1) / VL * VL;
    const int64_t nqb = (tq + BQ - 1) / BQ, nkb = (tk + BK - 1) / BK;
    int nt = TL_NTHREADS(nthreads);
    if (nt < 1) nt = 1;
    /* Two ways to cut the work into tasks that each own the rows they write:
     *  - at least two problems per thread: one task per problem, which makes
     *    dk, dv and dq together (5 tile products per tile pair), and lays
     *    out q and dout once if they fit in TL_ATTN_WHOLE_BYTES;
     *  - otherwise (few heads, long sequences), for more parallelism:
     *      tasks 0 .. bh*nkb-1:  (bh, key block)   -> dk, dv
     *      tasks bh*nkb .. end:  (bh, query block) -> dq     (7 products).
     * Both add every sum in the same order: the bits do not depend on which. */
    const int64_t tqp = whole_ld(tq);               /* row stride of a whole Q^T */
    const int per_problem = bh >= 2 * (int64_t)nt;
    const int whole = per_problem &&
                      sizeof(real) * (size_t)(tqp * 2 * (d + dp)) <= TL_ATTN_WHOLE_BYTES;
    const int64_t n_kv = per_problem ? 0 : bh * nkb;
    const int64_t ntasks = per_problem ? bh : n_kv + bh * nqb;
    if (ntasks == 0) return TL_OK;
    if ((int64_t)nt > ntasks) nt = (int)ntasks;

    FN(bwd_scratch) layout;
    const int64_t ld_whole = whole ? tqp : 0, tq_acc = per_problem ? tq : 0;
    const size_t per_thread = FN(bwd_layout)(NULL, d, dp, ld_whole, tq_acc, &layout);
    const size_t delta_bytes = sizeof(real) * (size_t)(bh * tq) + 64;
    unsigned char *scratch = (unsigned char *)tl_alloc(per_thread * (size_t)nt + delta_bytes);
    if (scratch == NULL) return TL_ENOMEM;
    memset(scratch, 0, per_thread * (size_t)nt);
    real *delta = (real *)(scratch + per_thread * (size_t)nt);   /* (bh, tq) */

#pragma omp parallel num_threads(nt)
    {
        FN(bwd_scratch) sc;
        FN(bwd_layout)(scratch + per_thread * (size_t)thread_id(), d, dp, ld_whole, tq_acc, &sc);

        /* delta[i] = sum_x dout[i, x] * o[i, x]   for every query row */
#pragma omp for schedule(static)
        for (int64_t i = 0; i < bh * tq; i++) {
            real s = 0;
            for (int64_t x = 0; x < d; x++) s += dout[i * d + x] * o[i * d + x];
            delta[i] = s;
        }
        /* (implicit barrier: delta is complete) */

#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < ntasks; t++) {
            if (per_problem) {
                FN(bwd_problem)(&sc, tq, tk, d, dp, scale, causal,
                                q + t * tq * d, k + t * tk * d, v + t * tk * d,
                                dout + t * tq * d, lse + t * tq, delta + t * tq,
                                dq + t * tq * d, dk + t * tk * d, dv + t * tk * d);
            } else if (t < n_kv) {   /* first key blocks first: with causal they see the most queries */
                const int64_t b = t / nkb, j0 = (t % nkb) * BK;
                FN(dkv_block)(&sc, tq, tk, d, dp, scale, causal,
                              q + b * tq * d, k + b * tk * d, v + b * tk * d,
                              dout + b * tq * d, lse + b * tq, delta + b * tq,
                              dk + b * tk * d, dv + b * tk * d, NULL, j0, min64(BK, tk - j0));
            } else {          /* last query blocks first: they see the most keys */
                const int64_t u = t - n_kv, b = u / nqb, i0 = (nqb - 1 - u % nqb) * BQ;
                FN(dq_block)(&sc, tq, tk, d, dp, scale, causal,
                             q + b * tq * d, k + b * tk * d, v + b * tk * d,
                             dout + b * tq * d, lse + b * tq, delta + b * tq,
                             dq + b * tq * d, i0, min64(BQ, tq - i0));
            }
        }
    }
    tl_free(scratch);
    return TL_OK;
}

#endif /* TL_ATTN_TYPED_PART */
