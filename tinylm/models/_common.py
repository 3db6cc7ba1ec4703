"""What every neural language model in tinylm/models shares: loss and backward bookkeeping.

A model subclasses :class:`LanguageModel` and writes two methods:

* ``_forward(idx) -> logits``: idx (B, T) int, already checked; logits (B, T, V);
* ``_backward(dlogits)``: dlogits (B, T, V) -> fills the gradients by calling
  its layers' backwards in reverse order (the forward read backwards).

The base class supplies the public contract of ``tinylm.models``:

* ``forward(idx) -> logits``          checks idx, then ``_forward``;
* ``loss(x, y) -> float``             forward + mean cross-entropy over (B, T)
                                      (targets equal to ``ignore_index`` are
                                      not counted);
* ``backward(dout=None)``             after ``loss``: dout is dL_outer/dloss, a
                                      scalar (default 1.0); after ``forward``:
                                      dout is dL/dlogits (B, T, V).

Accepting a logits gradient makes the whole model checkable with
``tinylm.gradcheck.check_layer(model, (idx,))`` like any layer.
"""

import numpy as np

from tinylm.layers.base import Layer
from tinylm.layers.checks import check_ids
from tinylm.layers.losses import SoftmaxCrossEntropy

__all__ = ["LanguageModel"]


class LanguageModel(Layer):
    """Base of the neural models: MLP, RNN, LSTM, GPT, BERT, seq2seq (see the module docstring)."""

    ignore_index = -100

    def __init__(self, config):
        super().__init__()
        self.config = config
        self._criterion = SoftmaxCrossEntropy(ignore_index=self.ignore_index)
        self._last = None          # "forward" or "loss": what backward() differentiates

    @property
    def vocab_size(self):
        return int(self.config.vocab_size)

    # -- the contract ----------------------------------------------------
    def forward(self, idx):
        """idx (B, T) int in [0, vocab_size) -> logits (B, T, vocab_size)."""
        name = type(self).__name__
        idx = check_ids(idx, self.vocab_size, "%s.forward" % name, "idx", ndim=2)
        logits = self._forward(idx)
        self._last = "forward"
        return logits

    def loss(self, x, y):
        """Mean cross-entropy (nats/token) of predicting y (B, T) from x (B, T).

        Positions where ``y == ignore_index`` (-100) are not counted.
        """
        name = type(self).__name__
        logits = self.forward(x)                                         # (B, T, V)
        y = np.asarray(y)
        if y.shape != logits.shape[:-1]:
            raise ValueError("%s.loss: targets y have shape %s, expected %s (the shape of x)"
                             % (name, y.shape, logits.shape[:-1]))
        if y.dtype.kind not in "iu":
            raise TypeError("%s.loss: targets y must be integer token ids, got dtype %s"
                            % (name, y.dtype))
        loss = self._criterion.forward(logits, y)
        self._last = "loss"
        return float(loss)

    def backward(self, dout=None):
        """Fill every gradient (adding to them): after loss() or after forward().

        After ``loss``: dout = dL/dloss, a scalar (None = 1.0).
        After ``forward``: dout = dL/dlogits (B, T, V), required.
        Returns None (token ids have no gradient).
        """
        name = type(self).__name__
        if self._last == "loss":
            dlogits = self._criterion.backward(1.0 if dout is None else dout)
        elif self._last == "forward":
            if dout is None:
                raise ValueError("%s.backward: after forward(), pass dL/dlogits (B, T, V); "
                                 "after loss(), call backward() with no argument" % name)
            dlogits = np.asarray(dout)
        else:
            raise RuntimeError("%s.backward: call loss(x, y) (or forward(idx)) first" % name)
        self._backward(dlogits)
        return None

    def _forward(self, idx):
        raise NotImplementedError

    def _backward(self, dlogits):
        raise NotImplementedError
