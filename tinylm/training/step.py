"""One training step: forward, backward, clip, update.  The Trainer and the lessons call it."""

import math

from tinylm.optim import clip_grad_norm

__all__ = ["train_step"]


def train_step(model, optimizer, x, y, clip=None):
    """One optimizer step on the batch (x, y); returns (loss, grad_norm).

    ``loss`` is the mean cross-entropy before the update (a float);
    ``grad_norm`` is the gradient norm before clipping (None when ``clip`` is
    None or 0).  If the loss or the gradient norm is not finite the
    parameters are left unchanged, so the caller can stop with its last good
    state.
    """
    loss = float(model.loss(x, y))       # forward: mean cross-entropy (nats/token)
    if not math.isfinite(loss):
        return loss, None
    model.zero_grad()                    # gradients are added into, so start from 0
    model.backward()
    grad_norm = None
    if clip:
        grad_norm = float(clip_grad_norm(optimizer.params, clip))   # rescale if |g| > clip
        if not math.isfinite(grad_norm):
            return loss, grad_norm
    optimizer.step()                     # in place, at optimizer.lr
    return loss, grad_norm
