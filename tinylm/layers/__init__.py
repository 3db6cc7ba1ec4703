"""tinylm's layers: NumPy forward passes with hand-derived backward passes.

Every layer follows the contract in :mod:`tinylm.layers.base` (forward caches,
backward adds into ``grads`` and returns the input gradient(s)).  Conventions:

* float32 in -> float32 out; float64 works throughout (gradient checks).
  Inputs must have the parameters' dtype (a clear TypeError otherwise).
* Sequences are batch-first: (B, T, features).
* Parameter names and gate orders follow PyTorch (``weight`` is (out, in);
  LSTM gates i, f, g, o; GRU gates r, z, n) so weights copy across.
* Several differentiable inputs -> backward returns a tuple in input order;
  recurrent layers return (dx, d_initial_state); losses take ``backward(dout=1.0)``.
* Masks are bool: ``key_padding_mask`` True = padding (PyTorch), the
  ``mask`` of ScaledDotProductAttention True = may attend.
* Randomness (init, dropout) comes from an ``rng`` argument (Generator or int
  seed; None = seed 0), never from NumPy's global RNG.

Files: core (Linear, Embedding, Sequential), activations, losses, norm
(LayerNorm, Dropout), rnn, positional, attention, transformer, pooling
(MeanPooling, L2Normalize); checks holds the input validation; examples holds
small configurations of each for ``tinylm gradcheck``.
"""

from tinylm.layers.base import Layer
from tinylm.layers.core import Linear, Embedding, Sequential
from tinylm.layers.activations import Tanh, Sigmoid, ReLU, GELU, erf, sigmoid
from tinylm.layers.losses import Softmax, SoftmaxCrossEntropy, MSELoss, softmax, log_softmax
from tinylm.layers.norm import LayerNorm, Dropout
from tinylm.layers.rnn import RNNCell, LSTMCell, GRUCell, RNN, LSTM, GRU
from tinylm.layers.attention import (ScaledDotProductAttention, MultiHeadAttention,
                                    AdditiveAttention, DotProductAttention)
from tinylm.layers.positional import (SinusoidalPositionalEncoding, LearnedPositionalEmbedding,
                                     sinusoidal_table)
from tinylm.layers.transformer import FeedForward, TransformerBlock
from tinylm.layers.pooling import MeanPooling, L2Normalize

__all__ = ["Layer", "Linear", "Embedding", "Sequential", "Tanh", "Sigmoid", "ReLU", "GELU",
           "erf", "sigmoid", "Softmax", "SoftmaxCrossEntropy", "MSELoss", "softmax",
           "log_softmax", "LayerNorm", "Dropout",
           "RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU",
           "ScaledDotProductAttention", "MultiHeadAttention", "AdditiveAttention",
           "DotProductAttention", "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding",
           "sinusoidal_table", "FeedForward", "TransformerBlock", "MeanPooling", "L2Normalize"]
