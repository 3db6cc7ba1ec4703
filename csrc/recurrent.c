/* Recurrent sequence kernels (recurrent.inc) for float and double: the whole
 * time loop of one LSTM or GRU layer, forward and backward (BPTT), in one call.
 * The NumPy specifications are lstm/gru_sequence_forward/backward_reference in
 * tinylm/kernels.py. */
#include <math.h>
#include <string.h>
#include "tinylm.h"
#include "common.h"

/* Rows of the register tile: RNN_MR rows x (3 or 4) vectors of accumulators.
 * AVX-512 has 32 vector registers (6 x 4 = 24 accumulators + 6 broadcasts + 1
 * load), the others 16 (3 x 4 = 12 + 3 + 1). */
#ifndef RNN_MR
#if TL_VBYTES >= 64 || defined(__aarch64__)
#define RNN_MR 6
#else
#define RNN_MR 3
#endif
#endif
#define RNN_NVMAX 4
/* Per-step multiply-adds (B * gates*H * H) from which the steps are shared by
 * the threads (one barrier per step costs a few microseconds). */
#define RNN_PARALLEL_MIN (1 << 20)

/* Threads in the current parallel region (1 in a serial build). */
static inline int rnn_team_size(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

#define TL_REAL 32
#include "real.h"
#include "vec.inc"
#include "recurrent.inc"
#undef TL_REAL

#define TL_REAL 64
#include "real.h"
#include "vec.inc"
#include "recurrent.inc"
