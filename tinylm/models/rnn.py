"""Recurrent language models: a tanh-RNN LM, an LSTM LM and a GRU LM.

All are  Embedding -> Dropout -> RNN, LSTM or GRU -> Dropout -> Linear::

    e_t = C[w_t]                             (B, E)   embedding
    h_t = cell(e_t, h_{t-1})                 (B, H)   tanh RNN, LSTM (with c) or GRU cell
    z_t = h_t W^T + b                        (B, V)   logits of w_{t+1}

and predict every position (document 002 section 5's Keras model predicts only
the last token; lesson 05_2 compares).  The recurrence runs over the whole
sequence with back-propagation through time (``tinylm.layers.rnn``).  With
``num_layers`` = L > 1 the recurrent layer is a stack of L layers with
``dropout`` between them (PyTorch's ``num_layers``); its state is then (L, B, H)
per tensor.

Truncated BPTT, the ``stateful`` option.  A long text is cut into chunks of
``block_size`` tokens.  With ``stateful=True`` the model, in training mode,
starts each chunk from the final state of the previous chunk (so it can carry
information across the cut) but the gradient stops at the cut: the carried
state is a plain array, *detached* from the previous chunk's graph.  This only
makes sense when row b of each batch continues row b of the previous batch;
:func:`tbptt_batches` yields batches like that.  (The shared trainer samples
random windows, so keep ``stateful=False`` there.)  The state is reset by
:meth:`reset_state`, automatically when the batch size changes, and is
neither used nor changed in eval mode.

For generation the models have a recurrent cache: ``init_cache(B)`` and
``forward_step(idx, cache)`` feed only the new tokens and carry (h[, c]).

Shapes: batch B, time T, vocabulary V, embedding E, hidden H.
"""

from dataclasses import dataclass

import numpy as np

from tinylm.layers.checks import check_ids
from tinylm.layers.core import Embedding, Linear
from tinylm.layers.norm import Dropout
from tinylm.layers.rnn import GRU, LSTM, RNN
from tinylm.models._common import LanguageModel
from tinylm.rng import spawn

__all__ = ["RNNLMConfig", "RNNLM", "LSTMLMConfig", "LSTMLM", "GRULMConfig", "GRULM",
           "tbptt_batches"]


@dataclass
class RNNLMConfig:
    vocab_size: int = 65      # V
    emb_dim: int = 64         # E
    hidden: int = 256         # H
    dropout: float = 0.0      # on the embeddings, between stacked layers, on the RNN outputs
    block_size: int = 64      # training chunk length T (truncated BPTT length)
    num_layers: int = 1       # L stacked recurrent layers
    stateful: bool = False    # carry the final state to the next batch (see module doc)
    nonlinearity: str = "tanh"   # "tanh" or "relu"
    seed: int = 0
    dtype: str = "float32"


@dataclass
class LSTMLMConfig:
    vocab_size: int = 65      # V
    emb_dim: int = 64         # E
    hidden: int = 256         # H
    dropout: float = 0.0
    block_size: int = 128     # training chunk length T
    num_layers: int = 1       # L stacked LSTM layers
    stateful: bool = False
    seed: int = 0
    dtype: str = "float32"


@dataclass
class GRULMConfig(LSTMLMConfig):
    """The GRU LM has the LSTM LM's settings (vocab_size, emb_dim, hidden, dropout,
    block_size, num_layers, stateful, seed, dtype)."""


class _RecurrentLM(LanguageModel):
    """Embedding -> Dropout -> recurrent layer -> Dropout -> Linear (see module doc).

    Children: embed Embedding(V, E), drop_in, rnn (RNN, LSTM or GRU, E -> H),
    drop_out, head Linear(H, V).
    """

    def _build(self, rnn):
        c = self.config
        if c.vocab_size < 1 or c.emb_dim < 1 or c.hidden < 1:
            raise ValueError("%s: vocab_size, emb_dim and hidden must be >= 1, got %r"
                             % (type(c).__name__, c))
        rng = np.random.default_rng(c.seed)
        dtype = np.dtype(c.dtype)
        self.add_layer("embed", Embedding(c.vocab_size, c.emb_dim, rng=rng, dtype=dtype))
        drop_in_rng, drop_out_rng = spawn(c.seed, 2)     # dropout masks: their own streams
        self.add_layer("drop_in", Dropout(c.dropout, rng=drop_in_rng))
        self.add_layer("rnn", rnn(rng, dtype))
        self.add_layer("drop_out", Dropout(c.dropout, rng=drop_out_rng))
        self.add_layer("head", Linear(c.hidden, c.vocab_size, rng=rng, dtype=dtype))
        self.state = None            # carried state for stateful training (detached)

    def reset_state(self):
        """Forget the carried state: the next chunk starts from zeros."""
        self.state = None

    def _initial_state(self, B):
        """The state the next training chunk starts from (None = zeros)."""
        if not (self.config.stateful and self.training) or self.state is None:
            return None
        h = self.state[0] if isinstance(self.state, tuple) else self.state
        if h.shape[-2] != B or h.dtype != self.dtype:      # h: (B, H) or (L, B, H)
            self.state = None        # a new batch size (or dtype): start afresh
            return None
        return self.state

    def _run(self, idx, state):
        """The forward pass from a given initial state: -> (logits, final state)."""
        L = self.layers
        e = L["embed"].forward(idx)                         # (B, T, E)    e_t = C[w_t]
        e = L["drop_in"].forward(e)                         # (B, T, E)
        out, final = L["rnn"].forward(e, state)             # (B, T, H)    h_t = cell(e_t, h_{t-1})
        out = L["drop_out"].forward(out)                    # (B, T, H)
        return L["head"].forward(out), final                # (B, T, V)    z_t = h_t W^T + b

    def _forward(self, idx):
        logits, final = self._run(idx, self._initial_state(idx.shape[0]))
        if self.config.stateful and self.training:
            # keep the final state for the next chunk, detached: copies, no graph
            self.state = (tuple(s.copy() for s in final) if isinstance(final, tuple)
                          else final.copy())
        return logits

    def _backward(self, dlogits):
        L = self.layers
        # forward: logits = head(out)
        dout = L["head"].backward(dlogits)                  # (B, T, H)
        # forward: out = drop_out(out)
        dout = L["drop_out"].backward(dout)
        # forward: out, final = rnn(e, state) -- BPTT; the initial state's gradient is
        # dropped: a carried state is detached (truncated BPTT), a zero state is a constant
        de, _ = L["rnn"].backward(dout)                     # (B, T, E)
        # forward: e = drop_in(e)
        de = L["drop_in"].backward(de)
        # forward: e = embed(idx)
        L["embed"].backward(de)

    # -- generation ------------------------------------------------------
    def init_cache(self, batch_size):
        """A recurrent cache for ``forward_step``: the state after the tokens fed so far."""
        return {"state": None, "batch_size": int(batch_size)}

    def forward_step(self, idx, cache):
        """idx (B, t): the next t tokens -> logits (B, t, V); cache["state"] advances.

        Feeding a sequence in pieces gives the same logits as feeding it whole.
        """
        where = "%s.forward_step" % type(self).__name__
        idx = check_ids(idx, self.vocab_size, where, "idx", ndim=2)
        if idx.shape[0] != cache["batch_size"]:
            raise ValueError("%s: idx has batch size %d, the cache was made for %d"
                             % (where, idx.shape[0], cache["batch_size"]))
        logits, cache["state"] = self._run(idx, cache["state"])
        self._last = None            # a generation step is not differentiated
        return logits

    def reorder_cache(self, cache, index):
        """The cache whose row r continues row index[r] (beam search); the batch axis of
        a state h (B, H) or (L, B, H) is its second-to-last."""
        state = cache["state"]
        if state is not None:
            pick = lambda s: s[..., index, :]                 # noqa: E731
            state = tuple(pick(s) for s in state) if isinstance(state, tuple) else pick(state)
        return {"state": state, "batch_size": len(index)}


class RNNLM(_RecurrentLM):
    """Elman (tanh) RNN language model.  forward(idx (B, T)) -> logits (B, T, V)."""

    def __init__(self, config=None):
        super().__init__(RNNLMConfig() if config is None else config)
        c = self.config
        self._build(lambda rng, dtype: RNN(c.emb_dim, c.hidden, nonlinearity=c.nonlinearity,
                                           rng=rng, dtype=dtype, num_layers=c.num_layers,
                                           dropout=c.dropout))


class LSTMLM(_RecurrentLM):
    """LSTM language model (the model of document 002 section 5, predicting every position)."""

    def __init__(self, config=None):
        super().__init__(LSTMLMConfig() if config is None else config)
        c = self.config
        self._build(lambda rng, dtype: LSTM(c.emb_dim, c.hidden, rng=rng, dtype=dtype,
                                            num_layers=c.num_layers, dropout=c.dropout))


class GRULM(_RecurrentLM):
    """GRU language model (gates r, z, n as PyTorch's nn.GRU)."""

    def __init__(self, config=None):
        super().__init__(GRULMConfig() if config is None else config)
        c = self.config
        self._build(lambda rng, dtype: GRU(c.emb_dim, c.hidden, rng=rng, dtype=dtype,
                                           num_layers=c.num_layers, dropout=c.dropout))


def tbptt_batches(ids, batch_size, block_size):
    """Contiguous batches for stateful (truncated-BPTT) training, in order.

    The token stream ``ids`` (1-D) is cut into ``batch_size`` equal parallel
    streams (row b is the b-th slice of the text); batch k holds tokens
    [k*T, (k+1)*T) of every stream, so row b of batch k+1 continues row b of
    batch k.  Yields ``(x, y)`` int64 arrays (B, T), y = x shifted by one;
    one pass over the text (an epoch).
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise TypeError("tbptt_batches: ids must be a 1-D integer array, got %s %s"
                        % (ids.dtype, ids.shape))
    B, T = int(batch_size), int(block_size)
    if B < 1 or T < 1:
        raise ValueError("tbptt_batches: batch_size and block_size must be >= 1, got %d, %d"
                         % (B, T))
    per_row = (len(ids) - 1) // B                       # tokens per stream (plus one target)
    if per_row < T:
        raise ValueError("tbptt_batches: %d tokens are too few for %d streams of at least "
                         "block_size + 1 = %d tokens" % (len(ids), B, T + 1))
    x_all = ids[:B * per_row].reshape(B, per_row).astype(np.int64)              # (B, per_row)
    y_all = ids[1:B * per_row + 1].reshape(B, per_row).astype(np.int64)
    for k in range(per_row // T):
        yield x_all[:, k * T:(k + 1) * T], y_all[:, k * T:(k + 1) * T]
