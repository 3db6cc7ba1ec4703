/* tinylm matmul:  C[m,n] (+)= op(A)[m,k] @ op(B)[k,n]   (see tinylm.h)
 *
 * A BLIS-style blocked GEMM in portable C (GCC/Clang vector extensions).
 *
 * The idea in one picture.  A matrix product is m*n*k multiply-adds but only
 * m*k + k*n + m*n numbers, so each number loaded from memory can be reused
 * many times - if it is close to the core when it is needed.  We cut the
 * problem into blocks that fit the caches and copy ("pack") them into the
 * exact order the innermost loop reads them:
 *
 *   for jc in steps of NC over n:            B block  kc x nc   -> L3, shared
 *     for pc in steps of KC over k:
 *       pack  op(B)[pc:pc+kc, jc:jc+nc]  into Bp   (NR-column panels)
 *       for ic in steps of mc over m:        A block  mc x kc   -> L2, per thread
 *         pack  op(A)[ic:ic+mc, pc:pc+kc]  into Ap   (MR-row panels)
 *         for jr in steps of NR:             B panel  kc x NR   -> L1
 *           for ir in steps of MR:
 *             micro_kernel:  C[ir:ir+MR, jr:jr+NR] += Ap panel @ Bp panel
 *
 * The micro-kernel keeps an MR x NR tile of C in vector registers for the
 * whole kc loop: per step p it loads NR values of B (2 vectors), broadcasts
 * MR values of A, and does 2*MR fused multiply-adds.  Packing absorbs the
 * transposes: whatever the layout of A and B, the packed panels look the
 * same, so all four (trans_a, trans_b) cases share one micro-kernel.
 *
 * Threads: one OpenMP parallel region.  The threads pack the shared B block
 * together, then share out the (mc-row block x column slice) work items; each
 * thread packs its own A block.  Every C entry is always summed in the same
 * order (p ascending, kc at a time), whatever the thread count, so results
 * are deterministic and do not depend on nthreads.
 *
 * Numerics: no -ffast-math, no skipping of zeros (0 * NaN must be NaN), and
 * "overwrite" (accumulate = 0) stores the product without ever reading C, so
 * garbage or NaN already in C cannot leak into the result.  Padding in the
 * packed panels is zero; the padded lanes are computed but never stored.
 *
 * Two more paths skip packing where it does not pay: tiny products
 * (m*n*k <= TL_MATMUL_SMALL) and thin ones (a few rows, e.g. one token's
 * x W^T while generating), which read B where it is; see row_stream and
 * thin_nt.
 *
 * This file is compiled once and includes itself twice (float, double): the
 * part below "#else" is a template in T.
 */
#ifndef TL_MATMUL_T

#include <string.h>
#include "tinylm.h"
#include "common.h"

/* Register tile: MR rows x NR = 2 vectors of columns.  With AVX2 (32-byte
 * vectors) that is 6 x 16 floats / 6 x 8 doubles: 12 accumulator registers +
 * 2 for B + 1 for the broadcast A value = 15 of the 16 ymm registers. */
#define MR 6
/* Cache blocks (BLIS values for Zen): Bp panel kc*NR ~ 16 KB sits in L1,
 * the A block MC*KC ~ 144 KB in L2, the B block KC*NC in L3. */
#define KC 256
#define NC_PANELS 256            /* NC = NC_PANELS * NR columns */
/* Thresholds, measured on a 2-core Zen3 (single thread, CPU time, builds
 * with -D overrides of these values).
 *   TL_MATMUL_SMALL (multiply-adds m*n*k): up to here, plain loops without
 *     packing; they win up to ~20^3 (B not transposed) / ~16^3 (transposed).
 *   TL_MATMUL_PARALLEL_MIN (m*n*k): below it, one thread.  Waking a second
 *     thread costs ~10-20 us; a 96^3 product takes ~20 us on one core.
 *   TL_MATMUL_THIN_M (rows): up to here with B transposed, unpacked dot
 *     products (x W^T with m=1: 0.05x -> 0.6x numpy; m=4: 0.3x -> 2x).
 *   TL_MATMUL_THIN_NN_M (rows): up to here with B not transposed, row
 *     streaming (m=1: 0.12x -> 0.7x numpy; from m=4 on the packed path wins). */
#ifndef TL_MATMUL_SMALL
#define TL_MATMUL_SMALL (16.0 * 16.0 * 16.0)
#endif
#ifndef TL_MATMUL_THIN_M
#define TL_MATMUL_THIN_M 16
#endif
#ifndef TL_MATMUL_THIN_NN_M
#define TL_MATMUL_THIN_NN_M 3
#endif
#ifndef TL_MATMUL_PARALLEL_MIN
#define TL_MATMUL_PARALLEL_MIN (96.0 * 96.0 * 96.0)
#endif

static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

#define TL_CAT2(a, b) a##_##b
#define TL_CAT(a, b) TL_CAT2(a, b)
#define FN(name) TL_CAT(name, TL_SUFFIX)   /* pack_a -> pack_a_f32 */

#define TL_MATMUL_T float
#define TL_SUFFIX f32
#define MC 144
#include "matmul.c"
#undef TL_MATMUL_T
#undef TL_SUFFIX
#undef MC

#define TL_MATMUL_T double
#define TL_SUFFIX f64
#define MC 72
#include "matmul.c"
#undef TL_MATMUL_T
#undef TL_SUFFIX
#undef MC

#else  /* ------------- template: T = float or double ------------------ */

#define T TL_MATMUL_T
typedef T FN(vec) __attribute__((vector_size(TL_VBYTES)));  /* one SIMD register */
#define V FN(vec)
#define VLEN ((int)(TL_VBYTES / sizeof(T)))                 /* 8 f32 / 4 f64 (AVX2) */
#define NR (2 * VLEN)
#define NC (NC_PANELS * NR)

/* Vector load/store through memcpy: compiles to one unaligned move, and is
 * valid for NumPy arrays, which are only 8/16-byte aligned. */
static inline V FN(vload)(const T *p) { V v; memcpy(&v, p, sizeof v); return v; }
static inline void FN(vstore)(T *p, V v) { memcpy(p, &v, sizeof v); }

/* Pack op(A)[i0:i0+mc, p0:p0+kc] into MR-row panels, zero-padded to MR rows.
 *   element op(A)[i, p] is a[i*rs + p*cs]   (rs, cs) = (k, 1), or (1, m) if trans_a
 *   Ap: (ceil(mc/MR), kc, MR):  Ap[panel][p][r] = op(A)[i0 + panel*MR + r, p0 + p] */
static void FN(pack_a)(int64_t mc, int64_t kc, const T *a, int64_t rs, int64_t cs,
                       T *TL_RESTRICT Ap) {
    for (int64_t i = 0; i < mc; i += MR) {
        int64_t rows = min64(MR, mc - i);
        for (int64_t p = 0; p < kc; p++) {
            const T *src = a + i * rs + p * cs;
            if (rows == MR) {                   /* a full panel: fixed-length loop */
                for (int r = 0; r < MR; r++) Ap[r] = src[r * rs];
            } else {                            /* the last, ragged one: pad */
                int64_t r = 0;
                for (; r < rows; r++) Ap[r] = src[r * rs];
                for (; r < MR; r++) Ap[r] = 0;
            }
            Ap += MR;
        }
    }
}

/* Pack op(B)[p0:p0+kc, j0:j0+nc] into NR-column panels, zero-padded to NR.
 *   element op(B)[p, j] is b[p*rs + j*cs]   (rs, cs) = (n, 1), or (1, k) if trans_b
 *   Bp: (ceil(nc/NR), kc, NR):  Bp[panel][p][c] = op(B)[p0 + p, j0 + panel*NR + c]
 * Packs only panels [panel0, panel1), so that threads can share the work. */
static void FN(pack_b)(int64_t panel0, int64_t panel1, int64_t nc, int64_t kc,
                       const T *b, int64_t rs, int64_t cs, T *TL_RESTRICT Bp) {
    for (int64_t jp = panel0; jp < panel1; jp++) {
        int64_t j = jp * NR, cols = min64(NR, nc - j);
        T *dst = Bp + jp * kc * NR;
        for (int64_t p = 0; p < kc; p++) {
            const T *src = b + p * rs + j * cs;
            if (cols == NR && cs == 1) {        /* B not transposed: a contiguous row */
                for (int c = 0; c < NR; c++) dst[c] = src[c];
            } else if (cols == NR) {            /* B transposed: a strided column */
                for (int c = 0; c < NR; c++) dst[c] = src[c * cs];
            } else {                            /* the last, ragged panel: pad */
                int64_t c = 0;
                for (; c < cols; c++) dst[c] = src[c * cs];
                for (; c < NR; c++) dst[c] = 0;
            }
            dst += NR;
        }
    }
}

/* The micro-kernel.  C tile (MR x NR, row stride ldc) = or += Ap @ Bp.
 *   Ap: (kc, MR) packed A panel     Bp: (kc, NR) packed B panel
 *   accumulate = 0: store the product; 1: add it to what C holds. */
static inline void FN(micro_kernel)(int64_t kc, const T *TL_RESTRICT Ap,
                                    const T *TL_RESTRICT Bp, T *c, int64_t ldc,
                                    int accumulate) {
    V lo[MR], hi[MR];               /* C tile: row r is (lo[r], hi[r]) */
    for (int r = 0; r < MR; r++) {
        lo[r] = hi[r] = (V){0};
        __builtin_prefetch(c + r * ldc, 1);             /* C is needed at the end: */
        __builtin_prefetch(c + r * ldc + NR - 1, 1);    /* fetch it meanwhile      */
    }
    for (int64_t p = 0; p < kc; p++) {
        V b0 = FN(vload)(Bp), b1 = FN(vload)(Bp + VLEN);   /* op(B)[p, 0:NR] */
        for (int r = 0; r < MR; r++) {                       /* op(A)[r, p]     */
            lo[r] += Ap[r] * b0;        /* scalar * vector broadcasts; fused  */
            hi[r] += Ap[r] * b1;        /* to one FMA where the target has it */
        }
        Ap += MR;
        Bp += NR;
    }
    for (int r = 0; r < MR; r++) {
        T *cr = c + r * ldc;
        if (accumulate) {
            lo[r] += FN(vload)(cr);
            hi[r] += FN(vload)(cr + VLEN);
        }
        FN(vstore)(cr, lo[r]);
        FN(vstore)(cr + VLEN, hi[r]);
    }
}

/* The macro-kernel: C[0:mc, col0:col1] (+)= Ap (mc x kc) @ Bp panels.
 * Edge tiles (fewer than MR rows or NR columns left) are computed into a
 * scratch tile and only the valid part is copied out. */
static void FN(macro_kernel)(int64_t mc, int64_t panel0, int64_t panel1, int64_t nc,
                             int64_t kc, const T *Ap, const T *Bp,
                             T *c, int64_t ldc, int accumulate) {
    for (int64_t jp = panel0; jp < panel1; jp++) {
        int64_t j = jp * NR, cols = min64(NR, nc - j);
        for (int64_t i = 0; i < mc; i += MR) {
            int64_t rows = min64(MR, mc - i);
            const T *ap = Ap + i * kc, *bp = Bp + jp * kc * NR;
            T *cij = c + i * ldc + j;
            if (rows == MR && cols == NR) {
                FN(micro_kernel)(kc, ap, bp, cij, ldc, accumulate);
            } else {
                T tile[MR * NR];
                FN(micro_kernel)(kc, ap, bp, tile, NR, 0);
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t q = 0; q < cols; q++)
                        cij[r * ldc + q] = accumulate ? cij[r * ldc + q] + tile[r * NR + q]
                                                      : tile[r * NR + q];
            }
        }
    }
}

/* Row streaming, for small products and for thin ones with B not transposed:
 *     C[i, cols] (+)= sum over p of op(A)[i, p] * op(B)[p, cols]
 * for chunks of JB columns, so that C[:, cols] (m x JB) stays in L1 while the
 * rows of B go past once each.  No packing; the j loop vectorises when B is
 * not transposed (bcs == 1).  Threads take whole chunks. */
static void FN(row_stream)(int64_t m, int64_t n, int64_t k,
                           const T *a, int64_t ars, int64_t acs,
                           const T *b, int64_t brs, int64_t bcs,
                           T *c, int accumulate, int nt) {
    /* JB: C[:, cols] takes ~16 KB; the longer the B row pieces, the better. */
    int64_t JB = round_up(ceil_div(16384 / (int64_t)sizeof(T), m), 64);
    int64_t nchunks = ceil_div(n, JB);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt)
#else
    (void)nt;
#endif
    for (int64_t jb = 0; jb < nchunks; jb++) {
        int64_t j0 = jb * JB, w = min64(JB, n - j0);
        if (!accumulate)
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < w; j++) c[i * n + j0 + j] = 0;   /* never read old C */
        for (int64_t p = 0; p < k; p++) {
            const T *TL_RESTRICT bp = b + p * brs + j0 * bcs;       /* op(B)[p, cols] */
            for (int64_t i = 0; i < m; i++) {
                T aip = a[i * ars + p * acs];                         /* op(A)[i, p]    */
                T *TL_RESTRICT ci = c + i * n + j0;                   /* C[i, cols]     */
                if (bcs == 1)
                    for (int64_t j = 0; j < w; j++) ci[j] += aip * bp[j];
                else
                    for (int64_t j = 0; j < w; j++) ci[j] += aip * bp[j * bcs];
            }
        }
    }
}

/* Thin products with B transposed (stored n x k), e.g. x W^T in a decoding
 * step: C[i, j] = dot(row i of A, row j of B), both contiguous along k, so
 * nothing is packed.  RI x RJ dot products at once share their loads: per
 * VLEN-wide step, RI + RJ vector loads feed RI * RJ multiply-adds.
 *   Ar: (m, k) row-major A     b: (n, k)     ri <= RI, rj <= RJ */
#define RI 2
#define RJ 4
static inline void FN(dot_block)(int ri, int rj, int64_t k, const T *Ar,
                                 const T *b, T *c, int64_t ldc, int accumulate) {
    V acc[RI][RJ];
    for (int x = 0; x < RI; x++)
        for (int y = 0; y < RJ; y++) acc[x][y] = (V){0};
    int64_t p = 0;
    for (; p + VLEN <= k; p += VLEN) {
        V av[RI], bv[RJ];
        for (int x = 0; x < ri; x++) av[x] = FN(vload)(Ar + x * k + p);
        for (int y = 0; y < rj; y++) bv[y] = FN(vload)(b + y * k + p);
        for (int x = 0; x < ri; x++)
            for (int y = 0; y < rj; y++) acc[x][y] += av[x] * bv[y];
    }
    for (int x = 0; x < ri; x++)
        for (int y = 0; y < rj; y++) {
            T s = 0;
            for (int l = 0; l < VLEN; l++) s += acc[x][y][l];   /* the lanes, in order */
            for (int64_t q = p; q < k; q++) s += Ar[x * k + q] * b[y * k + q];
            T *cxy = c + x * ldc + y;
            *cxy = accumulate ? *cxy + s : s;
        }
}

static void FN(thin_nt)(int64_t m, int64_t n, int64_t k, const T *Ar, const T *b,
                        T *c, int accumulate, int nt) {
    int64_t nbj = ceil_div(n, RJ);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt)
#else
    (void)nt;
#endif
    for (int64_t jb = 0; jb < nbj; jb++) {
        int64_t j = jb * RJ;
        int rj = (int)min64(RJ, n - j);
        for (int64_t i = 0; i < m; i += RI) {
            int ri = (int)min64(RI, m - i);
            if (ri == RI && rj == RJ)       /* constant sizes: all in registers */
                FN(dot_block)(RI, RJ, k, Ar + i * k, b + j * k, c + i * n + j, n, accumulate);
            else
                FN(dot_block)(ri, rj, k, Ar + i * k, b + j * k, c + i * n + j, n, accumulate);
        }
    }
}
#undef RI
#undef RJ

int FN(tl_matmul)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                  const T *a, const T *b, T *c, int accumulate, int nthreads) {
#ifndef _OPENMP
    (void)nthreads;                                   /* serial build */
#endif
    if (m <= 0 || n <= 0) return TL_OK;
    if (k <= 0) {                                     /* empty sum: C = 0 or C += 0 */
        if (!accumulate) memset(c, 0, (size_t)(m * n) * sizeof(T));
        return TL_OK;
    }
    /* op(A)[i, p] = a[i*ars + p*acs];  op(B)[p, j] = b[p*brs + j*bcs] */
    int64_t ars = trans_a ? 1 : k, acs = trans_a ? m : 1;
    int64_t brs = trans_b ? 1 : n, bcs = trans_b ? k : 1;

    if ((double)m * (double)n * (double)k <= TL_MATMUL_SMALL) {
        FN(row_stream)(m, n, k, a, ars, acs, b, brs, bcs, c, accumulate, 1);
        return TL_OK;
    }
    int nt = TL_NTHREADS(nthreads);
    if ((double)m * (double)n * (double)k < TL_MATMUL_PARALLEL_MIN) nt = 1;

    /* Thin products (a few rows): B is read in place, never packed. */
    if (m <= TL_MATMUL_THIN_NN_M && !trans_b) {
        FN(row_stream)(m, n, k, a, ars, acs, b, brs, bcs, c, accumulate, nt);
        return TL_OK;
    }
    if (m <= TL_MATMUL_THIN_M && trans_b) {
        const T *Ar = a;
        T *copy = NULL;
        if (trans_a) {                                /* dot products want rows of A */
            copy = (T *)tl_alloc((size_t)(m * k) * sizeof(T));
            if (copy == NULL) return TL_ENOMEM;
            for (int64_t i = 0; i < m; i++)
                for (int64_t p = 0; p < k; p++) copy[i * k + p] = a[p * m + i];
            Ar = copy;
        }
        FN(thin_nt)(m, n, k, Ar, b, c, accumulate, nt);
        tl_free(copy);
        return TL_OK;
    }

    /* Block sizes.  kc: k in equal slices of at most KC.  mc: at most MC rows,
     * chosen so the number of row blocks is a multiple of nt (balanced). */
    int64_t kc_max = ceil_div(k, ceil_div(k, KC));
    int64_t nb_m = round_up(ceil_div(m, MC), nt);
    int64_t mc_max = round_up(ceil_div(m, nb_m), MR);
    nb_m = ceil_div(m, mc_max);
    /* Too few row blocks for the threads (small m): split the columns too. */
    int64_t nb_n = nb_m >= nt ? 1 : nt;
    int64_t nc_max = min64(NC, round_up(n, NR));

    T *Bp = (T *)tl_alloc((size_t)(kc_max * nc_max) * sizeof(T));
    T *Aps = (T *)tl_alloc((size_t)(nt * mc_max * kc_max) * sizeof(T));
    if (Bp == NULL || Aps == NULL) {
        tl_free(Bp);
        tl_free(Aps);
        return TL_ENOMEM;
    }

#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
#ifdef _OPENMP
        T *Ap = Aps + (int64_t)omp_get_thread_num() * mc_max * kc_max;
#else
        T *Ap = Aps;
#endif
        for (int64_t jc = 0; jc < n; jc += NC) {
            int64_t nc = min64(NC, n - jc), np = ceil_div(nc, NR);
            for (int64_t pc = 0; pc < k; pc += kc_max) {
                int64_t kc = min64(kc_max, k - pc);
                /* Only the first slice of k honours "overwrite". */
                int acc = accumulate || pc > 0;

                /* 1. All threads pack the shared B block, one panel each in turn. */
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                for (int64_t jp = 0; jp < np; jp++)
                    FN(pack_b)(jp, jp + 1, nc, kc, b + pc * brs + jc * bcs, brs, bcs, Bp);
                /* (implicit barrier: Bp is complete) */

                /* 2. Work items: row block ib x column slice jb. */
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                for (int64_t w = 0; w < nb_m * nb_n; w++) {
                    int64_t ib = w / nb_n, jb = w % nb_n;
                    int64_t ic = ib * mc_max, mc = min64(mc_max, m - ic);
                    FN(pack_a)(mc, kc, a + ic * ars + pc * acs, ars, acs, Ap);
                    FN(macro_kernel)(mc, jb * np / nb_n, (jb + 1) * np / nb_n, nc, kc,
                                     Ap, Bp, c + ic * n + jc, n, acc);
                }
                /* (implicit barrier: nobody still reads Bp when it is repacked) */
            }
        }
    }
    tl_free(Bp);
    tl_free(Aps);
    return TL_OK;
}

#undef T
#undef V
#undef VLEN
#undef NR
#undef NC

#endif
