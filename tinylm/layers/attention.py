"""Attention: scaled dot-product, multi-head, and the RNN-era additive / dot forms.

Scaled dot-product attention, for queries q (..., Tq, d), keys k and values v
(..., Tk, d)::

    S = scale * q k^T                    (..., Tq, Tk)   scale = 1/sqrt(d)
    S[masked] = -inf                     (padding mask and/or causal mask)
    P = softmax(S) over the keys         (..., Tq, Tk)
    O = P v                              (..., Tq, d)

Backward, with dO given::

    dv = P^T dO                          (..., Tk, d)
    dP = dO v^T                          (..., Tq, Tk)
    dS = P * (dP - rowsum(dP * P))       (softmax backward; masked entries have P = 0)
    dq = scale * dS k                    (..., Tq, d)
    dk = scale * dS^T q                  (..., Tk, d)

(rowsum(dP * P) equals rowsum(dO * O), which is what the fused kernel uses.)

Causal mask: query i may see key j iff j <= i + (Tk - Tq) (the usual
lower triangle when Tq == Tk; with a KV cache the new queries see every cached
key).  A query row that can see no key at all outputs 0 (PyTorch gives NaN).

Two paths compute the same thing: with no padding mask (and no request for
the weights) :class:`ScaledDotProductAttention` calls the fused kernel
``tinylm.kernels.attention`` / ``attention_backward`` (C or NumPy backend),
which never stores P; otherwise it runs the NumPy code above and keeps P.

Multi-head attention splits d_model into H heads of size d_model / H::

    Q = x W_q^T + b_q,  K = m W_k^T + b_k,  V = m W_v^T + b_v     (m = x for self-attention)
    head_h = attention(Q_h, K_h, V_h)
    y = concat_h(head_h) W_o^T + b_o

Additive (Bahdanau) attention of one query vector s over encoder states h_t::

    e_t = v^T tanh(W s + U h_t + b)      a = softmax(e)      context = sum_t a_t h_t
"""

import math

import numpy as np

from tinylm import kernels
from tinylm.layers.activations import Tanh
from tinylm.layers.base import Layer
from tinylm.layers.core import Linear
from tinylm.layers.checks import check_backward_ready, check_float
from tinylm.rng import default_rng

__all__ = ["ScaledDotProductAttention", "MultiHeadAttention", "AdditiveAttention",
           "DotProductAttention"]


def _check_mask(where, mask, shape):
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError("%s: mask must be a bool array, got dtype %s" % (where, mask.dtype))
    try:
        np.broadcast_shapes(mask.shape, shape)
    except ValueError:
        raise ValueError("%s: mask of shape %s does not broadcast to the scores' shape %s"
                         % (where, mask.shape, shape)) from None
    return mask


def _padding_to_mask(where, key_padding_mask, B, Tk):
    """(B, Tk) bool, True = padding  ->  (B, 1, 1, Tk) bool, True = may attend."""
    kpm = np.asarray(key_padding_mask)
    if kpm.dtype != np.bool_ or kpm.shape != (B, Tk):
        raise ValueError("%s: key_padding_mask must be a bool array of shape %s (True = "
                         "padding), got %s %s" % (where, (B, Tk), kpm.dtype, kpm.shape))
    return ~kpm[:, None, None, :]


def _check_kv_cache(where, cache, x, H, dh, D):
    if not (isinstance(cache, dict) and "k" in cache and "v" in cache):
        raise TypeError("%s: cache must be a dict with 'k' and 'v' (see empty_cache), got %s"
                        % (where, type(cache).__name__))
    x = check_float(x, where, "x", cache["k"].dtype, 3, D)
    want = (x.shape[0], H, cache["k"].shape[2], dh)
    if x.ndim != 3 or cache["k"].shape != want or cache["v"].shape != want:
        raise ValueError("%s: x %s and the cache's k %s, v %s do not fit: expected x (B, t, %d) "
                         "and k, v (B, %d, t0, %d)" % (where, x.shape, cache["k"].shape,
                                                        cache["v"].shape, D, H, dh))


class ScaledDotProductAttention(Layer):
    """softmax(scale * q k^T, masked) v, without parameters.

    forward(q (..., Tq, d), k (..., Tk, d), v (..., Tk, d), mask=None,
            return_weights=False) -> o (..., Tq, d)   [, P (..., Tq, Tk)]
    mask: bool, broadcastable to (..., Tq, Tk), True = the query may attend to
        that key (PyTorch's bool attn_mask convention).
    causal (constructor): also hide future keys.  scale: default 1/sqrt(d).
    backward(do (..., Tq, d)) -> (dq, dk, dv).
    ``self.path`` tells which path the last forward took: "fused" or "numpy".
    """

    def __init__(self, causal=False, scale=None):
        super().__init__()
        self.causal, self.scale = bool(causal), scale
        self._cache = None
        self.path = None

    def forward(self, q, k, v, mask=None, return_weights=False):
        where = "ScaledDotProductAttention.forward"
        q = check_float(q, where, "q", None, 2)
        k = check_float(k, where, "k", q.dtype, 2)
        v = check_float(v, where, "v", q.dtype, 2)
        if k.shape != v.shape or q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
            raise ValueError("%s: q %s, k %s, v %s must agree in leading dims and size d; "
                             "k and v must have the same shape" % (where, q.shape, k.shape, v.shape))
        d = q.shape[-1]
        scale = (1.0 / math.sqrt(d)) if self.scale is None else float(self.scale)
        if mask is None and not return_weights:
            o, lse = kernels.attention(q, k, v, causal=self.causal, scale=scale)
            self._cache = ("fused", q, k, v, o, lse, scale)
            self.path = "fused"
            return o
        t = q.dtype.type
        s = t(scale) * (q @ np.swapaxes(k, -1, -2))                     # (..., Tq, Tk)
        allowed = np.ones(s.shape, bool)
        if mask is not None:
            allowed &= _check_mask(where, mask, s.shape)
        if self.causal:
            allowed &= kernels.causal_mask(q.shape[-2], k.shape[-2])
        p, _ = kernels.masked_softmax(s, allowed)                       # P = softmax(S[masked] = -inf)
        o = p @ v                                                       # O = P v
        self._cache = ("numpy", q, k, v, p, scale)
        self.path = "numpy"
        return (o, p) if return_weights else o

    def backward(self, do):
        where = "ScaledDotProductAttention.backward"
        check_backward_ready(where, self._cache)
        q = self._cache[1]
        do = check_float(do, where, "do", q.dtype, 2)
        if do.shape != q.shape[:-2] + (q.shape[-2], self._cache[3].shape[-1]):
            raise ValueError("%s: do has shape %s, expected %s" % (where, do.shape, q.shape))
        if self._cache[0] == "fused":
            _, q, k, v, o, lse, scale = self._cache
            return kernels.attention_backward(q, k, v, o, lse, np.ascontiguousarray(do),
                                              causal=self.causal, scale=scale)
        _, q, k, v, p, scale = self._cache
        t = q.dtype.type
        ### BEGIN SOLUTION
        # forward: O = P v  ->  dv = P^T dO,  dP = dO v^T
        dv = np.swapaxes(p, -1, -2) @ do                                # (..., Tk, d)
        dp = do @ np.swapaxes(v, -1, -2)                                # (..., Tq, Tk)
        # forward: P = softmax(S)  ->  dS = P * (dP - rowsum(dP * P))
        ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))          # (..., Tq, Tk)
        # forward: S[masked] = -inf  ->  no gradient there (P = 0 already gives dS = 0)
        # forward: S = scale * q k^T  ->  dq = scale * dS k,  dk = scale * dS^T q
        dq = t(scale) * (ds @ k)                                        # (..., Tq, d)
        dk = t(scale) * (np.swapaxes(ds, -1, -2) @ q)                   # (..., Tk, d)
        ### END SOLUTION
        return dq, dk, dv


class MultiHeadAttention(Layer):
    """Multi-head attention: self-attention, or cross-attention over a memory.

    Children: q_proj, k_proj, v_proj, out_proj (Linear d_model -> d_model) and
    attn (ScaledDotProductAttention).  num_heads must divide d_model.

    forward(x (B, Tq, D), memory=None, key_padding_mask=None, return_weights=False)
        memory (B, Tk, D): keys and values come from it (cross-attention);
            None: from x (self-attention, Tk = Tq).
        key_padding_mask (B, Tk) bool, True = padding, never attended to
            (PyTorch's convention).
        causal (constructor): query i sees keys j <= i + (Tk - Tq).
        -> y (B, Tq, D)   [, weights (B, H, Tq, Tk) when return_weights]
    backward(dy (B, Tq, D)) -> dx (self-attention) or (dx, dmemory) (cross).
    Without a padding mask (and without return_weights) the heads run on the
    fused attention kernel.
    """

    def __init__(self, d_model, num_heads, bias=True, causal=False, rng=None, dtype=np.float32):
        super().__init__()
        if d_model < 1 or num_heads < 1 or d_model % num_heads:
            raise ValueError("MultiHeadAttention: num_heads (%d) must divide d_model (%d)"
                             % (num_heads, d_model))
        rng = default_rng(rng)
        self.d_model, self.num_heads = int(d_model), int(num_heads)
        self.head_dim = d_model // num_heads
        self.causal = bool(causal)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            self.add_layer(name, Linear(d_model, d_model, bias=bias, rng=rng, dtype=dtype))
        self.add_layer("attn", ScaledDotProductAttention(causal=causal))
        self._cache = None

    def split_heads(self, t):
        """(B, T, D) -> (B, H, T, dh), contiguous."""
        B, T, _ = t.shape
        return np.ascontiguousarray(t.reshape(B, T, self.num_heads, self.head_dim)
                                    .transpose(0, 2, 1, 3))

    def merge_heads(self, t):
        """(B, H, T, dh) -> (B, T, D), contiguous."""
        B, H, T, dh = t.shape
        return np.ascontiguousarray(t.transpose(0, 2, 1, 3)).reshape(B, T, H * dh)

    _split, _merge = split_heads, merge_heads      # old names, until models/gpt.py moves

    def forward(self, x, memory=None, key_padding_mask=None, return_weights=False):
        where = "MultiHeadAttention.forward"
        dtype = self.layers["q_proj"].params["weight"].dtype
        x = check_float(x, where, "x", dtype, 3, self.d_model)
        if x.ndim != 3:
            raise ValueError("%s: x must be (batch, time, d_model), got %s" % (where, x.shape))
        cross = memory is not None
        if cross:
            memory = check_float(memory, where, "memory", dtype, 3, self.d_model)
            if memory.ndim != 3 or memory.shape[0] != x.shape[0]:
                raise ValueError("%s: memory must be (batch=%d, time, d_model), got %s"
                                 % (where, x.shape[0], memory.shape))
        kv = memory if cross else x
        mask = None
        if key_padding_mask is not None:
            mask = _padding_to_mask(where, key_padding_mask, kv.shape[0], kv.shape[1])
        q = self.split_heads(self.layers["q_proj"].forward(x))             # (B, H, Tq, dh)
        k = self.split_heads(self.layers["k_proj"].forward(kv))            # (B, H, Tk, dh)
        v = self.split_heads(self.layers["v_proj"].forward(kv))            # (B, H, Tk, dh)
        res = self.layers["attn"].forward(q, k, v, mask=mask, return_weights=return_weights)
        o, weights = res if return_weights else (res, None)           # (B, H, Tq, dh)
        y = self.layers["out_proj"].forward(self.merge_heads(o))           # (B, Tq, D)
        self._cache = cross
        return (y, weights) if return_weights else y

    def backward(self, dy):
        check_backward_ready("MultiHeadAttention.backward", self._cache)
        cross = self._cache
        # forward: y = out_proj(merge(o))
        do = self.split_heads(self.layers["out_proj"].backward(dy))        # (B, H, Tq, dh)
        # forward: o = attention(q, k, v)
        dq, dk, dv = self.layers["attn"].backward(do)
        # forward: q = split(q_proj(x)), k = split(k_proj(kv)), v = split(v_proj(kv))
        dx = self.layers["q_proj"].backward(self.merge_heads(dq))
        dkv = (self.layers["k_proj"].backward(self.merge_heads(dk))
               + self.layers["v_proj"].backward(self.merge_heads(dv)))
        if cross:
            return dx, dkv
        return dx + dkv                                               # kv is x: gradients add


    def empty_cache(self, batch_size, dtype=None):
        """A KV cache holding no position yet: {"k", "v"} of shape (B, H, 0, dh)."""
        dtype = self.layers["q_proj"].params["weight"].dtype if dtype is None else dtype
        empty = np.zeros((batch_size, self.num_heads, 0, self.head_dim), dtype)
        return {"k": empty, "v": empty.copy()}

    def forward_step(self, x, cache):
        """Self-attention of new positions x (B, t, D) over the cached ones and themselves.

        cache: {"k": (B, H, t0, dh), "v": (B, H, t0, dh)} from :meth:`empty_cache`
        or earlier steps; it is extended in place to t0 + t positions.  With
        ``causal``, new query i sees keys j <= t0 + i.  Inference only: the
        layer keeps nothing for backward.  Returns y (B, t, D).
        """
        L = self.layers
        _check_kv_cache("MultiHeadAttention.forward_step", cache, x, self.num_heads,
                        self.head_dim, self.d_model)
        q = self.split_heads(L["q_proj"].forward(x))                  # (B, H, t, dh)
        cache["k"] = np.concatenate([cache["k"], self.split_heads(L["k_proj"].forward(x))],
                                    axis=2)                           # (B, H, t0 + t, dh)
        cache["v"] = np.concatenate([cache["v"], self.split_heads(L["v_proj"].forward(x))],
                                    axis=2)
        o = L["attn"].forward(q, cache["k"], cache["v"])              # (B, H, t, dh)
        self._cache = None                                            # no backward after a step
        return L["out_proj"].forward(self.merge_heads(o))             # (B, t, D)


class AdditiveAttention(Layer):
    """Bahdanau attention of a query vector over encoder states (used as keys and values).

    Children: query_proj Linear(query_size, attn_size, bias=False),
    key_proj Linear(key_size, attn_size) and score Linear(attn_size, 1, bias=False)
    (its weight is the vector v).

    forward(query (B, Q), keys (B, T, K), key_padding_mask=None (B, T) bool,
            True = padding, return_weights=False)
        -> context (B, K)  [, weights (B, T)]
    backward(dcontext (B, K)) -> (dquery (B, Q), dkeys (B, T, K)).
    """

    def __init__(self, query_size, key_size, attn_size, rng=None, dtype=np.float32):
        super().__init__()
        rng = default_rng(rng)
        self.add_layer("query_proj", Linear(query_size, attn_size, bias=False, rng=rng, dtype=dtype))
        self.add_layer("key_proj", Linear(key_size, attn_size, rng=rng, dtype=dtype))
        self.add_layer("tanh", Tanh())
        self.add_layer("score", Linear(attn_size, 1, bias=False, rng=rng, dtype=dtype))
        self.query_size, self.key_size = int(query_size), int(key_size)
        self._cache = None

    def forward(self, query, keys, key_padding_mask=None, return_weights=False):
        where = "AdditiveAttention.forward"
        dtype = self.layers["score"].params["weight"].dtype
        query = check_float(query, where, "query", dtype, 2, self.query_size)
        keys = check_float(keys, where, "keys", dtype, 3, self.key_size)
        if query.ndim != 2 or keys.ndim != 3 or keys.shape[0] != query.shape[0]:
            raise ValueError("%s: query must be (B, Q) and keys (B, T, K), got %s and %s"
                             % (where, query.shape, keys.shape))
        B, T, _ = keys.shape
        qp = self.layers["query_proj"].forward(query)                  # (B, A) = W s
        kp = self.layers["key_proj"].forward(keys)                     # (B, T, A) = U h_t + b
        a = self.layers["tanh"].forward(qp[:, None, :] + kp)           # (B, T, A)
        e = self.layers["score"].forward(a)[..., 0]                    # (B, T) = v^T a
        allowed = None
        if key_padding_mask is not None:
            allowed = _padding_to_mask(where, key_padding_mask, B, T)[:, 0, 0, :]
        w, _ = kernels.masked_softmax(e, allowed)                      # (B, T) = softmax(e)
        context = np.einsum("bt,btk->bk", w, keys)                     # (B, K)
        self._cache = (keys, w)
        return (context, w) if return_weights else context

    def backward(self, dcontext):
        where = "AdditiveAttention.backward"
        check_backward_ready(where, self._cache)
        keys, w = self._cache
        dcontext = check_float(dcontext, where, "dcontext", keys.dtype, 2, self.key_size)
        # forward: context = sum_t w_t h_t  ->  dw_t = dcontext . h_t,  dkeys_t = w_t dcontext
        dw = np.einsum("bk,btk->bt", dcontext, keys)                   # (B, T)
        dkeys = w[:, :, None] * dcontext[:, None, :]                   # (B, T, K)
        # forward: w = softmax(e)  ->  de = w * (dw - sum(dw * w))
        de = w * (dw - np.sum(dw * w, axis=-1, keepdims=True))         # (B, T)
        # forward: e = v^T a,  a = tanh(qp + kp)
        da = self.layers["score"].backward(de[..., None])              # (B, T, A)
        dpre = self.layers["tanh"].backward(da)                        # (B, T, A)
        # forward: qp broadcast over t  ->  dqp = sum_t dpre;  kp = key_proj(keys)
        dquery = self.layers["query_proj"].backward(dpre.sum(axis=1))
        dkeys = dkeys + self.layers["key_proj"].backward(dpre)
        return dquery, dkeys


class DotProductAttention(Layer):
    """Luong "dot" attention of a query vector over encoder states.

    score_t = scale * (s . h_t), weights = softmax(score), context = sum_t w_t h_t;
    scale defaults to 1 (Luong's form).  It is scaled dot-product attention
    with one query, so it runs on :class:`ScaledDotProductAttention` (child attn).

    forward(query (B, K), keys (B, T, K), key_padding_mask=None, return_weights=False)
        -> context (B, K)  [, weights (B, T)]
    backward(dcontext (B, K)) -> (dquery (B, K), dkeys (B, T, K)).
    """

    def __init__(self, scale=1.0):
        super().__init__()
        self.add_layer("attn", ScaledDotProductAttention(causal=False, scale=scale))

    def forward(self, query, keys, key_padding_mask=None, return_weights=False):
        where = "DotProductAttention.forward"
        query = check_float(query, where, "query", None, 2)
        keys = check_float(keys, where, "keys", query.dtype, 3)
        if query.ndim != 2 or keys.shape[0] != query.shape[0] or keys.shape[2] != query.shape[1]:
            raise ValueError("%s: query must be (B, K) and keys (B, T, K), got %s and %s"
                             % (where, query.shape, keys.shape))
        mask = None
        if key_padding_mask is not None:
            mask = _padding_to_mask(where, key_padding_mask, keys.shape[0], keys.shape[1])[:, 0]
        res = self.layers["attn"].forward(query[:, None, :], keys, keys, mask=mask,
                                          return_weights=return_weights)
        if return_weights:
            return res[0][:, 0], res[1][:, 0]
        return res[:, 0]

    def backward(self, dcontext):
        dq, dk, dv = self.layers["attn"].backward(dcontext[:, None, :])
        # keys serve as both k and v: their gradients add
        return dq[:, 0], dk + dv
