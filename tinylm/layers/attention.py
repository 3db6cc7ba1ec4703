"""Attention: scaled dot-product, multi-head, and the RNN-era additive / dot forms.

Scaled dot-product attention, for queries q (..., Tq, d), keys k and values v
(..., Tk, d)::

    S = scale * q k^T                    (..., Tq, Tk)   scale = 1/sqrt(d)
    S[masked] = -inf                     (padding mask and/or causal mask)
    P = softmax(S) over the keys         (..., Tq, Tk)
    O = P v                              (..., Tq, d)

### BEGIN ANSWER
Backward, with dO given::

    dv = P^T dO                          (..., Tk, d)
    dP = dO v^T                          (..., Tq, Tk)
    dS = P * (dP - rowsum(dP * P))       (softmax backward; masked entries have P = 0)
    dq = scale * dS k                    (..., Tq, d)
    dk = scale * dS^T q                  (..., Tk, d)

(rowsum(dP * P) equals rowsum(dO * O), which is what the fused kernel uses.)
### END ANSWER

Causal mask: query i may see key j iff j <= i + (Tk - Tq) (the usual
lower triangle when Tq == Tk; with a KV cache the new queries see every cached
key).  A query row that can see no key at all outputs 0 (PyTorch gives NaN).

Two paths compute the same thing: with no padding mask (and no request for
the weights) :class:`ScaledDotProductAttention` calls the fused kernel
``tinylm.kernels.attention`` / ``attention_backward`` (C or NumPy backend),
which never stores P; otherwise it runs the NumPy code above and keeps P.
(A padding mask that only hides the last keys of each batch row, as in a
right-padded batch of sentences, is plain attention over the first keys of
each row: each row then runs on the fused kernel.)
Both use the kernels' masking helpers (``causal_mask``, ``masked_softmax``),
so the mask means the same thing on either path.

Multi-head attention splits d_model into H heads of size d_model / H::

    Q = x W_q^T + b_q,  K = m W_k^T + b_k,  V = m W_v^T + b_v     (m = x for self-attention)
    head_h = attention(Q_h, K_h, V_h)
    y = concat_h(head_h) W_o^T + b_o

On the C backend, self-attention computes Q, K and V with one matrix product
over the three stacked weights (``MultiHeadAttention._qkv_packed_forward``), a
fast path with the same numbers as the three Linear layers.

For generation, :meth:`MultiHeadAttention.forward_step` computes Q, K, V for
the new positions only and appends K, V to a cache of the earlier ones (a KV
cache); the causal mask's offset Tk - Tq lets the new queries see them all.

Additive (Bahdanau) attention of one query vector s over encoder states h_t::

    e_t = v^T tanh(W s + U h_t + b)      a = softmax(e)      context = sum_t a_t h_t
"""

import math

import numpy as np

from tinylm import kernels
from tinylm.layers.activations import Tanh
from tinylm.layers.base import Layer
from tinylm.layers.checks import Float, Grad, checked
from tinylm.layers.core import Linear
from tinylm.rng import default_rng

__all__ = ["ScaledDotProductAttention", "MultiHeadAttention", "AdditiveAttention",
           "DotProductAttention"]


# -- input checks that relate several arguments --------------------------------

def _check_padding(where, key_padding_mask, B, Tk):
    if key_padding_mask is None:
        return
    kpm = np.asarray(key_padding_mask)
    if kpm.dtype != np.bool_ or kpm.shape != (B, Tk):
        raise ValueError("%s: key_padding_mask must be a bool array of shape %s (True = "
                         "padding), got %s %s" % (where, (B, Tk), kpm.dtype, kpm.shape))


def _may_attend(key_padding_mask):
    """(B, Tk) bool, True = padding  ->  (B, 1, 1, Tk) bool, True = may attend."""
    return ~np.asarray(key_padding_mask)[:, None, None, :]


def _key_lengths(mask, q, k):
    """The number of visible keys per batch row, if ``mask`` hides only a tail
    of the keys of each row, the same for every head and query; else None.

    That is the mask of a right-padded batch, (B, 1, 1, Tk) from
    :func:`_may_attend`: row b sees keys 0 .. n_b - 1 (n_b >= 1)."""
    mask = np.asarray(mask)
    B, Tk = q.shape[0], k.shape[-2]
    if q.ndim < 3 or mask.ndim != q.ndim or mask.shape[0] != B or mask.shape[-1] != Tk \
            or any(n != 1 for n in mask.shape[1:-1]):
        return None
    rows = mask.reshape(B, Tk)
    lengths = rows.sum(axis=1)
    if lengths.min() < 1 or not np.array_equal(rows, np.arange(Tk) < lengths[:, None]):
        return None
    return [int(n) for n in lengths]


def _check_qkv(layer, where, a):
    q, k, v, mask = a["q"], a["k"], a["v"], a["mask"]
    if k.shape != v.shape or q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError("%s: q %s, k %s, v %s must agree in leading dims and size d; "
                         "k and v must have the same shape" % (where, q.shape, k.shape, v.shape))
    if mask is not None:
        mask, scores = np.asarray(mask), q.shape[:-1] + k.shape[-2:-1]
        if mask.dtype != np.bool_:
            raise TypeError("%s: mask must be a bool array, got dtype %s" % (where, mask.dtype))
        try:
            np.broadcast_shapes(mask.shape, scores)
        except ValueError:
            raise ValueError("%s: mask of shape %s does not broadcast to the scores' shape %s"
                             % (where, mask.shape, scores)) from None


def _check_memory(layer, where, a):
    x, memory = a["x"], a["memory"]
    if memory is not None and memory.shape[0] != x.shape[0]:
        raise ValueError("%s: memory must be (batch=%d, time, d_model), got %s"
                         % (where, x.shape[0], memory.shape))
    kv = x if memory is None else memory
    _check_padding(where, a["key_padding_mask"], kv.shape[0], kv.shape[1])


def _check_kv_cache(layer, where, a):
    x, cache = a["x"], a["cache"]
    if not (isinstance(cache, dict) and "k" in cache and "v" in cache):
        raise TypeError("%s: cache must be a dict with 'k' and 'v' (see empty_cache), got %s"
                        % (where, type(cache).__name__))
    k, v = np.asarray(cache["k"]), np.asarray(cache["v"])
    want = (x.shape[0], layer.num_heads, k.shape[2] if k.ndim == 4 else "t0", layer.head_dim)
    if k.shape != want or v.shape != want:
        raise ValueError("%s: x %s and the cache's k %s, v %s do not fit: expected k, v "
                         "(B, %d, t0, %d)" % (where, x.shape, k.shape, v.shape,
                                              layer.num_heads, layer.head_dim))
    if k.dtype != x.dtype or v.dtype != x.dtype:
        raise TypeError("%s: the cache holds %s/%s but x is %s (see empty_cache)"
                        % (where, k.dtype, v.dtype, x.dtype))


def _check_query_keys(layer, where, a):
    query, keys = a["query"], a["keys"]
    if keys.shape[0] != query.shape[0] or (layer.same_size and keys.shape[2] != query.shape[1]):
        raise ValueError("%s: query must be (B, %s) and keys (B, T, K), got %s and %s"
                         % (where, "K" if layer.same_size else "Q", query.shape, keys.shape))
    _check_padding(where, a["key_padding_mask"], keys.shape[0], keys.shape[1])


# -- the layers -------------------------------------------------------------------

class ScaledDotProductAttention(Layer):
    """softmax(scale * q k^T, masked) v, without parameters.

    forward(q (..., Tq, d), k (..., Tk, d), v (..., Tk, d), mask=None,
            return_weights=False) -> o (..., Tq, d)   [, P (..., Tq, Tk)]
    mask: bool, broadcastable to (..., Tq, Tk), True = the query may attend to
        that key (PyTorch's bool attn_mask convention).
    causal (constructor): also hide future keys.  scale: default 1/sqrt(d).
    backward(do (..., Tq, d)) -> (dq, dk, dv).
    ``self.path`` tells which path the last forward took: "fused", "fused-rows"
    (a padding mask that hides only the last keys of each batch row: each row
    on the fused kernel over its visible keys) or "numpy".
    """

    def __init__(self, causal=False, scale=None):
        super().__init__()
        self.causal, self.scale = bool(causal), scale
        self.path = None

    @checked(q=Float(2, dtype=None), k=Float(2, dtype="q"), v=Float(2, dtype="q"),
             also=_check_qkv)
    def forward(self, q, k, v, mask=None, return_weights=False):
        d = q.shape[-1]
        scale = (1.0 / math.sqrt(d)) if self.scale is None else float(self.scale)
        if mask is None and not return_weights:
            o, lse = kernels.attention(q, k, v, causal=self.causal, scale=scale)
            self._cache = ("fused", q, k, v, o, lse, scale)
            self.path = "fused"
            return o
        lengths = None if return_weights or self.causal else _key_lengths(mask, q, k)
        if lengths is not None and min(lengths) == k.shape[-2]:      # nothing hidden
            return self.forward(q, k, v)
        if lengths is not None:
            return self._fused_rows(q, k, v, lengths, scale)
        t = q.dtype.type
        s = t(scale) * (q @ np.swapaxes(k, -1, -2))                     # (..., Tq, Tk)
        allowed = np.ones(s.shape, bool)
        if mask is not None:
            allowed &= mask
        if self.causal:
            allowed &= kernels.causal_mask(q.shape[-2], k.shape[-2])
        p, _ = kernels.masked_softmax(s, allowed)           # P = softmax(S), S[masked] = -inf
        o = p @ v                                                       # O = P v
        self._cache = ("numpy", q, k, v, p, scale)
        self.path = "numpy"
        return (o, p) if return_weights else o

    def _fused_rows(self, q, k, v, lengths, scale):
        """A padding mask that only hides the last keys of each batch row (what
        a right-padded batch has): row b is plain attention over its first
        lengths[b] keys, so each row runs on the fused kernel."""
        o = np.empty_like(q)
        lse = np.empty(q.shape[:-1], q.dtype)
        for b, n in enumerate(lengths):
            o[b], lse[b] = kernels.attention(q[b], k[b, ..., :n, :], v[b, ..., :n, :],
                                             scale=scale)
        self._cache = ("fused-rows", q, k, v, o, lse, scale, lengths)
        self.path = "fused-rows"
        return o

    @checked(do=Grad())
    def backward(self, do):
        if self._cache[0] == "fused":
            _, q, k, v, o, lse, scale = self._cache
            return kernels.attention_backward(q, k, v, o, lse, np.ascontiguousarray(do),
                                              causal=self.causal, scale=scale)
        if self._cache[0] == "fused-rows":
            _, q, k, v, o, lse, scale, lengths = self._cache
            dq, dk, dv = np.empty_like(q), np.zeros_like(k), np.zeros_like(v)
            for b, n in enumerate(lengths):      # hidden keys get no gradient: dk = dv = 0
                dq[b], dk[b, ..., :n, :], dv[b, ..., :n, :] = kernels.attention_backward(
                    q[b], k[b, ..., :n, :], v[b, ..., :n, :], o[b], lse[b],
                    np.ascontiguousarray(do[b]), scale=scale)
            return dq, dk, dv
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
    forward_step(x (B, t, D), cache) -> y (B, t, D): self-attention with a KV
        cache, for generation (see :meth:`forward_step`).
    Without a padding mask, or with one that only pads the end of each row
    (and without return_weights), the heads run on the fused attention kernel.
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

    def split_heads(self, t):
        """(B, T, D) -> (B, H, T, dh), contiguous: t.reshape(B, T, H, dh).transpose(0, 2, 1, 3)
        copied (kernels.swap_axes12, whose spec is that NumPy line)."""
        B, T, _ = t.shape
        return kernels.swap_axes12(t.reshape(B, T, self.num_heads, self.head_dim))

    def merge_heads(self, t):
        """(B, H, T, dh) -> (B, T, D), contiguous: t.transpose(0, 2, 1, 3) copied, reshaped."""
        B, H, T, dh = t.shape
        return kernels.swap_axes12(t).reshape(B, T, H * dh)

    @checked(x=Float(ndim=3, layout="batch, time, d_model", last="d_model"),
             memory=Float(ndim=3, layout="batch, time, d_model", last="d_model", optional=True),
             also=_check_memory)
    def forward(self, x, memory=None, key_padding_mask=None, return_weights=False):
        L = self.layers
        kv = x if memory is None else memory
        mask = None if key_padding_mask is None else _may_attend(key_padding_mask)
        packed = memory is None and kernels.get_backend() == "c"
        if packed:
            q, k, v = self._qkv_packed_forward(x)     # fast path: the three lines below at once
        else:
            q = self.split_heads(L["q_proj"].forward(x))              # (B, H, Tq, dh)
            k = self.split_heads(L["k_proj"].forward(kv))             # (B, H, Tk, dh)
            v = self.split_heads(L["v_proj"].forward(kv))             # (B, H, Tk, dh)
        res = L["attn"].forward(q, k, v, mask=mask, return_weights=return_weights)
        o, weights = res if return_weights else (res, None)           # (B, H, Tq, dh)
        y = L["out_proj"].forward(self.merge_heads(o))                # (B, Tq, D)
        self._cache = (memory is not None, packed)                    # cross-attention?
        return (y, weights) if return_weights else y

    @checked(dy=Grad())
    def backward(self, dy):
        L, (cross, packed) = self.layers, self._cache
        # forward: y = out_proj(merge(o))
        do = self.split_heads(L["out_proj"].backward(dy))             # (B, H, Tq, dh)
        # forward: o = attention(q, k, v)
        dq, dk, dv = L["attn"].backward(do)
        if packed:
            return self._qkv_packed_backward(dq, dk, dv)              # fast path: the lines below
        # forward: q = split(q_proj(x)), k = split(k_proj(kv)), v = split(v_proj(kv))
        dx = L["q_proj"].backward(self.merge_heads(dq))
        dkv = (L["k_proj"].backward(self.merge_heads(dk))
               + L["v_proj"].backward(self.merge_heads(dv)))
        if cross:
            return dx, dkv
        return dx + dkv                                               # kv is x: gradients add

    # -- the fast path for self-attention: q, k, v from one matrix product ----------
    # [Q K V] = x [W_q; W_k; W_v]^T + [b_q b_k b_v]: one (N, D) x (D, 3D) product
    # instead of three (N, D) x (D, D) ones (fewer, larger products run closer to
    # the machine's peak), and in backward dx = [dQ dK dV] [W_q; W_k; W_v], one
    # product instead of three and two sums.  The parameters stay in q_proj,
    # k_proj, v_proj; the numbers are the three Linear layers' (to rounding).

    def _qkv_projs(self):
        return [self.layers[name] for name in ("q_proj", "k_proj", "v_proj")]

    def _qkv_packed_forward(self, x):
        B, T, D = x.shape
        projs = self._qkv_projs()
        W = np.concatenate([p.params["weight"] for p in projs])      # (3D, D)
        x2 = np.ascontiguousarray(x.reshape(B * T, D))                # (N, D)
        b = (np.concatenate([p.params["bias"] if p.use_bias else np.zeros(D, x.dtype)
                             for p in projs])
             if any(p.use_bias for p in projs) else None)             # (3D,)
        y = kernels.matmul(x2, W, trans_b=True, bias=b)               # (N, 3D) = [Q K V]
        self._packed = (x2, W)
        y5 = y.reshape(B, T, 3, self.num_heads, self.head_dim)
        return [kernels.swap_axes12(y5[:, :, i]) for i in range(3)]  # 3 x (B, H, T, dh)

    def _qkv_packed_backward(self, dq, dk, dv):
        x2, W = self._packed
        B, H, T, dh = dq.shape
        D = H * dh
        dy = np.empty((B, T, 3, H, dh), dq.dtype)                     # [dQ dK dV] (N, 3D)
        for i, d in enumerate((dq, dk, dv)):
            kernels.swap_axes12(d, out=dy[:, :, i])
        dy = dy.reshape(B * T, 3 * D)
        dW = kernels.matmul(dy, x2, trans_a=True)                     # (3D, D)
        db = kernels.add_column_sums(dy, np.zeros(3 * D, dy.dtype))   # (3D,)
        for i, p in enumerate(self._qkv_projs()):
            p.grads["weight"] += dW[i * D:(i + 1) * D]
            if p.use_bias:
                p.grads["bias"] += db[i * D:(i + 1) * D]
        return kernels.matmul(dy, W).reshape(B, T, D)                 # dx (B, T, D)

    def empty_cache(self, batch_size, dtype=None):
        """A KV cache holding no position yet: {"k", "v"} of shape (B, H, 0, dh)."""
        dtype = self.dtype if dtype is None else dtype
        empty = np.zeros((batch_size, self.num_heads, 0, self.head_dim), dtype)
        return {"k": empty, "v": empty.copy()}

    @checked(x=Float(ndim=3, layout="batch, time, d_model", last="d_model"),
             also=_check_kv_cache)
    def forward_step(self, x, cache):
        """Self-attention of new positions x (B, t, D) over the cached ones and themselves.

        cache: {"k": (B, H, t0, dh), "v": (B, H, t0, dh)} from :meth:`empty_cache`
        or earlier steps; it is extended in place to t0 + t positions.  With
        ``causal``, new query i sees keys j <= t0 + i.  Inference only: the
        layer keeps nothing for backward.  Returns y (B, t, D).
        """
        L = self.layers
        q = self.split_heads(L["q_proj"].forward(x))                  # (B, H, t, dh)
        k = self.split_heads(L["k_proj"].forward(x))
        v = self.split_heads(L["v_proj"].forward(x))
        cache["k"] = np.concatenate([cache["k"], k], axis=2)          # (B, H, t0 + t, dh)
        cache["v"] = np.concatenate([cache["v"], v], axis=2)
        o = L["attn"].forward(q, cache["k"], cache["v"])              # (B, H, t, dh)
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

    same_size = False          # the query and the keys may have different sizes

    def __init__(self, query_size, key_size, attn_size, rng=None, dtype=np.float32):
        super().__init__()
        rng = default_rng(rng)
        self.add_layer("query_proj", Linear(query_size, attn_size, bias=False, rng=rng, dtype=dtype))
        self.add_layer("key_proj", Linear(key_size, attn_size, rng=rng, dtype=dtype))
        self.add_layer("tanh", Tanh())
        self.add_layer("score", Linear(attn_size, 1, bias=False, rng=rng, dtype=dtype))
        self.query_size, self.key_size = int(query_size), int(key_size)

    @checked(query=Float(ndim=2, layout="B, Q", last="query_size"),
             keys=Float(ndim=3, layout="B, T, K", last="key_size"), also=_check_query_keys)
    def forward(self, query, keys, key_padding_mask=None, return_weights=False):
        L = self.layers
        qp = L["query_proj"].forward(query)                           # (B, A) = W s
        kp = L["key_proj"].forward(keys)                              # (B, T, A) = U h_t + b
        a = L["tanh"].forward(qp[:, None, :] + kp)                    # (B, T, A)
        e = L["score"].forward(a)[..., 0]                             # (B, T) = v^T a
        allowed = None if key_padding_mask is None else _may_attend(key_padding_mask)[:, 0, 0]
        w, _ = kernels.masked_softmax(e, allowed)                     # (B, T) = softmax(e)
        context = np.einsum("bt,btk->bk", w, keys)                    # (B, K)
        self._cache = (keys, w)
        return (context, w) if return_weights else context

    @checked(dcontext=Grad())
    def backward(self, dcontext):
        L = self.layers
        keys, w = self._cache
        # forward: context = sum_t w_t h_t  ->  dw_t = dcontext . h_t,  dkeys_t = w_t dcontext
        dw = np.einsum("bk,btk->bt", dcontext, keys)                  # (B, T)
        dkeys = w[:, :, None] * dcontext[:, None, :]                  # (B, T, K)
        # forward: w = softmax(e)  ->  de = w * (dw - sum(dw * w))
        de = w * (dw - np.sum(dw * w, axis=-1, keepdims=True))        # (B, T)
        # forward: e = v^T a,  a = tanh(qp + kp)
        da = L["score"].backward(de[..., None])                       # (B, T, A)
        dpre = L["tanh"].backward(da)                                 # (B, T, A)
        # forward: qp broadcast over t  ->  dqp = sum_t dpre;  kp = key_proj(keys)
        dquery = L["query_proj"].backward(dpre.sum(axis=1))
        dkeys = dkeys + L["key_proj"].backward(dpre)
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

    same_size = True           # s . h_t needs the query and the keys of one size

    def __init__(self, scale=1.0):
        super().__init__()
        self.add_layer("attn", ScaledDotProductAttention(causal=False, scale=scale))

    @checked(query=Float(ndim=2, layout="B, K", dtype=None),
             keys=Float(ndim=3, layout="B, T, K", dtype="query"), also=_check_query_keys)
    def forward(self, query, keys, key_padding_mask=None, return_weights=False):
        mask = None if key_padding_mask is None else _may_attend(key_padding_mask)[:, 0]
        res = self.layers["attn"].forward(query[:, None, :], keys, keys, mask=mask,
                                          return_weights=return_weights)
        if return_weights:
            return res[0][:, 0], res[1][:, 0]                         # (B, K), (B, T)
        return res[:, 0]

    @checked(dcontext=Grad())
    def backward(self, dcontext):
        dq, dk, dv = self.layers["attn"].backward(dcontext[:, None, :])
        # keys serve as both k and v: their gradients add
        return dq[:, 0], dk + dv
