"""Linear, Embedding, activations, losses, LayerNorm, Dropout, positional layers."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import GRAD_RTOL
from tinylm.gradcheck import check_layer
from tinylm.layers import (Embedding, GELU, LayerNorm, LearnedPositionalEmbedding, Linear,
                           MSELoss, ReLU, Sequential, Sigmoid, SinusoidalPositionalEncoding,
                           Softmax, SoftmaxCrossEntropy, Tanh, Dropout, erf, sinusoidal_table)
from tinylm.layers.examples import randomize_params

dims = st.integers(1, 5)


def _assert_ok(report):
    assert report.ok, "\n" + str(report)
    assert report.max_error <= GRAD_RTOL


# -- gradient checks over drawn shapes ----------------------------------------

@settings(max_examples=6)
@given(lead=st.lists(dims, min_size=0, max_size=2), n_in=dims, n_out=dims,
       bias=st.booleans(), seed=st.integers(0, 1000))
def test_linear_gradcheck(lead, n_in, n_out, bias, seed):
    rng = np.random.default_rng(seed)
    layer = Linear(n_in, n_out, bias=bias, rng=rng, dtype=np.float64)
    _assert_ok(check_layer(layer, rng.standard_normal(tuple(lead) + (n_in,)), seed=seed))


@settings(max_examples=6)
@given(shape=st.lists(dims, min_size=1, max_size=2), V=st.integers(1, 6), D=dims,
       seed=st.integers(0, 1000))
def test_embedding_gradcheck(shape, V, D, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, tuple(shape))
    _assert_ok(check_layer(Embedding(V, D, rng=rng, dtype=np.float64), ids, seed=seed))


@pytest.mark.parametrize("layer", [Tanh(), Sigmoid(), GELU("none"), GELU("tanh"), Softmax()],
                         ids=["tanh", "sigmoid", "gelu", "gelu_tanh", "softmax"])
@settings(max_examples=5)
@given(shape=st.lists(dims, min_size=1, max_size=3), scale=st.sampled_from([0.5, 3.0]),
       seed=st.integers(0, 1000))
def test_smooth_activation_gradcheck(layer, shape, scale, seed):
    x = scale * np.random.default_rng(seed).standard_normal(tuple(shape))
    _assert_ok(check_layer(layer, x, seed=seed))


@settings(max_examples=5)
@given(shape=st.lists(dims, min_size=1, max_size=3), seed=st.integers(0, 1000))
def test_relu_gradcheck_away_from_kink(shape, seed):
    x = np.random.default_rng(seed).standard_normal(tuple(shape))
    x = np.sign(x) * (0.01 + np.abs(x))        # the finite step (<= 2e-3) never crosses 0
    _assert_ok(check_layer(ReLU(), x, seed=seed))


@settings(max_examples=6)
@given(lead=st.lists(dims, min_size=1, max_size=2), V=st.integers(1, 7),
       ignore=st.booleans(), seed=st.integers(0, 1000))
def test_cross_entropy_gradcheck(lead, V, ignore, seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, V, tuple(lead))
    if ignore:
        t.ravel()[0] = -100
    z = 2 * rng.standard_normal(tuple(lead) + (V,))
    _assert_ok(check_layer(SoftmaxCrossEntropy(), (z, t), seed=seed))


@settings(max_examples=5)
@given(shape=st.lists(dims, min_size=1, max_size=3), seed=st.integers(0, 1000))
def test_mse_gradcheck(shape, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((2,) + tuple(shape))
    _assert_ok(check_layer(MSELoss(), (a, b), seed=seed))


@settings(max_examples=6)
@given(lead=st.lists(dims, min_size=1, max_size=2), D=st.integers(2, 7),
       affine=st.booleans(), seed=st.integers(0, 1000))
def test_layernorm_gradcheck(lead, D, affine, seed):
    rng = np.random.default_rng(seed)
    layer = randomize_params(LayerNorm(D, elementwise_affine=affine, dtype=np.float64), rng)
    _assert_ok(check_layer(layer, rng.standard_normal(tuple(lead) + (D,)), seed=seed))


@settings(max_examples=4)
@given(shape=st.lists(dims, min_size=1, max_size=3), p=st.sampled_from([0.0, 0.3, 0.9]),
       seed=st.integers(0, 1000))
def test_dropout_gradcheck(shape, p, seed):
    x = np.random.default_rng(seed).standard_normal(tuple(shape))
    _assert_ok(check_layer(Dropout(p, rng=seed), x, seed=seed))


@settings(max_examples=4)
@given(B=dims, T=dims, D=dims, start=st.integers(0, 3), seed=st.integers(0, 1000))
def test_positional_gradcheck(B, T, D, start, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, D))
    _assert_ok(check_layer(SinusoidalPositionalEncoding(8, D), x, {"start": start}, seed=seed))
    layer = LearnedPositionalEmbedding(8, D, rng=rng, dtype=np.float64)
    _assert_ok(check_layer(layer, x, {"start": start}, seed=seed))


def test_sequential_gradcheck():
    rng = np.random.default_rng(0)
    model = Sequential(Linear(4, 6, rng=rng, dtype=np.float64), Tanh(),
                       Linear(6, 3, rng=rng, dtype=np.float64))
    report = check_layer(model, rng.standard_normal((5, 4)))
    _assert_ok(report)
    assert [r.name for r in report.rows] == ["input", "0.weight", "0.bias", "2.weight", "2.bias"]


# -- values -------------------------------------------------------------------

def test_erf_matches_math_erf():
    x = np.concatenate([np.linspace(-7, 7, 4001), [0.0, -0.0, 2.5, -2.5, 1e-10, 40.0, -40.0]])
    ref = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(erf(x), ref, rtol=0, atol=2e-15)
    assert erf(np.array([np.inf, -np.inf])).tolist() == [1.0, -1.0]
    assert np.isnan(erf(np.array([np.nan])))[0]
    y32 = erf(x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, ref, rtol=0, atol=2e-6)


def test_gelu_values():
    x = np.linspace(-5, 5, 101)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(GELU().forward(x), exact, rtol=0, atol=1e-14)
    approx = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(GELU("tanh").forward(x), approx, rtol=1e-15, atol=1e-15)
    assert np.max(np.abs(GELU("tanh").forward(x) - exact)) < 1e-3


def test_sigmoid_is_stable_at_extremes():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(over="raise"):
        y = Sigmoid().forward(x)
    assert np.all(np.isfinite(y))
    assert y[0] == 0.0 and y[2] == 0.5 and y[4] == 1.0


def test_cross_entropy_values_and_ignore_index():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 3, 5)) * 3
    t = np.array([[0, 4, -100], [2, -100, 1]])
    loss = SoftmaxCrossEntropy().forward(z, t)
    nll = [math.log(sum(math.exp(v) for v in z[b, s])) - z[b, s, t[b, s]]
           for b in range(2) for s in range(3) if t[b, s] != -100]
    assert loss.shape == () and abs(float(loss) - sum(nll) / 4) < 1e-13
    # huge logits do not overflow (log-sum-exp)
    big = SoftmaxCrossEntropy().forward(np.array([[1000.0, 0.0]]), np.array([1]))
    assert abs(float(big) - 1000.0) < 1e-9
    # all ignored: loss 0, gradient 0
    ce = SoftmaxCrossEntropy()
    assert float(ce.forward(z, np.full((2, 3), -100))) == 0.0
    assert not ce.backward().any()


def test_cross_entropy_gradient_is_p_minus_onehot():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((4, 6))
    t = np.array([0, 5, 2, 2])
    ce = SoftmaxCrossEntropy()
    ce.forward(z, t)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(ce.backward(2.0), 2.0 * (p - np.eye(6)[t]) / 4, atol=1e-15)


def test_layernorm_normalises():
    x = np.random.default_rng(0).standard_normal((3, 4, 16)) * 5 + 2
    y = LayerNorm(16, dtype=np.float64).forward(x)
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1, atol=1e-5)      # eps = 1e-5 in the variance


def test_embedding_repeated_ids_accumulate():
    emb = Embedding(4, 2, dtype=np.float64)
    ids = np.array([[1, 1, 3], [1, 0, 3]])
    emb.forward(ids)
    dy = np.arange(12, dtype=np.float64).reshape(2, 3, 2)
    assert emb.backward(dy) is None
    expected = np.zeros((4, 2))
    for b in range(2):
        for s in range(3):
            expected[ids[b, s]] += dy[b, s]
    np.testing.assert_array_equal(emb.grads["weight"], expected)
    assert emb.grads["weight"][1].tolist() == (dy[0, 0] + dy[0, 1] + dy[1, 0]).tolist()


def test_dropout_modes_and_seed():
    x = np.ones((200, 50))
    d = Dropout(0.3, rng=7)
    y = d.forward(x)
    frac_zero = np.mean(y == 0)
    assert 0.27 < frac_zero < 0.33
    np.testing.assert_allclose(y[y != 0], 1 / 0.7)
    np.testing.assert_array_equal(d.backward(x), y)           # dx = dy * mask
    y2 = Dropout(0.3, rng=7).forward(x)
    np.testing.assert_array_equal(y, y2)                      # same seed, same mask
    d.eval()
    assert d.forward(x) is x
    assert Dropout(1.0).forward(x).sum() == 0
    with pytest.raises(ValueError, match="p must be in"):
        Dropout(1.5)


def test_sinusoidal_table_values():
    pe = sinusoidal_table(50, 7)
    pos, i = 13, 2
    assert pe[pos, 2 * i] == pytest.approx(math.sin(pos / 10000 ** (2 * i / 7)))
    assert pe[pos, 2 * i + 1] == pytest.approx(math.cos(pos / 10000 ** (2 * i / 7)))
    x = np.zeros((1, 4, 7), np.float32)
    y = SinusoidalPositionalEncoding(50, 7).forward(x, start=10)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[0], pe[10:14], atol=1e-7)


# -- contract -------------------------------------------------------------------

def test_linear_accumulates_and_zero_grad():
    rng = np.random.default_rng(0)
    layer = Linear(3, 2, rng=rng, dtype=np.float64)
    x, dy = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer.forward(x)
    layer.backward(dy)
    once = {k: g.copy() for k, g in layer.grads.items()}
    np.testing.assert_allclose(once["weight"], dy.T @ x, rtol=1e-14)
    np.testing.assert_allclose(once["bias"], dy.sum(0), rtol=1e-14)
    layer.backward(dy)
    for k in once:
        np.testing.assert_allclose(layer.grads[k], 2 * once[k], rtol=1e-14)
    layer.zero_grad()
    assert all(not g.any() for g in layer.grads.values())


def test_clear_errors():
    lin = Linear(3, 2)
    with pytest.raises(ValueError, match="last dimension 4, expected 3"):
        lin.forward(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="float64 but the layer's parameters are float32"):
        lin.forward(np.zeros((2, 3)))
    with pytest.raises(RuntimeError, match="call forward before backward"):
        Linear(3, 2).backward(np.zeros((1, 2), np.float32))
    with pytest.raises(IndexError, match=r"id 9 at position \(1,\), out of range.*\[0, 5\)"):
        Embedding(5, 2).forward(np.array([1, 9]))
    with pytest.raises(TypeError, match="integer"):
        Embedding(5, 2).forward(np.array([1.0]))
    with pytest.raises(IndexError, match="target 7 is out of range"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 5)), np.array([1, 7]))
    with pytest.raises(ValueError, match="targets shape"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 5)), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="exceed max_len"):
        SinusoidalPositionalEncoding(4, 2).forward(np.zeros((1, 3, 2)), start=2)
    with pytest.raises(ValueError, match="approximate"):
        GELU("fast")
