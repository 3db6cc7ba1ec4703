"""The LSTM/GRU sequence layers' fast path (whole sequence in C) gives the
numbers of the readable per-step loop: outputs, final states, dx, initial-state
gradients and every parameter gradient, at float64 to ~1e-12, stacked layers,
with and without biases, initial states and state gradients; and it passes the
gradient check."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import GRAD_RTOL
from tinylm import kernels as K
from tinylm.gradcheck import check_layer
from tinylm.layers import GRU, LSTM
from tinylm.layers.examples import randomize_params

pytestmark = pytest.mark.skipif(not K.c_available(),
                                reason="the fast path runs with the C backend only")
SEQ = {"lstm": LSTM, "gru": GRU}


def _set_fast(layer, fast):
    for k in range(layer.num_layers):
        layer._layer(k).use_fast_path = fast


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


def _run(kind, fast, B, T, I, H, L, bias, with_state, with_dstate, with_dout, seed):
    rng = np.random.default_rng(seed)
    layer = randomize_params(SEQ[kind](I, H, bias=bias, rng=seed, dtype=np.float64,
                                       num_layers=L), rng)
    _set_fast(layer, fast)
    calls = []                                  # the fast path's kernel calls
    name = "%s_sequence_forward" % kind
    original = getattr(K, name)
    x = rng.standard_normal((B, T, I))
    shape = (B, H) if L == 1 else (L, B, H)
    state = None
    if with_state:
        state = (tuple(rng.standard_normal(shape) for _ in range(2)) if kind == "lstm"
                 else rng.standard_normal(shape))
    with K.backend("c"):
        setattr(K, name, lambda *a: calls.append(1) or original(*a))
        try:
            out, final = layer.forward(x, state)
        finally:
            setattr(K, name, original)
        dout = rng.standard_normal(out.shape) if with_dout else None
        dfinal = None
        if with_dstate:
            dfinal = tuple(rng.standard_normal(s.shape) for s in final) \
                if kind == "lstm" else rng.standard_normal(final.shape)
        dx, dinitial = layer.backward((dout, dfinal))
    assert len(calls) == (L if fast else 0)     # the fast path really ran (or not)
    grads = [g.copy() for _, _, g in layer.named_parameters()]
    return [out] + _flat(final) + [dx] + _flat(dinitial) + grads


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@settings(max_examples=12)
@given(B=st.integers(1, 5), T=st.integers(1, 5), I=st.integers(1, 6),
       H=st.sampled_from([1, 3, 8, 17, 20]), L=st.integers(1, 3), bias=st.booleans(),
       with_state=st.booleans(), with_dstate=st.booleans(), with_dout=st.booleans(),
       seed=st.integers(0, 1000))
def test_fast_path_equals_per_step_loop(kind, B, T, I, H, L, bias, with_state, with_dstate,
                                        with_dout, seed):
    args = (B, T, I, H, L, bias, with_state, with_dstate, with_dout, seed)
    fast, slow = _run(kind, True, *args), _run(kind, False, *args)
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_fast_path_float32_and_non_contiguous_input(kind):
    rng = np.random.default_rng(7)
    layer = randomize_params(SEQ[kind](5, 9, rng=1, dtype=np.float32), rng)
    x = np.ascontiguousarray(rng.standard_normal((4, 6, 5)).astype(np.float32)
                             .transpose(1, 0, 2))            # (6, 4, 5), not C-contiguous
    x = x.transpose(1, 0, 2)                                 # (4, 6, 5) strided view
    assert not x.flags.c_contiguous
    results = []
    for fast in (True, False):
        layer.use_fast_path = fast
        layer.zero_grad()
        with K.backend("c"):
            out, _ = layer.forward(x)
            dx, _ = layer.backward(np.ones_like(out))
        results.append([out, dx] + [g.copy() for _, _, g in layer.named_parameters()])
    for a, b in zip(*results):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("L", [1, 2])
def test_fast_path_gradcheck(kind, L):
    rng = np.random.default_rng(11)
    layer = randomize_params(SEQ[kind](3, 5, rng=rng, dtype=np.float64, num_layers=L), rng)
    shape = (2, 5) if L == 1 else (L, 2, 5)
    state = ((rng.standard_normal(shape), rng.standard_normal(shape)) if kind == "lstm"
             else rng.standard_normal(shape))
    with K.backend("c"):
        report = check_layer(layer, (rng.standard_normal((2, 4, 3)), state), seed=3)
    assert report.ok, "\n" + str(report)
    assert report.max_error <= GRAD_RTOL


def test_per_step_loop_with_the_numpy_backend():
    """The NumPy backend never takes the fast path: the per-step cells are the spec."""
    layer = LSTM(2, 3, dtype=np.float64)
    with K.backend("numpy"):
        layer.forward(np.ones((1, 2, 2)))
    assert isinstance(layer._cache[0], list)          # per-step caches
    with K.backend("c"):
        layer.forward(np.ones((1, 2, 2)))
    assert not isinstance(layer._cache[0], list)
