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
from tinylm.layers.checks import Float, Grad, checked

__all__ = ["MeanPooling", "L2Normalize"]


def _check_mask(layer, where, a):
    if np.shape(a["mask"]) != a["h"].shape[:2]:
        raise ValueError("%s: mask %s does not match h %s (expected (B, T))"
                         % (where, np.shape(a["mask"]), a["h"].shape))


class MeanPooling(Layer):
    """Mean of the hidden vectors of the real tokens (no parameters).

    forward(h (B, T, H), mask (B, T) 0/1 or bool) -> p (B, H)
    backward(dp (B, H)) -> dh (B, T, H).  (The mask gets no gradient.)
    A row with no real token gives p = 0.
    """

    def __init__(self, eps=1e-9):
        super().__init__()
        self.eps = float(eps)

    @checked(h=Float(ndim=3, layout="B, T, H", dtype=None), also=_check_mask)
    def forward(self, h, mask):
        m = np.asarray(mask).astype(h.dtype)[:, :, None]                 # (B, T, 1)
        n = np.maximum(m.sum(axis=1), h.dtype.type(self.eps))            # (B, 1)
        self._cache = (m, n)
        return (h * m).sum(axis=1) / n                                    # (B, H)

    @checked(dp=Grad())
    def backward(self, dp):
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

    @checked(x=Float(1, dtype=None))
    def forward(self, x):
        norm = np.sqrt((x * x).sum(axis=-1, keepdims=True))              # (..., 1)
        clamped = norm <= self.eps
        n = np.where(clamped, x.dtype.type(self.eps), norm)              # (..., 1)
        y = x / n
        self._cache = (y, n, clamped)
        return y

    @checked(dy=Grad())
    def backward(self, dy):
        y, n, clamped = self._cache
        # forward: y = x / ||x||  ->  dx = (dy - y (y . dy)) / ||x||
        dx = (dy - y * (y * dy).sum(axis=-1, keepdims=True)) / n
        # forward: y = x / eps (a constant denominator)  ->  dx = dy / eps
        return np.where(clamped, dy / n, dx)
