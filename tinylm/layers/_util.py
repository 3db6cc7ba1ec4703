"""Old names kept only until tinylm/models and tinylm/pretrained import the new ones.

Use :mod:`tinylm.layers.checks` and :mod:`tinylm.rng`; this module will be deleted.
"""

from tinylm.layers.checks import check_backward_ready, check_dtype, check_float, check_ids
from tinylm.rng import child_rng, default_rng

__all__ = ["as_float_input", "as_int_input", "check_backward_ready", "check_dtype",
           "child_rng", "default_rng"]


def as_float_input(where, name, x, dtype, min_ndim=1, last_dim=None):
    return check_float(x, where, name, dtype, min_ndim, last_dim)


def as_int_input(where, name, ids, high=None):
    return check_ids(ids, None, where, name)
