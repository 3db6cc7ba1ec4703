"""Random generators: the one way tinylm turns a seed into generators.

Every random draw in tinylm (initialisation, dropout masks, data order) comes
from an explicit ``np.random.Generator``, never from NumPy's global state, so a
run is reproducible from its seed.

* :func:`default_rng` accepts what users pass as ``rng=``: a Generator (used as
  is), an int seed, or None (seed 0).
* :func:`child_rng` / :func:`spawn` give a part of a model its own generator
  (a dropout layer, say) derived from the parent's.  The child's seed is one
  63-bit draw from the parent's stream, so the result depends only on the
  parent's seed and the order of construction.  (``Generator.spawn`` would do
  a similar job but needs NumPy >= 1.25; tinylm supports 1.23.2, see setup.py.)
"""

import numpy as np

__all__ = ["default_rng", "child_rng", "spawn"]


def default_rng(rng=None):
    """An np.random.Generator from a Generator (returned as is), an int seed, or None (seed 0)."""
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    raise TypeError("rng must be a numpy Generator, an int seed or None, got %s"
                    % type(rng).__name__)


def child_rng(rng):
    """A new generator seeded by one draw from ``rng`` (which advances by that draw)."""
    return np.random.default_rng(int(default_rng(rng).integers(2**63)))


def spawn(rng, n):
    """A list of ``n`` child generators of ``rng``, as ``n`` calls of :func:`child_rng`."""
    rng = default_rng(rng)
    return [child_rng(rng) for _ in range(int(n))]
