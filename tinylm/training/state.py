"""Checkpoint bookkeeping: file names, the format tag, every layer's RNG, loading a run back.

A training checkpoint holds the weights, the optimizer's moments, the step,
the batch sampler's RNG and each layer's dropout RNG, so a resumed run
continues with the very same losses.
"""

import numpy as np

from tinylm import checkpoint as ckpt
from tinylm.models import build_model
from tinylm.tokenizers import tokenizer_from_dict

__all__ = ["FORMAT", "CHECKPOINT_NAME", "BEST_NAME", "PLOT_NAME", "layer_rngs",
           "load_trained", "tokenizer_from_meta"]

FORMAT = "tinylm-train-1"          # meta["kind"]: what tinylm.train writes
CHECKPOINT_NAME = "checkpoint.npz"   # latest state (what --resume reads)
BEST_NAME = "best.npz"               # the state with the best validation loss
PLOT_NAME = "loss.png"

def layer_rngs(model):
    """{"path.attr": Generator} for every np.random.Generator a layer holds."""
    found, seen = {}, set()

    def walk(layer, prefix):
        for attr, val in sorted(vars(layer).items()):
            if isinstance(val, np.random.Generator) and id(val) not in seen:
                seen.add(id(val))
                found[prefix + attr] = val
        for name, child in layer.layers.items():
            walk(child, prefix + name + ".")
    walk(model, "")
    return found


def _check_model_config(path, config, weights):
    """Before building: no size in the config exceeds what the stored weights could hold.

    A crafted config (d_model = 10**9) would otherwise allocate without bound.
    Every integer setting except the seed must be at most the largest
    dimension (or the number) of the stored model arrays.
    """
    if not isinstance(config, dict) or not weights:
        raise ckpt.CheckpointError("%s: no model config or no model weights" % path)
    largest = max([len(weights)] + [max(a.shape, default=1) for a in weights.values()])
    for key, value in config.items():
        if key == "seed" or isinstance(value, bool) or not isinstance(value, int):
            continue
        if not 0 <= value <= largest:
            raise ckpt.CheckpointError(
                "%s: model_config %s = %d does not fit the stored weights (largest dimension "
                "%d); the checkpoint is corrupt or crafted" % (path, key, value, largest))


def load_trained(path):
    """(model, tokenizer, meta, arrays) from a checkpoint written by a Trainer.

    Raises FileNotFoundError, or :class:`tinylm.checkpoint.CheckpointError`
    (a ValueError) for a file that is not a trained tinylm model.
    """
    arrays, meta = ckpt.load_checkpoint(path)
    if meta.get("kind") != FORMAT:
        raise ckpt.CheckpointError("%s: a tinylm checkpoint, but not one written by "
                                   "tinylm.train (kind %r, expected %r)"
                                   % (path, meta.get("kind"), FORMAT))
    try:
        weights = ckpt.join_state(arrays, {}, "model.")
        _check_model_config(path, meta.get("model_config"), weights)
        model = build_model(meta["model"], meta["model_config"])
        model.load_state_dict(weights)
        tok = tokenizer_from_dict(meta["tokenizer"])
    except ckpt.CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, MemoryError) as exc:
        raise ckpt.CheckpointError("%s: not a usable trained model: %s%s"
                                   % (path, type(exc).__name__ + ": " if isinstance(
                                       exc, (KeyError, MemoryError)) else "", exc)) from None
    model.eval()
    return model, tok, meta, arrays


def tokenizer_from_meta(meta):
    return tokenizer_from_dict(meta["tokenizer"])
