"""Arrays reaching C are aligned (copied if not); NaN reaches the same outputs on both backends."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import assert_close
from tinylm import kernels as K

needs_c = pytest.mark.skipif(not K.c_available(), reason="compares the C backend with NumPy")


def unaligned(x):
    """A copy of x whose data starts at an odd byte address (as safetensors can give)."""
    buf = np.zeros(x.nbytes + 1, np.uint8)
    y = np.frombuffer(buf.data, dtype=x.dtype, count=x.size, offset=1).reshape(x.shape)
    y[...] = x
    assert not y.flags.aligned
    return y


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unaligned_arrays_are_copied_before_c(monkeypatch, dtype):
    seen = []
    real = K._ptr

    def checking_ptr(kind, x):
        seen.append(x.flags.aligned and x.ctypes.data % x.dtype.alignment == 0)
        return real(kind, x)

    monkeypatch.setattr(K, "_ptr", checking_ptr)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 7)).astype(dtype), rng.standard_normal((7, 3)).astype(dtype)
    with K.backend("c"):
        out = unaligned(np.zeros((5, 3), dtype))
        got = K.matmul(unaligned(a), unaligned(b), out=out)
        assert got is out
        assert_close(out, a @ b, k=7, what="unaligned matmul")   # the suite's kernel tolerance
        q, k, v = (rng.standard_normal((2, 4, 3)).astype(dtype) for _ in range(3))
        o, lse = K.attention(unaligned(q), unaligned(k), unaligned(v), causal=True)
        o_ref, lse_ref = K.attention_reference(q, k, v, causal=True)
        np.testing.assert_allclose(o, o_ref, rtol=1e-4, atol=1e-6)
        dout = rng.standard_normal(o.shape).astype(dtype)
        grads = K.attention_backward(*(unaligned(x) for x in (q, k, v, o, lse, dout)),
                                     causal=True)
        for g, r in zip(grads, K.attention_backward_reference(q, k, v, o, lse, dout, True)):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)
    assert seen and all(seen)


def test_nan_score_row_gives_nan_output_on_numpy():
    q, k, v = np.ones((1, 2, 2)), np.ones((1, 3, 2)), np.ones((1, 3, 2))
    q[0, 1, 0] = np.nan
    with K.backend("numpy"):
        o, lse = K.attention(q, k, v)
    assert np.isnan(o[0, 1]).all() and np.isnan(lse[0, 1])
    assert np.isfinite(o[0, 0]).all()


def test_nan_in_a_masked_key_reaches_no_earlier_query_on_numpy():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 4, 3)) for _ in range(3))
    k[0, 3, 0] = v[0, 3, 1] = np.nan                  # the last position only
    with K.backend("numpy"):
        o, lse = K.attention(q, k, v, causal=True)
        dq, dk, dv = K.attention_backward(q, k, v, o, lse, np.ones_like(o), causal=True)
    assert np.isfinite(o[0, :3]).all() and np.isnan(o[0, 3]).any()
    assert np.isfinite(dq[0, :3]).all()     # (dk, dv of earlier keys see query 3: NaN)


@needs_c
@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), tq=st.integers(1, 6), tk=st.integers(1, 6),
       d=st.integers(1, 5), causal=st.booleans(), f32=st.booleans(),
       where=st.lists(st.sampled_from("qkvd"), max_size=3))
def test_nan_propagates_the_same_on_both_backends(seed, tq, tk, d, causal, f32, where):
    dtype = np.float32 if f32 else np.float64
    rng = np.random.default_rng(seed)
    x = {n: rng.standard_normal((2, tq if n in "qd" else tk, d)).astype(dtype) for n in "qkvd"}
    for n in where:
        x[n].flat[rng.integers(x[n].size)] = np.nan
    out = {}
    for name in ("c", "numpy"):
        with K.backend(name), np.errstate(all="ignore"):
            o, lse = K.attention(x["q"], x["k"], x["v"], causal=causal)
            grads = K.attention_backward(x["q"], x["k"], x["v"], o, lse, x["d"], causal=causal)
        out[name] = (o, lse) + grads
    for label, c, n in zip(("o", "lse", "dq", "dk", "dv"), out["c"], out["numpy"]):
        np.testing.assert_array_equal(np.isnan(c), np.isnan(n), err_msg=label)
