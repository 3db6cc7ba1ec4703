"""Training language models: the step, the loop, and everything a run needs around them.

Modules, in the order a run uses them:

* ``config``     - TrainConfig (every setting of a run) and the named PRESETS;
* ``prepare``    - corpus -> tokenizer -> train/validation token ids;
* ``step``       - ``train_step(model, optimizer, x, y, clip)``: forward,
  backward, clip, update;
* ``evaluation`` - the validation loss on fixed windows;
* ``state``      - checkpoint names, the RNGs of every layer, ``load_trained``;
* ``trainer``    - the Trainer: train_step in a loop with a schedule,
  evaluation, logging, early stopping and checkpoints;
* ``run``        - ``train()``: a whole run from names (what ``tinylm train`` calls).
"""

from tinylm.training.config import DEFAULT_PRESET, PRESETS, TrainConfig, resolve
from tinylm.training.evaluation import evaluate
from tinylm.training.prepare import make_tokenizer, prepare_data
from tinylm.training.run import train
from tinylm.training.state import (BEST_NAME, CHECKPOINT_NAME, FORMAT, PLOT_NAME, layer_rngs,
                                   load_trained)
from tinylm.training.step import train_step
from tinylm.training.trainer import Trainer, TrainResult

__all__ = ["TrainConfig", "PRESETS", "DEFAULT_PRESET", "resolve", "prepare_data",
           "make_tokenizer", "train_step", "evaluate", "layer_rngs", "load_trained",
           "Trainer", "TrainResult", "train", "FORMAT", "CHECKPOINT_NAME", "BEST_NAME",
           "PLOT_NAME"]
