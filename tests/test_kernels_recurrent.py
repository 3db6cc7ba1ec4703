"""The recurrent sequence kernels (csrc/recurrent.inc) against their NumPy specifications.

1. Each backward specification is the gradient of its forward (float64
   central differences, random upstream gradients).
2. The C kernels equal the specifications: random odd shapes (T = 1, batch 1,
   hidden sizes that are not a multiple of the vector width), float32 and
   float64, non-contiguous inputs, with and without dout / b_hn.
3. The NumPy backend runs the specification; bad input is refused in one line.
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
DTYPES = st.sampled_from([np.float32, np.float64])


def arr(rng, shape, dtype, scale=1.0, strided=False):
    """Standard normal * scale; with strided, a non-contiguous view of that shape."""
    a = (rng.standard_normal(tuple(shape[:-1]) + (2 * shape[-1],)) * scale).astype(dtype)
    return a[..., ::2] if strided else np.ascontiguousarray(a[..., ::2])


def lstm_inputs(rng, B, T, H, dtype, strided=False):
    return (arr(rng, (B, T, 4 * H), dtype, 1.5, strided),
            arr(rng, (4 * H, H), dtype, 1 / math.sqrt(H), strided),
            arr(rng, (B, H), dtype, 1.0, strided), arr(rng, (B, H), dtype, 1.0, strided))


def gru_inputs(rng, B, T, H, dtype, strided=False):
    return (arr(rng, (B, T, 3 * H), dtype, 1.5, strided),
            arr(rng, (3 * H, H), dtype, 1 / math.sqrt(H), strided),
            arr(rng, (1, H), dtype, 1.0, strided)[0], arr(rng, (B, H), dtype, 1.0, strided))


def hprev_of(out, h0):
    return np.concatenate([h0[:, None], out[:, :-1]], axis=1)


def grad_ok(analytic, f, x):
    numeric = numerical_gradient(f, x, eps=1e-5)
    err = relative_error(analytic, numeric)
    assert err.max() < GRAD_RTOL, err.max()
    assert np.abs(numeric).max() > 1e-3          # the check is not vacuous


# --------------------------------------------------------------------------
# 1. The backward specifications are gradients of the forward ones
# --------------------------------------------------------------------------

def test_lstm_reference_backward_is_the_gradient():
    rng = np.random.default_rng(0)
    B, T, H = 2, 3, 3
    gx, w, h0, c0 = lstm_inputs(rng, B, T, H, np.float64)
    g_out, g_h, g_c = (rng.standard_normal(s) for s in ((B, T, H), (B, H), (B, H)))
    bias = rng.standard_normal(4 * H)

    def loss(gx_, w_, h0_, c0_, bias_=bias):
        out, _, cs = K.lstm_sequence_forward_reference(gx_, w_, h0_, c0_, bias_)
        terms = np.concatenate([(g_out * out).ravel(), (g_h * out[:, -1]).ravel(),
                                (g_c * cs[:, -1]).ravel()])
        return math.fsum(terms)

    out, gates, cs = K.lstm_sequence_forward_reference(gx, w, h0, c0, bias)
    dz, dh0, dc0, db = K.lstm_sequence_backward_reference(w, gates, cs, c0, g_out, g_h, g_c)
    grad_ok(dz, lambda t: loss(t, w, h0, c0), gx)                  # d/dgx = dz
    grad_ok(dh0, lambda t: loss(gx, w, t, c0), h0)
    grad_ok(dc0, lambda t: loss(gx, w, h0, t), c0)
    grad_ok(db, lambda t: loss(gx, w, h0, c0, t), bias)
    dw = dz.reshape(-1, 4 * H).T @ hprev_of(out, h0).reshape(-1, H)   # dW_hh = dz^T h_prev
    grad_ok(dw, lambda t: loss(gx, t, h0, c0), w)


def test_gru_reference_backward_is_the_gradient():
    rng = np.random.default_rng(1)
    B, T, H = 2, 3, 3
    gx, w, b_hn, h0 = gru_inputs(rng, B, T, H, np.float64)
    g_out, g_h = rng.standard_normal((B, T, H)), rng.standard_normal((B, H))
    b_i = rng.standard_normal(3 * H)

    def loss(gx_, w_, b_, h0_, b_i_=b_i):
        out, _ = K.gru_sequence_forward_reference(gx_, w_, b_, h0_, b_i_)
        return math.fsum(np.concatenate([(g_out * out).ravel(), (g_h * out[:, -1]).ravel()]))

    out, gates = K.gru_sequence_forward_reference(gx, w, b_hn, h0, b_i)
    dgi, dgh, dh0, dbi, dbh = K.gru_sequence_backward_reference(w, gates, hprev_of(out, h0),
                                                                g_out, g_h)
    grad_ok(dgi, lambda t: loss(t, w, b_hn, h0), gx)               # d/dgx = dgi
    grad_ok(dh0, lambda t: loss(gx, w, b_hn, t), h0)
    grad_ok(dbi, lambda t: loss(gx, w, b_hn, h0, t), b_i)
    grad_ok(dbh[2 * H:], lambda t: loss(gx, w, t, h0), b_hn)
    dw = dgh.reshape(-1, 3 * H).T @ hprev_of(out, h0).reshape(-1, H)  # dW_hh = dgh^T h_prev
    grad_ok(dw, lambda t: loss(gx, t, b_hn, h0), w)


# --------------------------------------------------------------------------
# 2. C == specification
# --------------------------------------------------------------------------

SHAPES = dict(B=st.integers(1, 9), T=st.integers(1, 6),
              H=st.sampled_from([1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 40]))


@needs_c
@given(dtype=DTYPES, strided=st.booleans(), with_dout=st.booleans(), with_bias=st.booleans(),
       seed=st.integers(0, 2**16), **SHAPES)
def test_lstm_c_equals_reference(B, T, H, dtype, strided, with_dout, with_bias, seed):
    rng = np.random.default_rng(seed)
    gx, w, h0, c0 = lstm_inputs(rng, B, T, H, dtype, strided)
    bias = arr(rng, (1, 4 * H), dtype, 1.0, strided)[0] if with_bias else None
    with K.backend("c"):
        got = K.lstm_sequence_forward(gx, w, h0, c0, bias)
    want = K.lstm_sequence_forward_reference(gx, w, h0, c0, bias)
    for name, a, b in zip(("out", "gates", "cs"), got, want):
        assert_close(a, b, H * T, name)
    _, gates, cs = want
    dout = arr(rng, (B, T, H), dtype, 1.0, strided) if with_dout else None
    dhT, dcT = arr(rng, (B, H), dtype, 1.0, strided), arr(rng, (B, H), dtype)
    with K.backend("c"):
        got = K.lstm_sequence_backward(w, gates, cs, c0, dout, dhT, dcT)
    want = K.lstm_sequence_backward_reference(w, gates, cs, c0, dout, dhT, dcT)
    for name, a, b in zip(("dz", "dh0", "dc0", "db"), got, want):
        assert a.dtype == dtype
        assert_close(a, b, 4 * H * T * B, name)


@needs_c
@given(dtype=DTYPES, strided=st.booleans(), with_dout=st.booleans(), with_bias=st.booleans(),
       seed=st.integers(0, 2**16), **SHAPES)
def test_gru_c_equals_reference(B, T, H, dtype, strided, with_dout, with_bias, seed):
    rng = np.random.default_rng(seed)
    gx, w, b_hn, h0 = gru_inputs(rng, B, T, H, dtype, strided)
    b_i = arr(rng, (1, 3 * H), dtype, 1.0, strided)[0] if with_bias else None
    b_hn = b_hn if with_bias else None
    with K.backend("c"):
        got = K.gru_sequence_forward(gx, w, b_hn, h0, b_i)
    want = K.gru_sequence_forward_reference(gx, w, b_hn, h0, b_i)
    for name, a, b in zip(("out", "gates"), got, want):
        assert_close(a, b, H * T, name)
    out, gates = want
    hprev = hprev_of(out, h0)
    if strided:
        hprev = np.asfortranarray(hprev)
    dout = arr(rng, (B, T, H), dtype, 1.0, strided) if with_dout else None
    dhT = arr(rng, (B, H), dtype, 1.0, strided)
    with K.backend("c"):
        got = K.gru_sequence_backward(w, gates, hprev, dout, dhT)
    want = K.gru_sequence_backward_reference(w, gates, hprev, dout, dhT)
    for name, a, b in zip(("dgi", "dgh", "dh0", "dbi", "dbh"), got, want):
        assert a.dtype == dtype
        assert_close(a, b, 3 * H * T * B, name)


@needs_c
def test_c_saturated_and_nan_inputs_match_the_reference():
    """Huge pre-activations saturate the gates exactly as the reference; a NaN in one
    batch row stays in that row."""
    rng = np.random.default_rng(3)
    B, T, H = 3, 4, 19
    gx, w, h0, c0 = lstm_inputs(rng, B, T, H, np.float64)
    gx[0] *= 1e4                       # |z| up to ~1e4: sigmoid 0/1, tanh +-1
    gx[1, 2, 5] = np.nan
    with K.backend("c"):
        got = K.lstm_sequence_forward(gx, w, h0, c0)
    want = K.lstm_sequence_forward_reference(gx, w, h0, c0)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)   # NaN == NaN here
    assert np.isnan(got[0][1, 3]).any() and not np.isnan(got[0][[0, 2]]).any()


@needs_c
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_threads_share_the_steps_with_the_same_bits(kind):
    """Big enough for the kernels to share each step among threads (B * G*H * H >= 2**20):
    equal to the reference, and the same bits with 1 and 2 threads."""
    rng = np.random.default_rng(6)
    B, T, H = 17, 3, 150
    G = 4 if kind == "lstm" else 3
    assert B * G * H * H >= 2**20
    if kind == "lstm":
        gx, w, h0, c0 = lstm_inputs(rng, B, T, H, np.float32)
        fwd = lambda f: f(gx, w, h0, c0)                                    # noqa: E731
        names = ("lstm_sequence_forward", "lstm_sequence_forward_reference")
    else:
        gx, w, b_hn, h0 = gru_inputs(rng, B, T, H, np.float32)
        fwd = lambda f: f(gx, w, b_hn, h0)                                  # noqa: E731
        names = ("gru_sequence_forward", "gru_sequence_forward_reference")
    dout, dhT = arr(rng, (B, T, H), np.float32), arr(rng, (B, H), np.float32)
    want = fwd(getattr(K, names[1]))

    def bwd(f):
        if kind == "lstm":
            return f(w, want[1], want[2], c0, dout, dhT, dhT)
        return f(w, want[1], hprev_of(want[0], h0), dout, dhT)

    want = want + bwd(getattr(K, kind + "_sequence_backward_reference"))
    saved = K._NUM_THREADS
    runs = []
    try:
        for n in (1, 2):
            K.set_num_threads(n)
            with K.backend("c"):
                runs.append(fwd(getattr(K, names[0]))
                            + bwd(getattr(K, kind + "_sequence_backward")))
    finally:
        K._NUM_THREADS = saved
    for one, two, ref in zip(runs[0], runs[1], want):
        np.testing.assert_array_equal(one, two)
        assert_close(one, ref, G * H * T * B)


# --------------------------------------------------------------------------
# 3. The NumPy backend and bad input
# --------------------------------------------------------------------------

def test_numpy_backend_runs_the_reference():
    rng = np.random.default_rng(4)
    gx, w, h0, c0 = lstm_inputs(rng, 2, 3, 5, np.float64)
    with K.backend("numpy"):
        got = K.lstm_sequence_forward(gx, w, h0, c0)
    for a, b in zip(got, K.lstm_sequence_forward_reference(gx, w, h0, c0)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", K.available_backends())
def test_bad_input_is_refused_in_one_line(backend):
    rng = np.random.default_rng(5)
    gx, w, h0, c0 = lstm_inputs(rng, 2, 3, 5, np.float64)
    with K.backend(backend):
        with pytest.raises(ValueError, match="lstm_sequence_forward: h0 has shape"):
            K.lstm_sequence_forward(gx, w, h0[:1], c0)
        with pytest.raises(ValueError, match="w_hh must have shape"):
            K.lstm_sequence_forward(gx, w[:-1], h0, c0)
        with pytest.raises(ValueError, match="gx must be a 3-D array"):
            K.lstm_sequence_forward(gx[..., :-1], w, h0, c0)
        with pytest.raises(TypeError, match="dtype"):
            K.lstm_sequence_forward(gx.astype(np.float32), w, h0, c0)
        with pytest.raises(TypeError, match="dtype int64"):
            K.gru_sequence_forward(gx[..., :15], w[:15], None, h0.astype(np.int64))
        _, gates, cs = K.lstm_sequence_forward(gx, w, h0, c0)
        with pytest.raises(TypeError, match="dhT must be an array"):
            K.lstm_sequence_backward(w, gates, cs, c0, None, None, c0)
        with pytest.raises(ValueError, match="dout has shape"):
            K.lstm_sequence_backward(w, gates, cs, c0, gx, h0, c0)
