"""Pooling and normalisation of vectors: from token vectors to one sentence vector.

MeanPooling averages the hidden vectors of the real (unmasked) tokens, with
mask m (B, T) of 0/1 and h (B, T, H)::

    n = max(sum_t m_t, eps)              (B, 1)    (eps = 1e-9, sentence-transformers' clamp)
    p = sum_t m_t h_t / n                (B, H)
    dh_t = m_t dp / n                    (B, T, H)

L2Normalize scales each vector to unit length (torch.nn.functional.normalize)::

    y = x / max(||x||, eps)              (..., H)
    dx = (dy - y (y . dy)) / ||x||       where ||x|| > eps
    dx = dy / eps                        where the norm was clamped
"""

import numpy as np

from tinylm.layers.base import Layer
from tinylm.layers.checks import check_backward_ready, check_float

__all__ = ["MeanPooling", "L2Normalize"]


class MeanPooling(Layer):
    """Mean of the hidden vectors of the real tokens (no parameters).

    forward(h (B, T, H), mask (B, T) 0/1 or bool) -> p (B, H)
    backward(dp (B, H)) -> dh (B, T, H).  (The mask gets no gradient.)
    A row with no real token gives p = 0.
    """

    def __init__(self, eps=1e-9):
        super().__init__()
        self.eps = float(eps)
        self._cache = None

    def forward(self, h, mask):
        h = check_float(h, "MeanPooling.forward", "h", None, 3)
        m = np.asarray(mask).astype(h.dtype)[:, :, None]                 # (B, T, 1)
        if m.shape[:2] != h.shape[:2]:
            raise ValueError("MeanPooling.forward: mask %s does not match h %s"
                             % (np.shape(mask), h.shape))
        n = np.maximum(m.sum(axis=1), h.dtype.type(self.eps))            # (B, 1)
        self._cache = (m, n)
        return (h * m).sum(axis=1) / n                                    # (B, H)

    def backward(self, dp):
        check_backward_ready("MeanPooling.backward", self._cache)
        m, n = self._cache
        # forward: p = sum_t m_t h_t / n  ->  dh_t = m_t dp / n
        return m * (dp / n)[:, None, :]                                   # (B, T, H)


class L2Normalize(Layer):
    """y = x / max(||x||, eps) along the last axis (no parameters).

    forward(x (..., H)) -> y (..., H);  backward(dy (..., H)) -> dx (..., H).
    """

    def __init__(self, eps=1e-12):
        super().__init__()
        self.eps = eps
        self._cache = None

    def forward(self, x):
        x = check_float(x, "L2Normalize.forward", "x", None, 1)
        norm = np.sqrt((x * x).sum(axis=-1, keepdims=True))              # (..., 1)
        clamped = norm <= self.eps
        n = np.where(clamped, x.dtype.type(self.eps), norm)              # (..., 1)
        y = x / n
        self._cache = (y, n, clamped)
        return y

    def backward(self, dy):
        check_backward_ready("L2Normalize.backward", self._cache)
        y, n, clamped = self._cache
        # forward: y = x / ||x||  ->  dx = (dy - y (y . dy)) / ||x||
        dx = (dy - y * (y * dy).sum(axis=-1, keepdims=True)) / n
        # forward: y = x / eps (a constant denominator)  ->  dx = dy / eps
        return np.where(clamped, dy / n, dx)
