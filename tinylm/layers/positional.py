"""Position information for attention models (which are otherwise order-blind).

Sinusoidal encoding (Vaswani et al. 2017), fixed, for position pos and
feature pair i of d_model::

    PE[pos, 2i]   = sin(pos / 10000^(2i / d_model))
    PE[pos, 2i+1] = cos(pos / 10000^(2i / d_model))

Learned positional embedding: a trainable table W (max_len, d_model) whose
row pos is added at position pos (GPT-2).  Both layers add to their input::

    y[b, t] = x[b, t] + P[start + t]          dx = dy
    (learned only)  dW[start + t] += sum over b of dy[b, t]

``start`` is the position of the first token, for generation with a KV cache.
"""

import numpy as np

from tinylm.layers.base import Layer
from tinylm.layers.checks import Float, Grad, check_dtype, checked
from tinylm.rng import default_rng

__all__ = ["SinusoidalPositionalEncoding", "LearnedPositionalEmbedding", "sinusoidal_table"]


def sinusoidal_table(max_len, d_model):
    """The (max_len, d_model) float64 table PE above (odd d_model: last column is a sin)."""
    pos = np.arange(max_len)[:, None]                                  # (L, 1)
    i2 = np.arange(0, d_model, 2)                                      # 2i
    angle = pos / np.power(10000.0, i2 / d_model)                      # (L, ceil(D/2))
    pe = np.zeros((max_len, d_model))
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : d_model // 2])
    return pe


def _check_positions(layer, where, a):
    T, start = a["x"].shape[-2], int(a["start"])
    if start < 0 or start + T > layer.max_len:
        raise ValueError("%s: positions %d..%d exceed max_len=%d"
                         % (where, start, start + T - 1, layer.max_len))


class SinusoidalPositionalEncoding(Layer):
    """y = x + PE[start:start+T] (no parameters).

    forward(x (..., T, d_model), start=0) -> y (..., T, d_model), same dtype.
    backward(dy) -> dx = dy.
    """

    def __init__(self, max_len, d_model):
        super().__init__()
        self.max_len, self.d_model = int(max_len), int(d_model)
        self.table = sinusoidal_table(self.max_len, self.d_model)     # float64 (L, D)

    @checked(x=Float(2, last="d_model"), also=_check_positions)
    def forward(self, x, start=0):
        start, T = int(start), x.shape[-2]
        return x + self.table[start:start + T].astype(x.dtype)

    @checked(dy=Grad())
    def backward(self, dy):
        # forward: y = x + PE  ->  dx = dy
        return dy


class LearnedPositionalEmbedding(Layer):
    """y = x + weight[start:start+T] with a trainable table.

    Parameter: ``weight`` (max_len, d_model), init N(0, init_std^2).
    forward(x (..., T, d_model), start=0) -> y, same shape.
    backward(dy) -> dx = dy; grads["weight"][start:start+T] += dy summed over batch dims.
    """

    def __init__(self, max_len, d_model, rng=None, dtype=np.float32, init_std=0.02):
        super().__init__()
        rng = default_rng(rng)
        dtype = check_dtype(dtype)
        self.max_len, self.d_model = int(max_len), int(d_model)
        self.add_param("weight", (init_std * rng.standard_normal((max_len, d_model))).astype(dtype))

    @checked(x=Float(2, last="d_model"), also=_check_positions)
    def forward(self, x, start=0):
        start, T = int(start), x.shape[-2]
        self._cache = (start, T)
        return x + self.params["weight"][start:start + T]

    @checked(dy=Grad())
    def backward(self, dy):
        start, T = self._cache
        # forward: y = x + W[start:start+T]  ->  dW[start:start+T] += sum_batch dy,  dx = dy
        self.grads["weight"][start:start + T] += dy.reshape(-1, T, self.d_model).sum(axis=0)
        return dy
