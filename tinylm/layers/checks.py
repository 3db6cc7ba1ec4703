"""Input checks for the layers: bad input becomes one clear line, not a NumPy traceback.

Every message starts with where the problem is ("Linear.forward: ...") and
says what is wrong with which argument.  The layers call these so that their
forward and backward bodies hold only the mathematics.

* :func:`check_ids` - the one validation of token ids (dtype, dims, range).
* :func:`check_float` - a float input: ndarray, float32/float64, the layer's
  dtype, number of dimensions, size of the last axis.
* :func:`check_dtype` - a dtype argument (float32 or float64).
* :func:`check_backward_ready` - backward called before forward.
"""

import numpy as np

__all__ = ["TokenIdError", "check_ids", "check_float", "check_dtype", "check_backward_ready"]


class TokenIdError(ValueError, IndexError):
    """A token id outside [0, vocab_size).  Both a ValueError and an IndexError
    (an out-of-range id is a bad value and a bad index into the embedding)."""


def check_ids(ids, vocab_size, where, name="ids", ndim=None):
    """Validate integer token ids and return them as an ndarray.

    ids: array-like of integers; vocab_size: ids must be in [0, vocab_size)
    (None: no range check); where: "GPT.forward" etc.; ndim: required number
    of dimensions (2 means (batch, time)), None for any.
    Raises TypeError (not integers), ValueError (dimensions), TokenIdError
    (an id out of range; the message gives the id and its position).
    """
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError("%s: %s must be an integer array of token ids, got dtype %s"
                        % (where, name, ids.dtype))
    if ndim is not None and ids.ndim != ndim:
        layout = " (batch, time)" if ndim == 2 else ""
        raise ValueError("%s: %s must be a %d-D integer array%s, got %d dimensions, shape %s"
                         % (where, name, ndim, layout, ids.ndim, ids.shape))
    if vocab_size is not None and ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        pos = tuple(int(i) for i in np.argwhere((ids < 0) | (ids >= vocab_size))[0])
        raise TokenIdError("%s: %s has id %d at position %s, out of range: ids must be in "
                           "[0, %d)" % (where, name, ids[pos], pos, vocab_size))
    return ids


def check_float(x, where, name, dtype=None, min_ndim=0, last_dim=None):
    """Check a float input and return it as an ndarray (lists and numbers are converted).

    dtype: the layer's parameter dtype, which the input must have (tinylm never
    silently converts between float32 and float64); None accepts either.
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


def check_dtype(dtype):
    """np.dtype(dtype), which must be float32 or float64."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError("dtype must be float32 or float64, got %s" % dtype)
    return dtype


def check_backward_ready(where, cache):
    """Raise if ``cache`` (what forward keeps for backward) is missing."""
    if cache is None:
        raise RuntimeError("%s: call forward before backward (no cached forward pass)" % where)
