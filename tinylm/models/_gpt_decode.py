"""GPT's generation step, with the per-step Python cost taken out.

:meth:`GPT.forward_step` is the readable version and the specification:
each block's layers run on the new token and the KV cache grows by
concatenation.  Generating one token at a time, every call there is on a
(1, D) row, so the step's time is spent in Python - argument checks, new
arrays, cffi pointers, cache copies - and hardly in arithmetic.
:class:`GPTDecoder` computes the same logits with:

* a preallocated KV cache per block, (B, H, block_size, dh): a step writes
  one position into it instead of copying the whole cache;
* q, k, v projected by one matmul with the three weights side by side
  (D, 3D), all weights stored transposed for the one-row product;
* prepared kernel calls (``tinylm.kernels.prepare_*``): arrays checked and
  C pointers made once, when the decoder is built; a tiny product runs on one
  thread (the OpenMP fork/join would cost more than it saves);
* the residual additions done by the matmuls themselves (``x += o W^T``).

The step, for the new tokens ids (B,) at position t (the block's equations
of ``tinylm/models/gpt.py``, pre-LN)::

    x = E[ids] + P[t]                                (B, D)
    per block:
        h = ln1(x);  [q k v] = h [Wq Wk Wv]^T + b    (B, 3D)
        K[:, :, t] = k;  V[:, :, t] = v               (B, H, dh) into the cache
        o = attention_decode(q, K[:, :, :t+1], V[:, :, :t+1])     (B, H, dh)
        x += o Wo^T + bo
        x += act(ln2(x) W1^T + b1) W2^T + b2
    logits = ln_f(x) Wh^T                            (B, V)

The prompt is run by :meth:`GPT.forward_step` itself (one call for all its
positions) and its keys and values are copied into the cache.  The weights
are read when the decoder is built: build a new one after training.
"""

import numpy as np

from tinylm import kernels
from tinylm.layers.checks import check_ids

__all__ = ["GPTDecoder"]


class GPTDecoder:
    """Generation steps for a GPT: ``prefill(idx)``, then ``step(ids)`` per new token.

    prefill(idx (B, T) int) -> logits (B, V) after the last prompt token.
    step(ids (B,) int) -> logits (B, V) after appending ids to each row.
    reorder(rows (B,) int): row r continues row rows[r] from now on (beam search).
    Both return a new array; the results equal GPT.forward_step's last row.
    """

    def __init__(self, model, batch_size):
        c = model.config
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError("GPTDecoder: batch_size must be a positive integer, got %r"
                             % (batch_size,))
        self.model = model
        dtype = np.dtype(c.dtype)
        B, D, H = int(batch_size), c.d_model, c.n_head
        dh, cap, V = D // H, c.block_size, c.vocab_size
        self.B, self.D, self.H, self.capacity, self.vocab_size = B, D, H, cap, V
        self.pos = 0
        L = model.layers
        param = lambda layer, name: np.ascontiguousarray(layer.params[name], dtype)
        weight_t = lambda layer: np.ascontiguousarray(layer.params["weight"].T, dtype)
        self._emb = param(L["tok_emb"], "weight")                    # (V, D)
        self._pos = param(L["pos_emb"], "weight")                    # (block_size, D)

        self.x = np.zeros((B, D), dtype)                             # the residual stream
        h = np.zeros((B, D), dtype)                                  # a normalised x
        self._caches, self._blocks = [], []
        for block in L["blocks"].layers.values():
            attn, ff = block.layers["self_attn"], block.layers["ff"]
            proj = [attn.layers[n] for n in ("q_proj", "k_proj", "v_proj")]
            w_qkv = np.ascontiguousarray(np.concatenate([weight_t(p) for p in proj], axis=1))
            b_qkv = np.concatenate([param(p, "bias") for p in proj])             # (3D,)
            qkv = np.zeros((B, 3 * D), dtype)
            heads = lambda a: a.reshape(B, H, dh)                    # (B, D) -> (B, H, dh)
            # q as (B*H, dh) rows for the kernel: a view of qkv when B = 1, else a copy
            q = qkv[:, :D].reshape(B * H, dh) if B == 1 else np.zeros((B * H, dh), dtype)
            o = np.zeros((B * H, dh), dtype)                         # = (B, D) by rows
            k_cache = np.zeros((B, H, cap, dh), dtype)
            v_cache = np.zeros((B, H, cap, dh), dtype)
            f = np.zeros((B, ff.layers["fc1"].out_features), dtype)
            g = np.zeros_like(f)
            ln1, ln2 = block.layers["ln1"], block.layers["ln2"]
            act = ff.layers["act"]
            self._caches.append((k_cache, v_cache))
            self._blocks.append(dict(
                ln1=kernels.prepare_layernorm(self.x, param(ln1, "weight"), param(ln1, "bias"),
                                              h, ln1.eps),
                qkv=kernels.prepare_linear(h, w_qkv, b_qkv, qkv),
                q_new=heads(qkv[:, :D]), k_new=heads(qkv[:, D:2 * D]),
                v_new=heads(qkv[:, 2 * D:]), q=q, copy_q=B > 1,
                k_cache=k_cache, v_cache=v_cache,
                attend=kernels.prepare_attention_decode(
                    q, k_cache.reshape(B * H, cap, dh), v_cache.reshape(B * H, cap, dh), o),
                out_proj=kernels.prepare_linear(o.reshape(B, D), weight_t(attn.layers["out_proj"]),
                                                param(attn.layers["out_proj"], "bias"), self.x,
                                                accumulate=True),
                ln2=kernels.prepare_layernorm(self.x, param(ln2, "weight"), param(ln2, "bias"),
                                              h, ln2.eps),
                fc1=kernels.prepare_linear(h, weight_t(ff.layers["fc1"]),
                                           param(ff.layers["fc1"], "bias"), f),
                act=self._prepare_activation(act, f, g),
                fc2=kernels.prepare_linear(g, weight_t(ff.layers["fc2"]),
                                           param(ff.layers["fc2"], "bias"), self.x,
                                           accumulate=True)))
        ln_f = L["ln_f"]
        self.logits = np.zeros((B, V), dtype)
        self._ln_f = kernels.prepare_layernorm(self.x, param(ln_f, "weight"),
                                               param(ln_f, "bias"), h, ln_f.eps)
        self._head = kernels.prepare_linear(h, weight_t(L["head"]), None, self.logits)

    @staticmethod
    def _prepare_activation(act, f, g):
        """g = act(f) for the feed-forward's activation layer (GELU or ReLU)."""
        approximate = getattr(act, "approximate", None)
        if approximate is not None:
            return kernels.prepare_gelu(f, g, approximate)
        return lambda: np.maximum(f, 0, out=g)                      # ReLU

    # -- the steps ---------------------------------------------------------------
    def prefill(self, idx):
        """Run the prompt idx (B, T) with GPT.forward_step; keep its keys and values."""
        idx = np.asarray(idx)
        if idx.ndim != 2 or idx.shape[0] != self.B:
            raise ValueError("GPTDecoder.prefill: idx must be (%d, T) token ids, got shape %s"
                             % (self.B, idx.shape))
        cache = self.model.init_cache(self.B)
        logits = self.model.forward_step(idx, cache)[:, -1]          # checks ids and length
        T = cache["pos"]
        for (k_cache, v_cache), layer in zip(self._caches, cache["layers"]):
            k_cache[:, :, :T] = layer["k"]
            v_cache[:, :, :T] = layer["v"]
        self.pos = T
        return np.array(logits)

    def step(self, ids):
        """Append one token per row, ids (B,); returns the next logits (B, V)."""
        t = self.pos
        if t >= self.capacity:
            raise ValueError("GPT.forward: %d positions but block_size is %d; crop the "
                             "context to the last %d tokens"
                             % (t + 1, self.capacity, self.capacity))
        ids = check_ids(ids, self.vocab_size, "GPTDecoder.step", "ids", ndim=1)
        if ids.shape != (self.B,):
            raise ValueError("GPTDecoder.step: ids must hold %d token ids (one per row), got "
                             "shape %s" % (self.B, ids.shape))
        x = self.x
        np.take(self._emb, ids, axis=0, out=x)                       # x = E[ids]
        x += self._pos[t]                                            # + P[t]
        for blk in self._blocks:
            blk["ln1"]()                                             # h = ln1(x)
            blk["qkv"]()                                             # [q k v] = h W^T + b
            blk["k_cache"][:, :, t] = blk["k_new"]                   # the cache gains
            blk["v_cache"][:, :, t] = blk["v_new"]                   # position t
            if blk["copy_q"]:
                blk["q"].reshape(blk["q_new"].shape)[...] = blk["q_new"]
            blk["attend"](t + 1)                                     # o over keys 0..t
            blk["out_proj"]()                                        # x += o Wo^T + bo
            blk["ln2"]()                                             # h = ln2(x)
            blk["fc1"]()                                             # f = h W1^T + b1
            blk["act"]()                                             # g = act(f)
            blk["fc2"]()                                             # x += g W2^T + b2
        self._ln_f()                                                 # h = ln_f(x)
        self._head()                                                 # logits = h Wh^T
        self.pos = t + 1
        return self.logits.copy()

    def reorder(self, rows):
        """Row r of the cache becomes row rows[r] (beam search re-ranking)."""
        rows = np.asarray(rows)
        t = self.pos
        for k_cache, v_cache in self._caches:
            k_cache[:, :, :t] = k_cache[rows, :, :t]
            v_cache[:, :, :t] = v_cache[rows, :, :t]
