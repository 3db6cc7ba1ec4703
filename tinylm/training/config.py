"""What a training run is configured with: TrainConfig and the named presets.

A preset names a model, its config and training settings; ``resolve`` turns a
(model, preset) choice into the three, with clear errors for unknown names.
"""

import dataclasses
import math
from numbers import Integral, Real

from tinylm.models import get_model_classes

__all__ = ["TrainConfig", "setting", "check_setting", "describe_setting", "PRESETS",
           "DEFAULT_PRESET", "resolve"]


def setting(default, help, low=None, high=None, choices=None, above=None, below=None):
    """A TrainConfig field with its help text and allowed values.

    low/high: inclusive bounds for numbers; above/below: exclusive bounds;
    choices: the allowed strings.  Numbers must be finite; a None default
    means None is allowed.  ``tinylm train`` builds one command-line flag per
    field from these (``--batch-size`` for batch_size) and TrainConfig checks
    them when it is made, so a new setting is one line here.
    """
    return dataclasses.field(default=default, metadata=dict(
        help=help, low=low, high=high, choices=choices, above=above, below=below))


def describe_setting(kind, meta):
    """The allowed values in words: "an integer >= 1", "a number > 0 and < 1", ..."""
    if meta.get("choices"):
        return "one of " + ", ".join(map(str, meta["choices"]))
    bounds = [op + " " + str(meta[k]) for k, op in (("low", ">="), ("above", ">"),
                                                     ("high", "<="), ("below", "<"))
              if meta.get(k) is not None]
    return ("an integer" if kind is int else "a finite number") + \
        ("" if not bounds else " " + " and ".join(bounds))


def check_setting(name, kind, meta, value, optional=False):
    """``value`` converted to ``kind`` if it is allowed by ``meta``; else ValueError naming it."""
    if value is None and optional:
        return None
    if meta.get("choices"):
        if value not in meta["choices"]:
            raise ValueError("unknown %s %r; choose %s" % (name, value,
                                                         describe_setting(kind, meta)))
        return value
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and kind is int:
        ok = isinstance(value, Integral) or float(value).is_integer()
        value = int(value) if ok else value
    elif ok and kind is float:
        value = float(value)
    if ok:
        ok = ((meta.get("low") is None or value >= meta["low"]) and
              (meta.get("above") is None or value > meta["above"]) and
              (meta.get("high") is None or value <= meta["high"]) and
              (meta.get("below") is None or value < meta["below"]))
    if not ok:
        raise ValueError("%s must be %s, got %r" % (name, describe_setting(kind, meta), value))
    return value


@dataclasses.dataclass
class TrainConfig:
    """Everything about a run that is not the model (one field per setting, with its help).

    eval_batches: None (the default) scores the whole validation split at
    every evaluation: for gpt-s that costs about 6.5 training steps, 4% of a
    150-step interval (measured on a loaded 2-core machine), and makes the
    reported validation loss the one `tinylm eval` prints.

    time_budget: after the warm-up the cosine decay follows whichever budget
    is closer to being used up, max(step / steps, elapsed / time_budget), so
    the learning rate reaches min_lr when the time runs out even if the
    machine's speed changes.  (Time-budgeted runs are therefore not
    bit-reproducible; step-budgeted runs are.)
    """
    steps: int = setting(1000, "optimizer steps (the LR schedule's horizon)", low=1,
                         high=10 ** 12)
    time_budget: float = setting(None, "stop after this many seconds; the LR schedule is "
                                       "fitted to it", above=0)
    batch_size: int = setting(16, "sequences per optimizer step (under mpiexec: all ranks "
                                  "together)", low=1, high=1 << 20)
    grad_accum: int = setting(1, "cut each batch into this many equal micro-batches and "
                                 "sum their gradients before the step (the same step, "
                                 "less memory)", low=1)
    block_size: int = setting(None, "tokens per sequence (default: the model's block_size, "
                                    "or 128)", low=1, high=1 << 20)
    optimizer: str = setting("adamw", "adamw (decoupled decay), adam (L2) or sgd",
                             choices=("adamw", "adam", "sgd"))
    lr: float = setting(2e-3, "peak learning rate", low=0)
    min_lr: float = setting(2e-4, "learning rate at the end of the cosine decay", low=0)
    warmup: int = setting(100, "steps of linear learning-rate warm-up", low=0)
    weight_decay: float = setting(None, "default 0.01 for adamw (decoupled), 0 for adam/sgd "
                                        "(L2)", low=0)
    beta1: float = setting(0.9, "Adam's beta1 (SGD's momentum)", low=0, below=1)
    beta2: float = setting(0.99, "Adam's beta2", low=0, below=1)
    grad_clip: float = setting(1.0, "clip the gradient norm to this (0: no clipping)", low=0)
    eval_interval: int = setting(250, "steps between validation evaluations and checkpoints",
                                 low=1)
    eval_batches: int = setting(None, "score only the first N validation batches (default: "
                                      "the whole split; `tinylm eval` scores the same "
                                      "windows)", low=1)
    patience: int = setting(None, "early stopping: evaluations without a better validation "
                                  "loss (default: never)", low=1)
    val_fraction: float = setting(0.1, "share of the corpus held out for validation",
                                  above=0, below=1)
    val_split: str = setting("blocks", "how the text is split: blocks (interleaved, the "
                                       "same for every tokenizer) or tail (old runs)",
                             choices=("blocks", "tail"))
    seed: int = setting(0, "random seed (batches, and the model's weights and dropout)",
                        low=0, high=2 ** 63 - 1)
    log_seconds: float = setting(10.0, "at most one progress line per this many seconds",
                                 low=0)
    plot: bool = setting(True, "write loss.png", choices=(True, False))

    def __post_init__(self):
        """Every field within its declared range (ValueError naming the field)."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_setting(f.name, f.type, f.metadata,
                                                getattr(self, f.name), f.default is None))


# A preset: the model and its config plus training settings, by name.
# "gpt-s" is what `tinylm train` runs with no arguments.
PRESETS = {
    "gpt-s": dict(model="gpt",
                  model_config=dict(n_layer=4, n_head=4, d_model=128, block_size=128,
                                    dropout=0.0),
                  train=dict(steps=1500, time_budget=290.0, batch_size=16, lr=2e-3,
                             min_lr=2e-4, warmup=100, eval_interval=150)),
    "gpt-m": dict(model="gpt",
                  model_config=dict(n_layer=6, n_head=6, d_model=192, block_size=256,
                                    dropout=0.1),
                  train=dict(steps=3000, batch_size=8, lr=1e-3, min_lr=1e-4,
                             warmup=200, eval_interval=250)),
    "gpt-tiny": dict(model="gpt",
                     model_config=dict(n_layer=1, n_head=2, d_model=32, block_size=32,
                                       dropout=0.0),
                     train=dict(steps=50, batch_size=8, lr=3e-3, min_lr=3e-4, warmup=5,
                                eval_interval=25)),
    # a two-layer GRU LM (PyTorch's num_layers=2, dropout between the layers)
    "gru-s": dict(model="gru",
                  model_config=dict(emb_dim=64, hidden=256, num_layers=2, dropout=0.1,
                                    block_size=64),
                  train=dict(steps=1500, time_budget=290.0, batch_size=16, lr=3e-3,
                             min_lr=3e-4, warmup=50, eval_interval=150)),
    "gru-tiny": dict(model="gru",
                     model_config=dict(emb_dim=16, hidden=32, num_layers=2, dropout=0.1,
                                       block_size=16),
                     train=dict(steps=50, batch_size=8, lr=3e-3, min_lr=3e-4, warmup=5,
                                eval_interval=25)),
}
DEFAULT_PRESET = {"gpt": "gpt-s"}


def resolve(model, preset):
    """(model name, model config dict, train settings dict) for a model/preset choice."""
    if preset is None and model is None:
        preset = DEFAULT_PRESET["gpt"]
    if preset is None:
        preset = DEFAULT_PRESET.get(model)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError("unknown preset %r; choose one of: %s"
                             % (preset, ", ".join(sorted(PRESETS))))
        p = PRESETS[preset]
        if model is not None and model != p["model"]:
            raise ValueError("preset %r is for model %r, not %r"
                             % (preset, p["model"], model))
        return p["model"], dict(p["model_config"]), dict(p["train"])
    get_model_classes(model)            # clear error for an unknown name
    return model, {}, {}

