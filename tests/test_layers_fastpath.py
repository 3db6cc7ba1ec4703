"""The layers' C fast paths give the numbers of their NumPy lines.

(The kernels they use are tested against their NumPy specifications in
tests/test_kernels_fused.py, which CI also runs under ASan+UBSan.)
Each layer with a fast path (Linear's bias gradient, LayerNorm, GELU,
SoftmaxCrossEntropy, MultiHeadAttention's packed q/k/v and head split/merge)
gives the same output and gradients on the C backend as on the NumPy backend,
at float64 and float32, and a whole GPT's loss and gradients do too.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import assert_close
from tinylm import kernels as K
from tinylm.layers import GELU, LayerNorm, Linear, MultiHeadAttention, SoftmaxCrossEntropy

needs_c = pytest.mark.skipif(not K.c_available(),
                             reason="tinylm's C extension is not built; C kernel tests skipped")
DTYPES = st.sampled_from([np.float32, np.float64])


# --------------------------------------------------------------------------
# Layers: C backend == NumPy backend
# --------------------------------------------------------------------------

def _both_backends(run):
    """run() on the NumPy backend and on the C backend -> (numpy_results, c_results)."""
    with K.backend("numpy"):
        a = run()
    with K.backend("c"):
        b = run()
    return a, b


def _compare(a, b, k, what):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert_close(y, x, k, "%s [%d]" % (what, i))


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_layernorm_gelu_fast_paths_match_numpy(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 37, 19)).astype(dtype)
    dy = rng.standard_normal((3, 37, 23)).astype(dtype)

    def run():
        lin = Linear(19, 23, rng=0, dtype=dtype)
        ln = LayerNorm(23, dtype=dtype)
        ln.params["weight"][...] = np.linspace(0.5, 2, 23)
        ln.params["bias"][...] = np.linspace(-1, 1, 23)
        act = GELU("tanh")
        y = act.forward(ln.forward(lin.forward(x)))
        dx = lin.backward(ln.backward(act.backward(dy)))
        return [y, dx, lin.grads["weight"], lin.grads["bias"], ln.grads["weight"],
                ln.grads["bias"]]
    a, b = _both_backends(run)
    _compare(a, b, 200, "Linear/LayerNorm/GELU")


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ignore", [False, True])
def test_cross_entropy_fast_path_matches_numpy(dtype, ignore):
    rng = np.random.default_rng(4)
    z = (3 * rng.standard_normal((5, 7, 65))).astype(dtype)
    t = rng.integers(0, 65, (5, 7))
    if ignore:
        t[1, 2:5] = -100

    def run():
        ce = SoftmaxCrossEntropy()
        loss = ce.forward(z, t)
        return [loss, ce.backward(0.7), ce.count]
    a, b = _both_backends(run)
    assert a[2] == b[2] == (35 - 3 * ignore)
    _compare(a[:2], b[:2], 65, "SoftmaxCrossEntropy")
    assert b[0].dtype == dtype and b[1].dtype == dtype


def test_cross_entropy_with_label_smoothing_keeps_the_numpy_path():
    z = np.random.default_rng(5).standard_normal((4, 9))
    t = np.array([1, 2, 3, -100])
    ce = SoftmaxCrossEntropy(label_smoothing=0.1)
    loss = ce.forward(z, t)
    dz = ce.backward()
    with K.backend("numpy"):
        ce2 = SoftmaxCrossEntropy(label_smoothing=0.1)
        np.testing.assert_array_equal(loss, ce2.forward(z, t))
        np.testing.assert_array_equal(dz, ce2.backward())


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_multi_head_attention_fast_path_matches_numpy(dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 11, 24)).astype(dtype)
    dy = rng.standard_normal((2, 11, 24)).astype(dtype)

    def run():
        mha = MultiHeadAttention(24, 3, causal=True, rng=1, dtype=dtype)
        y = mha.forward(x)
        dx = mha.backward(dy)
        return [y, dx] + [g for _, _, g in mha.named_parameters()]
    a, b = _both_backends(run)
    _compare(a, b, 200, "MultiHeadAttention")


@needs_c
@settings(max_examples=10, deadline=None)
@given(dtype=DTYPES, seed=st.integers(0, 2**31))
def test_gpt_loss_and_gradients_match_numpy(dtype, seed):
    from tinylm.models import build_model
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 13, (2, 9))
    y = rng.integers(0, 13, (2, 9))

    def run():
        model = build_model("gpt", dict(vocab_size=13, block_size=9, n_layer=2, n_head=2,
                                        d_model=8, dtype=np.dtype(dtype).name))
        loss = model.loss(x, y)
        model.backward()
        return [np.asarray(loss, dtype)] + [g for _, g in model.parameters()]
    a, b = _both_backends(run)
    _compare(a, b, 400, "GPT step")
