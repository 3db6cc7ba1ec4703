"""FeedForward and TransformerBlock: gradient checks, residual structure, modes."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import GRAD_RTOL
from tinylm.gradcheck import check_layer
from tinylm.layers import FeedForward, TransformerBlock
from tinylm.layers.examples import randomize_params


def _assert_ok(report):
    assert report.ok, "\n" + str(report)
    assert report.max_error <= GRAD_RTOL


@settings(max_examples=3)
@given(norm_first=st.booleans(), cross=st.booleans(), T=st.integers(1, 4),
       seed=st.integers(0, 1000))
def test_block_gradcheck(norm_first, cross, T, seed):
    rng = np.random.default_rng(seed)
    block = TransformerBlock(4, 2, 8, dropout=0.2, norm_first=norm_first, causal=not cross,
                             cross_attention=cross, rng=rng, dtype=np.float64)
    randomize_params(block, rng, scale=0.4)
    inputs = (rng.standard_normal((2, T, 4)),)
    if cross:
        inputs += (rng.standard_normal((2, 3, 4)),)
    _assert_ok(check_layer(block, inputs, seed=seed, max_entries=12))


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_feedforward_gradcheck(activation):
    rng = np.random.default_rng(0)
    ff = FeedForward(5, 9, activation, rng=rng, dtype=np.float64)
    _assert_ok(check_layer(ff, rng.standard_normal((2, 3, 5))))


def test_pre_ln_block_is_residual():
    """With the sub-blocks' output projections zeroed, a pre-LN block is the identity."""
    rng = np.random.default_rng(1)
    block = TransformerBlock(8, 2, dropout=0.0, rng=rng, dtype=np.float64)
    for name in ("self_attn", "ff"):
        sub = block.layers[name]
        last = sub.layers["out_proj"] if name == "self_attn" else sub.layers["fc2"]
        last.params["weight"][...] = 0
        last.params["bias"][...] = 0
    x = rng.standard_normal((2, 5, 8))
    np.testing.assert_array_equal(block.forward(x), x)
    np.testing.assert_array_equal(block.backward(x), x)   # gradient flows straight through


def test_post_ln_output_is_normalised():
    rng = np.random.default_rng(2)
    block = TransformerBlock(8, 2, norm_first=False, rng=rng, dtype=np.float64)
    y = block.forward(3 * rng.standard_normal((2, 5, 8)) + 1)
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)


def test_dropout_train_vs_eval():
    rng = np.random.default_rng(3)
    block = TransformerBlock(8, 2, dropout=0.5, rng=rng)
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    block.eval()
    a, b = block.forward(x), block.forward(x)
    np.testing.assert_array_equal(a, b)
    block.train()
    c = block.forward(x)
    assert a.dtype == c.dtype == np.float32
    assert np.abs(a - c).max() > 1e-3


def test_memory_argument_checked():
    block = TransformerBlock(4, 2)
    with pytest.raises(ValueError, match="without cross_attention"):
        block.forward(np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 4), np.float32))
    dec = TransformerBlock(4, 2, cross_attention=True)
    with pytest.raises(ValueError, match="pass memory"):
        dec.forward(np.zeros((1, 2, 4), np.float32))


@pytest.mark.parametrize("norm_first,cross", [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("chunks", [[5], [1, 1, 1, 1, 1], [2, 3], [3, 1, 1]])
def test_forward_step_matches_full_forward(norm_first, cross, chunks):
    """Feeding the positions in chunks through the KV cache gives the full causal forward."""
    rng = np.random.default_rng(7)
    block = TransformerBlock(8, 2, 16, dropout=0.3, norm_first=norm_first, causal=True,
                             cross_attention=cross, rng=rng, dtype=np.float64).eval()
    randomize_params(block, rng, scale=0.4)
    x = rng.standard_normal((2, sum(chunks), 8))
    memory = rng.standard_normal((2, 3, 8)) if cross else None
    full = block.forward(x, memory)
    cache = block.empty_cache(2)
    assert cache["k"].shape == (2, 2, 0, 4)
    t0, outs = 0, []
    for t in chunks:
        outs.append(block.forward_step(x[:, t0:t0 + t], cache, memory))
        t0 += t
        assert cache["k"].shape == cache["v"].shape == (2, 2, t0, 4)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, rtol=1e-12, atol=1e-12)


def test_forward_step_is_inference_only_and_checks_its_cache():
    rng = np.random.default_rng(0)
    block = TransformerBlock(8, 2, rng=rng, causal=True)
    x = rng.standard_normal((1, 2, 8)).astype(np.float32)
    block.forward(x)
    block.forward_step(x, block.empty_cache(1))
    with pytest.raises(RuntimeError, match="call forward before backward"):
        block.backward(np.ones((1, 2, 8), np.float32))
    with pytest.raises(ValueError, match="do not fit"):
        block.forward_step(x, block.empty_cache(2))
    with pytest.raises(TypeError, match="'k' and 'v'"):
        block.forward_step(x, {})
    with pytest.raises(ValueError, match="do not fit"):
        block.forward_step(x, {"k": np.zeros(3, np.float32), "v": np.zeros(3, np.float32)})
    with pytest.raises(TypeError, match="the cache holds float64/float64 but x is float32"):
        block.forward_step(x, block.empty_cache(1, np.float64))
