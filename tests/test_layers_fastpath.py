"""The layers' C fast paths give the numbers of their NumPy lines.

1. The Transformer-glue kernels (kernels.add_column_sums, kernels.swap_axes12)
   equal their NumPy specifications: random odd shapes (hypothesis), strided
   views, float32 and float64; bad input is refused in one line.
2. Each layer with a fast path (Linear's bias gradient, LayerNorm, GELU,
   SoftmaxCrossEntropy, MultiHeadAttention's head split/merge) gives the same
   output and gradients on the C backend as on the NumPy backend, at float64
   and float32, and a whole GPT's loss and gradients do too.
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
# 1. The kernels against their specifications
# --------------------------------------------------------------------------

@needs_c
@given(rows=st.integers(0, 300), m=st.integers(1, 600), lead=st.integers(1, 3), dtype=DTYPES,
       strided=st.booleans(), seed=st.integers(0, 2**31))
def test_add_column_sums_matches_reference(rows, m, lead, dtype, strided, seed):
    rng = np.random.default_rng(seed)
    big = rng.standard_normal((lead, rows, 2 * m)).astype(dtype)
    x = big[..., ::2] if strided else np.ascontiguousarray(big[..., :m])
    out0 = rng.standard_normal(m).astype(dtype)
    want = out0.copy()
    K.add_column_sums_reference(x, want)
    got = out0.copy()
    with K.backend("c"):
        assert K.add_column_sums(x, got) is got               # in place
    assert got.dtype == dtype
    assert_close(got, want, max(rows * lead, 1), "column sums")


@needs_c
def test_add_column_sums_same_bits_with_one_and_two_threads():
    x = np.random.default_rng(1).standard_normal((1000, 333)).astype(np.float32)
    outs = []
    for n in (1, 2):
        old = K.get_num_threads()
        K.set_num_threads(n)
        try:
            with K.backend("c"):
                outs.append(K.add_column_sums(x, np.zeros(333, np.float32)))
        finally:
            K.set_num_threads(old)
    np.testing.assert_array_equal(outs[0], outs[1])


@needs_c
@given(shape=st.tuples(st.integers(0, 4), st.integers(0, 9), st.integers(0, 7),
                       st.integers(1, 40)),
       view=st.sampled_from(["contiguous", "swapped", "sliced", "last-strided", "reshaped"]),
       dtype=DTYPES, seed=st.integers(0, 2**31))
def test_swap_axes12_matches_reference(shape, view, dtype, seed):
    rng = np.random.default_rng(seed)
    A, B, C, D = shape
    if view == "contiguous":
        x = rng.standard_normal(shape).astype(dtype)
    elif view == "swapped":                                     # a (A, C, B, D) array's view
        x = np.swapaxes(rng.standard_normal((A, C, B, D)).astype(dtype), 1, 2)
    elif view == "sliced":                                      # every other row of a bigger one
        x = rng.standard_normal((A, 2 * B, C, D + 3)).astype(dtype)[:, ::2, :, 1:D + 1]
    elif view == "last-strided":                                # the last axis not contiguous
        x = rng.standard_normal((A, B, C, 2 * D)).astype(dtype)[..., ::2]
    else:                                                       # (A, B, C*D) seen as 4-D
        x = rng.standard_normal((A, B, C * D)).astype(dtype).reshape(A, B, C, D)
    with K.backend("c"):
        got = K.swap_axes12(x)
        # into a strided out: every third (A, C, B, D) block of an (A, C, 3, B, D) array
        big = np.full((A, C, 3, B, D), 7.0, dtype)
        assert K.swap_axes12(x, out=big[:, :, 1].transpose(0, 1, 2, 3)) is not None
    want = K.swap_axes12_reference(x)
    assert got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)                    # a copy: exact
    np.testing.assert_array_equal(big[:, :, 1], want)
    assert (big[:, :, [0, 2]] == 7).all()                        # nothing else written


def test_glue_kernels_refuse_bad_input():
    with pytest.raises(ValueError, match="4-D"):
        K.swap_axes12(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="dtype"):
        K.swap_axes12(np.zeros((1, 2, 3, 4), np.int32))
    with pytest.raises(ValueError, match=r"x \(\.\.\., m\) and out \(m,\)"):
        K.add_column_sums(np.zeros((3, 4)), np.zeros(5))
    with pytest.raises(ValueError, match="out must be a float64 array of shape"):
        K.swap_axes12(np.zeros((1, 2, 3, 4)), out=np.zeros((1, 2, 3, 4)))
    x = np.zeros((1, 2, 2, 4))
    with pytest.raises(ValueError, match="must not overlap"):
        K.swap_axes12(x, out=x)
    with pytest.raises(TypeError, match="share one dtype"):
        K.add_column_sums(np.zeros((3, 4), np.float32), np.zeros(4))


def test_add_column_sums_takes_a_strided_out():
    x = np.arange(12.0).reshape(3, 4)
    out = np.zeros(8)[::2]
    K.add_column_sums(x, out)
    np.testing.assert_array_equal(out, x.sum(axis=0))


# --------------------------------------------------------------------------
# 2. Layers: C backend == NumPy backend
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
