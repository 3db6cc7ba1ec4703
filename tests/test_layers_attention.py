"""Attention layers: gradient checks, masks, fused kernel path == NumPy path."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import GRAD_RTOL, assert_close
from tinylm import kernels
from tinylm.gradcheck import check_layer
from tinylm.layers import (AdditiveAttention, DotProductAttention, MultiHeadAttention,
                           ScaledDotProductAttention)
from tinylm.layers.examples import randomize_params


def _assert_ok(report):
    assert report.ok, "\n" + str(report)
    assert report.max_error <= GRAD_RTOL


@settings(max_examples=6)
@given(B=st.integers(1, 2), H=st.integers(1, 2), Tq=st.integers(1, 4), Tk=st.integers(1, 4),
       d=st.integers(1, 4), causal=st.booleans(), masked=st.booleans(),
       seed=st.integers(0, 1000))
def test_sdpa_gradcheck(B, H, Tq, Tk, d, causal, masked, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((B, H, T, d)) for T in (Tq, Tk, Tk))
    kw = {}
    if masked:
        mask = rng.random((B, 1, Tq, Tk)) > 0.4
        mask[..., -1] = True              # every query row keeps a key (also under causal)
        kw = {"mask": mask}
    layer = ScaledDotProductAttention(causal=causal)
    _assert_ok(check_layer(layer, (q, k, v), kw, seed=seed))


@settings(max_examples=4)
@given(B=st.integers(1, 2), T=st.integers(1, 4), heads=st.sampled_from([1, 2]),
       causal=st.booleans(), padded=st.booleans(), seed=st.integers(0, 1000))
def test_mha_self_attention_gradcheck(B, T, heads, causal, padded, seed):
    rng = np.random.default_rng(seed)
    layer = randomize_params(MultiHeadAttention(4, heads, causal=causal, rng=rng,
                                                dtype=np.float64), rng)
    kw = {}
    if padded:
        kpm = np.zeros((B, T), bool)
        kpm[0, 1:] = True                 # keep key 0 so no row is fully masked
        kw = {"key_padding_mask": kpm}
    _assert_ok(check_layer(layer, rng.standard_normal((B, T, 4)), kw, seed=seed,
                           max_entries=20))


@settings(max_examples=3)
@given(Tq=st.integers(1, 3), Tk=st.integers(1, 4), seed=st.integers(0, 1000))
def test_mha_cross_attention_gradcheck(Tq, Tk, seed):
    rng = np.random.default_rng(seed)
    layer = randomize_params(MultiHeadAttention(4, 2, rng=rng, dtype=np.float64), rng)
    x, mem = rng.standard_normal((2, Tq, 4)), rng.standard_normal((2, Tk, 4))
    kpm = np.zeros((2, Tk), bool)
    kpm[1, Tk // 2 + 1:] = True
    _assert_ok(check_layer(layer, (x, mem), {"key_padding_mask": kpm}, seed=seed,
                           max_entries=20))


@settings(max_examples=3)
@given(T=st.integers(1, 5), seed=st.integers(0, 1000))
def test_rnn_attention_gradcheck(T, seed):
    rng = np.random.default_rng(seed)
    keys = rng.standard_normal((2, T, 5))
    kpm = np.zeros((2, T), bool)
    kpm[1, 1:] = True
    add = AdditiveAttention(3, 5, 4, rng=rng, dtype=np.float64)
    _assert_ok(check_layer(add, (rng.standard_normal((2, 3)), keys),
                           {"key_padding_mask": kpm}, seed=seed))
    _assert_ok(check_layer(DotProductAttention(), (rng.standard_normal((2, 5)), keys),
                           {"key_padding_mask": kpm}, seed=seed))


def test_causal_mask_blocks_the_future():
    rng = np.random.default_rng(0)
    layer = MultiHeadAttention(8, 2, causal=True, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 6, 8))
    y = layer.forward(x)
    x2 = x.copy()
    x2[:, 4] += 10 * rng.standard_normal(8)      # change token 4
    y2 = layer.forward(x2)
    np.testing.assert_array_equal(y[:, :4], y2[:, :4])   # earlier outputs unchanged
    assert np.abs(y[:, 4:] - y2[:, 4:]).max() > 1e-3
    # and the gradient of an early output w.r.t. later tokens is exactly zero
    layer.forward(x)
    dy = np.zeros_like(y)
    dy[:, 2] = rng.standard_normal((2, 8))
    dx = layer.backward(dy)
    assert not dx[:, 3:].any()


def test_padding_mask_ignores_padded_keys():
    rng = np.random.default_rng(1)
    layer = MultiHeadAttention(8, 2, rng=rng, dtype=np.float64)
    x, mem = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 5, 8))
    kpm = np.zeros((2, 5), bool)
    kpm[0, 3:] = True
    y, w = layer.forward(x, mem, key_padding_mask=kpm, return_weights=True)
    assert w.shape == (2, 2, 3, 5)
    assert not w[0, :, :, 3:].any()
    np.testing.assert_allclose(w.sum(-1), 1, rtol=1e-13)
    mem2 = mem.copy()
    mem2[0, 3:] = 100 * rng.standard_normal((2, 8))     # garbage in the padding
    np.testing.assert_allclose(layer.forward(x, mem2, key_padding_mask=kpm)[0], y[0],
                               rtol=1e-13, atol=1e-13)
    # equals attention over the unpadded part only
    np.testing.assert_allclose(layer.forward(x[:1], mem[:1, :3]), y[:1], rtol=1e-12, atol=1e-13)


def test_fully_masked_row_outputs_zero():
    q = np.ones((1, 1, 2, 3))
    kv = np.ones((1, 1, 2, 3))
    mask = np.array([[True, True], [False, False]])
    sdpa = ScaledDotProductAttention()
    o = sdpa.forward(q, kv, kv, mask=mask)
    assert np.all(np.isfinite(o)) and not o[0, 0, 1].any()
    dq, dk, dv = sdpa.backward(np.ones_like(o))
    assert np.all(np.isfinite(dq)) and not dq[0, 0, 1].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_fused_path_equals_numpy_path(dtype, causal):
    """No mask -> fused kernel; an all-True mask -> the NumPy path: same results."""
    rng = np.random.default_rng(3)
    q = rng.standard_normal((2, 2, 5, 4)).astype(dtype)
    k = rng.standard_normal((2, 2, 6, 4)).astype(dtype)
    v = rng.standard_normal((2, 2, 6, 4)).astype(dtype)
    do = rng.standard_normal((2, 2, 5, 4)).astype(dtype)
    fused, plain = ScaledDotProductAttention(causal), ScaledDotProductAttention(causal)
    o1 = fused.forward(q, k, v)
    g1 = fused.backward(do)
    o2 = plain.forward(q, k, v, mask=np.ones((5, 6), bool))
    g2 = plain.backward(do)
    assert fused.path == "fused" and plain.path == "numpy"
    assert o1.dtype == o2.dtype == dtype
    assert_close(o1, o2, 6, "o")
    for a, b, name in zip(g1, g2, "qkv"):
        assert a.dtype == dtype
        assert_close(a, b, 6 * 4, "d" + name)


@pytest.mark.skipif(not kernels.c_available(), reason="the C extension is not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mha_c_backend_equals_numpy_backend(dtype):
    rng = np.random.default_rng(4)
    layer = MultiHeadAttention(8, 2, causal=True, rng=rng, dtype=dtype)
    x = rng.standard_normal((2, 5, 8)).astype(dtype)
    dy = rng.standard_normal((2, 5, 8)).astype(dtype)
    results = {}
    for name in ("c", "numpy"):
        with kernels.backend(name):
            layer.zero_grad()
            y = layer.forward(x)
            dx = layer.backward(dy)
            results[name] = (y, dx, {n: g.copy() for n, _, g in layer.named_parameters()})
    yc, dxc, gc = results["c"]
    yn, dxn, gn = results["numpy"]
    assert_close(yc, yn, 16, "y")
    assert_close(dxc, dxn, 16, "dx")
    for n in gc:
        assert_close(gc[n], gn[n], 16, n)


def test_mask_errors():
    sdpa = ScaledDotProductAttention()
    q = np.zeros((1, 2, 3))
    with pytest.raises(TypeError, match="bool"):
        sdpa.forward(q, q, q, mask=np.ones((2, 2)))
    with pytest.raises(ValueError, match="does not broadcast"):
        sdpa.forward(q, q, q, mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="key_padding_mask"):
        MultiHeadAttention(4, 2).forward(np.zeros((1, 3, 4), np.float32),
                                         key_padding_mask=np.zeros((1, 2), bool))
    with pytest.raises(ValueError, match="must divide"):
        MultiHeadAttention(6, 4)


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 4), H=st.integers(1, 3), Tq=st.integers(1, 6), Tk=st.integers(1, 7),
       d=st.integers(1, 5), seed=st.integers(0, 10 ** 6), backend=st.sampled_from(
           kernels.available_backends()))
def test_right_padding_runs_each_row_fused_with_the_numpy_paths_numbers(B, H, Tq, Tk, d,
                                                                        seed, backend):
    """A key padding mask that hides only the last keys of each row (a right-padded
    batch) takes the per-row fused path; forward and backward equal the NumPy
    path's, and hidden keys get exactly zero gradient."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, Tq, d))
    k, v = rng.standard_normal((2, B, H, Tk, d))
    do = rng.standard_normal((B, H, Tq, d))
    lengths = rng.integers(1, Tk + 1, B)
    mask = (np.arange(Tk) < lengths[:, None])[:, None, None, :]      # (B, 1, 1, Tk)
    rows, plain = ScaledDotProductAttention(), ScaledDotProductAttention()
    with kernels.backend(backend):
        o1 = rows.forward(q, k, v, mask)
        g1 = rows.backward(do)
    o2, _ = plain.forward(q, k, v, mask, return_weights=True)       # weights: NumPy path
    g2 = plain.backward(do)
    assert rows.path == ("fused" if lengths.min() == Tk else "fused-rows")
    assert plain.path == "numpy"
    assert_close(o1, o2, Tk, "o")
    for a, b, name in zip(g1, g2, "qkv"):
        assert_close(a, b, Tk * d, "d" + name)
    for b in range(B):
        assert not g1[1][b, :, lengths[b]:].any() and not g1[2][b, :, lengths[b]:].any()


def test_other_masks_keep_the_numpy_path():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((3, 2, 2, 4, 3))
    for mask in [np.array([True, False, True, True])[None, None, None, :].repeat(2, 0),  # a hole
                 np.ones((2, 2, 4, 4), bool),                 # per head and query
                 np.tril(np.ones((4, 4), bool))]:            # not a key-padding mask
        sdpa = ScaledDotProductAttention()
        sdpa.forward(q, k, v, mask)
        assert sdpa.path == "numpy", mask.shape
    causal = ScaledDotProductAttention(causal=True)
    causal.forward(q, k, v, np.ones((2, 1, 1, 4), bool))
    assert causal.path == "numpy"
