"""An encoder-decoder (seq2seq) model of GRUs, with or without attention.

Document 001 (section 3, encoder/decoder; section 4.3) describes the encoder
squeezing the whole input into one fixed-length vector that the decoder
unfolds.  ⚠ That vector is a bottleneck: its size does not grow with the
input, so long inputs lose information.  Attention (Bahdanau et al. 2015,
Luong et al. 2015) lets the decoder look at *every* encoder state at every
step.  This model does both, chosen by ``config.attention``, so lesson 03_3
can show the difference (accuracy against input length, on
:mod:`tinylm.teaching.tasks`).

Encoder, over the source ids src (B, S) with true lengths n_b::

    e_s    = C_src[src_s]                            (B, S, E)
    enc_s  = GRU_enc(e_s, enc_{s-1})                 (B, S, H)   enc_{-1} = 0
    h0_b   = enc[b, n_b - 1]                         (B, H)      state after the last real token

(Taking the state at the last *real* token, not after the padding, makes
padded and unpadded inputs give the same result: a GRU's state at step s
does not depend on later steps.)

Decoder with teacher forcing: it reads the target shifted right
(tgt_in = [BOS, y1, .., yn]) and predicts tgt_out = [y1, .., yn, EOS]::

    d_t    = C_tgt[tgt_in_t]                         (B, T, E)
    s_t    = GRU_dec(d_t, s_{t-1}),  s_{-1} = h0     (B, T, H)
    c_t    = attention(s_t over enc_1..enc_n)        (B, T, H)   (attention only)
    u_t    = [s_t ; c_t]   (attention)   or  s_t (none)          (B, T, 2H or H)
    g_t    = tanh(u_t W_c^T + b_c)                   (B, T, H)   Luong's "attentional state"
    z_t    = g_t W_o^T + b_o                         (B, T, V)   logits

``attention`` is "dot" (Luong's dot score, scaled by 1/sqrt(H): all T queries
at once on :class:`~tinylm.layers.attention.ScaledDotProductAttention`),
"additive" (Bahdanau's v^T tanh(W s + U h), :class:`~tinylm.layers.attention.
AdditiveAttention`) or "none" (the decoder sees the source only through h0:
the fixed-length-vector bottleneck).  Padding positions of the source are
masked out of the attention.

The loss is the mean cross-entropy over the non-PAD target positions.
:meth:`Seq2Seq.translate` decodes greedily, feeding back its own predictions.

Shapes: batch B, source length S, target length T, embedding E, hidden H,
vocabulary V.  Default special ids PAD = 0, BOS = 1, EOS = 2 (defined here; the toy tasks of
:mod:`tinylm.teaching.tasks` use them).
"""

from dataclasses import dataclass

import numpy as np

from tinylm.layers.activations import Tanh
from tinylm.layers.attention import AdditiveAttention, ScaledDotProductAttention
from tinylm.layers.checks import check_ids
from tinylm.layers.core import Embedding, Linear
from tinylm.layers.losses import SoftmaxCrossEntropy
from tinylm.layers.rnn import GRU
from tinylm.models._common import LanguageModel

__all__ = ["Seq2SeqConfig", "Seq2Seq", "ATTENTION_KINDS", "PAD", "BOS", "EOS"]

PAD, BOS, EOS = 0, 1, 2        # padding, "begin" (first decoder input), "end" (last target)

ATTENTION_KINDS = ("dot", "additive", "none")


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int = 13          # 13 = the default teaching.tasks.SequenceTask vocabulary
    tgt_vocab_size: int = 13
    emb_dim: int = 32                 # E
    hidden: int = 64                  # H
    attention: str = "dot"            # "dot", "additive" or "none" (the bottleneck)
    attn_size: int = 64               # additive attention's inner size
    pad_id: int = PAD
    bos_id: int = BOS
    eos_id: int = EOS
    seed: int = 0
    dtype: str = "float32"


class Seq2Seq(LanguageModel):
    """GRU encoder-decoder with optional attention (see the module docstring).

    Children: src_embed, encoder (GRU), tgt_embed, decoder (GRU), attn (when
    attention != "none"), combine Linear(2H or H, H), act Tanh, out Linear(H, V).

    forward(src (B, S), tgt_in (B, T), src_len=None (B,)) -> logits (B, T, V)
    loss(src, tgt_in, tgt_out, src_len=None) -> float   (PAD targets ignored)
    backward(dout=None)                                   (as every tinylm model)
    translate(src, max_len=None, src_len=None) -> (ids (B, L), weights (B, L, S) or None)

    src_len: true source lengths; None = count of non-PAD ids (the source
    must then be right-padded: PADs only at the end of a row).
    """

    def __init__(self, config=None):
        config = Seq2SeqConfig() if config is None else config
        super().__init__(config)
        c = config
        if c.attention not in ATTENTION_KINDS:
            raise ValueError("Seq2SeqConfig: attention must be one of %s, got %r"
                             % (ATTENTION_KINDS, c.attention))
        if min(c.src_vocab_size, c.tgt_vocab_size, c.emb_dim, c.hidden, c.attn_size) < 1:
            raise ValueError("Seq2SeqConfig: sizes must be >= 1, got %r" % (c,))
        for name in ("pad_id", "bos_id", "eos_id"):
            if not 0 <= getattr(c, name) < c.tgt_vocab_size:
                raise ValueError("Seq2SeqConfig: %s=%d is outside the target vocabulary [0, %d)"
                                 % (name, getattr(c, name), c.tgt_vocab_size))
        rng = np.random.default_rng(c.seed)
        dtype = np.dtype(c.dtype)
        H = c.hidden
        self.add_layer("src_embed", Embedding(c.src_vocab_size, c.emb_dim, rng=rng, dtype=dtype))
        self.add_layer("encoder", GRU(c.emb_dim, H, rng=rng, dtype=dtype))
        self.add_layer("tgt_embed", Embedding(c.tgt_vocab_size, c.emb_dim, rng=rng, dtype=dtype))
        self.add_layer("decoder", GRU(c.emb_dim, H, rng=rng, dtype=dtype))
        if c.attention == "dot":
            self.add_layer("attn", ScaledDotProductAttention(scale=1.0 / np.sqrt(H)))
        elif c.attention == "additive":
            self.add_layer("attn", AdditiveAttention(H, H, c.attn_size, rng=rng, dtype=dtype))
        in_combine = 2 * H if c.attention != "none" else H
        self.add_layer("combine", Linear(in_combine, H, rng=rng, dtype=dtype))
        self.add_layer("act", Tanh())
        self.add_layer("out", Linear(H, c.tgt_vocab_size, rng=rng, dtype=dtype))
        # PAD targets are not counted in the loss
        self._criterion = SoftmaxCrossEntropy(ignore_index=c.pad_id)
        self.attention_weights = None     # (B, T, S) of the last forward / translate

    @property
    def vocab_size(self):
        """The target vocabulary size V (what the logits range over)."""
        return int(self.config.tgt_vocab_size)

    # -- input checks ------------------------------------------------------
    def _check_src(self, where, src, src_len):
        src = check_ids(src, self.config.src_vocab_size, where, "src", ndim=2)
        B, S = src.shape
        if S < 1:
            raise ValueError("%s: src must have at least one position, got shape %s"
                             % (where, src.shape))
        pad = self.config.pad_id
        if src_len is None:
            real = src != pad                                         # (B, S)
            src_len = real.sum(axis=1)                                # (B,)
            late = real & (np.arange(S)[None, :] >= src_len[:, None])  # a token after a PAD
            if late.any():
                b = int(np.argwhere(late)[0, 0])
                raise ValueError("%s: row %d of src has PAD (%d) before a real token; pad on "
                                 "the right or pass src_len" % (where, b, pad))
        src_len = np.asarray(src_len)
        if src_len.shape != (B,) or src_len.dtype.kind not in "iu":
            raise ValueError("%s: src_len must be an integer array of shape (%d,), got %s %s"
                             % (where, B, src_len.dtype, src_len.shape))
        if src_len.min() < 1 or src_len.max() > S:
            b = int(np.argmax((src_len < 1) | (src_len > S)))
            raise ValueError("%s: src_len[%d] = %d is outside 1..%d (every source needs at "
                             "least one real token)" % (where, b, src_len[b], S))
        return src, src_len.astype(np.int64)

    # -- the pieces ----------------------------------------------------------
    def _encode(self, src, src_len):
        """src (B, S) -> (enc (B, S, H), h0 (B, H), padding (B, S) bool)."""
        L = self.layers
        B, S = src.shape
        es = L["src_embed"].forward(src)                          # (B, S, E)
        enc, _ = L["encoder"].forward(es)                         # (B, S, H)
        h0 = enc[np.arange(B), src_len - 1]                       # (B, H)  state at last real token
        padding = np.arange(S)[None, :] >= src_len[:, None]       # (B, S)  True = PAD
        return enc, h0, padding

    def _head(self, dec, enc, padding):
        """Decoder states dec (B, T, H) -> logits (B, T, V), via attention over enc (B, S, H)."""
        L = self.layers
        kind = self.config.attention
        B, T, H = dec.shape
        if kind == "dot":
            # c_t = softmax(s_t . enc / sqrt(H), PAD masked) enc, for all t at once
            allowed = ~padding[:, None, :]                                     # (B, 1, S)
            ctx, w = L["attn"].forward(dec, enc, enc, mask=allowed, return_weights=True)
            u = np.concatenate([dec, ctx], axis=-1)                            # (B, T, 2H)
        elif kind == "additive":
            # one query per (b, t): flatten them, each with its own copy of enc
            S = enc.shape[1]
            keys = np.repeat(enc, T, axis=0)                                   # (B*T, S, H)
            ctx, w = L["attn"].forward(dec.reshape(B * T, H), keys,
                                       key_padding_mask=np.repeat(padding, T, axis=0),
                                       return_weights=True)                    # (B*T, H)
            ctx, w = ctx.reshape(B, T, H), w.reshape(B, T, S)
            u = np.concatenate([dec, ctx], axis=-1)                            # (B, T, 2H)
        else:
            w = None
            u = dec                                                            # (B, T, H)
        self.attention_weights = w
        a = L["combine"].forward(u)                                # (B, T, H)   u W_c^T + b_c
        g = L["act"].forward(a)                                    # (B, T, H)   g = tanh(.)
        return L["out"].forward(g)                                 # (B, T, V)   z = g W_o^T + b_o

    # -- the contract --------------------------------------------------------
    def forward(self, src, tgt_in, src_len=None):
        """Teacher-forced logits (B, T, V) of the next target token at every position."""
        where = "Seq2Seq.forward"
        src, src_len = self._check_src(where, src, src_len)
        tgt_in = check_ids(tgt_in, self.config.tgt_vocab_size, where, "tgt_in", ndim=2)
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError("%s: src has batch size %d but tgt_in has %d"
                             % (where, src.shape[0], tgt_in.shape[0]))
        L = self.layers
        enc, h0, padding = self._encode(src, src_len)              # (B, S, H), (B, H)
        d = L["tgt_embed"].forward(tgt_in)                         # (B, T, E)
        dec, _ = L["decoder"].forward(d, h0)                       # (B, T, H)   s_{-1} = h0
        logits = self._head(dec, enc, padding)                     # (B, T, V)
        self._cache = (src_len, enc.shape)
        self._last = "forward"
        return logits

    def loss(self, src, tgt_in, tgt_out, src_len=None):
        """Mean cross-entropy over the non-PAD positions of tgt_out (B, T)."""
        logits = self.forward(src, tgt_in, src_len)
        tgt_out = check_ids(tgt_out, self.config.tgt_vocab_size, "Seq2Seq.loss", "tgt_out", ndim=2)
        if tgt_out.shape != logits.shape[:-1]:
            raise ValueError("Seq2Seq.loss: tgt_out has shape %s, expected %s (tgt_in's)"
                             % (tgt_out.shape, logits.shape[:-1]))
        loss = self._criterion.forward(logits, tgt_out)
        self._last = "loss"
        return float(loss)

    def _backward(self, dlogits):
        L = self.layers
        kind = self.config.attention
        src_len, (B, S, H) = self._cache
        # forward: z = out(g)
        dg = L["out"].backward(dlogits)                            # (B, T, H)
        # forward: g = tanh(a)
        da = L["act"].backward(dg)
        # forward: a = combine(u)
        du = L["combine"].backward(da)                             # (B, T, 2H or H)
        T = du.shape[1]
        if kind == "none":
            ddec = du                                              # forward: u = dec
            denc = np.zeros((B, S, H), du.dtype)
        else:
            # forward: u = concat([dec, ctx])
            ddec, dctx = du[..., :H], du[..., H:]
            if kind == "dot":
                # forward: ctx = attn(q=dec, k=enc, v=enc)
                dq, dk, dv = L["attn"].backward(np.ascontiguousarray(dctx))
                ddec = ddec + dq
                denc = dk + dv                                     # enc is both keys and values
            else:
                # forward: ctx = attn(dec.reshape(B*T, H), keys=repeat(enc, T))
                dq, dkeys = L["attn"].backward(np.ascontiguousarray(dctx).reshape(B * T, H))
                ddec = ddec + dq.reshape(B, T, H)
                denc = dkeys.reshape(B, T, S, H).sum(axis=1)       # the T copies add up
        # forward: dec, _ = decoder(d, h0)
        dd, dh0 = L["decoder"].backward(np.ascontiguousarray(ddec))
        # forward: d = tgt_embed(tgt_in)
        L["tgt_embed"].backward(dd)
        # forward: h0 = enc[b, src_len - 1]   (one row per b: plain += is exact)
        denc = np.array(denc, copy=True)
        denc[np.arange(B), src_len - 1] += dh0
        # forward: enc, _ = encoder(es)
        des, _ = L["encoder"].backward(denc)
        # forward: es = src_embed(src)
        L["src_embed"].backward(des)

    # -- inference -------------------------------------------------------------
    def translate(self, src, max_len=None, src_len=None):
        """Greedy decoding: feed back the most likely token until EOS or max_len.

        src (B, S) -> (ids (B, L) int64, weights (B, L, S) or None), L <= max_len
        (default 2 S + 2).  Each row of ids ends with EOS (unless max_len cut
        it) and is PAD after it; weights are the attention over the source at
        every output step (None without attention).  Runs in eval mode.
        """
        where = "Seq2Seq.translate"
        src, src_len = self._check_src(where, src, src_len)
        B, S = src.shape
        max_len = 2 * S + 2 if max_len is None else int(max_len)
        if max_len < 1:
            raise ValueError("%s: max_len must be >= 1, got %d" % (where, max_len))
        c = self.config
        was_training = self.training
        self.eval()
        try:
            enc, state, padding = self._encode(src, src_len)
            y = np.full(B, c.bos_id, dtype=np.int64)               # first input: BOS
            done = np.zeros(B, dtype=bool)
            ids, weights = [], []
            for _ in range(max_len):
                d = self.layers["tgt_embed"].forward(y[:, None])   # (B, 1, E)
                dec, state = self.layers["decoder"].forward(d, state)   # (B, 1, H)
                logits = self._head(dec, enc, padding)             # (B, 1, V)
                y = np.argmax(logits[:, 0], axis=-1).astype(np.int64)   # (B,)
                y[done] = c.pad_id                                 # finished rows: PAD
                ids.append(y)
                if self.attention_weights is not None:
                    weights.append(self.attention_weights[:, 0])    # (B, S)
                done |= y == c.eos_id
                if done.all():
                    break
        finally:
            self.train(was_training)
            self._last = None                                      # nothing to differentiate
        out = np.stack(ids, axis=1)                                # (B, L)
        w = np.stack(weights, axis=1) if weights else None         # (B, L, S)
        self.attention_weights = w
        return out, w
