"""Layer normalisation and dropout.

LayerNorm normalises each vector along the last axis (size D), then scales
and shifts it::

    mu   = mean(x)                          (..., 1)
    var  = mean((x - mu)^2)                 (..., 1)   (biased, as PyTorch)
    rstd = 1 / sqrt(var + eps)              (..., 1)
    xhat = (x - mu) * rstd                  (..., D)
    y    = xhat * weight + bias             (..., D)

### BEGIN ANSWER
Backward, with g = dy * weight (the gradient reaching xhat)::

    dweight += sum over rows of dy * xhat
    dbias   += sum over rows of dy
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))

(the two means are the parts of the gradient flowing back through mu and
through var).
### END ANSWER

Dropout, in training mode, zeroes each entry with probability p and scales the
survivors by 1/(1-p) ("inverted dropout", so nothing changes at eval time)::

    mask = (u >= p) / (1 - p),  u ~ Uniform[0, 1)     y = x * mask     dx = dy * mask

In eval mode (``layer.eval()``) it is the identity.
"""

import numpy as np

from tinylm import kernels
from tinylm.layers.base import Layer
from tinylm.layers.checks import Float, Grad, check_dtype, checked
from tinylm.rng import default_rng

__all__ = ["LayerNorm", "Dropout"]

_IDENTITY = "identity"      # Dropout's cache in eval mode or with p = 0: no mask


class LayerNorm(Layer):
    """Normalise over the last axis (PyTorch's nn.LayerNorm(D)).

    Parameters: ``weight`` (D,) init 1, ``bias`` (D,) init 0 (absent when
    elementwise_affine=False).   x: (..., D) -> y: (..., D).
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, dtype=np.float32):
        super().__init__()
        D = int(normalized_shape)
        if D < 1:
            raise ValueError("LayerNorm: normalized_shape must be >= 1, got %d" % D)
        if not eps > 0:
            raise ValueError("LayerNorm: eps must be > 0, got %r" % (eps,))
        dtype = check_dtype(dtype)
        self.normalized_shape, self.eps = D, float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self._dtype = dtype
        if elementwise_affine:
            self.add_param("weight", np.ones(D, dtype))
            self.add_param("bias", np.zeros(D, dtype))

    @checked(x=Float(1, last="normalized_shape"))
    def forward(self, x):
        """x: (..., D) -> y: (..., D)."""
        # mu, var, rstd, xhat, y as in the module docstring, in one pass over x
        # (the NumPy lines are kernels.layernorm_forward_reference)
        w, b = ((self.params["weight"], self.params["bias"]) if self.elementwise_affine
                else (None, None))
        y, xhat, rstd = kernels.layernorm_forward(x, w, b, self.eps)  # (..., D), (..., D), (..., 1)
        self._cache = (xhat, rstd)
        return y

    @checked(dy=Grad())
    def backward(self, dy):
        """dy: (..., D) -> dx: (..., D); adds into grads["weight"], grads["bias"]."""
        xhat, rstd = self._cache
        if kernels.get_backend() == "c":
            # fast path: the lines below in one C pass (kernels.layernorm_backward)
            return self._backward_fused(dy, xhat, rstd)
        ### BEGIN SOLUTION
        D = self.normalized_shape
        if self.elementwise_affine:
            # forward: y = xhat * weight + bias
            #   ->  dweight += sum(dy * xhat),  dbias += sum(dy),  g = dy * weight
            self.grads["weight"] += (dy * xhat).reshape(-1, D).sum(axis=0)
            self.grads["bias"] += dy.reshape(-1, D).sum(axis=0)
            g = dy * self.params["weight"]                           # (..., D)
        else:
            g = dy
        # forward: xhat = (x - mu) * rstd, with mu = mean(x), rstd = (mean((x-mu)^2) + eps)^-1/2
        #   ->  dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
        dx = rstd * (g - g.mean(axis=-1, keepdims=True)
                     - xhat * (g * xhat).mean(axis=-1, keepdims=True))
        ### END SOLUTION
        return dx

    def _backward_fused(self, dy, xhat, rstd):
        w = self.params["weight"] if self.elementwise_affine else None
        dx, dweight, dbias = kernels.layernorm_backward(dy, xhat, rstd, w)
        if w is not None:
            self.grads["weight"] += dweight
            self.grads["bias"] += dbias
        return dx


class Dropout(Layer):
    """Inverted dropout with its own seeded generator.

    p: probability of zeroing an entry, 0 <= p <= 1 (p = 1 zeroes everything).
    rng: np.random.Generator or int seed (None: seed 0).  The masks drawn
    depend only on this generator, so a run is reproducible.
    x: any shape -> y: same shape.  Identity in eval mode or when p = 0.
    """

    def __init__(self, p=0.1, rng=None):
        super().__init__()
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError("Dropout: p must be in [0, 1], got %r" % p)
        self.p = p
        self.rng = default_rng(rng)

    @checked(x=Float(dtype=None))
    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._cache = _IDENTITY
            return x
        if self.p == 1.0:
            mask = np.zeros(x.shape, x.dtype)
        else:
            mask = ((self.rng.random(x.shape) >= self.p)
                    .astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p)))
        self._cache = mask
        return x * mask                                             # y = x * mask

    @checked(dy=Grad())
    def backward(self, dy):
        if self._cache is _IDENTITY:
            return dy
        return dy * self._cache                                     # dx = dy * mask
