"""The model registry: one name -> (config dataclass, model class).

Every model in tinylm

* is configured by a small ``@dataclass`` (``model.config``; ``dataclasses.asdict``
  of it goes into checkpoints, so :func:`build_model` can rebuild the model);
* subclasses :class:`tinylm.layers.base.Layer` and is built only from
  ``tinylm.layers``;
* has ``forward(idx) -> logits`` (idx: (B, T) int, logits: (B, T, V)),
  ``loss(x, y) -> float`` (forward + mean cross-entropy, caches) and
  ``backward()`` (after ``loss``: fills every gradient).

Optional, for fast generation (``tinylm.generate`` uses them when present,
and otherwise re-runs ``forward`` on the growing sequence):

* ``init_cache(batch_size) -> cache`` and
  ``forward_step(idx, cache) -> logits`` (idx: (B, t) new tokens only, logits
  (B, t, V); the cache is updated in place), e.g. GPT's key/value cache or an
  RNN's hidden state;
* ``config.block_size``: the context generation re-runs when there is no
  cache; ``max_context``: a hard limit on the context (GPT's positions), past
  which generation crops and recomputes.

The classes are imported lazily (only when a model is asked for), so one
model's module failing to import does not break the others.  To add a model,
add one line to ``_REGISTRY``.
"""

import dataclasses
import importlib
from collections.abc import Mapping

from tinylm.models._common import LanguageModel   # the base class a new model subclasses

# name -> "module:ConfigClass:ModelClass"
_REGISTRY = {
    "gpt": "tinylm.models.gpt:GPTConfig:GPT",
    "ngram": "tinylm.models.ngram:NGramConfig:NGramLM",
    "mlp": "tinylm.models.mlp:MLPConfig:MLPLM",
    "rnn": "tinylm.models.rnn:RNNLMConfig:RNNLM",
    "lstm": "tinylm.models.rnn:LSTMLMConfig:LSTMLM",
    "gru": "tinylm.models.rnn:GRULMConfig:GRULM",
    "seq2seq": "tinylm.models.seq2seq:Seq2SeqConfig:Seq2Seq",
    "bert": "tinylm.models.bert:BERTConfig:BERT",
}


class _LazyModels(Mapping):
    """``MODELS[name] -> (ConfigClass, ModelClass)``, importing on first use."""

    def __init__(self, registry):
        self._registry = registry
        self._loaded = {}

    def __getitem__(self, name):
        if name not in self._registry:
            raise KeyError(name)
        if name not in self._loaded:
            modname, cfg, cls = self._registry[name].split(":")
            module = importlib.import_module(modname)
            self._loaded[name] = (getattr(module, cfg), getattr(module, cls))
        return self._loaded[name]

    def __iter__(self):
        return iter(self._registry)

    def __len__(self):
        return len(self._registry)


MODELS = _LazyModels(_REGISTRY)


def model_names():
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def get_model_classes(name):
    """(ConfigClass, ModelClass) for a registered name, with a clear error."""
    if name not in _REGISTRY:
        raise ValueError("unknown model %r; choose one of: %s"
                         % (name, ", ".join(model_names())))
    return MODELS[name]


def build_model(name, config_dict=None, **overrides):
    """Build a registered model from a config dict (e.g. one read from a checkpoint).

    Unknown config keys raise ``ValueError`` naming them (a typo should not be
    silently ignored); ``overrides`` are applied on top of ``config_dict``.
    """
    config_cls, model_cls = get_model_classes(name)
    d = dict(config_dict or {})
    d.update(overrides)
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError("model %r: unknown config key(s) %s; known keys: %s"
                         % (name, ", ".join(unknown), ", ".join(sorted(known))))
    return model_cls(config_cls(**d))


__all__ = ["MODELS", "build_model", "get_model_classes", "model_names", "LanguageModel"]
