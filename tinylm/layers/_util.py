"""Small input checks shared by the layers (clear errors instead of NumPy's)."""

import numpy as np


def as_float_input(where, name, x, dtype, min_ndim=1, last_dim=None):
    """Check a float input of a layer and return it as an ndarray.

    where: "Linear.forward" etc., used in every message.
    dtype: the layer's parameter dtype; the input must have it (tinylm never
    silently converts between float32 and float64).
    """
    if not isinstance(x, np.ndarray):
        if isinstance(x, (list, tuple, float, int)):
            x = np.asarray(x, dtype=dtype)
        else:
            raise TypeError("%s: %s must be a numpy array, got %s"
                            % (where, name, type(x).__name__))
    if x.dtype not in (np.float32, np.float64):
        raise TypeError("%s: %s has dtype %s; expected float32 or float64"
                        % (where, name, x.dtype))
    if dtype is not None and x.dtype != np.dtype(dtype):
        raise TypeError("%s: %s has dtype %s but the layer's parameters are %s; "
                        "convert one of them (x.astype(...) or layer.astype(...))"
                        % (where, name, x.dtype, np.dtype(dtype)))
    if x.ndim < min_ndim:
        raise ValueError("%s: %s must have at least %d dimension(s), got shape %s"
                         % (where, name, min_ndim, x.shape))
    if last_dim is not None and x.shape[-1] != last_dim:
        raise ValueError("%s: %s has last dimension %d, expected %d (shape %s)"
                         % (where, name, x.shape[-1], last_dim, x.shape))
    return x


def as_int_input(where, name, ids, high=None):
    """Check an integer index array (token ids, targets)."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError("%s: %s must be an integer array, got dtype %s"
                        % (where, name, ids.dtype))
    return ids


def check_backward_ready(where, cache):
    if cache is None:
        raise RuntimeError("%s: call forward before backward (no cached forward pass)" % where)


def default_rng(rng):
    """The layer's random generator: an np.random.Generator, a seed, or None (seed 0)."""
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    raise TypeError("rng must be a numpy Generator, an int seed or None, got %s"
                    % type(rng).__name__)


def check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError("dtype must be float32 or float64, got %s" % dtype)
    return dtype


def child_rng(rng):
    """An independent generator seeded from rng (Generator.spawn needs NumPy >= 1.25)."""
    return np.random.default_rng(int(rng.integers(2**63)))
