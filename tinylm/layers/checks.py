"""Input checks for the layers: bad input becomes one clear line, not a NumPy traceback.

Every message starts with where the problem is ("Linear.forward: ...") and
says what is wrong with which argument.  A layer declares what its methods
accept, so their bodies hold only the mathematics::

    @checked(x=Float(last="in_features"))      # float, the layer's dtype, (..., in)
    def forward(self, x): ...

    @checked(dy=Grad())                         # shaped like forward's output
    def backward(self, dy): ...

:func:`checked` validates (and converts: lists become arrays, a loss's dout a
scalar) the declared arguments before the method runs.  It also keeps the
one "was forward called?" state: a decorated ``forward`` records the shape
and dtype of its output in ``layer._out`` (which :class:`Grad` compares
against), a decorated ``backward`` refuses to run while ``layer._out`` is
None, and any other decorated method (an inference-only ``forward_step``)
resets it to None.

Argument specs: :class:`Float`, :class:`Ids`, :class:`Grad`, :class:`Scalar`; ``also=``
takes a function for the checks that involve several arguments.  The
functions underneath are public too: :func:`check_ids` (the one validation
of token ids), :func:`check_float`, :func:`check_dtype`.
"""

import functools
import inspect

import numpy as np

__all__ = ["checked", "Float", "Ids", "Grad", "Scalar", "TokenIdError", "check_ids", "check_float",
           "check_dtype"]


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


# -- declared signatures ------------------------------------------------------

def _layer_dtype(layer):
    """The dtype of the layer's parameters, or None for a layer without any."""
    if layer.params:
        return next(iter(layer.params.values())).dtype
    for _, p, _ in layer.named_parameters():
        return p.dtype
    return None


class Float:
    """A float array argument.

    dtype: "layer" - the layer's parameter dtype (any float if it has none);
        the name of an earlier argument whose dtype it must share; or None.
    min_ndim / ndim: at least / exactly that many dimensions; ``layout`` names
        the axes for the message of ``ndim`` ("batch, time, features").
    last: size of the last axis, an int or the name of a layer attribute.
    optional: None is accepted (and passed on).
    """

    def __init__(self, min_ndim=0, last=None, dtype="layer", ndim=None, layout=None,
                 optional=False):
        self.min_ndim = ndim if ndim is not None else min_ndim
        self.ndim, self.layout, self.last = ndim, layout, last
        self.dtype, self.optional = dtype, optional

    def check(self, layer, where, name, x, values):
        if x is None and self.optional:
            return None
        if self.dtype == "layer":
            dtype = _layer_dtype(layer)
        else:
            dtype = None if self.dtype is None else values[self.dtype].dtype
        last = getattr(layer, self.last) if isinstance(self.last, str) else self.last
        x = check_float(x, where, name, dtype, self.min_ndim, last)
        if self.ndim is not None and x.ndim != self.ndim:
            raise ValueError("%s: %s must be (%s), got shape %s"
                             % (where, name, self.layout or "%d dims" % self.ndim, x.shape))
        return x


class Ids:
    """An integer array of token ids (:func:`check_ids`); ``vocab``: the name of the
    layer attribute holding the vocabulary size, or None for no range check."""

    def __init__(self, vocab=None, ndim=None):
        self.vocab, self.ndim = vocab, ndim

    def check(self, layer, where, name, ids, values):
        vocab = None if self.vocab is None else getattr(layer, self.vocab)
        return check_ids(ids, vocab, where, name, self.ndim)


class Grad:
    """dL/d(output) in a backward: a float array of the forward output's shape and dtype."""

    def check(self, layer, where, name, g, values):
        shape, dtype = layer._out
        g = check_float(g, where, name, dtype)
        if shape is not None and g.shape != shape:
            raise ValueError("%s: %s has shape %s, expected %s" % (where, name, g.shape, shape))
        return g


class Scalar:
    """dL/dloss in a loss's backward: one number, returned as the loss's dtype."""

    def check(self, layer, where, name, d, values):
        d = np.asarray(d)
        if d.size != 1:
            raise ValueError("%s: a loss is a scalar, so %s must be a scalar, got shape %s"
                             % (where, name, d.shape))
        return layer._out[1].type(d.reshape(()))


def checked(also=None, **specs):
    """Decorate a layer's forward or backward with declared argument checks.

    specs: argument name -> Float / Ids / Grad / Scalar.  also(layer, where, values):
    optional function for checks that relate several arguments (values: every
    argument by name, the declared ones already checked).  ``forward`` records
    its output's (shape, dtype) in ``layer._out`` (the first item of a tuple);
    ``backward`` runs only when ``layer._out`` is set; other methods reset it.
    """
    def decorate(method):
        params = list(inspect.signature(method).parameters.values())[1:]
        names = [p.name for p in params]
        defaults = {p.name: p.default for p in params if p.default is not p.empty}
        role = method.__name__ if method.__name__ in ("forward", "backward") else "other"
        slots = list(specs.items())

        @functools.wraps(method)
        def run(self, *args, **kwargs):
            where = "%s.%s" % (type(self).__name__, method.__name__)
            if role == "backward" and self._out is None:
                raise RuntimeError("%s: call forward before backward (no cached forward pass)"
                                   % where)
            values = dict(zip(names, args))
            if kwargs:
                values.update(kwargs)
            if len(values) < len(names):
                for name, default in defaults.items():
                    values.setdefault(name, default)
            if len(args) > len(names) or len(values) != len(names):
                return method(self, *args, **kwargs)       # Python's own TypeError
            for name, spec in slots:
                values[name] = spec.check(self, where, name, values[name], values)
            if also is not None:
                also(self, where, values)
            out = method(self, **values)
            if role == "forward":
                first = out[0] if isinstance(out, tuple) else out
                self._out = ((first.shape, first.dtype) if isinstance(first, np.ndarray)
                             else (None, None))
            elif role == "other":
                self._out = None
            return out
        return run
    return decorate
