/* tinylm C kernels: the public API (build_ffi.py hands these declarations to cffi).
 *
 * Conventions
 *   - Every array is C-contiguous (row-major); tinylm/kernels.py checks dtype,
 *     shape and contiguity before calling, so these functions trust their input.
 *   - Sizes are int64_t; the caller has checked they are >= 0.
 *   - nthreads <= 0 means "OpenMP's default"; a serial build ignores it.
 *   - Return 0 on success, TL_ENOMEM if a scratch buffer could not be
 *     allocated, TL_EINVAL for arguments the Python side should have refused.
 *   - No static scratch state: cffi releases the GIL, so two Python threads may
 *     call the same kernel at once.
 */
#ifndef TINYLM_H
#define TINYLM_H

#include <stdint.h>

#define TL_OK 0
#define TL_ENOMEM (-1)
#define TL_EINVAL (-2)

/* C[m,n] (+)= op(A) @ op(B) (+ bias).
 *   op(A) is m x k: A is stored (m, k), or (k, m) when trans_a.
 *   op(B) is k x n: B is stored (k, n), or (n, k) when trans_b.
 *   accumulate = 0 overwrites C, 1 adds to it.
 *   bias: NULL, or n values added to every row of C last (a Linear layer's
 *   x W^T + b without a second pass over C). */
int tl_matmul_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                  const float *a, const float *b, const float *bias, float *c, int accumulate,
                  int nthreads);
int tl_matmul_f64(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                  const double *a, const double *b, const double *bias, double *c,
                  int accumulate, int nthreads);

/* Fused scaled-dot-product attention over bh = batch*heads independent problems.
 *   q: (bh, tq, d)   k, v: (bh, tk, d)   o: (bh, tq, d)   lse: (bh, tq)
 *   S = scale * q k^T;  causal keeps key j for query i iff j <= i + (tk - tq)
 *   (bottom-right aligned: the usual mask when tq == tk, and right for a KV cache).
 *   P = softmax(S) row-wise;  o = P v;  lse[i] = log sum_j exp(S[i, j]).
 *   A query row with no allowed key gets o = 0 and lse = -inf.
 * Backward takes dout (bh, tq, d) and writes dq, dk, dv (overwritten, not accumulated),
 * recomputing P from lse: P = exp(S - lse). */
int tl_attn_fwd_f32(int64_t bh, int64_t tq, int64_t tk, int64_t d, float scale, int causal,
                    const float *q, const float *k, const float *v,
                    float *o, float *lse, int nthreads);
int tl_attn_fwd_f64(int64_t bh, int64_t tq, int64_t tk, int64_t d, double scale, int causal,
                    const double *q, const double *k, const double *v,
                    double *o, double *lse, int nthreads);
int tl_attn_bwd_f32(int64_t bh, int64_t tq, int64_t tk, int64_t d, float scale, int causal,
                    const float *q, const float *k, const float *v,
                    const float *o, const float *dout, const float *lse,
                    float *dq, float *dk, float *dv, int nthreads);
int tl_attn_bwd_f64(int64_t bh, int64_t tq, int64_t tk, int64_t d, double scale, int causal,
                    const double *q, const double *k, const double *v,
                    const double *o, const double *dout, const double *lse,
                    double *dq, double *dk, double *dv, int nthreads);

/* The same attention as plain loops (csrc/attention_plain.inc): the readable
 * specification the fast kernel is tested against.  Serial, stores S whole. */
int tl_attn_plain_fwd_f32(int64_t bh, int64_t tq, int64_t tk, int64_t d, float scale, int causal,
                          const float *q, const float *k, const float *v, float *o, float *lse);
int tl_attn_plain_fwd_f64(int64_t bh, int64_t tq, int64_t tk, int64_t d, double scale, int causal,
                          const double *q, const double *k, const double *v,
                          double *o, double *lse);
int tl_attn_plain_bwd_f32(int64_t bh, int64_t tq, int64_t tk, int64_t d, float scale, int causal,
                          const float *q, const float *k, const float *v,
                          const float *o, const float *dout, const float *lse,
                          float *dq, float *dk, float *dv);
int tl_attn_plain_bwd_f64(int64_t bh, int64_t tq, int64_t tk, int64_t d, double scale, int causal,
                          const double *q, const double *k, const double *v,
                          const double *o, const double *dout, const double *lse,
                          double *dq, double *dk, double *dv);

/* Fused kernels (csrc/fused.inc; the NumPy specifications are in kernels.py).
 * n rows of D (or V) elements, C-contiguous; outputs overwritten unless said. */
int tl_layernorm_fwd_f32(int64_t n, int64_t D, float eps, const float *x, const float *w,
                         const float *b, float *y, float *xhat, float *rstd, int nthreads);
int tl_layernorm_bwd_f32(int64_t n, int64_t D, const float *dy, const float *xhat, const float *rstd,
                         const float *w, float *dx, float *dw, float *db, int nthreads); /* dw, db: += */
int tl_gelu_fwd_f32(int64_t n, int tanh_form, const float *x, float *y, float *aux,
                    int nthreads);  /* aux: tanh(u) or Phi(x), may be NULL */
int tl_gelu_bwd_f32(int64_t n, int tanh_form, const float *x, const float *dy, float *dx, int nthreads);
int tl_softmax_xent_fwd_f32(int64_t n, int64_t V, const float *z, const int64_t *t,
                            int64_t ignore_index, float *p, float *nll, int nthreads);
int tl_softmax_xent_bwd_f32(int64_t n, int64_t V, const float *p, const int64_t *t,
                            int64_t ignore_index, float scale, float *dz, int nthreads);
int tl_adam_f32(int64_t n, float *p, const float *g, float *m, float *v, double lr, double b1,
                double b2, double eps, double wd, int decoupled, double grad_scale,
                int64_t t, int nthreads);
int tl_embedding_bwd_f32(int64_t n, int64_t D, int64_t V, const int64_t *ids, const float *dy,
                         float *dW, int nthreads); /* dW += */
int tl_layernorm_fwd_f64(int64_t n, int64_t D, double eps, const double *x, const double *w,
                         const double *b, double *y, double *xhat, double *rstd, int nthreads);
int tl_layernorm_bwd_f64(int64_t n, int64_t D, const double *dy, const double *xhat, const double *rstd,
                         const double *w, double *dx, double *dw, double *db, int nthreads); /* dw, db: += */
int tl_gelu_fwd_f64(int64_t n, int tanh_form, const double *x, double *y, double *aux,
                    int nthreads);  /* aux: tanh(u) or Phi(x), may be NULL */
int tl_gelu_bwd_f64(int64_t n, int tanh_form, const double *x, const double *dy, double *dx, int nthreads);
int tl_softmax_xent_fwd_f64(int64_t n, int64_t V, const double *z, const int64_t *t,
                            int64_t ignore_index, double *p, double *nll, int nthreads);
int tl_softmax_xent_bwd_f64(int64_t n, int64_t V, const double *p, const int64_t *t,
                            int64_t ignore_index, double scale, double *dz, int nthreads);
int tl_adam_f64(int64_t n, double *p, const double *g, double *m, double *v, double lr, double b1,
                double b2, double eps, double wd, int decoupled, double grad_scale,
                int64_t t, int nthreads);
int tl_embedding_bwd_f64(int64_t n, int64_t D, int64_t V, const int64_t *ids, const double *dy,
                         double *dW, int nthreads); /* dW += */

/* Build information, for `tinylm info`. */
const char *tl_simd_name(void);
int tl_has_openmp(void);
int tl_omp_max_threads(void);     /* 1 in a fork()ed child, see below */
/* 1 in a child process forked after the kernels used OpenMP threads: libgomp
 * cannot run its pool there, so the kernels run on one thread. */
int tl_single_threaded_after_fork(void);
const char *tl_build_flags(void);

/* Recurrent layers over a whole sequence (csrc/recurrent.inc; the NumPy
 * specifications are lstm/gru_sequence_forward/backward_reference in kernels.py).
 * B batch, T steps, H hidden units; all arrays C-contiguous, batch-first.
 * LSTM forward:  gx (B, T, 4H) = x W_ih^T, bias (4H) = b_ih + b_hh or NULL, w_hh (4H, H),
 *   h0, c0 (B, H)
 *   -> out (B, T, H) = h_t, gates (B, T, 4H) = i, f, g, o (activated), cs (B, T, H) = c_t.
 * LSTM backward: dout (B, T, H) or NULL, dhT, dcT (B, H)
 *   -> dz (B, T, 4H) (gradient of the gates' pre-activations), dh0, dc0 (B, H),
 *   db (4H) = sum of dz over batch and time (NULL: not computed).
 * GRU forward:  gx (B, T, 3H) = x W_ih^T, b_i (3H) = b_ih + [b_hr, b_hz, 0] or NULL, w_hh (3H, H),
 *   b_hn (H) or NULL, h0 (B, H) -> out (B, T, H), gates (B, T, 4H) = r, z, n, gh_n.
 * GRU backward: hprev (B, T, H) = h_{t-1}, dout or NULL, dhT
 *   -> dgi, dgh (B, T, 3H) (gradients of x W_ih^T + b_ih and h W_hh^T + b_hh), dh0,
 *   dbi, dbh (3H) = their sums over batch and time (NULL: not computed). */
int tl_lstm_seq_fwd_f32(int64_t B, int64_t T, int64_t H, const float *gx, const float *bias,
                        const float *w_hh,
                        const float *h0, const float *c0, float *out, float *gates, float *cs,
                        int nthreads);
int tl_lstm_seq_fwd_f64(int64_t B, int64_t T, int64_t H, const double *gx, const double *bias,
                        const double *w_hh,
                        const double *h0, const double *c0, double *out, double *gates,
                        double *cs, int nthreads);
int tl_lstm_seq_bwd_f32(int64_t B, int64_t T, int64_t H, const float *w_hh, const float *gates,
                        const float *cs, const float *c0, const float *dout, const float *dhT,
                        const float *dcT, float *dz, float *dh0, float *dc0, float *db,
                        int nthreads);
int tl_lstm_seq_bwd_f64(int64_t B, int64_t T, int64_t H, const double *w_hh,
                        const double *gates, const double *cs, const double *c0,
                        const double *dout, const double *dhT, const double *dcT, double *dz,
                        double *dh0, double *dc0, double *db, int nthreads);
int tl_gru_seq_fwd_f32(int64_t B, int64_t T, int64_t H, const float *gx, const float *b_i,
                       const float *w_hh,
                       const float *b_hn, const float *h0, float *out, float *gates,
                       int nthreads);
int tl_gru_seq_fwd_f64(int64_t B, int64_t T, int64_t H, const double *gx, const double *b_i,
                       const double *w_hh,
                       const double *b_hn, const double *h0, double *out, double *gates,
                       int nthreads);
int tl_gru_seq_bwd_f32(int64_t B, int64_t T, int64_t H, const float *w_hh, const float *gates,
                       const float *hprev, const float *dout, const float *dhT, float *dgi,
                       float *dgh, float *dh0, float *dbi, float *dbh, int nthreads);
int tl_gru_seq_bwd_f64(int64_t B, int64_t T, int64_t H, const double *w_hh,
                       const double *gates, const double *hprev, const double *dout,
                       const double *dhT, double *dgi, double *dgh, double *dh0, double *dbi,
                       double *dbh, int nthreads);

/* Transformer glue (csrc/fused.inc; the NumPy specifications are add_column_sums_reference
 * and swap_axes12_reference in kernels.py).
 * add_column_sums: out (m) += the sums over the n rows of x (n, m), C-contiguous.
 * swap_axes12: dst viewed as (A, C, B, D) with element strides da, dc, db, 1 = src viewed as
 *   (A, B, C, D) with element strides sa, sb, sc, 1 (last axes contiguous; no overlap). */
int tl_add_column_sums_f32(int64_t n, int64_t m, const float *x, float *out, int nthreads);
int tl_add_column_sums_f64(int64_t n, int64_t m, const double *x, double *out, int nthreads);
int tl_swap_axes12_f32(int64_t A, int64_t B, int64_t C, int64_t D, int64_t sa, int64_t sb,
                       int64_t sc, const float *src, int64_t da, int64_t dc, int64_t db,
                       float *dst, int nthreads);
int tl_swap_axes12_f64(int64_t A, int64_t B, int64_t C, int64_t D, int64_t sa, int64_t sb,
                       int64_t sc, const double *src, int64_t da, int64_t dc, int64_t db,
                       double *dst, int nthreads);

/* The optimizer over nbuf buffers of sizes[k] elements in one call (csrc/fused.inc; the
 * NumPy specifications are sum_of_squares_reference, scale_reference and
 * adam_update_multi_reference in kernels.py).  *out = sum of x_k[i]^2 in double;
 * x_k *= scale; tl_adam on every buffer. */
int tl_sum_squares_multi_f32(int64_t nbuf, const int64_t *sizes, const float *const *x,
                             double *out);
int tl_sum_squares_multi_f64(int64_t nbuf, const int64_t *sizes, const double *const *x,
                             double *out);
int tl_scale_multi_f32(int64_t nbuf, const int64_t *sizes, float *const *x, double scale);
int tl_scale_multi_f64(int64_t nbuf, const int64_t *sizes, double *const *x, double scale);
int tl_adam_multi_f32(int64_t nbuf, const int64_t *sizes, float *const *p, float *const *g,
                      float *const *m, float *const *v, double lr, double b1, double b2,
                      double eps, double wd, int decoupled, double grad_scale, int64_t t,
                      int nthreads);
int tl_adam_multi_f64(int64_t nbuf, const int64_t *sizes, double *const *p, double *const *g,
                      double *const *m, double *const *v, double lr, double b1, double b2,
                      double eps, double wd, int decoupled, double grad_scale, int64_t t,
                      int nthreads);

/* -- Generation with a KV cache (csrc/attention_decode.inc) ------------------
 * One new query row per (batch*head) problem against its cached keys/values:
 *   q, o: (bh, d)   k, v: (bh, ld, d), of which the first t rows are filled (t <= ld)
 *   s = scale * q k[0:t]^T;  p = softmax(s);  o = p v[0:t]   (every key visible; t = 0: o = 0)
 * The same as tl_attn_fwd with tq = 1, causal, without lse.
 * Specification: attention_decode_reference in tinylm/kernels.py. */
int tl_attn_decode_f32(int64_t bh, int64_t t, int64_t ld, int64_t d, float scale,
                       const float *q, const float *k, const float *v, float *o, int nthreads);
int tl_attn_decode_f64(int64_t bh, int64_t t, int64_t ld, int64_t d, double scale,
                       const double *q, const double *k, const double *v, double *o,
                       int nthreads);

#endif
