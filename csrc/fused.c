/* Fused kernels (fused.inc) for float and double: LayerNorm, GELU, softmax +
 * cross-entropy, the Adam/AdamW update and the embedding backward. */
#include <math.h>
#include <string.h>
#include "tinylm.h"
#include "common.h"

#define TL_REAL 32
#include "real.h"
#include "vec.inc"
#include "fused.inc"
#undef TL_REAL

#define TL_REAL 64
#include "real.h"
#include "vec.inc"
#include "fused.inc"
