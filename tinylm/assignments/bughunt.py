"""Find the bug: six small layers, some with a broken backward pass.

Each candidate ``X`` in A..F is a pair

    forward_X(**inputs)   -> (out, cache)
    backward_X(dout, cache) -> {name: gradient}   (one entry per input/parameter)

Some backward passes are right; some have one bug of a kind that really
happens when backward passes are written by hand:

* a gradient sent to the wrong gate's bias,
* a missing transpose that the shapes do not catch (square matrices),
* a gradient that is overwritten at every time step instead of accumulated,
* a bug that an all-ones upstream gradient hides (``dout = 1`` makes the
  wrong formula and the right one agree).

Your job (assignment "gradcheck", task "find the bug"):

1. Use YOUR ``tinylm.gradcheck.numerical_gradient`` to check every candidate,
   with a random upstream gradient (try ``dout = np.ones_like(out)`` too,
   and see what it hides).
2. ``broken_candidates()`` returns the set of letters whose backward is wrong.
3. ``fixed_backward_X(dout, cache)`` returns correct gradients for every
   candidate (for a correct one, calling ``backward_X`` is a fine answer).

The grader runs your fixed backwards on inputs it chooses and compares them
with the reference, so each fix must be right for any input, not just the
ones you tried.
"""

import numpy as np


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


# --------------------------------------------------------------------------
# A: softmax over the last axis
# --------------------------------------------------------------------------

def forward_A(x):
    """x: (N, C) -> p: (N, C), p = softmax(x) along the last axis."""
    z = x - x.max(axis=-1, keepdims=True)            # (N, C), for stability
    e = np.exp(z)                                    # (N, C)
    p = e / e.sum(axis=-1, keepdims=True)            # (N, C)
    return p, (p,)


def backward_A(dout, cache):
    """dout: (N, C) = dL/dp -> {"x": (N, C)}."""
    (p,) = cache
    dx = p * (dout - dout.mean(axis=-1, keepdims=True))   # (N, C)
    return {"x": dx}


# --------------------------------------------------------------------------
# B: swish, y = x * sigmoid(x)
# --------------------------------------------------------------------------

def forward_B(x):
    """x: (N, D) -> y: (N, D), y = x * sigmoid(x)."""
    s = _sigmoid(x)                                  # (N, D)
    return x * s, (x, s)


def backward_B(dout, cache):
    """dout: (N, D) -> {"x": (N, D)}."""
    x, s = cache
    dx = dout * (s + x * s * (1 - s))                # d(x s)/dx = s + x s'
    return {"x": dx}


# --------------------------------------------------------------------------
# C: a tanh RNN over T steps, h_t = tanh(x_t Wx + h_{t-1} Wh), h_0 = 0
# --------------------------------------------------------------------------

def forward_C(x, Wx, Wh):
    """x: (T, N, D), Wx: (D, H), Wh: (H, H) -> hs: (T, N, H)."""
    T, N, _ = x.shape
    H = Wh.shape[0]
    hs = np.zeros((T, N, H), x.dtype)                # (T, N, H)
    h = np.zeros((N, H), x.dtype)                    # h_0
    for t in range(T):
        h = np.tanh(x[t] @ Wx + h @ Wh)              # (N, H)
        hs[t] = h
    return hs, (x, Wx, Wh, hs)


def backward_C(dout, cache):
    """dout: (T, N, H) = dL/dhs -> {"x", "Wx", "Wh"}."""
    x, Wx, Wh, hs = cache
    T, N, _ = x.shape
    dx = np.zeros_like(x)
    dWx = np.zeros_like(Wx)
    dWh = np.zeros_like(Wh)
    dh_next = np.zeros_like(hs[0])                   # dL/dh_t from step t+1
    for t in reversed(range(T)):
        dh = dout[t] + dh_next                       # (N, H)
        da = dh * (1 - hs[t] ** 2)                   # through tanh
        h_prev = hs[t - 1] if t > 0 else np.zeros_like(hs[0])
        dWx = x[t].T @ da                            # (D, H)
        dWh = h_prev.T @ da                          # (H, H)
        dx[t] = da @ Wx.T                            # (N, D)
        dh_next = da @ Wh.T                          # (N, H)
    return {"x": dx, "Wx": dWx, "Wh": dWh}


# --------------------------------------------------------------------------
# D: an affine layer with a square weight, y = x W + b
# --------------------------------------------------------------------------

def forward_D(x, W, b):
    """x: (N, D), W: (D, D), b: (D,) -> y: (N, D)."""
    return x @ W + b, (x, W)


def backward_D(dout, cache):
    """dout: (N, D) -> {"x", "W", "b"}."""
    x, W = cache
    dx = dout @ W                                    # (N, D)
    dW = x.T @ dout                                  # (D, D)
    db = dout.sum(axis=0)                            # (D,)
    return {"x": dx, "W": dW, "b": db}


# --------------------------------------------------------------------------
# E: per-feature scale and shift, y = x * w + b
# --------------------------------------------------------------------------

def forward_E(x, w, b):
    """x: (N, D), w: (D,), b: (D,) -> y: (N, D)."""
    return x * w + b, (x, w)


def backward_E(dout, cache):
    """dout: (N, D) -> {"x", "w", "b"}."""
    x, w = cache
    dx = dout * w                                    # (N, D)
    dw = (dout * x).sum(axis=0)                      # (D,): w is shared by all rows
    db = dout.sum(axis=0)                            # (D,)
    return {"x": dx, "w": dw, "b": db}


# --------------------------------------------------------------------------
# F: a gated cell, h = f * h_prev + i * g with two sigmoid gates
# --------------------------------------------------------------------------

def forward_F(x, h_prev, Wf, bf, Wi, bi, Wg, bg):
    """x: (N, D), h_prev: (N, H), W*: (D, H), b*: (H,) -> h: (N, H)."""
    f = _sigmoid(x @ Wf + bf)                        # (N, H) forget gate
    i = _sigmoid(x @ Wi + bi)                        # (N, H) input gate
    g = np.tanh(x @ Wg + bg)                         # (N, H) candidate
    h = f * h_prev + i * g                           # (N, H)
    return h, (x, h_prev, Wf, Wi, Wg, f, i, g)


def backward_F(dout, cache):
    """dout: (N, H) -> {"x", "h_prev", "Wf", "bf", "Wi", "bi", "Wg", "bg"}."""
    x, h_prev, Wf, Wi, Wg, f, i, g = cache
    daf = dout * h_prev * f * (1 - f)                # through f = sigmoid(af)
    dai = dout * g * i * (1 - i)                     # through i = sigmoid(ai)
    dag = dout * i * (1 - g ** 2)                    # through g = tanh(ag)
    return {
        "x": daf @ Wf.T + dai @ Wi.T + dag @ Wg.T,   # (N, D)
        "h_prev": dout * f,                          # (N, H)
        "Wf": x.T @ daf, "bf": dai.sum(axis=0),
        "Wi": x.T @ dai, "bi": dai.sum(axis=0),
        "Wg": x.T @ dag, "bg": dag.sum(axis=0),
    }


CANDIDATES = "ABCDEF"
FORWARD = {c: globals()["forward_" + c] for c in CANDIDATES}
BACKWARD = {c: globals()["backward_" + c] for c in CANDIDATES}


# --------------------------------------------------------------------------
# Your answers
# --------------------------------------------------------------------------

def broken_candidates():
    """The set of letters (from "ABCDEF") whose backward_X is wrong."""
    ### BEGIN SOLUTION
    return {"A", "C", "D", "F"}
    ### END SOLUTION


def fixed_backward_A(dout, cache):
    """Correct gradients for candidate A: {"x": (N, C)}."""
    ### BEGIN SOLUTION
    (p,) = cache
    # dL/dx_j = sum_k dL/dp_k p_k (delta_kj - p_j) = p_j (dout_j - sum_k dout_k p_k)
    return {"x": p * (dout - (dout * p).sum(axis=-1, keepdims=True))}
    ### END SOLUTION


def fixed_backward_B(dout, cache):
    """Correct gradients for candidate B: {"x": (N, D)}."""
    ### BEGIN SOLUTION
    return backward_B(dout, cache)
    ### END SOLUTION


def fixed_backward_C(dout, cache):
    """Correct gradients for candidate C: {"x", "Wx", "Wh"}."""
    ### BEGIN SOLUTION
    x, Wx, Wh, hs = cache
    T = x.shape[0]
    dx = np.zeros_like(x)
    dWx = np.zeros_like(Wx)
    dWh = np.zeros_like(Wh)
    dh_next = np.zeros_like(hs[0])
    for t in reversed(range(T)):
        dh = dout[t] + dh_next
        da = dh * (1 - hs[t] ** 2)
        h_prev = hs[t - 1] if t > 0 else np.zeros_like(hs[0])
        dWx += x[t].T @ da              # the weights are shared by all steps:
        dWh += h_prev.T @ da            # their gradients add up over time
        dx[t] = da @ Wx.T
        dh_next = da @ Wh.T
    return {"x": dx, "Wx": dWx, "Wh": dWh}
    ### END SOLUTION


def fixed_backward_D(dout, cache):
    """Correct gradients for candidate D: {"x", "W", "b"}."""
    ### BEGIN SOLUTION
    x, W = cache
    return {"x": dout @ W.T, "W": x.T @ dout, "b": dout.sum(axis=0)}
    ### END SOLUTION


def fixed_backward_E(dout, cache):
    """Correct gradients for candidate E: {"x", "w", "b"}."""
    ### BEGIN SOLUTION
    return backward_E(dout, cache)
    ### END SOLUTION


def fixed_backward_F(dout, cache):
    """Correct gradients for candidate F: {"x", "h_prev", "Wf", "bf", ...}."""
    ### BEGIN SOLUTION
    grads = backward_F(dout, cache)
    x, h_prev, Wf, Wi, Wg, f, i, g = cache
    grads["bf"] = (dout * h_prev * f * (1 - f)).sum(axis=0)   # the forget gate's own
    return grads
    ### END SOLUTION


FIXED = {c: globals()["fixed_backward_" + c] for c in CANDIDATES}


def make_inputs(letter, rng, n=3, d=4, h=3, t=4):
    """Random float64 inputs for candidate ``letter`` (a dict for forward_X)."""
    r = lambda *shape: rng.standard_normal(shape)
    if letter == "A":
        return {"x": r(n, 5)}
    if letter == "B":
        return {"x": r(n, d)}
    if letter == "C":
        return {"x": r(t, n, d), "Wx": 0.5 * r(d, h), "Wh": 0.5 * r(h, h)}
    if letter == "D":
        return {"x": r(n, d), "W": r(d, d), "b": r(d)}
    if letter == "E":
        return {"x": r(n, d), "w": r(d), "b": r(d)}
    if letter == "F":
        return {"x": r(n, d), "h_prev": r(n, h),
                "Wf": r(d, h), "bf": r(h), "Wi": r(d, h), "bi": r(h),
                "Wg": r(d, h), "bg": r(h)}
    raise ValueError("no candidate %r; the candidates are %s" % (letter, CANDIDATES))
