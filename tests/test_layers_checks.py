"""The layers' input checks (tinylm.layers.checks) and the RNG helpers (tinylm.rng)."""

import numpy as np
import pytest

from tinylm.layers import Dropout, Embedding, Linear, MultiHeadAttention, SoftmaxCrossEntropy
from tinylm.layers.base import Layer
from tinylm.layers.checks import Float, Grad, Scalar, TokenIdError, check_ids, checked
from tinylm.rng import child_rng, default_rng, spawn


# -- check_ids -------------------------------------------------------------------

def test_check_ids_returns_an_int_array_and_names_the_bad_id():
    ids = check_ids([[1, 2], [3, 0]], 4, "M.forward")
    assert isinstance(ids, np.ndarray) and ids.dtype.kind == "i"
    with pytest.raises(TokenIdError, match=r"^M.forward: idx has id 7 at position \(1, 0\), "
                                           r"out of range: ids must be in \[0, 5\)$"):
        check_ids(np.array([[1, 2], [7, 0]]), 5, "M.forward", "idx")
    with pytest.raises(TokenIdError, match=r"id -1 at position \(2,\)"):
        check_ids(np.array([0, 1, -1]), 5, "M.forward")
    assert issubclass(TokenIdError, ValueError) and issubclass(TokenIdError, IndexError)


def test_check_ids_dtype_and_dimensions():
    with pytest.raises(TypeError, match="M.f: ids must be an integer array of token ids, got "
                                        "dtype float64"):
        check_ids(np.zeros(3), 5, "M.f")
    with pytest.raises(ValueError, match=r"must be a 2-D integer array \(batch, time\), got 1 "
                                         r"dimensions, shape \(3,\)"):
        check_ids(np.zeros(3, int), 5, "M.f", ndim=2)
    assert check_ids(np.array([9, 99]), None, "M.f").tolist() == [9, 99]    # no range check


# -- the @checked mechanism --------------------------------------------------------

class _Scale(Layer):
    """y = a * x, with a declared signature, to test the mechanism on its own."""

    def __init__(self, n=3, dtype=np.float64):
        super().__init__()
        self.n = n
        self.add_param("a", np.full(n, 2.0, dtype))

    @checked(x=Float(1, last="n"), other=Float(dtype="x", optional=True))
    def forward(self, x, other=None, flag=False):
        self._cache = (x, other, flag)
        return self.params["a"] * x

    @checked(dy=Grad())
    def backward(self, dy):
        return self.params["a"] * dy

    @checked(x=Float(1, last="n"))
    def forward_step(self, x):
        return self.params["a"] * x


def test_checked_forward_converts_and_passes_arguments_by_name():
    layer = _Scale()
    y = layer.forward([1.0, 2.0, 3.0], flag=True)           # a list becomes an array
    assert y.tolist() == [2.0, 4.0, 6.0]
    x, other, flag = layer._cache
    assert isinstance(x, np.ndarray) and other is None and flag is True
    layer.forward(np.ones(3), np.zeros(4))
    assert layer._cache[1].shape == (4,)


def test_checked_messages_say_what_and_where():
    layer = _Scale()
    with pytest.raises(ValueError, match=r"^_Scale.forward: x has last dimension 4, expected 3"):
        layer.forward(np.ones(4))
    with pytest.raises(TypeError, match="^_Scale.forward: x has dtype float32 but the layer's "
                                        "parameters are float64"):
        layer.forward(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="_Scale.forward: other has dtype float32"):
        layer.forward(np.ones(3), np.ones(3, np.float32))
    with pytest.raises(TypeError, match="must be a numpy array, got str"):
        layer.forward("x")
    with pytest.raises(TypeError):                          # Python's own error for bad calls
        layer.forward(np.ones(3), None, False, "extra")
    with pytest.raises(TypeError):
        layer.forward(np.ones(3), nonsense=1)


def test_backward_needs_a_forward_and_a_gradient_like_its_output():
    layer = _Scale()
    with pytest.raises(RuntimeError, match="^_Scale.backward: call forward before backward"):
        layer.backward(np.ones(3))
    layer.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"_Scale.backward: dy has shape \(3,\), expected "
                                         r"\(2, 3\)"):
        layer.backward(np.ones(3))
    with pytest.raises(TypeError, match="dy has dtype float32"):
        layer.backward(np.ones((2, 3), np.float32))
    assert layer.backward(np.ones((2, 3))).shape == (2, 3)
    layer.forward_step(np.ones(3))                          # inference only: no backward after
    with pytest.raises(RuntimeError, match="call forward before backward"):
        layer.backward(np.ones(3))


def test_scalar_dout_of_a_loss():
    loss = SoftmaxCrossEntropy()
    with pytest.raises(RuntimeError, match="call forward before backward"):
        loss.backward()
    loss.forward(np.zeros((2, 3), np.float32), np.array([0, 2]))
    assert loss.backward().dtype == np.float32               # dout=1.0, cast to the loss's dtype
    with pytest.raises(ValueError, match="a loss is a scalar, so dout must be a scalar"):
        loss.backward(np.ones(2))
    assert isinstance(Scalar().check(loss, "w", "dout", np.array([[2.0]]), {}), np.float32)


def test_every_layer_refuses_backward_before_forward():
    for layer, dy in [(Linear(2, 3), np.ones((1, 3), np.float32)),
                      (Embedding(4, 2), np.ones((1, 2), np.float32)),
                      (Dropout(0.5), np.ones(3, np.float32)),
                      (MultiHeadAttention(4, 2), np.ones((1, 2, 4), np.float32))]:
        with pytest.raises(RuntimeError, match="%s.backward: call forward before backward"
                           % type(layer).__name__):
            layer.backward(dy)


def test_dropout_in_eval_mode_checks_its_gradient_too():
    drop = Dropout(0.5).eval()
    x = np.ones((2, 3), np.float32)
    assert drop.forward(x) is x
    assert drop.backward(x) is x
    with pytest.raises(ValueError, match="Dropout.backward: dy has shape"):
        drop.backward(np.ones(3, np.float32))


# -- tinylm.rng ---------------------------------------------------------------------

def test_default_rng_accepts_a_generator_a_seed_or_none():
    g = np.random.default_rng(5)
    assert default_rng(g) is g
    assert default_rng(5).random() == np.random.default_rng(5).random()
    assert default_rng(None).random() == np.random.default_rng(0).random()
    with pytest.raises(TypeError, match="rng must be a numpy Generator, an int seed or None"):
        default_rng("seed")


def test_child_rng_is_reproducible_independent_and_advances_the_parent():
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    ca, cb = child_rng(a), child_rng(b)
    assert ca.random() == cb.random()                       # same parent seed, same child
    assert a.random() == b.random()                         # parents stay in step
    parent = np.random.default_rng(1)
    first = parent.random()
    parent2 = np.random.default_rng(1)
    child_rng(parent2)
    assert parent2.random() != first                        # the child took one draw
    kids = spawn(3, 4)
    draws = [k.random() for k in kids]
    assert len(set(draws)) == 4
    assert [k.random() for k in spawn(3, 4)] == draws        # spawn(seed) is reproducible
