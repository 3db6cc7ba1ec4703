"""Every built-in layer, through the example registry: gradient check, float32
in -> float32 out, gradient accumulation and zero_grad."""

import numpy as np
import pytest

from conftest import GRAD_RTOL
from tinylm.gradcheck import _flatten, _unflatten, check_example
from tinylm.layers import Layer
from tinylm.layers.examples import EXAMPLES, make_example

REQUIRED = ["linear", "embedding", "tanh", "sigmoid", "relu", "gelu", "gelu_tanh", "softmax",
            "cross_entropy", "mse", "layernorm", "dropout", "rnn", "lstm", "gru", "rnn_cell",
            "lstm_cell", "gru_cell", "sinusoidal", "learned_pos", "attention", "mha",
            "cross_attention", "additive_attention", "feedforward", "transformer_preln",
            "transformer_postln"]


def test_registry_has_every_required_layer():
    assert set(REQUIRED) <= set(EXAMPLES)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_gradcheck(name):
    report = check_example(name, seed=3)
    assert report.ok, "\n" + str(report)
    assert report.max_error <= GRAD_RTOL
    assert report.rows, "nothing was checked"
    # every parameter of the layer was checked
    names = {r.name for r in report.rows}
    assert {n for n, _, _ in make_example(name).layer.named_parameters()} <= names


def _cast(tree, dtype):
    leaves, d = _flatten(tree)
    return _unflatten([x.astype(dtype) if isinstance(x, np.ndarray) and x.dtype.kind == "f"
                       else x for x in leaves], d)


def _upstream(out, rng):
    leaves, d = _flatten(out)
    return _unflatten([rng.standard_normal(np.shape(o)).astype(np.asarray(o).dtype)
                       for o in leaves], d)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_float32_in_float32_out(name):
    ex = make_example(name, dtype=np.float32)
    layer = ex.layer.astype(np.float32)
    out = layer.forward(*_cast(ex.inputs, np.float32), **ex.kwargs)
    for o in _flatten(out)[0]:
        assert np.asarray(o).dtype == np.float32, name
    back = layer.backward(_upstream(out, np.random.default_rng(0)))
    for g in _flatten(back)[0]:
        assert g is None or g.dtype == np.float32, name
    for pname, p, g in layer.named_parameters():
        assert p.dtype == np.float32 and g.dtype == np.float32, (name, pname)
        assert np.all(np.isfinite(g)), (name, pname)


@pytest.mark.parametrize("name", [n for n in EXAMPLES
                                  if make_example(n).layer.num_parameters()])
def test_backward_accumulates_and_zero_grad_clears(name):
    ex = make_example(name)
    layer = ex.layer
    out = layer.forward(*ex.inputs, **ex.kwargs)
    g = _upstream(out, np.random.default_rng(1))
    layer.zero_grad()
    first = layer.backward(g)
    once = {n: gr.copy() for n, _, gr in layer.named_parameters()}
    assert any(v.any() for v in once.values())
    second = layer.backward(g)
    for n, _, gr in layer.named_parameters():
        np.testing.assert_allclose(gr, 2 * once[n], rtol=1e-12, atol=1e-14, err_msg=n)
    # input gradients are returned, not accumulated
    for a, b in zip(_flatten(first)[0], _flatten(second)[0]):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    layer.zero_grad()
    assert all(not gr.any() for _, _, gr in layer.named_parameters())


def test_every_layer_is_a_layer():
    for name in EXAMPLES:
        assert isinstance(make_example(name).layer, Layer)


# -- assignment markers ------------------------------------------------------------

import re  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_REGION = re.compile(r"^([ \t]*)### BEGIN SOLUTION\n.*?^[ \t]*### END SOLUTION\n", re.S | re.M)
# file -> the functions whose bodies students write
MARKED = {
    "tinylm/layers/core.py": ["Linear.backward"],
    "tinylm/layers/losses.py": ["SoftmaxCrossEntropy.backward"],
    "tinylm/layers/norm.py": ["LayerNorm.backward"],
    "tinylm/layers/rnn.py": ["LSTMCell.step_backward", "_Recurrent.backward"],
    "tinylm/layers/attention.py": ["ScaledDotProductAttention.backward"],
    "tinylm/layers/activations.py": ["Tanh.backward", "Sigmoid.backward", "GELU.backward"],
    "tinylm/gradcheck.py": ["numerical_gradient"],
}


@pytest.mark.parametrize("path", sorted(MARKED))
def test_solution_regions_strip_to_an_importable_module(path):
    src = (ROOT / path).read_text()
    regions = _REGION.findall(src)
    assert len(regions) == len(MARKED[path])
    stripped = _REGION.sub(lambda m: m.group(1) + 'raise NotImplementedError("exercise")\n', src)
    assert "### BEGIN SOLUTION" not in stripped
    mod = types.ModuleType("stripped")
    exec(compile(stripped, path, "exec"), mod.__dict__)      # importable without the solutions
    for qual in MARKED[path]:
        obj = mod
        for part in qual.split("."):
            obj = getattr(obj, part)
        assert callable(obj)
    if path == "tinylm/layers/core.py":                     # the stripped backward raises
        lin = mod.Linear(3, 2)
        lin.forward(np.ones((1, 3), np.float32))
        with pytest.raises(NotImplementedError):
            lin.backward(np.ones((1, 2), np.float32))
