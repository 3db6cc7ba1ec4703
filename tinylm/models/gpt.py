"""GPT: a decoder-only Transformer language model, built from tinylm.layers.

For token ids idx of shape (B, T) (T <= block_size)::

    x = tok_emb(idx)                      (B, T, D)    Embedding(V, D)
    x = pos_emb(x)                        (B, T, D)    x + P[0:T], learned positions
    x = drop(x)                           (B, T, D)
    x = block_l(x), l = 0 .. L-1          (B, T, D)    pre-LN TransformerBlock, causal:
                                                       x = x + attn(ln1(x))
                                                       x = x + ff(ln2(x))
    h = ln_f(x)                           (B, T, D)
    logits = head(h)                      (B, T, V)    h W^T; W = tok_emb's table if tied
    loss = cross_entropy(logits, y)       scalar       mean over the B*T targets

``backward()`` runs the same lines in reverse, each layer's backward adding
into its gradients.

Initialisation (GPT-2): every weight matrix N(0, 0.02^2), biases 0, layer
norms (1, 0); the two matrices that write into the residual stream in each
block (attention's out_proj and the feed-forward's fc2) get std
0.02 / sqrt(2 L), so the residual stream's variance does not grow with depth.

Generation: ``init_cache(B)`` / ``forward_step(idx, cache)`` keep each
layer's keys and values (B, H, t, dh), so each new token costs one position
instead of the whole context; the results equal re-running ``forward``.
``decoder(B)`` computes the same steps with the per-step Python cost taken out
(preallocated cache, prepared kernel calls: ``tinylm/models/_gpt_decode.py``);
generation uses it, and ``forward_step`` stays the specification.
"""

import dataclasses
import math

import numpy as np

from tinylm.layers import (Dropout, Embedding, LayerNorm, LearnedPositionalEmbedding, Linear,
                           Sequential, TransformerBlock)
from tinylm.layers.checks import check_ids
from tinylm.models._common import LanguageModel
from tinylm.models._gpt_decode import GPTDecoder
from tinylm.rng import child_rng

__all__ = ["GPTConfig", "GPT"]


@dataclasses.dataclass
class GPTConfig:
    """Size and behaviour of a GPT.

    vocab_size: V, block_size: the longest context (positions 0..block_size-1),
    n_layer: L blocks, n_head: H heads (must divide d_model), d_model: D,
    d_ff: hidden size of the feed-forward (default 4 D), dropout: probability
    after the embeddings and in each block, tie_weights: the output head reuses
    the token embedding table, activation: "gelu" | "gelu_tanh" | "relu",
    dtype: "float32" or "float64", seed: the initialisation (and dropout) seed.
    """
    vocab_size: int = 65
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    d_ff: int = None
    dropout: float = 0.0
    tie_weights: bool = False
    activation: str = "gelu_tanh"
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError("GPTConfig: %s must be a positive integer, got %r" % (name, v))
        if self.d_model % self.n_head:
            raise ValueError("GPTConfig: n_head (%d) must divide d_model (%d)"
                             % (self.n_head, self.d_model))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("GPTConfig: dropout must be in [0, 1), got %r" % (self.dropout,))
        if self.dtype not in ("float32", "float64"):
            raise ValueError("GPTConfig: dtype must be 'float32' or 'float64', got %r"
                             % (self.dtype,))


class GPT(LanguageModel):
    """Decoder-only Transformer LM (see the module docstring for the equations).

    Children: tok_emb, pos_emb, drop, blocks (Sequential of TransformerBlock
    "0".."L-1"), ln_f, head (absent from the parameters when tied).
    forward(idx (B, T) int) -> logits (B, T, V)
    loss(x, y) -> float (mean cross-entropy, nats/token); backward() after it
    (both from :class:`~tinylm.models._common.LanguageModel`).
    """

    def __init__(self, config=None):
        c = config or GPTConfig()
        super().__init__(c)
        dtype = np.dtype(c.dtype)
        rng = np.random.default_rng(c.seed)
        D, L = c.d_model, c.n_layer
        self.add_layer("tok_emb", Embedding(c.vocab_size, D, rng=rng, dtype=dtype,
                                            init_std=0.02))
        self.add_layer("pos_emb", LearnedPositionalEmbedding(c.block_size, D, rng=rng,
                                                             dtype=dtype, init_std=0.02))
        # dropout's own generator, from the seed (the weights' stream is not touched)
        self.add_layer("drop", Dropout(c.dropout, rng=child_rng(c.seed)))
        self.add_layer("blocks", Sequential(*[
            TransformerBlock(D, c.n_head, c.d_ff, dropout=c.dropout, norm_first=True,
                             causal=True, activation=c.activation, rng=rng, dtype=dtype)
            for _ in range(L)]))
        self.add_layer("ln_f", LayerNorm(D, dtype=dtype))
        self.add_layer("head", Linear(D, c.vocab_size, bias=False, rng=rng, dtype=dtype))
        self._init_weights(rng)
        if c.tie_weights:
            self._tie()

    # -- initialisation and weight tying -------------------------------------
    def _init_weights(self, rng):
        """GPT-2 init: N(0, 0.02) matrices, zero biases, scaled residual projections."""
        resid_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p, _ in self.named_parameters():
            if name.startswith(("tok_emb.", "pos_emb.")):
                continue                              # N(0, 0.02) already (init_std)
            if name.startswith("blocks.") and ".ln" in name:
                continue                              # layer norms: weight 1, bias 0
            if name.endswith(".bias"):
                p[...] = 0
            elif name.endswith(("out_proj.weight", "fc2.weight")):
                p[...] = rng.normal(0.0, resid_std, p.shape)
            elif name.endswith(".weight") and p.ndim == 2:
                p[...] = rng.normal(0.0, 0.02, p.shape)

    def _tie(self):
        """head.weight IS tok_emb.weight (same array, same gradient array).

        Both layers' backward passes add into the one gradient, which is the
        gradient of the shared matrix.  named_parameters lists it once (under
        tok_emb.weight), so optimizers update it once.
        """
        head, emb = self.layers["head"], self.layers["tok_emb"]
        head.params["weight"] = emb.params["weight"]
        head.grads["weight"] = emb.grads["weight"]

    def named_parameters(self, prefix=""):
        for name, p, g in super().named_parameters(prefix):
            if self.config.tie_weights and name == prefix + "head.weight":
                continue
            yield name, p, g

    def astype(self, dtype):
        super().astype(dtype)
        self.config.dtype = np.dtype(dtype).name
        if self.config.tie_weights:
            self._tie()
        return self

    # -- forward / backward (checks, loss and its backward: LanguageModel) --
    def _check_length(self, T, start=0):
        if start + T > self.config.block_size:
            raise ValueError("GPT.forward: %d positions but block_size is %d; crop the "
                             "context to the last %d tokens"
                             % (start + T, self.config.block_size, self.config.block_size))

    def _forward(self, idx):
        """idx: (B, T) int, checked -> logits (B, T, V)."""
        L = self.layers
        self._check_length(idx.shape[1])
        x = L["tok_emb"].forward(idx)                 # (B, T, D)
        x = L["pos_emb"].forward(x)                   # (B, T, D) = x + P[0:T]
        x = L["drop"].forward(x)
        x = L["blocks"].forward(x)                    # (B, T, D)
        h = L["ln_f"].forward(x)                      # (B, T, D)
        return L["head"].forward(h)                   # (B, T, V)

    def _backward(self, dlogits):
        L = self.layers
        dh = L["head"].backward(dlogits)              # forward: logits = head(h)
        dx = L["ln_f"].backward(dh)                   # forward: h = ln_f(x)
        dx = L["blocks"].backward(dx)                 # forward: x = blocks(x)
        dx = L["drop"].backward(dx)                   # forward: x = drop(x)
        dx = L["pos_emb"].backward(dx)                # forward: x = x + P[0:T]
        L["tok_emb"].backward(dx)                     # forward: x = E[idx]

    # -- generation with a key/value cache -----------------------------------
    @property
    def max_context(self):
        """The longest context GPT can read: its block_size learned positions."""
        return self.config.block_size

    def init_cache(self, batch_size):
        """An empty cache: the next position, and per block its keys and values (B, H, 0, dh)."""
        dtype = np.dtype(self.config.dtype)
        return {"pos": 0, "layers": [block.empty_cache(batch_size, dtype)
                                     for block in self.layers["blocks"].layers.values()]}

    def forward_step(self, idx, cache):
        """Logits for new tokens idx (B, t) after the cached ones; updates the cache.

        Inference only (no dropout, nothing kept for backward): the same layers
        as :meth:`forward`, each block attending over its cached keys and values
        plus the new ones (``TransformerBlock.forward_step``).
        """
        L = self.layers
        start = cache["pos"]
        idx = check_ids(idx, self.vocab_size, "GPT.forward", "idx", ndim=2)
        self._check_length(idx.shape[1], start)
        x = L["tok_emb"].forward(idx)                             # (B, t, D)
        x = L["pos_emb"].forward(x, start=start)                  # x + P[start:start+t]
        for block, block_cache in zip(L["blocks"].layers.values(), cache["layers"]):
            x = block.forward_step(x, block_cache)                # (B, t, D); cache grows
        cache["pos"] = start + idx.shape[1]
        return L["head"].forward(L["ln_f"].forward(x))            # (B, t, V)

    def decoder(self, batch_size):
        """A :class:`~tinylm.models._gpt_decode.GPTDecoder`: the same steps as
        :meth:`forward_step`, faster; it reads the weights now (inference only).

        None for a subclass that overrides forward_step: the decoder computes
        GPT's own equations, so such a model is stepped by its forward_step.
        """
        if type(self).forward_step is not GPT.forward_step:
            return None
        return GPTDecoder(self, batch_size)
