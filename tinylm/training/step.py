"""One training step: forward, backward, clip, update.  The Trainer and the lessons call it."""

import math

from tinylm.optim import clip_grad_norm

__all__ = ["train_step"]


def train_step(model, optimizer, x, y, clip=None, grad_accum=1, comm=None):
    """One optimizer step on the batch (x, y); returns (loss, grad_norm).

    ``loss`` is the mean cross-entropy before the update (a float);
    ``grad_norm`` is the gradient norm before clipping (None when ``clip`` is
    None or 0).  If the loss or the gradient norm is not finite the
    parameters are left unchanged, so the caller can stop with its last good
    state.

    grad_accum: K > 1 cuts the batch into K equal micro-batches, runs
        forward + backward on each (backward adds into the gradients), and
        scales the sum by 1/K: the gradient of the mean loss over the whole
        batch, with a K times smaller peak of activation memory.
    comm: a :class:`tinylm.training.distributed.Comm`: (x, y) is this rank's
        shard of the global batch; the loss and the gradients are averaged
        over the ranks (bucketed all-reduce) before clipping, so every rank
        takes the same step.  None: one process.
    """
    model.zero_grad()                    # gradients are added into, so start from 0
    if grad_accum == 1:
        loss = float(model.loss(x, y))   # forward: mean cross-entropy (nats/token)
        if math.isfinite(loss):
            model.backward()
    else:
        n = len(x) // grad_accum         # the caller checked that it divides
        loss = 0.0
        for k in range(grad_accum):      # sum over micro-batches of their mean-loss gradients
            loss += float(model.loss(x[k * n:(k + 1) * n], y[k * n:(k + 1) * n]))
            model.backward()
        loss /= grad_accum
    grads = [g for _, g in optimizer.params]
    if comm is not None:
        loss = float(comm.mean([loss])[0])      # every rank sees (and decides on) the same loss
    if not math.isfinite(loss):
        return loss, None
    if comm is not None:
        comm.average_(grads, scale=1.0 / grad_accum)   # mean over ranks of (sum / K)
    elif grad_accum > 1:
        for g in grads:
            g *= 1.0 / grad_accum
    grad_norm = None
    if clip:
        grad_norm = float(clip_grad_norm(optimizer.params, clip))   # rescale if |g| > clip
        if not math.isfinite(grad_norm):
            return loss, grad_norm
    optimizer.step()                     # in place, at optimizer.lr
    return loss, grad_norm
