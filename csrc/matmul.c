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
 * thread packs its own A block.  The rows are split when there are at least
 * as many row blocks as threads, otherwise (m <= MC, e.g. a weight gradient)
 * the columns, each thread multiplying the B panels it packed itself.  Every
 * C entry is always summed in the same order (p ascending, kc at a time),
 * whatever the thread count, so results are deterministic and do not depend
 * on nthreads.
 *
 * Numerics: no -ffast-math, no skipping of zeros (0 * NaN must be NaN), and
 * "overwrite" (accumulate = 0) stores the product without ever reading C, so
 * garbage or NaN already in C cannot leak into the result.  Padding in the
 * packed panels is zero; the padded lanes are computed but never stored.
 *
 * More paths skip packing where it does not pay: tiny products
 * (m*n*k <= TL_MATMUL_SMALL) and thin ones (a few rows, e.g. one token's
 * x W^T while generating), which read B where it is; see row_stream,
 * thin_nn, thin_nt and thin_nt_tiles.
 *
 * The kernel is written once for both precisions in matmul.inc, included
 * below once per type (see real.h).
 */
#include <math.h>
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
 *   TL_MATMUL_THIN_M (rows): up to here with B transposed, B is not packed:
 *     dot products below TL_MATMUL_NT_TILE_M rows (x W^T with m=1: 0.05x ->
 *     0.6x numpy), from there the transposed register tile (thin_nt_tiles;
 *     m = 4, 8, 16: 1.6x, 1.7x, 2.3x numpy, where the dot products gave
 *     1.6x, 0.7x, 0.7x: benchmarks/fair.py matmul-thin, 2-core Zen 4).
 *   TL_MATMUL_THIN_NN_M (rows): up to here with B not transposed, B read in
 *     place in blocks (thin_nn); above it the packed path, whose packing of B
 *     then pays for itself. */
#ifndef TL_MATMUL_SMALL
#define TL_MATMUL_SMALL (16.0 * 16.0 * 16.0)
#endif
#ifndef TL_MATMUL_THIN_M
#define TL_MATMUL_THIN_M 16
#endif
#ifndef TL_MATMUL_NT_TILE_M
#define TL_MATMUL_NT_TILE_M 4
#endif
#ifndef TL_MATMUL_THIN_NN_M
#define TL_MATMUL_THIN_NN_M 16
#endif
#ifndef TL_MATMUL_PARALLEL_MIN
#define TL_MATMUL_PARALLEL_MIN (96.0 * 96.0 * 96.0)
#endif

#define TL_REAL 32
#include "real.h"
#include "vec.inc"
#include "matmul.inc"
#undef TL_REAL

#define TL_REAL 64
#include "real.h"
#include "vec.inc"
#include "matmul.inc"
