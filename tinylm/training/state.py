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


def load_trained(path):
    """(model, tokenizer, meta, arrays) from a checkpoint written by a Trainer."""
    arrays, meta = ckpt.load_checkpoint(path)
    if meta.get("kind") != FORMAT:
        raise ValueError("%s: a tinylm checkpoint, but not one written by tinylm.train "
                         "(kind %r, expected %r)" % (path, meta.get("kind"), FORMAT))
    model = build_model(meta["model"], meta["model_config"])
    model.load_state_dict(ckpt.join_state(arrays, {}, "model."))
    model.eval()
    tok = tokenizer_from_dict(meta["tokenizer"])
    return model, tok, meta, arrays


def tokenizer_from_meta(meta):
    return tokenizer_from_dict(meta["tokenizer"])
