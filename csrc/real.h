/* The float/double template, made plain.
 *
 * A kernel written once for both precisions lives in a `.inc` file that uses
 * the names below.  The `.c` file that compiles it includes it twice:
 *
 *     #define TL_REAL 32
 *     #include "real.h"            <- real = float, FN(x) = x##_f32, ...
 *     #include "attention_forward.inc"
 *     #define TL_REAL 64            (after #undef TL_REAL)
 *     #include "real.h"            <- real = double, FN(x) = x##_f64, ...
 *     #include "attention_forward.inc"
 *
 * real.h first #undefs everything it defines, so it can be included again
 * for the other type.  The macro set:
 *
 *   real        float or double
 *   FN(name)    name_f32 or name_f64: every typed function and type is FN(...)
 *   vec         a vector of VL reals (TL_VBYTES wide, see common.h)
 *   uvec        a vector of VL unsigned integers of the same width (masks, bits)
 *   VL          lanes per vector
 *   SCALAR_EXP, SCALAR_LOG, SCALAR_SQRT, SCALAR_TANH, SCALAR_ERF  the libm
 *               function for real
 *   EXP_*       constants of the vector exp() in vec.inc
 */
#include "common.h"

#undef real
#undef FN
#undef vec
#undef uvec
#undef VL
#undef SCALAR_EXP
#undef SCALAR_LOG
#undef SCALAR_SQRT
#undef SCALAR_TANH
#undef SCALAR_ERF
#undef EXP_LO
#undef EXP_HI
#undef EXP_MAGIC
#undef EXP_MAGIC_BITS
#undef EXP_BIAS
#undef EXP_MANT_BITS
#undef EXP_LN2_HI
#undef EXP_LN2_LO
#undef EXP_DEGREE

#if TL_REAL == 32

typedef float tl_vf32 __attribute__((vector_size(TL_VBYTES)));
typedef uint32_t tl_vu32 __attribute__((vector_size(TL_VBYTES)));
#define real float
#define FN(name) name##_f32
#define vec tl_vf32
#define uvec tl_vu32
#define VL (TL_VBYTES / 4)
#define SCALAR_EXP expf
#define SCALAR_LOG logf
#define SCALAR_SQRT sqrtf
#define SCALAR_TANH tanhf
#define SCALAR_ERF erff
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

#elif TL_REAL == 64

typedef double tl_vf64 __attribute__((vector_size(TL_VBYTES)));
typedef uint64_t tl_vu64 __attribute__((vector_size(TL_VBYTES)));
#define real double
#define FN(name) name##_f64
#define vec tl_vf64
#define uvec tl_vu64
#define VL (TL_VBYTES / 8)
#define SCALAR_EXP exp
#define SCALAR_LOG log
#define SCALAR_SQRT sqrt
#define SCALAR_TANH tanh
#define SCALAR_ERF erf
#define EXP_LO (-708.0)          /* exp(-708) = 3.3e-308 is still a normal double */
#define EXP_HI (709.0)           /* exp(709) = 8.2e307 < DBL_MAX */
#define EXP_MAGIC 6755399441055744.0  /* 1.5 * 2^52 */
#define EXP_MAGIC_BITS 0x4338000000000000ull
#define EXP_BIAS 1023ull
#define EXP_MANT_BITS 52
#define EXP_LN2_HI 6.93147180369123816490e-01
#define EXP_LN2_LO 1.90821492927058770002e-10
#define EXP_DEGREE 13            /* error < 1e-17 on |r| <= ln2/2 */

#else
#error "define TL_REAL as 32 or 64 before including real.h"
#endif
