"""A BERT-style encoder pretrained as a masked language model (MLM), and a classifier on top.

Document 004 (core algorithms: pretraining, fine-tuning) and 000 section 5.2
describe pretraining a Transformer on unlabelled text and fine-tuning it on a
small labelled task.  A causal LM (GPT, ``tinylm.models.gpt``) predicts the
next token; a *masked* LM (BERT, Devlin et al. 2019) sees the whole sentence
in both directions and predicts tokens that were hidden from it.

Encoder, for token ids idx (B, T) and an optional attention_mask (B, T)
(1 = real token, 0 = padding, the Hugging Face convention)::

    x = E_tok[idx] + E_pos[0:T] (+ E_type[types]) (B, T, D) token + position (+ segment) embeddings
    x = dropout(LayerNorm(x))                   (B, T, D)
    x = block_l(x)   for l = 1 .. n_layer       (B, T, D)   post-LN Transformer blocks, GELU,
                                                            padding keys masked out
    h = x                                       (B, T, D)   the hidden states (``encode``)

MLM head::

    t = LayerNorm(GELU(h W_t^T + b_t))          (B, T, D)
    z = t W_o^T + b_o                           (B, T, V)   logits over the vocabulary

(BERT ties W_o to E_tok; here they are separate parameters, which is simpler
to read and differentiate.)

Masking (Devlin et al.'s 80/10/10 rule), done by :meth:`BERT.mask_tokens`
with the model's own seeded generator: each real token is *selected* with
probability ``mask_prob`` (0.15); a selected token is replaced by [MASK] with
probability 0.8, by a random token with probability 0.1, and left unchanged
with probability 0.1.  The loss is the mean cross-entropy over the selected
positions only (the others get target ``ignore_index``).  When no token of a
batch is selected (tiny batches), one random real token is selected so the
loss is defined.

[MASK] is an extra id, ``mask_id = vocab_size``: the embedding table has
vocab_size + 1 rows, while the head predicts only the vocab_size real tokens.
So a tokenizer needs no special token for it.

``loss(x, y=None)`` masks x itself and predicts the original x at the
selected positions; y is accepted (and ignored) so the shared trainer, which
passes next-token targets, can train this model unchanged.  With
``objective="causal"`` the same network becomes a causal LM (causal attention,
``loss(x, y)`` = next-token cross-entropy with y), for lesson 03_5's
comparison of the two pretraining objectives on one architecture.

Shapes: batch B, time T, model width D, vocabulary V, classes C.
"""

from dataclasses import dataclass

import numpy as np

from tinylm.layers.activations import GELU
from tinylm.layers.base import Layer
from tinylm.layers.checks import check_ids
from tinylm.layers.core import Embedding, Linear
from tinylm.layers.losses import SoftmaxCrossEntropy
from tinylm.layers.norm import Dropout, LayerNorm
from tinylm.layers.pooling import L2Normalize, MeanPooling
from tinylm.layers.transformer import TransformerBlock
from tinylm.models._common import LanguageModel
from tinylm.rng import child_rng, default_rng, spawn

__all__ = ["BERTConfig", "BertEmbeddings", "BertEncoder", "BERT", "SequenceClassifier"]

OBJECTIVES = ("mlm", "causal")


@dataclass
class BERTConfig:
    vocab_size: int = 65      # V, the tokenizer's vocabulary ([MASK] = V is added by the model)
    block_size: int = 128     # longest sequence (rows of the position table)
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128        # D
    d_ff: int = 0             # feed-forward width; 0 = 4 * d_model
    dropout: float = 0.1
    type_vocab_size: int = 0  # segment (token type) embeddings; 0 = none (BERT's own: 2)
    layer_norm_eps: float = 1e-5
    mask_prob: float = 0.15   # share of tokens selected for prediction
    objective: str = "mlm"    # "mlm" (masked, bidirectional) or "causal" (next token)
    seed: int = 0             # weights, dropout masks and the masking generator
    dtype: str = "float32"


def _padding(where, attention_mask, shape):
    """attention_mask (B, T) of 1/0 (or bool True = real) -> key padding (B, T) bool, True = pad."""
    if attention_mask is None:
        return None
    am = np.asarray(attention_mask)
    if am.shape != shape:
        raise ValueError("%s: attention_mask has shape %s, expected %s (the ids' shape)"
                         % (where, am.shape, shape))
    if am.dtype != np.bool_:
        if am.dtype.kind not in "iu" or not np.isin(am, (0, 1)).all():
            raise ValueError("%s: attention_mask must hold 1 (real token) and 0 (padding)"
                             % where)
    pad = ~am.astype(bool)
    if pad.all(axis=1).any():
        raise ValueError("%s: row %d of attention_mask has no real token"
                         % (where, int(np.argmax(pad.all(axis=1)))))
    return pad


class BertEmbeddings(Layer):
    """Token + position (+ segment) embeddings, then LayerNorm and dropout.

    forward(ids (B, T) int, token_type_ids (B, T) int or None) -> (B, T, D)
    backward(dy (B, T, D)) -> None (ids are not differentiable).
    """

    def __init__(self, cfg, num_tokens, rng, dropout_rng, dtype):
        super().__init__()
        D = cfg.d_model
        # BERT initialises embeddings with N(0, 0.02^2).
        self.add_layer("word_embeddings", Embedding(num_tokens, D, rng, dtype, 0.02))
        self.add_layer("position_embeddings", Embedding(cfg.block_size, D, rng, dtype, 0.02))
        if cfg.type_vocab_size:
            self.add_layer("token_type_embeddings",
                           Embedding(cfg.type_vocab_size, D, rng, dtype, 0.02))
        self.add_layer("LayerNorm", LayerNorm(D, eps=cfg.layer_norm_eps, dtype=dtype))
        self.add_layer("dropout", Dropout(cfg.dropout, dropout_rng))

    def forward(self, ids, token_type_ids=None):
        B, T = ids.shape
        L = self.layers
        positions = np.broadcast_to(np.arange(T), (B, T))                    # (B, T)
        e = L["word_embeddings"].forward(ids) + L["position_embeddings"].forward(positions)
        if "token_type_embeddings" in L:
            types = np.zeros_like(ids) if token_type_ids is None else token_type_ids
            e = e + L["token_type_embeddings"].forward(types)               # (B, T, D)
        return L["dropout"].forward(L["LayerNorm"].forward(e))

    def backward(self, dy):
        # forward: out = dropout(LayerNorm(e))
        de = self.layers["LayerNorm"].backward(self.layers["dropout"].backward(dy))
        # forward: e = word[ids] + pos[positions] (+ type[token_type_ids]): each gets de
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            if name in self.layers:
                self.layers[name].backward(de)
        return None


class BertEncoder(Layer):
    """The BERT encoder: embeddings + n_layer post-LN Transformer blocks (exact-erf GELU).

    The one encoder of tinylm: :class:`BERT` puts a masked-LM head on it and
    :mod:`tinylm.pretrained` loads Hugging Face weights into it.

    forward(ids (B, T) int, attention_mask (B, T) 1/0 or None,
            token_type_ids (B, T) int or None) -> hidden states (B, T, D)
    backward(dh (B, T, D)) -> None (fills every parameter gradient).
    Children: embeddings (BertEmbeddings), layer0 .. layer{L-1} (TransformerBlock).
    num_tokens: rows of the token table (default vocab_size; BERT adds [MASK]);
    rng: the weights' generator or seed (default config.seed).
    """

    def __init__(self, config, num_tokens=None, rng=None, dtype=None):
        super().__init__()
        c = self.config = config
        if min(c.vocab_size, c.block_size, c.n_layer, c.n_head, c.d_model) < 1:
            raise ValueError("BERTConfig: sizes must be >= 1, got %r" % (c,))
        if c.d_model % c.n_head:
            raise ValueError("BERTConfig: n_head (%d) must divide d_model (%d)"
                             % (c.n_head, c.d_model))
        self.num_tokens = int(num_tokens or c.vocab_size)
        rng = default_rng(c.seed if rng is None else rng)
        dtype = np.dtype(c.dtype if dtype is None else dtype)
        dropout_rng = child_rng(c.seed)           # the masks' own stream (weights untouched)
        self.add_layer("embeddings", BertEmbeddings(c, self.num_tokens, rng, dropout_rng, dtype))
        for i in range(c.n_layer):
            self.add_layer("layer%d" % i, TransformerBlock(
                c.d_model, c.n_head, c.d_ff or 4 * c.d_model, dropout=c.dropout,
                norm_first=False, causal=(getattr(c, "objective", "mlm") == "causal"),
                activation="gelu", layer_norm_eps=c.layer_norm_eps, rng=rng, dtype=dtype))

    def check(self, where, ids, attention_mask=None, token_type_ids=None):
        """(ids, key padding mask or None, token_type_ids) validated."""
        if np.asarray(ids).dtype.kind not in "iu":     # (check_ids would say the same, less exactly)
            raise TypeError("%s: input_ids must be a 2-D integer array (batch, tokens), got %s %s"
                            % (where, np.asarray(ids).dtype, np.shape(ids)))
        ids = check_ids(ids, self.num_tokens, where, "input_ids", ndim=2)
        if ids.shape[1] > self.config.block_size:
            raise ValueError("%s: a sequence of %d tokens is longer than the %d positions "
                             "the model has (truncate it; block_size)"
                             % (where, ids.shape[1], self.config.block_size))
        if token_type_ids is not None:
            token_type_ids = check_ids(token_type_ids, max(self.config.type_vocab_size, 1),
                                       where, "token_type_ids", ndim=2)
            if token_type_ids.shape != ids.shape:
                raise ValueError("%s: token_type_ids has shape %s, input_ids has %s"
                                 % (where, token_type_ids.shape, ids.shape))
        return ids, _padding(where, attention_mask, ids.shape), token_type_ids

    def forward(self, ids, attention_mask=None, token_type_ids=None):
        ids, pad, types = self.check("BertEncoder.forward", ids, attention_mask, token_type_ids)
        return self.encode(ids, pad, types)

    def encode(self, ids, pad=None, token_type_ids=None):
        """forward on checked inputs; pad: (B, T) bool, True = padding (or None)."""
        h = self.layers["embeddings"].forward(ids, token_type_ids)          # (B, T, D)
        for i in range(self.config.n_layer):
            # Without padding the attention runs on the fused kernel (C or NumPy).
            h = self.layers["layer%d" % i].forward(h, key_padding_mask=pad)  # (B, T, D)
        return h

    def backward(self, dh):
        for i in reversed(range(self.config.n_layer)):
            dh = self.layers["layer%d" % i].backward(dh)      # forward: h = layer_i(h)
        return self.layers["embeddings"].backward(dh)         # forward: h = embeddings(ids)


class BERT(LanguageModel):
    """Masked-LM Transformer encoder (see the module docstring).

    Children: encoder (:class:`BertEncoder`, token table V+1 rows),
    head_fc Linear(D, D), head_act GELU, head_ln LayerNorm, head_out Linear(D, V).

    forward(idx (B, T), attention_mask=None) -> MLM logits (B, T, V)
    loss(x, y=None, attention_mask=None) -> float   (masks x itself, see module doc)
    mlm_loss(inputs, targets, attention_mask=None) -> float   (masking already done)
    backward(dout=None)
    encode(idx, attention_mask=None) -> hidden (B, T, D);  encode_backward(dh) -> None
    mask_tokens(x, attention_mask=None, rng=None) -> (inputs, targets)
    """

    def __init__(self, config=None):
        config = BERTConfig() if config is None else config
        super().__init__(config)
        c = config
        if c.objective not in OBJECTIVES:
            raise ValueError("BERTConfig: objective must be one of %s, got %r"
                             % (OBJECTIVES, c.objective))
        if not 0.0 < c.mask_prob <= 1.0:
            raise ValueError("BERTConfig: mask_prob must be in (0, 1], got %r" % (c.mask_prob,))
        rng = default_rng(c.seed)
        dtype = np.dtype(c.dtype)
        D = c.d_model
        self.mask_id = c.vocab_size                       # [MASK]: one extra token row
        self.add_layer("encoder", BertEncoder(c, num_tokens=c.vocab_size + 1, rng=rng,
                                              dtype=dtype))
        self.add_layer("head_fc", Linear(D, D, rng=rng, dtype=dtype))
        self.add_layer("head_act", GELU("none"))
        self.add_layer("head_ln", LayerNorm(D, dtype=dtype))
        self.add_layer("head_out", Linear(D, c.vocab_size, rng=rng, dtype=dtype))
        self.mask_rng = spawn(c.seed, 2)[1]               # which tokens to mask

    # -- the encoder -----------------------------------------------------------
    def _check(self, where, idx, attention_mask):
        idx, pad, _ = self.layers["encoder"].check(where, idx, attention_mask)
        return idx, pad

    def encode(self, idx, attention_mask=None):
        """idx (B, T) -> hidden states (B, T, D), for a task head (fine-tuning).

        Differentiate with :meth:`encode_backward`.
        """
        idx, pad = self._check("BERT.encode", idx, attention_mask)
        h = self.layers["encoder"].encode(idx, pad)
        self._last = "encode"
        return h

    def encode_backward(self, dh):
        """dh = dL/dhidden (B, T, D) after :meth:`encode`: adds into every encoder gradient."""
        if self._last != "encode":
            raise RuntimeError("BERT.encode_backward: call encode() first")
        self.layers["encoder"].backward(np.asarray(dh))

    # -- the MLM head --------------------------------------------------------
    def _forward_masked(self, idx, pad):
        L = self.layers
        h = L["encoder"].encode(idx, pad)                     # (B, T, D)
        t = L["head_fc"].forward(h)                           # (B, T, D)   h W_t^T + b_t
        t = L["head_act"].forward(t)                          #             GELU
        t = L["head_ln"].forward(t)                           #             LayerNorm
        return L["head_out"].forward(t)                       # (B, T, V)   t W_o^T + b_o

    def _backward(self, dlogits):
        L = self.layers
        dt = L["head_out"].backward(dlogits)                  # forward: z = head_out(t)
        dt = L["head_ln"].backward(dt)                        # forward: t = head_ln(t)
        dt = L["head_act"].backward(dt)                       # forward: t = GELU(t)
        dh = L["head_fc"].backward(dt)                        # forward: t = head_fc(h)
        L["encoder"].backward(dh)                             # forward: h = encoder(idx)

    def forward(self, idx, attention_mask=None):
        """idx (B, T), ids in [0, V] (V = [MASK]) -> logits (B, T, V)."""
        idx, pad = self._check("BERT.forward", idx, attention_mask)
        logits = self._forward_masked(idx, pad)
        self._last = "forward"
        return logits

    # -- masking and the losses -------------------------------------------------
    def mask_tokens(self, x, attention_mask=None, rng=None):
        """The 80/10/10 rule: x (B, T) -> (inputs (B, T), targets (B, T)).

        targets is x at the selected positions and ``ignore_index`` elsewhere;
        padding (attention_mask 0) is never selected.  rng: a numpy Generator
        (default: the model's own ``mask_rng``, seeded by config.seed).
        """
        where = "BERT.mask_tokens"
        x = check_ids(x, self.vocab_size, where, "x", ndim=2)
        pad = _padding(where, attention_mask, x.shape)
        real = np.ones(x.shape, bool) if pad is None else ~pad
        rng = self.mask_rng if rng is None else rng
        selected = (rng.random(x.shape) < self.config.mask_prob) & real          # (B, T)
        if not selected.any():                    # keep the loss defined: select one token
            cand = np.argwhere(real)
            selected[tuple(cand[rng.integers(len(cand))])] = True
        r = rng.random(x.shape)                                                  # (B, T)
        to_mask = selected & (r < 0.8)                                           # 80%: [MASK]
        to_random = selected & (r >= 0.8) & (r < 0.9)                            # 10%: random
        inputs = x.astype(np.int64, copy=True)
        inputs[to_mask] = self.mask_id
        inputs[to_random] = rng.integers(0, self.vocab_size, size=int(to_random.sum()))
        targets = np.where(selected, x, self.ignore_index).astype(np.int64)      # rest: unchanged
        return inputs, targets

    def mlm_loss(self, inputs, targets, attention_mask=None):
        """Cross-entropy of the logits on ``inputs`` against ``targets`` (ignore_index skipped)."""
        logits = self.forward(inputs, attention_mask)                            # (B, T, V)
        targets = np.asarray(targets)
        if targets.shape != logits.shape[:-1] or targets.dtype.kind not in "iu":
            raise ValueError("BERT.mlm_loss: targets must be integer ids of shape %s, got %s %s"
                             % (logits.shape[:-1], targets.dtype, targets.shape))
        loss = self._criterion.forward(logits, targets)
        self._last = "loss"
        return float(loss)

    def loss(self, x, y=None, attention_mask=None):
        """MLM: mask x, predict it back (y ignored).  Causal: next-token loss against y."""
        if self.config.objective == "causal":
            if y is None:
                raise ValueError("BERT.loss: objective='causal' needs next-token targets y")
            return self.mlm_loss(x, y, attention_mask)
        inputs, targets = self.mask_tokens(x, attention_mask)
        return self.mlm_loss(inputs, targets, attention_mask)


class SequenceClassifier(Layer):
    """A classification head on a BERT encoder: the one classifier of tinylm.

    Mean-pools the hidden states over the real tokens (optionally scales the
    result to unit length, as a sentence encoder does), then a linear layer::

        h      = encoder(idx, attention_mask)                  (B, T, D)
        pooled = sum_t m_t h_t / sum_t m_t                     (B, D)    m = attention_mask
        (pooled = pooled / ||pooled||   if normalize)
        z      = pooled W^T + b                                (B, C)

    encoder: a :class:`BERT` (its MLM head stays unused) or a
    :class:`BertEncoder` (e.g. a pretrained one).
    Children: encoder, pooling, (normalize), head Linear(D, C).
    forward(idx, attention_mask=None, token_type_ids=None) -> logits (B, C)
    loss(idx, labels (B,), attention_mask=None) -> float;  backward(dout=None).
    """

    def __init__(self, encoder, num_classes, seed=0, normalize=False):
        super().__init__()
        if not isinstance(encoder, (BERT, BertEncoder)):
            raise TypeError("SequenceClassifier: encoder must be a BERT or a BertEncoder, "
                            "got %s" % type(encoder).__name__)
        if int(num_classes) < 2:
            raise ValueError("SequenceClassifier: num_classes must be >= 2, got %r"
                             % (num_classes,))
        self.num_classes = int(num_classes)
        self.add_layer("encoder", encoder)
        self.add_layer("pooling", MeanPooling())
        if normalize:
            self.add_layer("normalize", L2Normalize())
        self.add_layer("head", Linear(encoder.config.d_model, self.num_classes,
                                      rng=seed, dtype=encoder.dtype))
        self._criterion = SoftmaxCrossEntropy()
        self._last = None

    def _tokens(self):
        enc = self.layers["encoder"]
        return enc.layers["encoder"] if isinstance(enc, BERT) else enc

    def forward(self, idx, attention_mask=None, token_type_ids=None):
        enc = self._tokens()
        idx, pad, types = enc.check("SequenceClassifier.forward", idx, attention_mask,
                                    token_type_ids)
        h = enc.encode(idx, pad, types)                                          # (B, T, D)
        mask = np.ones(idx.shape) if pad is None else ~pad                       # (B, T)
        p = self.layers["pooling"].forward(h, mask)                              # (B, D)
        if "normalize" in self.layers:
            p = self.layers["normalize"].forward(p)                              # (B, D)
        self._last = "forward"
        return self.layers["head"].forward(p)                                    # (B, C)

    def loss(self, idx, labels, attention_mask=None):
        logits = self.forward(idx, attention_mask)
        labels = check_ids(labels, self.num_classes, "SequenceClassifier.loss", "labels", ndim=1)
        if labels.shape != logits.shape[:1]:
            raise ValueError("SequenceClassifier.loss: %d labels for %d sequences"
                             % (labels.shape[0], logits.shape[0]))
        loss = self._criterion.forward(logits, labels)
        self._last = "loss"
        return float(loss)

    def backward(self, dout=None):
        """After loss(): dout = dL/dloss (default 1); after forward(): dL/dlogits (B, C)."""
        if self._last == "loss":
            dz = self._criterion.backward(1.0 if dout is None else dout)
        elif self._last == "forward" and dout is not None:
            dz = np.asarray(dout)
        else:
            raise RuntimeError("SequenceClassifier.backward: call loss() (or forward() and pass "
                               "dL/dlogits) first")
        dp = self.layers["head"].backward(dz)                     # forward: z = head(p)
        if "normalize" in self.layers:
            dp = self.layers["normalize"].backward(dp)            # forward: p = p / ||p||
        dh = self.layers["pooling"].backward(dp)                  # forward: p = mean_t h_t
        self._tokens().backward(dh)                               # forward: h = encoder(idx)
        return None
