/* Plain-loop attention (attention_plain.inc), for float and double: the
 * readable version of attention.c, and what its tests compare it with. */
#include <math.h>
#include <stdlib.h>
#include "tinylm.h"

#define TL_REAL 32
#include "real.h"
#include "attention_plain.inc"
#undef TL_REAL

#define TL_REAL 64
#include "real.h"
#include "attention_plain.inc"
