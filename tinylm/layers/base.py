"""The layer contract every tinylm layer and model follows.

A layer

* owns named parameters (``self.params[name]``, NumPy arrays) and a gradient of
  the same shape and dtype for each (``self.grads[name]``);
* may own child layers (``self.layers[name]``), whose parameters appear under
  ``"child.name"`` in :meth:`Layer.named_parameters`;
* ``forward(*inputs)`` computes its output and keeps what ``backward`` needs
  in ``self._cache`` (one cache per layer: call forward, then backward, then
  forward again; None means "nothing to differentiate");
* ``backward(dout)`` takes dL/d(output), **adds** dL/d(parameter) into
  ``self.grads`` (so two backward calls double them) and returns dL/d(input)
  (a tuple when the forward took several differentiable inputs);
* ``zero_grad()`` resets every gradient to zero, recursively;
* ``train()`` / ``eval()`` switch the mode (dropout is the layer that cares),
  recursively.

A composite layer is built from smaller ones: its forward calls theirs in
order and its backward calls their backwards in reverse order.

Input checks are declared, not written into the mathematics: see
:func:`tinylm.layers.checks.checked`.

Parameters are updated in place by the optimizers (``p -= lr * g``), so a
layer must never rebind ``self.params[name]`` to a new array after
construction except through :meth:`Layer.load_state_dict`, which copies into
the existing arrays.
"""

from collections import OrderedDict

import numpy as np


class Layer:
    """Base class: parameter bookkeeping, children, mode, state dicts."""

    def __init__(self):
        self.params = OrderedDict()   # name -> ndarray
        self.grads = OrderedDict()    # name -> ndarray, same shape/dtype
        self.layers = OrderedDict()   # name -> child Layer
        self.training = True
        self._cache = None            # what backward needs, set by forward
        self._out = None              # (shape, dtype) of forward's output: see layers.checks

    # -- building ----------------------------------------------------------
    def add_param(self, name, value):
        """Register a parameter (and its zero gradient); returns the array."""
        if "." in name:
            raise ValueError("parameter names may not contain '.': %r" % name)
        value = np.asarray(value)
        if value.dtype not in (np.float32, np.float64):
            raise TypeError("parameter %r must be float32 or float64, got %s"
                            % (name, value.dtype))
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        return value

    def add_layer(self, name, layer):
        """Register a child layer; returns it."""
        if not isinstance(layer, Layer):
            raise TypeError("child %r must be a Layer, got %s" % (name, type(layer).__name__))
        if "." in name:
            raise ValueError("layer names may not contain '.': %r" % name)
        self.layers[name] = layer
        return layer

    # -- the contract ------------------------------------------------------
    def forward(self, *inputs):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    # -- walking the tree --------------------------------------------------
    def named_parameters(self, prefix=""):
        """Yield (qualified name, param, grad) for this layer and its children."""
        for name, p in self.params.items():
            yield prefix + name, p, self.grads[name]
        for cname, child in self.layers.items():
            yield from child.named_parameters(prefix + cname + ".")

    def parameters(self):
        """List of (param, grad) pairs, the optimizers' view."""
        return [(p, g) for _, p, g in self.named_parameters()]

    def num_parameters(self):
        return sum(p.size for _, p, _ in self.named_parameters())

    def zero_grad(self):
        for _, _, g in self.named_parameters():
            g[...] = 0

    def train(self, mode=True):
        self.training = bool(mode)
        for child in self.layers.values():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    # -- dtype and state ---------------------------------------------------
    def astype(self, dtype):
        """Convert every parameter (and gradient) to dtype, in place; returns self."""
        dtype = np.dtype(dtype)
        for name in list(self.params):
            self.params[name] = self.params[name].astype(dtype)
            self.grads[name] = np.zeros_like(self.params[name])
        for child in self.layers.values():
            child.astype(dtype)
        return self

    @property
    def dtype(self):
        for _, p, _ in self.named_parameters():
            return p.dtype
        return np.dtype(np.float64)

    def state_dict(self):
        """OrderedDict of qualified name -> parameter array (not copies)."""
        return OrderedDict((n, p) for n, p, _ in self.named_parameters())

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters (shapes must match exactly)."""
        own = self.state_dict()
        if strict:
            missing = [n for n in own if n not in state]
            extra = [n for n in state if n not in own]
            if missing or extra:
                raise KeyError("state dict mismatch: missing %s, unexpected %s"
                               % (missing, extra))
        for name, p in own.items():
            if name not in state:
                continue
            src = np.asarray(state[name])
            if src.shape != p.shape:
                raise ValueError("parameter %r: shape %s in the state dict, %s in the model"
                                 % (name, src.shape, p.shape))
            p[...] = src
        return self

    def __repr__(self):
        inner = ", ".join("%s=%s" % (n, tuple(p.shape)) for n, p in self.params.items())
        kids = "".join("\n  (%s): %s" % (n, repr(c).replace("\n", "\n  "))
                       for n, c in self.layers.items())
        return "%s(%s)%s" % (type(self).__name__, inner, kids)
