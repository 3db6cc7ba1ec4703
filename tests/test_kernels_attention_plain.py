"""Three versions of attention agree: the fast C kernel (csrc/attention.c),
the plain-loop C kernel it is tested against (csrc/attention_plain.inc), and
the NumPy specification (kernels.attention_reference and its backward).

Random odd shapes (hypothesis), float32 and float64, causal and not, with
tq != tk (the KV-cache alignment) and tile edges (63, 64, 65, 129), plus rows
with no visible key and a NaN in a key the query cannot see.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import assert_close
from tinylm import kernels as K

pytestmark = pytest.mark.skipif(not K.c_available(),
                                reason="tinylm's C extension is not built; C kernel tests skipped")


def inputs(seed, bh, tq, tk, d, dtype):
    rng = np.random.default_rng(seed)
    q, dout = (rng.standard_normal((bh, tq, d)).astype(dtype) for _ in range(2))
    k, v = (rng.standard_normal((bh, tk, d)).astype(dtype) for _ in range(2))
    return q, k, v, dout


def three_ways(q, k, v, dout, causal):
    """{name: (o, lse, dq, dk, dv)} for fast, plain and reference; the backward
    of each is fed the reference (o, lse) so only the kernel under test differs."""
    ref_o, ref_lse = K.attention_reference(q, k, v, causal)
    with np.errstate(over="ignore"):
        ref = (ref_o, ref_lse) + K.attention_backward_reference(q, k, v, ref_o, ref_lse, dout, causal)
    with K.backend("c"):
        fast = K.attention(q, k, v, causal) + K.attention_backward(q, k, v, ref_o, ref_lse, dout, causal)
    plain = (K.attention_plain(q, k, v, causal)
             + K.attention_plain_backward(q, k, v, ref_o, ref_lse, dout, causal))
    return {"reference": ref, "fast": fast, "plain": plain}


def assert_agree(results, tq, tk, d, what):
    ref = results["reference"]
    for name in ("fast", "plain"):
        got = results[name]
        for label, a, e, k in zip(("o", "lse", "dq", "dk", "dv"), got, ref,
                                  (tk, tk, max(tk, d), max(tq, d), tq)):
            assert a.dtype == e.dtype and a.shape == e.shape, (name, label)
            np.testing.assert_array_equal(np.isneginf(a), np.isneginf(e))
            fin = ~np.isneginf(e)
            assert_close(a[fin], e[fin], max(k, d), "%s %s %s" % (name, label, what))


@settings(max_examples=40, deadline=None)
@given(bh=st.integers(1, 3), tq=st.integers(1, 70), extra=st.integers(0, 70),
       d=st.integers(1, 40), causal=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_fast_plain_reference_agree_random(bh, tq, extra, d, causal, dtype, seed):
    tk = tq + extra if causal else max(1, extra)
    q, k, v, dout = inputs(seed, bh, tq, tk, d, dtype)
    assert_agree(three_ways(q, k, v, dout, causal), tq, tk, d,
                 "bh=%d tq=%d tk=%d d=%d causal=%s %s" % (bh, tq, tk, d, causal, dtype.__name__))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bh, tq, tk, d", [(1, 63, 63, 17), (2, 64, 64, 64), (5, 65, 65, 33),
                                           (1, 129, 131, 8), (4, 3, 129, 5)])
def test_fast_plain_reference_agree_tile_edges(bh, tq, tk, d, causal, dtype):
    q, k, v, dout = inputs(7, bh, tq, tk, d, dtype)
    assert_agree(three_ways(q, k, v, dout, causal), tq, tk, d, "tile edges")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_rows_without_keys_and_hidden_nan(dtype):
    """Causal with tq > tk: the first queries see no key (o = 0, lse = -inf,
    zero gradients); a NaN in the last key and value reaches only the queries
    that can see it, in both C versions, which agree on where the NaNs are."""
    q, k, v, dout = inputs(3, 2, 9, 6, 4, dtype)
    k[:, -1, 0] = np.nan
    v[:, -1, 1] = np.nan
    results = []
    for fwd, bwd in ((K.attention_plain, K.attention_plain_backward),
                     (K.attention, K.attention_backward)):
        with K.backend("c"):
            o, lse = fwd(q, k, v, True)
            dq, dk, dv = bwd(q, k, v, o, lse, dout, True)
        assert np.all(o[:, :3] == 0) and np.all(np.isneginf(lse[:, :3]))
        assert np.all(dq[:, :3] == 0)
        # queries 3..7 cannot see the last key (it is visible from query 8 on)
        assert np.all(np.isfinite(o[:, 3:8])) and np.all(np.isfinite(lse[:, 3:8]))
        assert np.all(np.isfinite(dq[:, 3:8]))
        assert np.all(np.isnan(lse[:, 8]))
        results.append((o, lse, dq, dk, dv))
    for plain, fast in zip(*results):
        np.testing.assert_array_equal(np.isnan(plain), np.isnan(fast))
        ok = np.isfinite(plain)
        assert_close(fast[ok], plain[ok], 9)


def test_plain_checks_its_input():
    q = np.zeros((1, 3, 4), np.float32)
    with pytest.raises(TypeError, match="attention_plain"):
        K.attention_plain(q, q.astype(np.float64), q)
    with pytest.raises(ValueError, match="attention_plain_backward"):
        K.attention_plain_backward(q, q, q, q, np.zeros((1, 2), np.float32), q)
