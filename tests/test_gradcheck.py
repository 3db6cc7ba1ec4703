"""The gradient-check toolkit and the `tinylm gradcheck` command."""

import numpy as np
import pytest

from tinylm.cli import main
from tinylm.gradcheck import check_layer, numerical_gradient, relative_error
from tinylm.layers import Layer, Linear, LayerNorm, Softmax, SoftmaxCrossEntropy
from tinylm.layers import examples


def test_numerical_gradient_matches_calculus():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    w = rng.standard_normal((3, 4))
    f = lambda z: np.sum(np.sin(z) * w)
    g = numerical_gradient(f, x)
    np.testing.assert_allclose(g, np.cos(x) * w, rtol=1e-8, atol=1e-9)


def test_numerical_gradient_leaves_input_alone_and_subsets():
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    before = x.copy()
    seen = []
    g = numerical_gradient(lambda z: (seen.append(z.dtype), float(np.sum(z ** 2)))[1], x,
                           indices=[2])
    np.testing.assert_array_equal(x, before)               # caller's array untouched
    assert all(d == np.float64 for d in seen)               # differences taken in float64
    assert np.isnan(g[0]) and np.isnan(g[1])                # not computed
    assert g[2] == pytest.approx(6.0, rel=1e-8)


def test_relative_error_floor():
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(1.0, 1.0 + 1e-9) == pytest.approx(5e-10, rel=1e-3)
    assert relative_error(1e-12, 2e-12, floor=1e-3) == pytest.approx(1e-9)


class _BrokenLinear(Linear):
    """Linear whose weight gradient is 1% off (a subtle bug a check must catch)."""

    def backward(self, dy):
        out = super().backward(dy)
        self.grads["weight"] *= 1.01                       # slightly wrong weight gradient
        return out


class _SoftmaxZeroGrad(Softmax):
    """A wrong softmax backward that returns zeros: passes an all-ones check."""

    def backward(self, dy):
        return np.zeros_like(dy)


def test_check_layer_catches_wrong_gradients():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    good = check_layer(Linear(4, 2, rng=1), x)
    bad = check_layer(_BrokenLinear(4, 2, rng=1), x)
    assert good.ok and bool(good)
    assert not bad.ok
    assert bad["weight"].ok is False and bad["input"].ok and bad["bias"].ok
    assert "FAIL" in str(bad)
    # random upstream gradient: the zero-returning softmax backward is caught
    assert not check_layer(_SoftmaxZeroGrad(), x).ok
    assert check_layer(Softmax(), x).ok


def test_check_layer_leaves_layer_untouched():
    layer = Linear(3, 2, rng=0)                            # float32
    w = layer.params["weight"].copy()
    check_layer(layer, np.ones((2, 3), np.float32))
    assert layer.params["weight"].dtype == np.float32
    np.testing.assert_array_equal(layer.params["weight"], w)
    assert not layer.grads["weight"].any()


def test_check_layer_samples_large_tensors_and_reports():
    rng = np.random.default_rng(0)
    report = check_layer(Linear(30, 20, rng=rng), rng.standard_normal((4, 30)).astype(np.float32),
                         max_entries=7)
    assert report.ok
    assert [r.checked for r in report.rows] == [7, 7, 7]
    text = str(report)
    for word in ("tensor", "max rel err", "worst index", "analytic", "numeric", "weight"):
        assert word in text


def test_check_layer_integer_inputs_and_scalar_output():
    rng = np.random.default_rng(0)
    report = check_layer(SoftmaxCrossEntropy(), (rng.standard_normal((3, 5)),
                                                 np.array([0, 4, 2])))
    assert report.ok and [r.name for r in report.rows] == ["input"]


class _TwoOutputs(Layer):
    """y1 = a * b, y2 = sum(a, axis=-1): a tuple output and two float inputs."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b, a.sum(-1)

    def backward(self, douts):
        d1, d2 = douts
        return d1 * self.b + d2[..., None], d1 * self.a


def test_check_layer_tuple_outputs_and_inputs():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 4))
    report = check_layer(_TwoOutputs(), (a, b), input_names=["a", "b"])
    assert report.ok and [r.name for r in report.rows] == ["a", "b"]


def test_layernorm_all_ones_pitfall_is_documented_by_math():
    # sum(LayerNorm(x)) without affine is constant in x: an all-ones upstream
    # gradient would give the zero gradient whatever the backward does.
    ln = LayerNorm(5, elementwise_affine=False, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 5))
    g = numerical_gradient(lambda z: np.sum(ln.forward(z)), x)
    assert np.max(np.abs(g)) < 1e-8
    assert check_layer(ln, x).ok


# -- the command line ------------------------------------------------------------

def test_cli_gradcheck_lstm(capsys):
    assert main(["gradcheck", "lstm"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "cell.weight_hh" in out and "max rel err" in out
    assert "FAIL" not in out


def test_cli_gradcheck_list(capsys):
    assert main(["gradcheck", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("linear", "lstm", "transformer_preln", "cross_attention"):
        assert name in out


def test_cli_gradcheck_several_quiet(capsys):
    assert main(["gradcheck", "--quiet", "tanh", "softmax", "mse"]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 layers pass" in out


def test_cli_gradcheck_unknown_name(capsys):
    assert main(["gradcheck", "nosuchlayer"]) == 2
    assert "unknown layer" in capsys.readouterr().err


def test_cli_gradcheck_failure_exit_code(capsys, monkeypatch):
    def broken(rng, dtype):
        return examples.Example(_BrokenLinear(3, 2, rng=rng, dtype=dtype),
                                (rng.standard_normal((2, 3)),), description="broken")
    monkeypatch.setitem(examples.EXAMPLES, "broken", broken)
    assert main(["gradcheck", "broken"]) == 1
    assert "FAIL" in capsys.readouterr().out
