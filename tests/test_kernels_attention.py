"""The fused attention kernel (csrc/attention.c) against its NumPy specification.

1. The specification itself: attention_backward_reference is the gradient of
   attention_reference (float64 central differences, random upstream gradient).
2. The C kernel equals the specification: forward (o, lse) and backward
   (dq, dk, dv), random shapes (hypothesis) and hand-picked tile edges.
3. Edge cases and bad input: rows with no visible key, zero sizes, NaN,
   non-contiguous input, wrong dtypes and shapes.
4. Threads: the result does not depend on the thread count, nor on the run.
"""

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import GRAD_RTOL, assert_close
from tinylm import kernels as K
from tinylm.gradcheck import numerical_gradient, relative_error

needs_c = pytest.mark.skipif(not K.c_available(),
                             reason="tinylm's C extension is not built; C kernel tests skipped")


def make_inputs(rng, lead, tq, tk, d, dtype, magnitude=1.0):
    """q, dout: lead + (tq, d);  k, v: lead + (tk, d); standard normal * magnitude."""
    q = rng.standard_normal(lead + (tq, d)) * magnitude
    k = rng.standard_normal(lead + (tk, d)) * magnitude
    v = rng.standard_normal(lead + (tk, d))
    dout = rng.standard_normal(lead + (tq, d))
    return tuple(x.astype(dtype) for x in (q, k, v, dout))


def assert_lse_close(actual, expected, k):
    """lse may hold -inf (rows with no visible key): same places, rest close."""
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    finite = ~np.isneginf(expected)
    assert_close(actual[finite], expected[finite], k, "lse")


@pytest.fixture
def two_threads():
    """The C backward picks its task split from (batch*heads) and the thread
    count: bh >= 2 * threads -> one task per problem, else two task kinds.
    Tests pin 2 threads so that bh <= 3 takes the second path, bh >= 4 the first,
    also for the small problems that otherwise run on 1 thread."""
    old, below = K.get_num_threads(), K._ATTENTION_SERIAL_BELOW
    K.set_num_threads(2)
    K._ATTENTION_SERIAL_BELOW = 0
    yield
    K.set_num_threads(old)
    K._ATTENTION_SERIAL_BELOW = below


def test_small_attention_problems_run_on_one_thread():
    assert K._attention_threads(1, 64, 64, 32) == 1                 # 131k < 2**18
    assert K._attention_threads(12, 40, 40, 32) == K._NUM_THREADS    # a sentence's 12 heads
    assert K._attention_threads(64, 128, 128, 32) == K._NUM_THREADS   # (0: all cores)


def check_c_matches_reference(q, k, v, dout, causal, scale):
    """Run forward and backward on the C backend and compare with the reference."""
    tq, d = q.shape[-2:]
    tk = k.shape[-2]
    ref_o, ref_lse = K.attention_reference(q, k, v, causal, scale)
    with np.errstate(over="ignore"):   # masked future scores may overflow exp()
        ref_dq, ref_dk, ref_dv = K.attention_backward_reference(
            q, k, v, ref_o, ref_lse, dout, causal, scale)
    with K.backend("c"):
        o, lse = K.attention(q, k, v, causal, scale)
        dq, dk, dv = K.attention_backward(q, k, v, ref_o, ref_lse, dout, causal, scale)
    for x in (o, lse, dq, dk, dv):
        assert x.dtype == q.dtype
    what = "tq=%d tk=%d d=%d causal=%s scale=%s %s" % (tq, tk, d, causal, scale, q.dtype)
    assert_close(o, ref_o, max(tk, d), "o " + what)
    assert_lse_close(lse, ref_lse, max(tk, d))
    assert_close(dq, ref_dq, max(tk, d), "dq " + what)   # sums over keys
    assert_close(dk, ref_dk, max(tq, d), "dk " + what)   # sums over queries
    assert_close(dv, ref_dv, max(tq, d), "dv " + what)


# --------------------------------------------------------------------------
# 1. The specification is right: gradient check of the NumPy reference
# --------------------------------------------------------------------------

@pytest.mark.parametrize("tq, tk, causal, scale", [
    (5, 5, False, None),
    (5, 5, True, None),
    (3, 6, True, 0.7),     # KV-cache shape: every query sees the first tk - tq keys
    (6, 3, True, None),    # tq > tk: the first 3 queries see no key at all
    (4, 7, False, 1.3),
])
def test_reference_backward_is_the_gradient(tq, tk, causal, scale):
    rng = np.random.default_rng(7)
    d = 3
    q, k, v, _ = make_inputs(rng, (2,), tq, tk, d, np.float64)
    g = rng.standard_normal((2, tq, d))          # random upstream gradient dL/do

    def loss(q_, k_, v_):
        o, _ = K.attention_reference(q_, k_, v_, causal, scale)
        return math.fsum((g * o).ravel())

    o, lse = K.attention_reference(q, k, v, causal, scale)
    grads = K.attention_backward_reference(q, k, v, o, lse, g, causal, scale)
    numeric = [
        numerical_gradient(lambda x: loss(x, k, v), q, eps=1e-5),
        numerical_gradient(lambda x: loss(q, x, v), k, eps=1e-5),
        numerical_gradient(lambda x: loss(q, k, x), v, eps=1e-5),
    ]
    for name, a, n in zip(("dq", "dk", "dv"), grads, numeric):
        err = relative_error(a, n)
        assert err.max() < GRAD_RTOL, (name, err.max())
        assert np.abs(n).max() > 1e-3, name     # the check is not vacuous
    if tq > tk and causal:                       # rows with no key: zero gradient
        assert np.all(grads[0][:, : tq - tk] == 0)
        assert np.all(np.isneginf(lse[:, : tq - tk]))


# --------------------------------------------------------------------------
# 2. The C kernel computes the specification
# --------------------------------------------------------------------------

@needs_c
@pytest.mark.usefixtures("two_threads")
@given(bh=st.integers(1, 3), tq=st.integers(1, 140), tk=st.integers(1, 140),
       d=st.integers(1, 130), dtype=st.sampled_from([np.float32, np.float64]),
       causal=st.booleans(), scale=st.one_of(st.none(), st.floats(0.05, 2.0)),
       seed=st.integers(0, 2**31))
def test_c_matches_reference_random_shapes(bh, tq, tk, d, dtype, causal, scale, seed):
    # bh <= 3 with 2 threads: the backward's (key block) + (query block) tasks
    rng = np.random.default_rng(seed)
    q, k, v, dout = make_inputs(rng, (bh,), tq, tk, d, dtype)
    check_c_matches_reference(q, k, v, dout, causal, scale)


# Sizes around the 64 x 64 tiles and the vector widths, T = 1, tq != tk.
# bh = 4 with 2 threads: the backward's one-task-per-problem path.
@needs_c
@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("tq, tk, d", [
    (1, 1, 1), (1, 200, 32), (200, 1, 16), (63, 63, 31), (64, 64, 32), (65, 65, 33),
    (127, 129, 64), (129, 64, 17), (64, 130, 130), (130, 63, 8), (66, 200, 128),
])
def test_c_matches_reference_tile_edges(tq, tk, d, causal, dtype):
    rng = np.random.default_rng(tq * 1000 + tk * 10 + d)
    q, k, v, dout = make_inputs(rng, (4,), tq, tk, d, dtype)
    check_c_matches_reference(q, k, v, dout, causal, None)


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_c_peaked_softmax_and_online_rescaling(dtype):
    # Large scores (|S| up to ~100s): the max moves from key block to key block,
    # so the running sum and accumulator are rescaled many times; exp() sees
    # arguments far below its underflow threshold.
    rng = np.random.default_rng(3)
    q, k, v, dout = make_inputs(rng, (2, 2), 150, 190, 24, dtype, magnitude=6.0)
    k[..., :, 0] += np.linspace(0, 40, 190).astype(dtype)   # later keys score higher
    check_c_matches_reference(q, k, v, dout, False, None)
    check_c_matches_reference(q, k, v, dout, True, 1.0)


@needs_c
def test_c_four_dim_inputs_and_leading_dims():
    rng = np.random.default_rng(11)
    q, k, v, dout = make_inputs(rng, (2, 3), 70, 90, 20, np.float64)
    check_c_matches_reference(q, k, v, dout, True, None)


# --------------------------------------------------------------------------
# 3. Edge cases and bad input
# --------------------------------------------------------------------------

@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_c_rows_without_keys(dtype):
    # causal with tq > tk: queries 0 .. tq-tk-1 see no key -> o = 0, lse = -inf,
    # zero gradients; the other rows are ordinary.
    rng = np.random.default_rng(5)
    tq, tk = 100, 30
    q, k, v, dout = make_inputs(rng, (2,), tq, tk, 16, dtype)
    with K.backend("c"):
        o, lse = K.attention(q, k, v, causal=True)
        dq, dk, dv = K.attention_backward(q, k, v, o, lse, dout, causal=True)
    empty = tq - tk
    assert np.all(o[:, :empty] == 0) and np.all(np.isneginf(lse[:, :empty]))
    assert np.all(dq[:, :empty] == 0)
    assert np.all(np.isfinite(lse[:, empty:]))
    # (row `empty` sees exactly one key: softmax of one score has zero gradient)
    assert np.all(np.any(dq[:, empty + 1:] != 0, axis=-1))
    check_c_matches_reference(q, k, v, dout, True, None)


@needs_c
def test_c_scores_all_minus_inf():
    # A query of -inf makes every visible score -inf (or nan); the spec gives
    # that row o = 0, lse = -inf only when all scores are -inf: q = -inf and
    # k > 0 everywhere.
    rng = np.random.default_rng(2)
    q, k, v, dout = make_inputs(rng, (1,), 4, 70, 3, np.float64)
    k = np.abs(k) + 0.5
    q[0, 1] = -np.inf
    ref_o, ref_lse = K.attention_reference(q, k, v)
    with K.backend("c"):
        o, lse = K.attention(q, k, v)
    assert np.isneginf(ref_lse[0, 1]) and np.all(ref_o[0, 1] == 0)
    assert np.isneginf(lse[0, 1]) and np.all(o[0, 1] == 0)
    assert_close(o, ref_o, 70)


@needs_c
@pytest.mark.parametrize("causal", [False, True])
def test_c_backward_rows_marked_minus_inf_contribute_nothing(causal):
    # The backward takes lse = -inf to mean "this row saw no key": its P row is 0,
    # so it adds nothing to dk, dv and gets dq = 0, even with finite scores.
    rng = np.random.default_rng(6)
    q, k, v, dout = make_inputs(rng, (2,), 90, 100, 12, np.float64)
    o, lse = K.attention_reference(q, k, v, causal)
    lse[0, 5] = lse[1, 70] = -np.inf
    ref = K.attention_backward_reference(q, k, v, o, lse, dout, causal)
    with K.backend("c"):
        got = K.attention_backward(q, k, v, o, lse, dout, causal)
    assert np.all(got[0][0, 5] == 0) and np.all(got[0][1, 70] == 0)
    for name, a, b in zip(("dq", "dk", "dv"), got, ref):
        assert np.all(np.isfinite(a)), name
        assert_close(a, b, 100, name)


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_c_tk_zero_direct_call(dtype):
    # The Python door never sends empty problems to C; the C kernel still
    # follows its contract for tk = 0: o = 0, lse = -inf, dq = 0.
    ffi, lib = K._ffi, K._lib
    kind = "float *" if dtype == np.float32 else "double *"
    bh, tq, d = 2, 5, 4
    q = np.ones((bh, tq, d), dtype)
    kv = np.ones((bh, 1, d), dtype)                  # not read: tk = 0
    o = np.full((bh, tq, d), 7, dtype)
    lse = np.full((bh, tq), 7, dtype)
    p = lambda x: ffi.cast(kind, x.ctypes.data)
    fwd = lib.tl_attn_fwd_f32 if dtype == np.float32 else lib.tl_attn_fwd_f64
    assert fwd(bh, tq, 0, d, 0.5, 0, p(q), p(kv), p(kv), p(o), p(lse), 2) == 0
    assert np.all(o == 0) and np.all(np.isneginf(lse))
    dq = np.full((bh, tq, d), 7, dtype)
    bwd = lib.tl_attn_bwd_f32 if dtype == np.float32 else lib.tl_attn_bwd_f64
    assert bwd(bh, tq, 0, d, 0.5, 1, p(q), p(kv), p(kv), p(o), p(q), p(lse),
               p(dq), p(kv), p(kv), 2) == 0
    assert np.all(dq == 0)


@pytest.mark.parametrize("backend", K.available_backends())
@pytest.mark.parametrize("shape_q, shape_k", [
    ((2, 0, 4), (2, 3, 4)), ((2, 3, 4), (2, 0, 4)), ((0, 3, 4), (0, 3, 4)),
    ((2, 3, 0), (2, 5, 0)),
])
def test_zero_size(backend, shape_q, shape_k):
    rng = np.random.default_rng(0)
    q = rng.standard_normal(shape_q)
    k = rng.standard_normal(shape_k)
    v = rng.standard_normal(shape_k)
    with K.backend(backend):
        o, lse = K.attention(q, k, v, causal=True)
        assert o.shape == q.shape and lse.shape == q.shape[:-1]
        dq, dk, dv = K.attention_backward(q, k, v, o, lse, np.ones_like(o), causal=True)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    if shape_k[-2] == 0:                       # no key at all
        assert np.all(o == 0) and np.all(np.isneginf(lse)) and np.all(dq == 0)


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_c_nan_propagates(dtype):
    rng = np.random.default_rng(9)
    q, k, v, dout = make_inputs(rng, (2,), 70, 80, 8, dtype)
    q[0, 3, 2] = np.nan                         # one query row of problem 0
    v[1, 50, 0] = np.nan                        # one value row of problem 1
    with K.backend("c"):
        o, lse = K.attention(q, k, v, causal=False)
        dout[0, 10, 1] = np.nan                 # one upstream row of problem 0
        dq, dk, dv = K.attention_backward(q, k, v, o, lse, dout, causal=False)
    assert np.all(np.isnan(o[0, 3])) and np.isnan(lse[0, 3])
    assert np.all(np.isfinite(o[0, :3])) and np.all(np.isfinite(o[0, 4:]))
    assert np.all(np.isnan(o[1, :, 0])) and np.all(np.isfinite(o[1, :, 1:]))
    assert np.all(np.isfinite(lse[1]))
    assert np.all(np.isnan(dq[0, 3])) and np.all(np.isnan(dq[0, 10]))
    assert np.any(np.isnan(dk[0])) and np.any(np.isnan(dv[0]))


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_c_masked_nan_does_not_leak(dtype):
    # Causal: a NaN in key/value 100 reaches only the queries that can see it
    # (the C kernel never multiplies a masked entry, not even by 0).  The NumPy
    # reference differs here: its 0 * NaN in p @ v spreads the NaN to every row.
    rng = np.random.default_rng(10)
    q, k, v, dout = make_inputs(rng, (1,), 150, 150, 8, dtype)
    k[0, 100, 3] = np.nan
    v[0, 100, 5] = np.nan
    with K.backend("c"):
        o, lse = K.attention(q, k, v, causal=True)
        dq, dk, dv = K.attention_backward(q, k, v, o, lse, dout, causal=True)
    assert np.all(np.isfinite(o[0, :100])) and np.all(np.isfinite(lse[0, :100]))
    assert np.all(np.isnan(o[0, 100:]))
    assert np.all(np.isfinite(dq[0, :100])) and np.all(np.isnan(dq[0, 100:]))
    ok = slice(0, 100)
    ref_o, ref_lse = K.attention_reference(q[:, ok], k[:, ok], v[:, ok], causal=True)
    assert_close(o[:, ok], ref_o, 100)
    # Backward: a NaN in query 20 (and its upstream gradient) reaches dk, dv
    # only for keys 0 .. 20, the ones query 20 sees.
    q, k, v, dout = make_inputs(rng, (1,), 150, 150, 8, dtype)
    q[0, 20, 1] = np.nan
    dout[0, 20, 2] = np.nan
    with K.backend("c"):
        o, lse = K.attention(q, k, v, causal=True)
        dq, dk, dv = K.attention_backward(q, k, v, o, lse, dout, causal=True)
    for g in (dk, dv):
        assert np.all(np.isnan(g[0, :21])) and np.all(np.isfinite(g[0, 21:]))
    assert np.all(np.isnan(dq[0, 20]))
    assert np.all(np.isfinite(np.delete(dq[0], 20, axis=0)))


@needs_c
def test_c_non_contiguous_inputs_are_copied():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((2, 40, 3, 16))          # (B, T, H, D) layout
    q = base.transpose(0, 2, 1, 3)                      # (B, H, T, D), a view
    k = base[:, ::-1].transpose(0, 2, 1, 3)
    v = np.asfortranarray(rng.standard_normal((2, 3, 40, 16)))
    dout = rng.standard_normal((2, 3, 40, 32))[..., ::2]
    assert not (q.flags.c_contiguous or k.flags.c_contiguous or v.flags.c_contiguous
                or dout.flags.c_contiguous)
    check_c_matches_reference(q, k, v, dout, True, None)


@pytest.mark.parametrize("backend", K.available_backends())
def test_bad_input_raises_clear_errors(backend):
    q = np.zeros((2, 5, 4), np.float32)
    k = np.zeros((2, 6, 4), np.float32)
    with K.backend(backend):
        with pytest.raises(TypeError, match="dtype"):
            K.attention(q, k.astype(np.float64), k)
        with pytest.raises(TypeError, match="float32 or float64"):
            K.attention(q.astype(np.int32), k, k)
        with pytest.raises(ValueError, match="head size"):
            K.attention(q, np.zeros((2, 6, 3), np.float32), np.zeros((2, 6, 3), np.float32))
        with pytest.raises(ValueError, match="same shape"):
            K.attention(q, k, np.zeros((2, 7, 4), np.float32))
        with pytest.raises(ValueError, match="leading dims"):
            K.attention(q, np.zeros((3, 6, 4), np.float32), np.zeros((3, 6, 4), np.float32))
        with pytest.raises(ValueError, match="scale must be finite"):
            K.attention(q, k, k, scale=float("nan"))
        o, lse = K.attention(q, k, k)
        with pytest.raises(ValueError, match="lse"):
            K.attention_backward(q, k, k, o, lse[:, :4], o)
        with pytest.raises(ValueError, match="lse"):
            K.attention_backward(q, k, k, o, lse[..., None], o)
        with pytest.raises(TypeError, match="dtype"):
            K.attention_backward(q, k, k, o, lse.astype(np.float64), o)


# --------------------------------------------------------------------------
# 4. Threads and determinism
# --------------------------------------------------------------------------

@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_c_thread_count_and_runs_give_identical_bits(dtype, causal):
    # Every output row is computed by exactly one task, in a fixed order, so the
    # results are bit-identical for any thread count and any run.
    rng = np.random.default_rng(8)
    q, k, v, dout = make_inputs(rng, (3,), 150, 170, 40, dtype)
    old = K.get_num_threads()
    results = {}
    try:
        for n in (1, 2, 2, 3):
            K.set_num_threads(n)
            with K.backend("c"):
                o, lse = K.attention(q, k, v, causal)
                grads = K.attention_backward(q, k, v, o, lse, dout, causal)
            results.setdefault(n, []).append((o, lse) + grads)
    finally:
        K.set_num_threads(old)
    first = results[1][0]
    for n, runs in results.items():
        for run in runs:
            for a, b in zip(first, run):
                np.testing.assert_array_equal(a, b, err_msg="threads=%d" % n)


# --------------------------------------------------------------------------
# 5. An independent oracle: torch (optional)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_matches_torch_sdpa(causal):
    torch = pytest.importorskip("torch", reason="torch is an optional test oracle")
    rng = np.random.default_rng(12)
    q, k, v, dout = make_inputs(rng, (2, 3), 100, 100, 24, np.float64)
    tq_, tk_, tv_ = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    t_o = torch.nn.functional.scaled_dot_product_attention(
        tq_, tk_, tv_, is_causal=causal, scale=0.3)
    t_o.backward(torch.tensor(dout))
    for backend in K.available_backends():
        with K.backend(backend):
            o, lse = K.attention(q, k, v, causal, 0.3)
            grads = K.attention_backward(q, k, v, o, lse, dout, causal, 0.3)
        assert_close(o, t_o.detach().numpy(), 100, backend + " o")
        for name, g, t in zip(("dq", "dk", "dv"), grads, (tq_, tk_, tv_)):
            assert_close(g, t.grad.numpy(), 100, backend + " " + name)
