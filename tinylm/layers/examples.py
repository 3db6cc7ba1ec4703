"""Small example configurations of every built-in layer, for gradient checks.

``EXAMPLES`` maps a name to a function ``make(rng, dtype=np.float64)`` returning
an :class:`Example`: the layer, its forward inputs and keyword arguments, and
check options (e.g. a smaller step for layers with a ReLU kink).  Used by
``tinylm gradcheck``, the tests and the lessons::

    from tinylm.gradcheck import check_example
    print(check_example("lstm"))          # a GradCheckReport table

(The checker lives in :mod:`tinylm.gradcheck`, which imports the layers, not
the other way round.)
"""

import numpy as np

from tinylm.rng import child_rng
from tinylm.layers import (Linear, Embedding, Tanh, Sigmoid, ReLU, GELU, Softmax,
                           SoftmaxCrossEntropy, MSELoss, LayerNorm, Dropout, RNNCell, LSTMCell,
                           GRUCell, RNN, LSTM, GRU, SinusoidalPositionalEncoding,
                           LearnedPositionalEmbedding, ScaledDotProductAttention,
                           MultiHeadAttention, AdditiveAttention, DotProductAttention,
                           FeedForward, TransformerBlock, MeanPooling, L2Normalize)

__all__ = ["Example", "EXAMPLES", "make_example", "randomize_params"]


class Example:
    """layer, inputs (tuple, maybe nested), kwargs (dict), options (for check_layer),
    input_names (names of the float inputs), description (one line)."""

    def __init__(self, layer, inputs, kwargs=None, options=None, input_names=None,
                 description=""):
        self.layer, self.inputs = layer, inputs
        self.kwargs, self.options = dict(kwargs or {}), dict(options or {})
        self.input_names, self.description = input_names, description


def randomize_params(layer, rng, scale=0.5):
    """Overwrite every parameter with N(0, scale^2) draws (in place), so no
    parameter is a special value (LayerNorm's ones/zeros, equal gate biases)."""
    for _, p, _ in layer.named_parameters():
        p[...] = scale * rng.standard_normal(p.shape)
    return layer


def _n(rng, *shape):
    return rng.standard_normal(shape)


def _away_from_zero(rng, *shape):
    """Normal draws pushed away from 0 (ReLU's kink) by at least 0.1."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (0.1 + np.abs(x))


def _padding(B, T, lengths):
    m = np.zeros((B, T), bool)
    for b, n in enumerate(lengths):
        m[b, n:] = True
    return m


# Steps must not cross ReLU's kink at 0, so a small step; its larger rounding
# noise (~1e-10 absolute) needs the floor raised to 1e-2 (see tinylm.gradcheck).
_RELU_OPTS = {"eps": 1e-5, "floor": 1e-2}


def _linear(rng, dt):
    return Example(Linear(5, 4, rng=rng, dtype=dt), (_n(rng, 2, 3, 5),), input_names=["x"],
                   description="Linear(5 -> 4) on x (2, 3, 5)")


def _embedding(rng, dt):
    ids = np.array([[1, 3, 3, 0], [6, 1, 3, 2]])       # repeated ids accumulate
    return Example(Embedding(7, 3, rng=rng, dtype=dt), (ids,),
                   description="Embedding(7, 3) on ids (2, 4) with repeated ids")


def _elementwise(cls, *args, scale=2.0, away=False):
    def make(rng, dt):
        x = (_away_from_zero(rng, 3, 7) if away else _n(rng, 3, 7)) * scale
        return Example(cls(*args), (x,), input_names=["x"],
                       description="%s on x (3, 7)" % cls.__name__)
    return make


def _softmax(rng, dt):
    return Example(Softmax(), (_n(rng, 3, 6),), input_names=["x"],
                   description="Softmax over the last axis of (3, 6)")


def _cross_entropy(rng, dt):
    t = rng.integers(0, 7, (3, 4))
    t[1, 2] = -100                                          # one ignored target
    return Example(SoftmaxCrossEntropy(), (_n(rng, 3, 4, 7) * 2, t), input_names=["logits"],
                   description="SoftmaxCrossEntropy, logits (3, 4, 7), one ignored target")


def _cross_entropy_smoothed(rng, dt):
    t = rng.integers(0, 7, (3, 4))
    t[0, 1] = -100                                          # one ignored target
    return Example(SoftmaxCrossEntropy(label_smoothing=0.1), (_n(rng, 3, 4, 7) * 2, t),
                   input_names=["logits"],
                   description="SoftmaxCrossEntropy(label_smoothing=0.1), one ignored target")


def _mse(rng, dt):
    return Example(MSELoss(), (_n(rng, 4, 5), _n(rng, 4, 5)), input_names=["y", "target"],
                   description="MSELoss on (4, 5)")


def _layernorm(rng, dt):
    layer = randomize_params(LayerNorm(6, dtype=dt), rng)
    return Example(layer, (_n(rng, 2, 3, 6),), input_names=["x"],
                   description="LayerNorm(6) with random weight/bias on x (2, 3, 6)")


def _dropout(rng, dt):
    return Example(Dropout(0.4, rng=child_rng(rng)), (_n(rng, 4, 6),), input_names=["x"],
                   description="Dropout(0.4) in training mode (mask rewound each forward)")


def _cell(cls, lstm=False):
    def make(rng, dt):
        layer = randomize_params(cls(3, 4, rng=rng, dtype=dt), rng)
        state = (_n(rng, 2, 4), _n(rng, 2, 4)) if lstm else _n(rng, 2, 4)
        names = ["x", "h", "c"] if lstm else ["x", "h"]
        return Example(layer, (_n(rng, 2, 3), state), input_names=names,
                       description="%s(3, 4), batch 2, random biases per gate" % cls.__name__)
    return make


def _seq(cls, lstm=False):
    def make(rng, dt):
        layer = randomize_params(cls(3, 4, rng=rng, dtype=dt), rng)
        state = (_n(rng, 2, 4), _n(rng, 2, 4)) if lstm else _n(rng, 2, 4)
        names = ["x", "h0", "c0"] if lstm else ["x", "h0"]
        return Example(layer, (_n(rng, 2, 5, 3), state), input_names=names,
                       description="%s(3, 4) over x (2, 5, 3) with an initial state; output "
                                   "and final state both get gradients" % cls.__name__)
    return make


def _stacked(cls, lstm=False):
    def make(rng, dt):
        layer = randomize_params(cls(3, 4, rng=rng, dtype=dt, num_layers=2, dropout=0.3), rng)
        state = (_n(rng, 2, 2, 4), _n(rng, 2, 2, 4)) if lstm else _n(rng, 2, 2, 4)
        names = ["x", "h0", "c0"] if lstm else ["x", "h0"]
        return Example(layer, (_n(rng, 2, 5, 3), state), input_names=names,
                       description="%s(3, 4, num_layers=2, dropout=0.3) in training mode over "
                                   "x (2, 5, 3), states (2, 2, 4)" % cls.__name__)
    return make


def _sinusoidal(rng, dt):
    return Example(SinusoidalPositionalEncoding(16, 6), (_n(rng, 2, 5, 6),), {"start": 3},
                   input_names=["x"], description="SinusoidalPositionalEncoding, start=3")


def _learned_pos(rng, dt):
    return Example(LearnedPositionalEmbedding(16, 6, rng=rng, dtype=dt), (_n(rng, 2, 5, 6),),
                   {"start": 3}, input_names=["x"],
                   description="LearnedPositionalEmbedding(16, 6), start=3")


def _attention(rng, dt):
    q, k, v = _n(rng, 2, 2, 4, 3), _n(rng, 2, 2, 5, 3), _n(rng, 2, 2, 5, 3)
    mask = rng.random((2, 1, 4, 5)) > 0.3
    mask[..., 0] = True
    return Example(ScaledDotProductAttention(causal=True), (q, k, v), {"mask": mask},
                   input_names=["q", "k", "v"],
                   description="scaled dot-product attention, causal + random mask (NumPy path)")


def _mha(rng, dt):
    layer = randomize_params(MultiHeadAttention(8, 2, causal=True, rng=rng, dtype=dt), rng)
    return Example(layer, (_n(rng, 2, 5, 8),), {"key_padding_mask": _padding(2, 5, [5, 3])},
                   input_names=["x"],
                   description="causal self-attention, 2 heads, D=8, with key padding")


def _cross_attention(rng, dt):
    layer = randomize_params(MultiHeadAttention(8, 2, rng=rng, dtype=dt), rng)
    return Example(layer, (_n(rng, 2, 4, 8), _n(rng, 2, 6, 8)), input_names=["x", "memory"],
                   description="cross-attention, queries (2, 4, 8) over memory (2, 6, 8)")


def _additive(rng, dt):
    layer = AdditiveAttention(5, 6, 4, rng=rng, dtype=dt)
    return Example(layer, (_n(rng, 2, 5), _n(rng, 2, 7, 6)),
                   {"key_padding_mask": _padding(2, 7, [7, 4])}, input_names=["query", "keys"],
                   description="Bahdanau attention, query (2, 5) over keys (2, 7, 6), padded")


def _dot_attention(rng, dt):
    return Example(DotProductAttention(), (_n(rng, 2, 6), _n(rng, 2, 7, 6)),
                   input_names=["query", "keys"],
                   description="Luong dot attention, query (2, 6) over keys (2, 7, 6)")


def _feedforward(rng, dt):
    return Example(FeedForward(6, 12, "gelu", rng=rng, dtype=dt), (_n(rng, 2, 3, 6),),
                   input_names=["x"], description="FeedForward(6, 12) with exact GELU")


def _transformer(norm_first, cross=False, activation="gelu"):
    def make(rng, dt):
        layer = TransformerBlock(8, 2, 16, dropout=0.1, norm_first=norm_first,
                                 causal=not cross, cross_attention=cross,
                                 activation=activation, rng=rng, dtype=dt)
        randomize_params(layer, rng, scale=0.3)
        inputs = (_n(rng, 2, 4, 8),) + ((_n(rng, 2, 5, 8),) if cross else ())
        kw = {"key_padding_mask": _padding(2, 4, [4, 3])}
        opts = dict(_RELU_OPTS) if activation == "relu" else {}
        opts["max_entries"] = 20            # ~20 params tensors: sample to stay quick
        return Example(layer, inputs, kw, opts,
                       input_names=["x", "memory"] if cross else ["x"],
                       description="%s block, D=8, 2 heads, %s, dropout 0.1%s"
                       % ("pre-LN" if norm_first else "post-LN", activation,
                          ", cross-attention" if cross else ", causal"))
    return make


def _mean_pooling(rng, dt):
    mask = _padding(3, 5, [3, 5, 0]) == 0                  # the last row has no real token
    return Example(MeanPooling(), (_n(rng, 3, 5, 4),), {"mask": mask.astype(int)},
                   input_names=["h"], description="MeanPooling of h (3, 5, 4), one empty row")


def _l2_normalize(rng, dt):
    return Example(L2Normalize(), (_n(rng, 4, 6),), input_names=["x"],
                   description="L2Normalize of x (4, 6)")


EXAMPLES = {
    "linear": _linear,
    "embedding": _embedding,
    "tanh": _elementwise(Tanh),
    "sigmoid": _elementwise(Sigmoid, scale=3.0),
    "relu": _elementwise(ReLU, away=True),
    "gelu": _elementwise(GELU, "none"),
    "gelu_tanh": _elementwise(GELU, "tanh"),
    "softmax": _softmax,
    "cross_entropy": _cross_entropy,
    "cross_entropy_smoothed": _cross_entropy_smoothed,
    "mse": _mse,
    "layernorm": _layernorm,
    "dropout": _dropout,
    "rnn": _seq(RNN),
    "lstm": _seq(LSTM, lstm=True),
    "gru": _seq(GRU),
    "lstm_stacked": _stacked(LSTM, lstm=True),
    "gru_stacked": _stacked(GRU),
    "rnn_cell": _cell(RNNCell),
    "lstm_cell": _cell(LSTMCell, lstm=True),
    "gru_cell": _cell(GRUCell),
    "sinusoidal": _sinusoidal,
    "learned_pos": _learned_pos,
    "attention": _attention,
    "mha": _mha,
    "cross_attention": _cross_attention,
    "additive_attention": _additive,
    "dot_attention": _dot_attention,
    "feedforward": _feedforward,
    "transformer_preln": _transformer(True),
    "transformer_postln": _transformer(False),
    "transformer_decoder": _transformer(True, cross=True),
    "transformer_relu": _transformer(False, activation="relu"),
    "mean_pooling": _mean_pooling,
    "l2_normalize": _l2_normalize,
}


def make_example(name, seed=0, dtype=np.float64):
    """Build the example ``name`` with a fixed seed."""
    if name not in EXAMPLES:
        raise KeyError("no example layer %r; choose from: %s" % (name, ", ".join(EXAMPLES)))
    return EXAMPLES[name](np.random.default_rng(seed), np.dtype(dtype))

