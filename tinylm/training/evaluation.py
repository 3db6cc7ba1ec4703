"""Validation loss: mean cross-entropy on fixed, non-overlapping windows of held-out ids."""

import numpy as np

__all__ = ["evaluate", "val_windows"]


def val_windows(ids, block_size, max_windows=None):
    """Non-overlapping (x, y) windows from the start of ``ids``: x, y (n, T)."""
    ids = np.asarray(ids)
    n = (len(ids) - 1) // block_size
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ValueError("the validation text has %d tokens, fewer than one window of "
                         "block_size + 1 = %d; use more data or a smaller block_size"
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

