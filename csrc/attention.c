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
 * and zero gradients.  The specifications: attention_reference /
 * attention_backward_reference in tinylm/kernels.py, and the same formulas as
 * plain loops in attention_plain.inc (read that first).
 *
 * The (tq, tk) matrices S and P are never stored whole.  The work is cut into
 * tiles of BQ query rows by BK keys that live in a small per-thread scratch.
 * Causal tiles that are entirely masked are never visited.  Threads: OpenMP
 * over tasks, dynamic schedule (causal tasks have unequal sizes).  No
 * -ffast-math anywhere: NaN and inf propagate.
 *
 * The parts, each written once for both precisions (see real.h):
 *   vec.inc                 vector helpers, including the hand-written exp()
 *   attention_tiles.inc     the two tile kernels (S = A B^T, C += P B), copies
 *   attention_forward.inc   online-softmax forward, tl_attn_fwd_*
 *   attention_backward.inc  backward and its two work splits, tl_attn_bwd_*
 *   attention_decode.inc    one new query row against a KV cache, tl_attn_decode_*
 */
#include <math.h>
#include <string.h>
#include "tinylm.h"
#include "common.h"

/* Tile sizes.  64 is a multiple of 2 vectors for every vector width we
 * build for (4 floats on SSE/NEON ... 16 floats on AVX-512), which
 * tile_scores relies on for its column blocks. */
#define BQ 64  /* query rows per tile */
#define BK 64  /* keys per tile */

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

/* Carve `bytes` (rounded up to 64) out of a scratch buffer at *offset.
 * With base == NULL it only counts, which is how scratch sizes are measured. */
static void *carve(unsigned char *base, size_t *offset, size_t bytes) {
    void *p = base ? (void *)(base + *offset) : NULL;
    *offset += (bytes + 63) & ~(size_t)63;
    return p;
}

#define TL_REAL 32
#include "real.h"
#include "vec.inc"
#include "attention_tiles.inc"
#include "attention_forward.inc"
#include "attention_backward.inc"
#include "attention_decode.inc"
#undef TL_REAL

#define TL_REAL 64
#include "real.h"
#include "vec.inc"
#include "attention_tiles.inc"
#include "attention_forward.inc"
#include "attention_backward.inc"
#include "attention_decode.inc"
