"""A BERT-style encoder pretrained as a masked language model (MLM), and a classifier on top.

Document 004 (core algorithms: pretraining, fine-tuning) and 000 section 5.2
describe pretraining a Transformer on unlabelled text and fine-tuning it on a
small labelled task.  A causal LM (GPT, ``tinylm.models.gpt``) predicts the
next token; a *masked* LM (BERT, Devlin et al. 2019) sees the whole sentence
in both directions and predicts tokens that were hidden from it.

Encoder, for token ids idx (B, T) and an optional attention_mask (B, T)
(1 = real token, 0 = padding, the Hugging Face convention)::

    x = E_tok[idx] + E_pos[0:T]                 (B, T, D)   token + learned position embeddings
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
from tinylm.layers.positional import LearnedPositionalEmbedding
from tinylm.layers.transformer import TransformerBlock
from tinylm.models._common import LanguageModel
from tinylm.rng import spawn

__all__ = ["BERTConfig", "BERT", "SequenceClassifier"]

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


class BERT(LanguageModel):
    """Masked-LM Transformer encoder (see the module docstring).

    Children: tok_embed Embedding(V+1, D), pos_embed LearnedPositionalEmbedding,
    ln_emb, drop_emb, block0 .. block{n-1} (post-LN TransformerBlock, GELU),
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
        if min(c.vocab_size, c.block_size, c.n_layer, c.n_head, c.d_model) < 1:
            raise ValueError("BERTConfig: sizes must be >= 1, got %r" % (c,))
        if not 0.0 < c.mask_prob <= 1.0:
            raise ValueError("BERTConfig: mask_prob must be in (0, 1], got %r" % (c.mask_prob,))
        rng = np.random.default_rng(c.seed)
        dtype = np.dtype(c.dtype)
        D = c.d_model
        self.mask_id = c.vocab_size
        self.add_layer("tok_embed", Embedding(c.vocab_size + 1, D, rng=rng, dtype=dtype,
                                              init_std=0.02))
        self.add_layer("pos_embed", LearnedPositionalEmbedding(c.block_size, D, rng=rng,
                                                               dtype=dtype))
        self.add_layer("ln_emb", LayerNorm(D, dtype=dtype))
        drop_rng, self.mask_rng = spawn(c.seed, 2)       # dropout masks; which tokens to mask
        self.add_layer("drop_emb", Dropout(c.dropout, rng=drop_rng))
        for i in range(c.n_layer):
            self.add_layer("block%d" % i, TransformerBlock(
                D, c.n_head, d_ff=c.d_ff or 4 * D, dropout=c.dropout, norm_first=False,
                causal=(c.objective == "causal"), activation="gelu", rng=rng, dtype=dtype))
        self.add_layer("head_fc", Linear(D, D, rng=rng, dtype=dtype))
        self.add_layer("head_act", GELU("none"))
        self.add_layer("head_ln", LayerNorm(D, dtype=dtype))
        self.add_layer("head_out", Linear(D, c.vocab_size, rng=rng, dtype=dtype))

    def _blocks(self):
        return [self.layers["block%d" % i] for i in range(self.config.n_layer)]

    # -- the encoder -----------------------------------------------------------
    def _encode(self, idx, pad):
        L = self.layers
        x = L["tok_embed"].forward(idx)                       # (B, T, D)   E_tok[idx]
        x = L["pos_embed"].forward(x)                         # (B, T, D)   + E_pos[0:T]
        x = L["ln_emb"].forward(x)                            # (B, T, D)
        x = L["drop_emb"].forward(x)
        for blk in self._blocks():
            x = blk.forward(x, key_padding_mask=pad)          # (B, T, D)
        return x

    def _encode_backward(self, dh):
        L = self.layers
        for blk in reversed(self._blocks()):
            dh = blk.backward(dh)                             # forward: x = block(x)
        dh = L["drop_emb"].backward(dh)                       # forward: x = drop_emb(x)
        dh = L["ln_emb"].backward(dh)                         # forward: x = ln_emb(x)
        dh = L["pos_embed"].backward(dh)                      # forward: x = x + E_pos[0:T]
        L["tok_embed"].backward(dh)                           # forward: x = E_tok[idx]

    def _check(self, where, idx, attention_mask):
        # inputs may contain [MASK] = vocab_size
        idx = check_ids(idx, self.vocab_size + 1, where, "idx", ndim=2)
        if idx.shape[1] > self.config.block_size:
            raise ValueError("%s: sequence length %d exceeds block_size=%d"
                             % (where, idx.shape[1], self.config.block_size))
        return idx, _padding(where, attention_mask, idx.shape)

    def encode(self, idx, attention_mask=None):
        """idx (B, T) -> hidden states (B, T, D), for a task head (fine-tuning).

        Differentiate with :meth:`encode_backward`.
        """
        idx, pad = self._check("BERT.encode", idx, attention_mask)
        h = self._encode(idx, pad)
        self._last = "encode"
        return h

    def encode_backward(self, dh):
        """dh = dL/dhidden (B, T, D) after :meth:`encode`: adds into every encoder gradient."""
        if self._last != "encode":
            raise RuntimeError("BERT.encode_backward: call encode() first")
        self._encode_backward(np.asarray(dh))

    # -- the MLM head --------------------------------------------------------
    def _forward_masked(self, idx, pad):
        L = self.layers
        h = self._encode(idx, pad)                            # (B, T, D)
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
        self._encode_backward(dh)                             # forward: h = encoder(idx)

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
    """A classification head on a (pretrained or fresh) :class:`BERT` encoder.

    Mean-pools the hidden states over the real tokens, then a linear layer::

        h      = encoder.encode(idx, attention_mask)           (B, T, D)
        pooled = sum_t m_t h_t / sum_t m_t                     (B, D)    m = attention_mask
        z      = pooled W^T + b                                (B, C)

    Children: encoder (the BERT; its MLM head stays unused), head Linear(D, C).
    forward(idx, attention_mask=None) -> logits (B, C)
    loss(idx, labels (B,), attention_mask=None) -> float;  backward(dout=None).
    """

    def __init__(self, encoder, num_classes, seed=0):
        super().__init__()
        if not isinstance(encoder, BERT):
            raise TypeError("SequenceClassifier: encoder must be a BERT, got %s"
                            % type(encoder).__name__)
        if int(num_classes) < 2:
            raise ValueError("SequenceClassifier: num_classes must be >= 2, got %r"
                             % (num_classes,))
        self.num_classes = int(num_classes)
        self.add_layer("encoder", encoder)
        self.add_layer("head", Linear(encoder.config.d_model, self.num_classes,
                                      rng=seed, dtype=encoder.dtype))
        self._criterion = SoftmaxCrossEntropy()
        self._cache = None
        self._last = None

    def forward(self, idx, attention_mask=None):
        h = self.layers["encoder"].encode(idx, attention_mask)                  # (B, T, D)
        B, T, _ = h.shape
        m = (np.ones((B, T)) if attention_mask is None
             else np.asarray(attention_mask).astype(bool)).astype(h.dtype)      # (B, T)
        count = m.sum(axis=1, keepdims=True)                                    # (B, 1)
        pooled = (m[:, :, None] * h).sum(axis=1) / count                        # (B, D)
        self._cache = (m, count)
        self._last = "forward"
        return self.layers["head"].forward(pooled)                              # (B, C)

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
        m, count = self._cache
        # forward: z = head(pooled)
        dpooled = self.layers["head"].backward(dz)                              # (B, D)
        # forward: pooled = sum_t m_t h_t / count  ->  dh_t = m_t dpooled / count
        dh = m[:, :, None] * (dpooled / count)[:, None, :]                      # (B, T, D)
        # forward: h = encoder.encode(idx)
        self.layers["encoder"].encode_backward(dh)
        return None
