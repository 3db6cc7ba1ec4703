"""What a training run is configured with: TrainConfig and the named presets.

A preset names a model, its config and training settings; ``resolve`` turns a
(model, preset) choice into the three, with clear errors for unknown names.
"""

import dataclasses

from tinylm.models import get_model_classes

__all__ = ["TrainConfig", "PRESETS", "DEFAULT_PRESET", "resolve"]


@dataclasses.dataclass
class TrainConfig:
    """Everything about a run that is not the model.

    steps: the number of optimizer steps (the LR schedule's horizon).
    time_budget: seconds; if set, the run also stops by then, and after the
        warm-up the cosine decay follows whichever budget is closer to being
        used up, max(step / steps, elapsed / time_budget), so the learning
        rate reaches min_lr when the time runs out even if the machine's
        speed changes during the run.  (Time-budgeted runs are therefore not
        bit-reproducible; step-budgeted runs are.)
    patience: stop after this many evaluations without a better validation
        loss (early stopping); None = never.
    """
    steps: int = 1000
    time_budget: float = None
    batch_size: int = 16
    block_size: int = None          # None: the model's config.block_size (or 128)
    optimizer: str = "adamw"        # "adamw" (decoupled decay), "adam" (L2), "sgd"
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = None      # None: 0.01 for adamw (decoupled), 0 for adam/sgd (L2)
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_batches: int = 16
    patience: int = None
    val_fraction: float = 0.1
    seed: int = 0
    log_seconds: float = 10.0       # at most one progress line per this many seconds
    plot: bool = True


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
                                eval_interval=25, eval_batches=4)),
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

