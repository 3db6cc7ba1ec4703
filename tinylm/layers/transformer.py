"""The Transformer block: attention and a feed-forward network, with residuals and layer norm.

FeedForward (position-wise, the same MLP at every position)::

    y = fc2(act(fc1(x)))          fc1: D -> d_ff,  act: GELU or ReLU,  fc2: d_ff -> D

TransformerBlock, pre-LN (``norm_first=True``, GPT-2 and most modern LMs)::

    x = x + drop(self_attn(ln1(x)))
    x = x + drop(cross_attn(ln_cross(x), memory))       (decoder with cross-attention only)
    y = x + drop(ff(ln2(x)))

post-LN (``norm_first=False``, the original Transformer and BERT)::

    x = ln1(x + drop(self_attn(x)))
    x = ln_cross(x + drop(cross_attn(x, memory)))        (decoder only)
    y = ln2(x + drop(ff(x)))

Backward of a residual x_out = x + f(x): the gradient reaches x twice,
dx = dx_out + f'(x)^T dx_out -- the "+ dx_out" path is why deep residual
stacks train: the gradient flows through the sum unchanged.

Generation runs the same equations on the new positions only
(:meth:`TransformerBlock.forward_step`): the self-attention keeps the keys and
values of the earlier positions in a KV cache instead of recomputing them.
"""

import numpy as np

from tinylm.layers.activations import GELU, ReLU
from tinylm.layers.attention import MultiHeadAttention
from tinylm.layers.base import Layer
from tinylm.layers.core import Linear
from tinylm.layers.norm import Dropout, LayerNorm
from tinylm.layers.checks import Float, Grad, checked
from tinylm.rng import child_rng, default_rng

__all__ = ["FeedForward", "TransformerBlock"]


def _activation(name):
    if name == "gelu":
        return GELU("none")
    if name == "gelu_tanh":
        return GELU("tanh")
    if name == "relu":
        return ReLU()
    raise ValueError("activation must be 'gelu', 'gelu_tanh' or 'relu', got %r" % (name,))


class FeedForward(Layer):
    """Position-wise MLP y = fc2(act(fc1(x))).

    Children: fc1 Linear(d_model, d_ff), act, fc2 Linear(d_ff, d_model).
    x: (..., d_model) -> y: (..., d_model).   backward(dy) -> dx.
    activation: "gelu" (exact), "gelu_tanh" or "relu".
    """

    def __init__(self, d_model, d_ff, activation="gelu", rng=None, dtype=np.float32):
        super().__init__()
        rng = default_rng(rng)
        self.add_layer("fc1", Linear(d_model, d_ff, rng=rng, dtype=dtype))
        self.add_layer("act", _activation(activation))
        self.add_layer("fc2", Linear(d_ff, d_model, rng=rng, dtype=dtype))

    def forward(self, x):
        return self.layers["fc2"].forward(self.layers["act"].forward(self.layers["fc1"].forward(x)))

    def backward(self, dy):
        dh = self.layers["fc2"].backward(dy)        # forward: y = fc2(h)
        da = self.layers["act"].backward(dh)        # forward: h = act(a)
        return self.layers["fc1"].backward(da)      # forward: a = fc1(x)


def _check_memory(block, where, a):
    if block.has_cross and a["memory"] is None:
        raise ValueError("%s: this block has cross-attention; pass memory (B, S, d_model)"
                         % where)
    if not block.has_cross and a["memory"] is not None:
        raise ValueError("%s: memory given but the block was built without "
                         "cross_attention=True" % where)


class TransformerBlock(Layer):
    """One Transformer layer, pre-LN (norm_first=True) or post-LN (False).

    Children: self_attn (MultiHeadAttention, causal if ``causal``), ln1, drop1,
    ff (FeedForward), ln2, drop2, and with ``cross_attention=True`` also
    cross_attn (MultiHeadAttention over a memory), ln_cross, drop_cross.
    Dropout (probability ``dropout``) is applied to each sub-block's output
    before it is added to the residual stream.

    forward(x (B, T, D), memory=None (B, S, D), key_padding_mask=None (B, T),
            memory_key_padding_mask=None (B, S))  -> y (B, T, D)
        (padding masks: bool, True = padding)
    backward(dy (B, T, D)) -> dx, or (dx, dmemory) with cross-attention.
    """

    def __init__(self, d_model, num_heads, d_ff=None, dropout=0.0, norm_first=True,
                 causal=False, cross_attention=False, activation="gelu", layer_norm_eps=1e-5,
                 rng=None, dtype=np.float32):
        super().__init__()
        rng = default_rng(rng)
        d_ff = 4 * d_model if d_ff is None else int(d_ff)
        self.d_model = int(d_model)
        self.norm_first, self.has_cross = bool(norm_first), bool(cross_attention)
        self.add_layer("self_attn", MultiHeadAttention(d_model, num_heads, causal=causal,
                                                       rng=rng, dtype=dtype))
        self.add_layer("ln1", LayerNorm(d_model, layer_norm_eps, dtype=dtype))
        self.add_layer("drop1", Dropout(dropout, rng=child_rng(rng)))
        if cross_attention:
            self.add_layer("cross_attn", MultiHeadAttention(d_model, num_heads, causal=False,
                                                            rng=rng, dtype=dtype))
            self.add_layer("ln_cross", LayerNorm(d_model, layer_norm_eps, dtype=dtype))
            self.add_layer("drop_cross", Dropout(dropout, rng=child_rng(rng)))
        self.add_layer("ff", FeedForward(d_model, d_ff, activation, rng=rng, dtype=dtype))
        self.add_layer("ln2", LayerNorm(d_model, layer_norm_eps, dtype=dtype))
        self.add_layer("drop2", Dropout(dropout, rng=child_rng(rng)))

    @checked(x=Float(ndim=3, layout="batch, time, d_model", last="d_model"),
             also=_check_memory)
    def forward(self, x, memory=None, key_padding_mask=None, memory_key_padding_mask=None):
        attend = lambda h: self.layers["self_attn"].forward(h, key_padding_mask=key_padding_mask)
        return self._sublayers(x, attend, memory, memory_key_padding_mask, dropout=True)

    def empty_cache(self, batch_size, dtype=None):
        """An empty KV cache for :meth:`forward_step` (see MultiHeadAttention.empty_cache)."""
        return self.layers["self_attn"].empty_cache(batch_size, dtype)

    @checked(x=Float(ndim=3, layout="batch, time, d_model", last="d_model"),
             also=_check_memory)
    def forward_step(self, x, cache, memory=None, memory_key_padding_mask=None):
        """The block on new positions x (B, t, D) after the cached ones (generation).

        cache: the self-attention's {"k", "v"} (B, H, t0, dh), extended in place
        (:meth:`MultiHeadAttention.forward_step`).  Inference only: no dropout,
        nothing kept for backward.  Returns y (B, t, D), equal to the last t
        positions of :meth:`forward` on all t0 + t positions.
        """
        attend = lambda h: self.layers["self_attn"].forward_step(h, cache)
        return self._sublayers(x, attend, memory, memory_key_padding_mask, dropout=False)

    def _sublayers(self, x, attend, memory, memory_key_padding_mask, dropout):
        """x -> y by the block's equations (module docstring), pre-LN or post-LN.

        attend(h): the self-attention (over all positions, or one KV-cache step);
        dropout=False skips the dropout layers (inference).
        """
        L = self.layers
        drop = (lambda name, h: L[name].forward(h)) if dropout else (lambda name, h: h)
        cross = lambda h: L["cross_attn"].forward(h, memory,
                                                  key_padding_mask=memory_key_padding_mask)
        if self.norm_first:
            x = x + drop("drop1", attend(L["ln1"].forward(x)))
            if self.has_cross:
                x = x + drop("drop_cross", cross(L["ln_cross"].forward(x)))
            return x + drop("drop2", L["ff"].forward(L["ln2"].forward(x)))
        x = L["ln1"].forward(x + drop("drop1", attend(x)))
        if self.has_cross:
            x = L["ln_cross"].forward(x + drop("drop_cross", cross(x)))
        return L["ln2"].forward(x + drop("drop2", L["ff"].forward(x)))

    @checked(dy=Grad())
    def backward(self, dy):
        L = self.layers
        dmem = None
        if self.norm_first:
            # forward: y = x + drop2(ff(ln2(x)))  ->  dx = dy + ln2'(ff'(drop2'(dy)))
            # (each "+" adds into the new array the branch returned: no temporary)
            dx = L["ln2"].backward(L["ff"].backward(L["drop2"].backward(dy)))
            dx += dy
            if self.has_cross:
                # forward: x = x + drop(cross_attn(ln_cross(x), memory))
                dq, dmem = L["cross_attn"].backward(L["drop_cross"].backward(dx))
                dx = dx + L["ln_cross"].backward(dq)
            # forward: x = x + drop1(self_attn(ln1(x)))
            dres = L["ln1"].backward(L["self_attn"].backward(L["drop1"].backward(dx)))
            dres += dx
            dx = dres
        else:
            # forward: y = ln2(x + drop2(ff(x)))  ->  ds = ln2'(dy), dx = ds + ff'(drop2'(ds))
            ds = L["ln2"].backward(dy)
            dx = ds + L["ff"].backward(L["drop2"].backward(ds))
            if self.has_cross:
                # forward: x = ln_cross(x + drop(cross_attn(x, memory)))
                ds = L["ln_cross"].backward(dx)
                dq, dmem = L["cross_attn"].backward(L["drop_cross"].backward(ds))
                dx = ds + dq
            # forward: x = ln1(x + drop1(self_attn(x)))
            ds = L["ln1"].backward(dx)
            dx = ds + L["self_attn"].backward(L["drop1"].backward(ds))
        return (dx, dmem) if self.has_cross else dx
