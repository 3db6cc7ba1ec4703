"""Element-wise activations and their derivatives.

### BEGIN ANSWER
=========  =====================================  ==========================================
layer      forward y = f(x)                       backward dx = dy * f'(x)
=========  =====================================  ==========================================
Tanh       tanh(x)                                dy * (1 - y^2)
Sigmoid    1 / (1 + exp(-x))                      dy * y * (1 - y)
ReLU       max(x, 0)                              dy * [x > 0]
GELU       x * Phi(x) = x/2 * (1 + erf(x/sqrt2))  dy * (Phi(x) + x * phi(x))
GELU-tanh  x/2 * (1 + tanh(u)),                   dy * (1/2 (1 + t) + x/2 (1 - t^2) du/dx),
           u = sqrt(2/pi) (x + 0.044715 x^3)      t = tanh(u), du/dx = sqrt(2/pi)(1 + 3*0.044715 x^2)
=========  =====================================  ==========================================
### END ANSWER

Phi is the standard normal CDF and phi = exp(-x^2/2)/sqrt(2 pi) its density.

The sigmoid is computed without overflow: with e = exp(-|x|) (never above 1),
sigmoid(x) = 1/(1+e) for x >= 0 and e/(1+e) for x < 0.

NumPy has no erf, so :func:`erf` is written in NumPy (kernels.erf_reference,
see its docstring): a positive-term series for |x| < 2.5 and a continued
fraction for erfc beyond; accurate to a few float64 ulps, also in float32.
GELU's forward runs in one pass (kernels.gelu_forward, whose NumPy lines are
kernels.gelu_forward_reference); its backward is written here.
"""

import math

import numpy as np

from tinylm import kernels
from tinylm.layers.base import Layer
from tinylm.layers.checks import Float, Grad, checked

__all__ = ["erf", "Tanh", "Sigmoid", "ReLU", "GELU", "sigmoid"]

# NumPy has no erf: tinylm's NumPy one lives with the GELU kernel's specification.
erf = kernels.erf_reference


def sigmoid(x):
    """Numerically stable logistic function, element-wise, same dtype as x."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))                 # in (0, 1]: never overflows
    r = 1 / (1 + e)                        # sigmoid(|x|)
    return np.where(x >= 0, r, e * r)      # x < 0: exp(x) / (1 + exp(x))


class Tanh(Layer):
    """y = tanh(x).  x: any shape -> y: same shape."""

    @checked(x=Float(dtype=None))
    def forward(self, x):
        y = np.tanh(x)
        self._cache = y
        return y

    @checked(dy=Grad())
    def backward(self, dy):
        y = self._cache
        ### BEGIN SOLUTION
        # forward: y = tanh(x)  ->  dx = dy * (1 - y^2)
        dx = dy * (1 - y * y)
        ### END SOLUTION
        return dx


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)), computed stably.  x: any shape -> y: same shape."""

    @checked(x=Float(dtype=None))
    def forward(self, x):
        y = sigmoid(x)
        self._cache = y
        return y

    @checked(dy=Grad())
    def backward(self, dy):
        y = self._cache
        ### BEGIN SOLUTION
        # forward: y = 1/(1 + exp(-x))  ->  dx = dy * y * (1 - y)
        dx = dy * y * (1 - y)
        ### END SOLUTION
        return dx


class ReLU(Layer):
    """y = max(x, 0).  x: any shape -> y: same shape.  (Derivative at 0 taken as 0.)"""

    @checked(x=Float(dtype=None))
    def forward(self, x):
        self._cache = x
        return np.maximum(x, 0)

    @checked(dy=Grad())
    def backward(self, dy):
        x = self._cache
        # forward: y = max(x, 0)  ->  dx = dy * [x > 0]
        return dy * (x > 0)


class GELU(Layer):
    """Gaussian error linear unit y = x * Phi(x).  x: any shape -> y: same shape.

    approximate="none": the exact form with erf (PyTorch's default, BERT);
    approximate="tanh": the tanh approximation (GPT-2), PyTorch's
    ``GELU(approximate="tanh")``.
    """

    _C = math.sqrt(2 / math.pi)
    _K = 0.044715

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError("GELU: approximate must be 'none' or 'tanh', got %r" % (approximate,))
        self.approximate = approximate

    @checked(x=Float(dtype=None))
    def forward(self, x):
        # tanh form: u = sqrt(2/pi)(x + k x^3), th = tanh(u), y = x/2 (1 + th)
        # exact form: cdf = Phi(x) = (1 + erf(x/sqrt2))/2, y = x cdf
        if kernels.get_backend() == "c":
            # fast path: the C backward recomputes th or cdf from x, so keep only x
            self._cache = (x, None, None)
            return kernels.gelu_forward(x, self.approximate)
        y, aux = kernels.gelu_forward(x, self.approximate, return_aux=True)
        th, cdf = (aux, None) if self.approximate == "tanh" else (None, aux)
        self._cache = (x, th, cdf)
        return y

    @checked(dy=Grad())
    def backward(self, dy):
        x, th, cdf = self._cache                       # th: approximate="tanh", cdf: exact
        if th is None and cdf is None:
            # fast path (the forward ran it): the lines below in one C pass
            # (kernels.gelu_backward recomputes th or cdf from x)
            return kernels.gelu_backward(dy, x, self.approximate)
        t = x.dtype.type
        ### BEGIN SOLUTION
        if self.approximate == "tanh":
            # forward: u = sqrt(2/pi)(x + k x^3)  ->  du/dx = sqrt(2/pi)(1 + 3k x^2)
            du = x * x
            du *= t(3 * self._K)
            du += t(1)
            du *= t(self._C)
            # forward: y = x/2 (1 + th), th = tanh(u)  ->  dy/dx = (1+th)/2 + x/2 (1-th^2) du/dx
            #                                                   = (1 + th + x (1-th^2) du) / 2
            g = th * th
            np.subtract(t(1), g, out=g)                        # 1 - th^2
            g *= x
            g *= du
            g += th
            g += t(1)
            g *= t(0.5)                                        # dy/dx
            g *= dy
            return g
        # forward: y = x Phi(x)  ->  dy/dx = Phi(x) + x phi(x),  phi(x) = exp(-x^2/2)/sqrt(2 pi)
        pdf = np.exp(t(-0.5) * x * x) * t(1 / math.sqrt(2 * math.pi))
        return dy * (cdf + x * pdf)
        ### END SOLUTION
