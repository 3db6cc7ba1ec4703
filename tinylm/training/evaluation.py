"""Validation loss: mean cross-entropy on fixed, non-overlapping windows of held-out ids."""

import math

import numpy as np

__all__ = ["evaluate", "val_windows", "perplexity", "describe_windows"]


def perplexity(loss):
    """exp(loss) with no cap: inf when it overflows a float, nan for nan."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def describe_windows(ids, block_size, batch_size, max_batches=None):
    """What :func:`evaluate` scores, in words: "the whole split (W windows of T, N tokens)"."""
    n_all = max(0, (len(ids) - 1) // block_size)
    n = n_all if max_batches is None else min(n_all, max_batches * batch_size)
    what = "the whole split" if n == n_all else "the first %d of %d windows" % (n, n_all)
    return "%s (%d windows of %d tokens, %d tokens scored of %d)" % (
        what, n, block_size, n * block_size, len(ids))


def val_windows(ids, block_size, max_windows=None):
    """Non-overlapping (x, y) windows from the start of ``ids``: x, y (n, T)."""
    ids = np.asarray(ids)
    n = (len(ids) - 1) // block_size
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ValueError("the validation text has %d tokens, fewer than one window of "
                         "block_size + 1 = %d tokens; use more text (--data, --max-chars)"
                         % (len(ids), block_size + 1))
    x = ids[:n * block_size].reshape(n, block_size)
    y = ids[1:n * block_size + 1].reshape(n, block_size)
    return x, y


def evaluate(model, ids, block_size, batch_size=16, max_batches=None):
    """Mean cross-entropy (nats/token) of ``model`` on fixed windows of ``ids``.

    The windows are the first non-overlapping block_size chunks of ``ids``
    (the same every call, so numbers are comparable across a run); at most
    ``max_batches`` batches of ``batch_size`` windows.  Runs in eval mode
    (no dropout) and restores the model's mode.  Perplexity = exp(result).
    """
    if int(batch_size) < 1:
        raise ValueError("batch_size must be >= 1, got %r" % (batch_size,))
    if max_batches is not None and int(max_batches) < 1:
        raise ValueError("max_batches must be >= 1 (or None for the whole split), got %r"
                         % (max_batches,))
    max_windows = None if max_batches is None else max_batches * batch_size
    x, y = val_windows(ids, block_size, max_windows)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            total += float(model.loss(xb, yb)) * yb.size
            count += yb.size
    finally:
        model.train(was_training)
    return total / count

