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
    ### BEGIN ANSWER
    dL/dz = (p - onehot(t)) / N      on counted positions, 0 on ignored ones
    ### END ANSWER

Label smoothing (``label_smoothing=eps``, PyTorch's semantics): the target is
the mixture (1 - eps) onehot(t) + eps / V (uniform), so each counted position
adds eps times the mean of -log p_j over all V classes::

    L = (1/N) sum_counted [(1 - eps)(lse - z_t) + eps (lse - mean_j z_j)]
    dL/dz = (p - onehot(t) + eps (onehot(t) - 1/V)) / N

Mean squared error over predictions y and targets y* of the same shape, with n
their number of entries::

    L = (1/n) sum (y - y*)^2        dL/dy = 2 (y - y*) / n = -dL/dy*
"""

import numpy as np

from tinylm import kernels
from tinylm.layers.base import Layer
from tinylm.layers.checks import Float, Grad, Ids, Scalar, checked

__all__ = ["Softmax", "SoftmaxCrossEntropy", "MSELoss", "softmax", "log_softmax"]

_FUSED = "fused"      # SoftmaxCrossEntropy's cache tag when the forward ran the C kernel


def softmax(z, axis=-1):
    """Stable softmax along ``axis``; same shape and dtype as z."""
    m = np.max(z, axis=axis, keepdims=True)
    e = np.exp(z - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(z, axis=-1):
    """Stable log-softmax along ``axis``: z - logsumexp(z)."""
    m = np.max(z, axis=axis, keepdims=True)
    return z - (m + np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True)))


class Softmax(Layer):
    """y = softmax(x) over the last axis.  x: (..., V) -> y: (..., V)."""

    @checked(x=Float(1, dtype=None))
    def forward(self, x):
        y = softmax(x)
        self._cache = y
        return y

    @checked(dy=Grad())
    def backward(self, dy):
        y = self._cache
        # forward: y = softmax(x)  ->  dx = y * (dy - sum(dy * y))
        return y * (dy - np.sum(dy * y, axis=-1, keepdims=True))


class SoftmaxCrossEntropy(Layer):
    """Mean cross-entropy of softmax(logits) against integer targets.

    forward(logits, targets): logits (..., V) float, targets (...) integer in
    [0, V) or equal to ``ignore_index`` -> loss, a 0-d array of logits' dtype.
    backward(dout=1.0) -> dlogits (..., V).  (targets get no gradient.)
    When every target is ignored the loss is 0 and the gradient is 0.
    After forward, ``self.count`` is the number of counted targets.
    label_smoothing: eps in [0, 1] (PyTorch's ``CrossEntropyLoss(label_smoothing=)``):
    the target distribution is (1 - eps) onehot + eps / V; ignored positions
    still count for nothing.
    """

    def __init__(self, ignore_index=-100, label_smoothing=0.0):
        super().__init__()
        self.ignore_index = int(ignore_index)
        eps = float(label_smoothing)
        if not 0.0 <= eps <= 1.0:
            raise ValueError("SoftmaxCrossEntropy: label_smoothing must be in [0, 1], got %r"
                             % (label_smoothing,))
        self.label_smoothing = eps

    def _check_targets(self, where, a):
        z, t = a["logits"], a["targets"]
        if t.shape != z.shape[:-1]:
            raise ValueError("%s: targets shape %s must be logits shape %s without its last "
                             "(vocabulary) axis, i.e. %s" % (where, t.shape, z.shape,
                                                             z.shape[:-1]))
        V = z.shape[-1]
        if V == 0:
            raise ValueError("%s: logits have an empty class axis (shape %s)" % (where, z.shape))
        bad = (t != self.ignore_index) & ((t < 0) | (t >= V))
        if bad.any():
            raise IndexError("%s: target %d is out of range [0, %d) (and is not ignore_index=%d)"
                             % (where, t[bad].ravel()[0], V, self.ignore_index))

    @checked(logits=Float(1, dtype=None), targets=Ids(), also=_check_targets)
    def forward(self, logits, targets):
        z, t = logits, targets
        if kernels.get_backend() == "c" and not self.label_smoothing:
            # fast path: the lines below in one C pass per row (kernels.softmax_cross_entropy)
            loss, p, self.count = kernels.softmax_cross_entropy(z, t, self.ignore_index)
            self._cache = (_FUSED, p, t, self.count)
            return loss
        keep = t != self.ignore_index                            # (...)
        count = int(keep.sum())
        safe_t = np.where(keep, t, 0)                            # (...), an index for every row
        m = np.max(z, axis=-1, keepdims=True)                    # (..., 1)
        e = np.exp(z - m)                                        # (..., V)
        s = np.sum(e, axis=-1, keepdims=True)                    # (..., 1)
        lse = (m + np.log(s))[..., 0]                            # (...)
        z_t = np.take_along_axis(z, safe_t[..., None], axis=-1)[..., 0]   # (...)
        nll = np.where(keep, lse - z_t, 0)                       # (...), -log p_t
        eps = self.label_smoothing
        if eps:
            # the uniform part of the target: mean_j -log p_j = lse - mean_j z_j
            smooth = np.where(keep, lse - z.mean(axis=-1), 0)    # (...)
            nll = (1 - eps) * nll + eps * smooth
        loss = nll.sum() / max(count, 1)
        self.count = count
        self._cache = (e / s, safe_t, keep, count)               # p (..., V)
        return np.asarray(loss, dtype=z.dtype)

    @checked(dout=Scalar())
    def backward(self, dout=1.0):
        if self._cache[0] is _FUSED:
            _, p, t, count = self._cache
            return kernels.softmax_cross_entropy_backward(p, t, count, dout, self.ignore_index)
        p, safe_t, keep, count = self._cache
        ### BEGIN SOLUTION
        # forward: nll = lse - z_t  ->  d nll / dz = softmax(z) - onehot(t)
        dz = p.copy()                                            # (..., V)
        np.put_along_axis(dz, safe_t[..., None], np.take_along_axis(
            dz, safe_t[..., None], axis=-1) - 1, axis=-1)
        # forward: nll = where(keep, ., 0); loss = sum(nll) / count
        #   ->  dz = dout * keep * dz / count
        dz *= (keep[..., None] * (dout / max(count, 1))).astype(p.dtype)
        ### END SOLUTION
        eps = self.label_smoothing
        if eps:
            # forward: nll = (1 - eps) nll + eps (lse - mean_j z_j)
            #   ->  dz += eps (onehot(t) - 1/V), on counted positions, times dout / count
            V = p.shape[-1]
            shift = np.full(p.shape, -eps / V, dtype=p.dtype)                # (..., V)
            np.put_along_axis(shift, safe_t[..., None], eps - eps / V, axis=-1)
            dz += shift * (keep[..., None] * (dout / max(count, 1))).astype(p.dtype)
        return dz


class MSELoss(Layer):
    """Mean squared error L = mean((y - target)^2).

    forward(y, target): two float arrays of the same shape -> 0-d loss.
    backward(dout=1.0) -> (dy, dtarget), dtarget = -dy.
    """

    def _same_shape(self, where, a):
        if a["y"].shape != a["target"].shape:
            raise ValueError("%s: y %s and target %s must have the same shape"
                             % (where, a["y"].shape, a["target"].shape))

    @checked(y=Float(dtype=None), target=Float(dtype="y"), also=_same_shape)
    def forward(self, y, target):
        diff = y - target                                        # r = y - target
        self._cache = diff
        return np.asarray(np.mean(diff * diff), dtype=y.dtype)   # L = mean(r^2)

    @checked(dout=Scalar())
    def backward(self, dout=1.0):
        diff = self._cache
        # forward: L = mean(r^2)  ->  dr = 2 r / n
        dr = diff * (2 * dout / max(diff.size, 1))
        # forward: r = y - target  ->  dy = dr, dtarget = -dr
        return dr, -dr
