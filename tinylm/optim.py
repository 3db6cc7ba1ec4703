"""Optimizers, gradient clipping, L1 penalty and learning-rate schedules.

An optimizer holds ``params``: the list of ``(param, grad)`` array pairs that
``model.parameters()`` returns (see :mod:`tinylm.layers.base`).  ``step()``
reads each grad and updates its param **in place** (``p -= ...``), so the
model sees the new values without any copying.  The training loop is::

    opt = AdamW(model.parameters(), lr=3e-4)
    for x, y in batches:
        model.zero_grad()
        loss = model.loss(x, y)
        model.backward()
        clip_grad_norm(model.parameters(), 1.0)   # optional
        opt.lr = schedule(step)                   # optional
        opt.step()

Notation in the docstrings: ``g`` the gradient, ``p`` the parameter, ``t``
the step number counted from 1, ``lr`` the learning rate, ``wd`` the weight
decay.  The update rules are exactly PyTorch's (``torch.optim.SGD``,
``Adam``, ``AdamW`` with default options), which the tests check.

Weight decay comes in two flavours (lesson 09_1):

* **coupled L2** (SGD, Adam): add ``wd * p`` to the gradient, i.e. the
  gradient of ``wd/2 * ||p||^2`` added to the loss.  In Adam this term is
  then divided by sqrt(v) like the rest of the gradient, so parameters with
  large gradients are decayed less.
* **decoupled** (AdamW): shrink ``p *= 1 - lr * wd`` directly, outside the
  adaptive scaling.

``state_dict()`` returns a flat ``dict[str, ndarray | number]``: the
hyper-parameters and step count as numbers, per-parameter buffers as arrays
keyed ``"<buffer>.<param index>"`` (e.g. ``"m.0"``, ``"v.3"``), ready for
:func:`tinylm.checkpoint.save_checkpoint`.
"""

import math

import numpy as np

from tinylm import kernels

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm", "l1_penalty",
           "constant", "step_decay", "warmup_cosine", "OPTIMIZERS"]


class Optimizer:
    """Base class: holds (param, grad) pairs, the learning rate, the step count."""

    buffers = ()        # names of per-parameter state arrays, e.g. ("m", "v")
    hyper = ("lr",)     # names of scalar hyper-parameters saved in state_dict

    def __init__(self, params, lr):
        self.params = []
        for i, pair in enumerate(params):
            try:
                p, g = pair
            except (TypeError, ValueError):
                raise TypeError("params[%d] must be a (param, grad) pair as given by "
                                "model.parameters(), got %r" % (i, type(pair).__name__))
            if not (isinstance(p, np.ndarray) and isinstance(g, np.ndarray)):
                raise TypeError("params[%d]: param and grad must be NumPy arrays" % i)
            if p.shape != g.shape:
                raise ValueError("params[%d]: param shape %s but grad shape %s"
                                 % (i, p.shape, g.shape))
            if p.dtype.kind != "f":
                raise TypeError("params[%d]: param must be floating point, got %s" % (i, p.dtype))
            self.params.append((p, g))
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        self.lr = lr
        self.t = 0                       # number of steps taken
        # One zero buffer per parameter and buffer name.
        self.state = {name: [np.zeros_like(p) for p, _ in self.params]
                      for name in self.buffers}

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        value = float(value)
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError("learning rate must be a finite number >= 0, got %r" % (value,))
        self._lr = value

    def step(self):
        """Update every parameter in place from its gradient."""
        self.t += 1
        for i, (p, g) in enumerate(self.params):
            self._update(i, p, g)

    def _update(self, i, p, g):
        raise NotImplementedError

    # -- state ---------------------------------------------------------------
    def state_dict(self):
        """Flat dict: scalars (type, t, hyper-parameters) and copies of the buffers."""
        d = {"type": type(self).__name__, "t": self.t, "num_params": len(self.params)}
        for name in self.hyper:
            d[name] = getattr(self, name)
        for name in self.buffers:
            for i, buf in enumerate(self.state[name]):
                d["%s.%d" % (name, i)] = buf.copy()
        return d

    def load_state_dict(self, d):
        """Restore what :meth:`state_dict` saved (buffers are copied into place)."""
        kind = d.get("type")
        if kind != type(self).__name__:
            raise ValueError("optimizer state is for %r, not %s" % (kind, type(self).__name__))
        if int(d.get("num_params", -1)) != len(self.params):
            raise ValueError("optimizer state has %s parameters, this optimizer has %d"
                             % (d.get("num_params"), len(self.params)))
        for name in self.buffers:
            for i, buf in enumerate(self.state[name]):
                key = "%s.%d" % (name, i)
                if key not in d:
                    raise KeyError("optimizer state is missing %r" % key)
                src = np.asarray(d[key])
                if src.shape != buf.shape:
                    raise ValueError("optimizer state %r has shape %s, parameter %d has %s"
                                     % (key, src.shape, i, buf.shape))
                buf[...] = src
        for name in self.hyper:
            value = d[name]
            if isinstance(value, (list, tuple, np.ndarray)):
                value = tuple(float(v) for v in value)
            setattr(self, name, value)
        self.t = int(d["t"])
        return self

    def __repr__(self):
        hp = ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.hyper)
        return "%s(%d params, %s)" % (type(self).__name__, len(self.params), hp)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and coupled L2.

    ::

        d = g + wd * p                # coupled L2 weight decay
        b = momentum * b + d          # velocity, b starts at 0 (so b_1 = d_1)
        p = p - lr * b                # (with momentum = 0: p = p - lr * d)
    """

    hyper = ("lr", "momentum", "weight_decay")

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        if not 0.0 <= momentum < 1.0:
            raise ValueError("momentum must be in [0, 1), got %r" % (momentum,))
        if weight_decay < 0:
            raise ValueError("weight_decay must be >= 0, got %r" % (weight_decay,))
        self.buffers = ("b",) if momentum else ()
        super().__init__(params, lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)

    def _update(self, i, p, g):
        d = g + self.weight_decay * p if self.weight_decay else g
        if self.momentum:
            b = self.state["b"][i]
            b *= self.momentum
            b += d
            d = b
        p -= self.lr * d


class Adam(Optimizer):
    """Adam (Kingma & Ba) with coupled L2 weight decay.

    ::

        d = g + wd * p                          # coupled L2 (0 by default)
        m = beta1 * m + (1 - beta1) * d         # 1st moment, m_0 = 0
        v = beta2 * v + (1 - beta2) * d**2      # 2nd moment, v_0 = 0
        m_hat = m / (1 - beta1**t)              # bias corrections: undo the
        v_hat = v / (1 - beta2**t)              #   pull towards the 0 start
        p = p - lr * m_hat / (sqrt(v_hat) + eps)
    """

    buffers = ("m", "v")
    hyper = ("lr", "betas", "eps", "weight_decay")
    decoupled = False      # weight decay added to the gradient (AdamW: applied to p)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        b1, b2 = (float(b) for b in betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError("betas must be in [0, 1), got %r" % (betas,))
        if eps <= 0:
            raise ValueError("eps must be > 0, got %r" % (eps,))
        if weight_decay < 0:
            raise ValueError("weight_decay must be >= 0, got %r" % (weight_decay,))
        super().__init__(params, lr)
        self.betas = (b1, b2)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    def _update(self, i, p, g):
        # the docstring's lines in one pass over p, g, m, v
        # (the NumPy lines are kernels.adam_update_reference)
        kernels.adam_update(p, g, self.state["m"][i], self.state["v"][i], self.t, self.lr,
                            self.betas, self.eps, self.weight_decay, self.decoupled)

    def step(self):
        if type(self)._update is not Adam._update:       # a subclass's own rule: per parameter
            return super().step()
        # fast path: _update on every parameter in one C call (kernels.adam_update_multi)
        self.t += 1
        kernels.adam_update_multi([p for p, _ in self.params], [g for _, g in self.params],
                                  self.state["m"], self.state["v"], self.t, self.lr,
                                  self.betas, self.eps, self.weight_decay, self.decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter)::

        p = p * (1 - lr * wd)         # decay first, not seen by m and v
        ... then the Adam step with d = g
    """

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


# ==========================================================================
# Gradient surgery
# ==========================================================================
def clip_grad_norm(params, max_norm, error_if_nonfinite=False):
    """Scale all gradients together so their global L2 norm is at most ``max_norm``.

    ``total = sqrt(sum over all grads of sum(g**2))``; if ``total > max_norm``
    every grad is multiplied by ``max_norm / (total + 1e-6)`` in place (the
    direction is kept, only the length shrinks).  Returns ``total``, the norm
    *before* clipping (worth logging: spikes signal exploding gradients).
    A NaN/inf norm raises ``FloatingPointError`` if ``error_if_nonfinite``.
    """
    if max_norm <= 0:
        raise ValueError("max_norm must be > 0, got %r" % (max_norm,))
    grads = [g for _, g in params]
    # sqrt(sum over grads of sum(g**2)), in float64 (one C call: kernels.sum_of_squares)
    total = math.sqrt(kernels.sum_of_squares(grads))
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise FloatingPointError("gradient norm is %r (NaN or inf in a gradient)" % total)
        return total
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        kernels.scale_arrays(grads, coef)                  # g *= coef for every g
    return total


def l1_penalty(params, lam):
    """L1 regularisation: returns ``lam * sum |p|`` and adds its subgradient.

    For every pair, ``g += lam * sign(p)`` in place (the subgradient at 0 is
    taken as 0).  Call it after ``backward()`` and add the returned value to
    the loss you report.  Pass only the parameters you mean to regularise,
    e.g. ``[(p, g) for n, p, g in model.named_parameters() if n.endswith("W")]``.
    """
    if lam < 0:
        raise ValueError("lam must be >= 0, got %r" % (lam,))
    loss = 0.0
    for p, g in params:
        loss += float(np.sum(np.abs(p)))
        g += lam * np.sign(p)
    return lam * loss


# ==========================================================================
# Learning-rate schedules: callables step -> lr (step counted from 0)
# ==========================================================================
def constant(lr):
    """``lr`` at every step."""
    return lambda step: lr


def step_decay(lr, step_size, gamma):
    """``lr * gamma ** (step // step_size)``: multiply by gamma every step_size steps."""
    if step_size < 1:
        raise ValueError("step_size must be >= 1, got %r" % (step_size,))
    return lambda step: lr * gamma ** (step // step_size)


def warmup_cosine(lr, warmup, total, min_lr=0.0):
    """Linear warm-up, then cosine decay to ``min_lr`` (lesson 05_3).

    * ``step < warmup``: ``lr * (step + 1) / warmup`` (rises to lr; never 0);
    * ``warmup <= step <= total``: with ``q = (step - warmup) / (total - warmup)``,
      ``min_lr + (lr - min_lr) * (1 + cos(pi * q)) / 2`` (from lr down to min_lr);
    * ``step > total``: ``min_lr``.
    """
    if warmup < 0 or total < warmup:
        raise ValueError("need 0 <= warmup <= total, got warmup=%r total=%r" % (warmup, total))

    def schedule(step):
        if step < warmup:
            return lr * (step + 1) / warmup
        if total == warmup:
            return min_lr
        q = min(1.0, (step - warmup) / (total - warmup))
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * q))
    return schedule
