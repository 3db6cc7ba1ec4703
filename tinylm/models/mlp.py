"""A Bengio-style MLP language model: a fixed window of previous tokens -> the next one.

Bengio et al. (2003), and the three equations of document 002 section 4
(affine, tanh, softmax).  For the token at position t, the model reads the n
tokens ending at t (the *context window*, ``config.context`` = n) and
predicts token t + 1::

    window_t = (w[t-n+1], ..., w[t])                 n ids
    x_t      = concat(C[w[t-n+1]], ..., C[w[t]])     (n*E,)   C: embedding table (V+1, E)
    a_t      = x_t W1^T + b1                         (H,)     the affine map
    h_t      = tanh(a_t)                             (H,)     the hidden layer
    z_t      = h_t W2^T + b2                         (V,)     logits
    p_t      = softmax(z_t)                          (V,)     P(w[t+1] | window_t)

(In 002's notation x is our x_t, W and b are W1 and b1, W' and b' are W2
and b2.  ⚠ 002 calls ``s`` "the input layer's weights", but no ``s`` appears
in its equations; the weights of the first layer are W.)

Left padding.  The first tokens of a sequence have fewer than n-1
predecessors.  So that ``forward(idx)`` still gives logits for *every*
position (B, T, V), as the shared trainer and generator expect, the window is
padded on the left with a special id ``pad_id = vocab_size`` - one extra,
learned row of the embedding table meaning "before the start of the text".
Token ids from the data are never equal to it.

Shapes: batch B, time T, vocabulary V, window n, embedding E, hidden H.
"""

from dataclasses import dataclass

import numpy as np

from tinylm.layers.activations import Tanh
from tinylm.layers.core import Embedding, Linear
from tinylm.layers.norm import Dropout
from tinylm.models._common import LanguageModel
from tinylm.rng import child_rng

__all__ = ["MLPConfig", "MLPLM"]


@dataclass
class MLPConfig:
    vocab_size: int = 65      # V
    context: int = 8          # n: tokens in the window (the current one and n-1 before it)
    emb_dim: int = 32         # E
    hidden: int = 256         # H
    dropout: float = 0.0      # on the hidden layer h
    block_size: int = 64      # training sequence length T (the model itself sees n tokens)
    seed: int = 0             # weight init and dropout masks
    dtype: str = "float32"


class MLPLM(LanguageModel):
    """MLP language model (see the module docstring).

    Children: embed Embedding(V+1, E) (row V is the left pad), fc1 Linear(n*E, H),
    act Tanh, drop Dropout, fc2 Linear(H, V).
    forward(idx (B, T)) -> logits (B, T, V); loss(x, y) -> float; backward().
    """

    def __init__(self, config=None):
        config = MLPConfig() if config is None else config
        super().__init__(config)
        c = config
        if c.vocab_size < 1 or c.context < 1 or c.emb_dim < 1 or c.hidden < 1:
            raise ValueError("MLPConfig: vocab_size, context, emb_dim and hidden must be >= 1, "
                             "got %r" % (c,))
        rng = np.random.default_rng(c.seed)
        dtype = np.dtype(c.dtype)
        self.pad_id = c.vocab_size                     # the extra "before the text" row
        self.add_layer("embed", Embedding(c.vocab_size + 1, c.emb_dim, rng=rng, dtype=dtype))
        self.add_layer("fc1", Linear(c.context * c.emb_dim, c.hidden, rng=rng, dtype=dtype))
        self.add_layer("act", Tanh())
        self.add_layer("drop", Dropout(c.dropout, rng=child_rng(c.seed)))
        self.add_layer("fc2", Linear(c.hidden, c.vocab_size, rng=rng, dtype=dtype))

    def windows(self, idx):
        """idx (B, T) -> the context windows (B, T, n): windows[b, t] = idx[b, t-n+1 .. t].

        Positions before the start are ``pad_id``.
        """
        B, T = idx.shape
        n = self.config.context
        padded = np.concatenate([np.full((B, n - 1), self.pad_id, dtype=idx.dtype), idx],
                                axis=1)                                      # (B, T+n-1)
        # column j of the window is the token j places after its first one
        return np.stack([padded[:, j:j + T] for j in range(n)], axis=-1)     # (B, T, n)

    def _forward(self, idx):
        L = self.layers
        B, T = idx.shape
        win = self.windows(idx)                                   # (B, T, n)
        e = L["embed"].forward(win)                               # (B, T, n, E)  C[w]
        x = e.reshape(B, T, -1)                                   # (B, T, n*E)   x_t = concat
        a = L["fc1"].forward(x)                                   # (B, T, H)     a = x W1^T + b1
        h = L["act"].forward(a)                                   # (B, T, H)     h = tanh(a)
        h = L["drop"].forward(h)                                  # (B, T, H)
        return L["fc2"].forward(h)                                # (B, T, V)     z = h W2^T + b2

    def _backward(self, dlogits):
        L = self.layers
        # forward: z = fc2(h)
        dh = L["fc2"].backward(dlogits)                           # (B, T, H)
        # forward: h = drop(h)
        dh = L["drop"].backward(dh)
        # forward: h = tanh(a)
        da = L["act"].backward(dh)                                # (B, T, H)
        # forward: a = fc1(x)
        dx = L["fc1"].backward(da)                                # (B, T, n*E)
        # forward: x = e.reshape(B, T, n*E)
        de = dx.reshape(dx.shape[:2] + (self.config.context, self.config.emb_dim))
        # forward: e = embed(windows)  (scatter-add into the table; the pad row too)
        L["embed"].backward(de)
