"""tinylm's layers: NumPy forward passes with hand-derived backward passes."""

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

__all__ = ["Layer", "Linear", "Embedding", "Sequential", "Tanh", "Sigmoid", "ReLU", "GELU",
           "erf", "sigmoid", "Softmax", "SoftmaxCrossEntropy", "MSELoss", "softmax",
           "log_softmax", "LayerNorm", "Dropout",
           "RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU",
           "ScaledDotProductAttention", "MultiHeadAttention", "AdditiveAttention",
           "DotProductAttention", "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding",
           "sinusoidal_table", "FeedForward", "TransformerBlock"]
