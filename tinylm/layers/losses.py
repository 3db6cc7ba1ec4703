"""Softmax, softmax cross-entropy and mean squared error.

Softmax over the last axis, computed stably by subtracting the row maximum
(softmax is unchanged by adding a constant to a row)::

    p_i = exp(z_i - m) / sum_j exp(z_j - m),    m = max_j z_j

Its backward (the Jacobian is diag(p) - p p^T)::

    dz = p * (dp - sum_j dp_j p_j)

Softmax cross-entropy over logits z (..., V) and integer targets t (...).
With log-sum-exp lse = m + log sum_j exp(z_j - m), the loss of one position is
-log p_t = lse - z_t; the layer returns the mean over the N counted positions
(targets equal to ``ignore_index`` are not counted)::

    L = (1/N) sum_counted (lse - z_t)
    dL/dz = (p - onehot(t)) / N      on counted positions, 0 on ignored ones

Mean squared error over predictions y and targets y* of the same shape, with n
their number of entries::

    L = (1/n) sum (y - y*)^2        dL/dy = 2 (y - y*) / n = -dL/dy*
"""

import numpy as np

from tinylm.layers.base import Layer
from tinylm.layers.checks import check_backward_ready, check_float, check_ids

__all__ = ["Softmax", "SoftmaxCrossEntropy", "MSELoss", "softmax", "log_softmax"]


def softmax(z, axis=-1):
    """Stable softmax along ``axis``; same shape and dtype as z."""
    m = np.max(z, axis=axis, keepdims=True)
    e = np.exp(z - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(z, axis=-1):
    """Stable log-softmax along ``axis``: z - logsumexp(z)."""
    m = np.max(z, axis=axis, keepdims=True)
    return z - (m + np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True)))


def _scalar_dout(where, dout, dtype):
    d = np.asarray(dout)
    if d.size != 1:
        raise ValueError("%s: a loss is a scalar, so dout must be a scalar, got shape %s"
                         % (where, d.shape))
    return dtype.type(d.reshape(()))


class Softmax(Layer):
    """y = softmax(x) over the last axis.  x: (..., V) -> y: (..., V)."""

    def forward(self, x):
        x = check_float(x, "Softmax.forward", "x", None, 1)
        self._y = softmax(x)
        return self._y

    def backward(self, dy):
        check_backward_ready("Softmax.backward", getattr(self, "_y", None))
        y = self._y
        dy = check_float(dy, "Softmax.backward", "dy", y.dtype, 1)
        if dy.shape != y.shape:
            raise ValueError("Softmax.backward: dy has shape %s, expected %s" % (dy.shape, y.shape))
        # forward: y = softmax(x)  ->  dx = y * (dy - sum(dy * y))
        return y * (dy - np.sum(dy * y, axis=-1, keepdims=True))


class SoftmaxCrossEntropy(Layer):
    """Mean cross-entropy of softmax(logits) against integer targets.

    forward(logits, targets): logits (..., V) float, targets (...) integer in
    [0, V) or equal to ``ignore_index`` -> loss, a 0-d array of logits' dtype.
    backward(dout=1.0) -> dlogits (..., V).  (targets get no gradient.)
    When every target is ignored the loss is 0 and the gradient is 0.
    After forward, ``self.count`` is the number of counted targets.
    """

    def __init__(self, ignore_index=-100):
        super().__init__()
        self.ignore_index = int(ignore_index)

    def forward(self, logits, targets):
        where = "SoftmaxCrossEntropy.forward"
        z = check_float(logits, where, "logits", None, 1)
        t = check_ids(targets, None, where, "targets")
        if t.shape != z.shape[:-1]:
            raise ValueError("%s: targets shape %s must be logits shape %s without its last "
                             "(vocabulary) axis, i.e. %s" % (where, t.shape, z.shape,
                                                             z.shape[:-1]))
        V = z.shape[-1]
        if V == 0:
            raise ValueError("%s: logits have an empty class axis (shape %s)" % (where, z.shape))
        keep = t != self.ignore_index                            # (...)
        bad = keep & ((t < 0) | (t >= V))
        if bad.any():
            raise IndexError("%s: target %d is out of range [0, %d) (and is not ignore_index=%d)"
                             % (where, t[bad].ravel()[0], V, self.ignore_index))
        count = int(keep.sum())
        safe_t = np.where(keep, t, 0)                            # (...), an index for every row
        m = np.max(z, axis=-1, keepdims=True)                    # (..., 1)
        e = np.exp(z - m)                                        # (..., V)
        s = np.sum(e, axis=-1, keepdims=True)                    # (..., 1)
        lse = (m + np.log(s))[..., 0]                            # (...)
        z_t = np.take_along_axis(z, safe_t[..., None], axis=-1)[..., 0]   # (...)
        nll = np.where(keep, lse - z_t, 0)                       # (...), -log p_t
        loss = nll.sum() / max(count, 1)
        self.count = count
        self._cache = (e / s, safe_t, keep, count)               # p (..., V)
        return np.asarray(loss, dtype=z.dtype)

    def backward(self, dout=1.0):
        check_backward_ready("SoftmaxCrossEntropy.backward", getattr(self, "_cache", None))
        p, safe_t, keep, count = self._cache
        dout = _scalar_dout("SoftmaxCrossEntropy.backward", dout, p.dtype)
        ### BEGIN SOLUTION
        # forward: nll = lse - z_t  ->  d nll / dz = softmax(z) - onehot(t)
        dz = p.copy()                                            # (..., V)
        np.put_along_axis(dz, safe_t[..., None], np.take_along_axis(
            dz, safe_t[..., None], axis=-1) - 1, axis=-1)
        # forward: nll = where(keep, ., 0); loss = sum(nll) / count
        #   ->  dz = dout * keep * dz / count
        dz *= (keep[..., None] * (dout / max(count, 1))).astype(p.dtype)
        ### END SOLUTION
        return dz


class MSELoss(Layer):
    """Mean squared error L = mean((y - target)^2).

    forward(y, target): two float arrays of the same shape -> 0-d loss.
    backward(dout=1.0) -> (dy, dtarget), dtarget = -dy.
    """

    def forward(self, y, target):
        y = check_float(y, "MSELoss.forward", "y", None, 0)
        target = check_float(target, "MSELoss.forward", "target", y.dtype, 0)
        if y.shape != target.shape:
            raise ValueError("MSELoss.forward: y %s and target %s must have the same shape"
                             % (y.shape, target.shape))
        diff = y - target                                        # r = y - target
        self._cache = diff
        return np.asarray(np.mean(diff * diff), dtype=y.dtype)   # L = mean(r^2)

    def backward(self, dout=1.0):
        check_backward_ready("MSELoss.backward", getattr(self, "_cache", None))
        diff = self._cache
        dout = _scalar_dout("MSELoss.backward", dout, diff.dtype)
        # forward: L = mean(r^2)  ->  dr = 2 r / n
        dr = diff * (2 * dout / max(diff.size, 1))
        # forward: r = y - target  ->  dy = dr, dtarget = -dr
        return dr, -dr
