"""Tiny fixed language models for the generation tests (no training, exact logits)."""

import numpy as np

from tinylm.layers.base import Layer


class ToyLM(Layer):
    """A fixed random LM whose logits depend on the last two tokens.

    forward(idx): (B, T) -> (B, T, V).  No cache, so generation re-runs forward;
    ``calls`` counts the forward passes.
    """

    def __init__(self, V, seed=0, scale=3.0):
        super().__init__()
        self.table = np.random.default_rng(seed).standard_normal((V, V, V)) * scale
        self.V = V
        self.calls = 0

    def forward(self, idx):
        self.calls += 1
        idx = np.asarray(idx)
        prev = np.concatenate([idx[:, :1], idx[:, :-1]], axis=1)
        return self.table[prev, idx]                                 # (B, T, V)


class CachedToyLM(ToyLM):
    """The same LM with a step interface (cache = the last token of each row)."""

    def init_cache(self, batch):
        return {"last": None}

    def forward_step(self, idx, cache):
        idx = np.asarray(idx)
        first = idx[:, :1] if cache["last"] is None else cache["last"]
        prev = np.concatenate([first, idx[:, :-1]], axis=1)
        cache["last"] = idx[:, -1:]
        return self.table[prev, idx]
