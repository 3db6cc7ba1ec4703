"""The training API under its original name: ``from tinylm.train import Trainer, ...``.

The code lives in :mod:`tinylm.training` (config, data preparation, the step,
evaluation, checkpoint state, the Trainer, ``train()``); this module re-exports
its public names so the README's, the lessons' and users' imports keep working.
"""

from tinylm.training import *  # noqa: F401,F403
from tinylm.training import __all__  # noqa: F401
