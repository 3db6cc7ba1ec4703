"""Recurrent layers: RNN, LSTM and GRU cells, and whole sequences with BPTT.

All follow PyTorch's equations, parameter names and gate order, so weights copy
across one to one (``weight_ih`` <-> ``weight_ih_l0`` etc.).  Shapes: batch B,
input size I, hidden size H; sequences are batch-first, x: (B, T, I).

Elman RNN cell::

    a  = x W_ih^T + b_ih + h W_hh^T + b_hh            (B, H)
    h' = tanh(a)          (or relu(a))

LSTM cell, gates stacked in the order i, f, g, o (input, forget, cell
candidate, output) along the 4H rows of the weights::

    z = x W_ih^T + b_ih + h W_hh^T + b_hh             (B, 4H)
    i = sigmoid(z_i)   f = sigmoid(z_f)   g = tanh(z_g)   o = sigmoid(z_o)
    c' = f * c + i * g
    h' = o * tanh(c')

GRU cell, gates in the order r, z, n (reset, update, new) along 3H rows::

    gi = x W_ih^T + b_ih                               (B, 3H)
    gh = h W_hh^T + b_hh                               (B, 3H)
    r = sigmoid(gi_r + gh_r)    z = sigmoid(gi_z + gh_z)
    n = tanh(gi_n + r * gh_n)
    h' = (1 - z) * n + z * h

Back-propagation through time (BPTT): a sequence layer runs the cell for
t = 0 .. T-1 keeping every step's cache, then walks back t = T-1 .. 0.  The
gradient reaching the state h_t is the sum of what the output at t receives
(dout[:, t]) and what step t+1 sends back through its h input.  The weight
gradients of all steps add up, because every step uses the same weights.
The layer returns the gradient of the initial state too, so truncated BPTT
can hand the final state of one chunk to the next (``h0 = hT``) and the
gradient stops there.

The sequence layers' forward/backward below are that loop, step by step: the
readable specification.  With the C backend, LSTM and GRU layers run the same
computation faster (``_forward_sequence`` / ``_backward_sequence``: the whole
time loop in one C call, see kernels.lstm_sequence_forward); the numbers agree
to rounding (tests/test_rnn_sequence_fast_path.py).
"""

import math

import numpy as np

from tinylm import kernels
from tinylm.layers.activations import sigmoid
from tinylm.layers.base import Layer
from tinylm.layers.checks import Float, check_dtype, check_float, checked
from tinylm.layers.norm import Dropout
from tinylm.rng import child_rng, default_rng

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU"]


def _affine(x, W, b):
    """x (B, I) @ W^T (I, G) + b (G,) -> (B, G), on the matmul kernel."""
    return kernels.matmul(np.ascontiguousarray(x), W, trans_b=True, bias=b)


# -- input checks of the states and their gradients (specs for @checked) -------

def _cell_of(layer):
    return layer.layers["cell"] if "cell" in layer.layers else layer


class _State:
    """Spec of an initial state: h (B, H), (h, c) for an LSTM, or None (zeros);
    checked against the batch size of x and returned as the internal tuple."""

    def check(self, layer, where, name, state, values):
        cell = _cell_of(layer)
        batch_size = values["x"].shape[0]
        if state is None:
            return cell.initial_state(batch_size)
        if cell.n_states == 1:
            state = (state,)
        elif not (isinstance(state, (tuple, list)) and len(state) == 2):
            raise TypeError("%s: the LSTM state must be a tuple (h, c)" % where)
        dtype = cell.params["weight_ih"].dtype
        out = []
        for sname, s in zip(("h", "c"), state):
            s = check_float(s, where, sname, dtype, 2, cell.hidden_size)
            if s.shape != (batch_size, cell.hidden_size):
                raise ValueError("%s: initial %s has shape %s, expected %s"
                                 % (where, sname, s.shape, (batch_size, cell.hidden_size)))
            out.append(s)
        return tuple(out)


def _check_dstate(cell, where, dstate, batch_size):
    """A state's upstream gradient (public form, None = zeros) -> the internal tuple."""
    if cell.n_states == 1:
        dstate = (dstate,)
    elif dstate is None:
        dstate = (None, None)
    out = []
    for z, d in zip(cell.initial_state(batch_size), dstate):
        if d is not None:
            d = check_float(d, where, "dstate", z.dtype, 2)
            if d.shape != z.shape:
                raise ValueError("%s: state gradient has shape %s, expected %s"
                                 % (where, d.shape, z.shape))
        out.append(z if d is None else d)
    return tuple(out)


class _StateGrad:
    """Spec of a cell's backward argument: dL/d(new state)."""

    def check(self, cell, where, name, dstate, values):
        return _check_dstate(cell, where, dstate, cell._cache[0].shape[0])


class _SequenceGrad:
    """Spec of a sequence layer's backward argument: dout (B, T, H) or
    (dout, dstate_final), either None; returns (dout, internal dstate tuple)."""

    def check(self, layer, where, name, dout, values):
        _, B, T = layer._cache
        dfinal = None
        if isinstance(dout, (tuple, list)):
            if len(dout) != 2:
                raise ValueError("%s: expected dout or (dout, dstate_final)" % where)
            dout, dfinal = dout
        cell = _cell_of(layer)
        if dout is not None:
            dout = check_float(dout, where, "dout", cell.params["weight_ih"].dtype, 3)
            if dout.shape != (B, T, cell.hidden_size):
                raise ValueError("%s: dout has shape %s, expected %s"
                                 % (where, dout.shape, (B, T, cell.hidden_size)))
        return dout, _check_dstate(cell, where, dfinal, B)


class _Cell(Layer):
    """Shared parts of the cells.  ``gates`` = 1 (RNN), 4 (LSTM), 3 (GRU).

    Internally the state is a tuple: (h,) or (h, c).  ``step(x, state)``
    returns (new_state, cache); ``step_backward(dstate, cache)`` returns
    (dx, dprev_state) and adds into the gradients.  forward/backward (one
    step, for using a cell on its own) and the sequence layers call these.
    """

    gates = 1
    n_states = 1

    def __init__(self, input_size, hidden_size, bias, rng, dtype):
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError("%s: input_size and hidden_size must be >= 1, got %d, %d"
                             % (type(self).__name__, input_size, hidden_size))
        rng = default_rng(rng)
        dtype = check_dtype(dtype)
        I, H, G = int(input_size), int(hidden_size), self.gates
        self.input_size, self.hidden_size, self.use_bias = I, H, bool(bias)
        k = 1.0 / math.sqrt(H)                     # PyTorch's init: U(-1/sqrt(H), 1/sqrt(H))
        self.add_param("weight_ih", rng.uniform(-k, k, (G * H, I)).astype(dtype))
        self.add_param("weight_hh", rng.uniform(-k, k, (G * H, H)).astype(dtype))
        if bias:
            self.add_param("bias_ih", rng.uniform(-k, k, (G * H,)).astype(dtype))
            self.add_param("bias_hh", rng.uniform(-k, k, (G * H,)).astype(dtype))

    # -- helpers -----------------------------------------------------------
    def _b(self, name):
        return self.params[name] if self.use_bias else None

    def _accumulate(self, dgi, x, dgh, h):
        """Weight/bias gradients of gi = x W_ih^T + b_ih and gh = h W_hh^T + b_hh."""
        kernels.matmul(dgi, np.ascontiguousarray(x), trans_a=True,
                       out=self.grads["weight_ih"], accumulate=True)    # dW_ih += dgi^T x
        kernels.matmul(dgh, np.ascontiguousarray(h), trans_a=True,
                       out=self.grads["weight_hh"], accumulate=True)    # dW_hh += dgh^T h
        if self.use_bias:
            self.grads["bias_ih"] += dgi.sum(axis=0)                     # db_ih += sum dgi
            self.grads["bias_hh"] += dgh.sum(axis=0)                     # db_hh += sum dgh

    def initial_state(self, batch_size):
        """Zero state: a tuple of n_states arrays (B, H)."""
        z = np.zeros((batch_size, self.hidden_size), self.params["weight_ih"].dtype)
        return tuple(z.copy() for _ in range(self.n_states))

    def _public(self, state):
        return state[0] if self.n_states == 1 else tuple(state)

    # -- one step as a layer --------------------------------------------------
    @checked(x=Float(2, last="input_size"), state=_State())
    def forward(self, x, state=None):
        """x: (B, I), state: h (B, H) [or (h, c) for LSTM] -> new state, same form."""
        new, self._cache = self.step(x, state)
        return self._public(new)

    @checked(dstate=_StateGrad())
    def backward(self, dstate):
        """dstate: dh (B, H) [or (dh, dc)] -> (dx, dprev_state) in the same form."""
        dx, dprev = self.step_backward(dstate, self._cache)
        return dx, self._public(dprev)


class RNNCell(_Cell):
    """Elman RNN cell h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (PyTorch nn.RNNCell).

    Parameters: weight_ih (H, I), weight_hh (H, H), bias_ih (H,), bias_hh (H,).
    forward(x (B, I), h (B, H) or None = zeros) -> h' (B, H).
    backward(dh' (B, H)) -> (dx (B, I), dh (B, H)).
    nonlinearity: "tanh" or "relu".
    """

    gates = 1

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", rng=None,
                 dtype=np.float32):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError("RNNCell: nonlinearity must be 'tanh' or 'relu', got %r"
                             % (nonlinearity,))
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, rng, dtype)

    def step(self, x, state):
        (h,) = state
        a = (_affine(x, self.params["weight_ih"], self._b("bias_ih"))
             + _affine(h, self.params["weight_hh"], self._b("bias_hh")))      # (B, H)
        h_new = np.tanh(a) if self.nonlinearity == "tanh" else np.maximum(a, 0)
        return (h_new,), (x, h, h_new)

    def step_backward(self, dstate, cache):
        (dh_new,) = dstate
        x, h, h_new = cache
        # forward: h' = tanh(a)  ->  da = dh' * (1 - h'^2)      (relu: da = dh' * [h' > 0])
        if self.nonlinearity == "tanh":
            da = dh_new * (1 - h_new * h_new)
        else:
            da = dh_new * (h_new > 0)
        # forward: a = x W_ih^T + b_ih + h W_hh^T + b_hh
        #   ->  dW_ih += da^T x, dW_hh += da^T h, db += sum(da), dx = da W_ih, dh = da W_hh
        self._accumulate(da, x, da, h)
        dx = kernels.matmul(da, self.params["weight_ih"])
        dh = kernels.matmul(da, self.params["weight_hh"])
        return dx, (dh,)


class LSTMCell(_Cell):
    """LSTM cell (PyTorch nn.LSTMCell), gate order i, f, g, o.

    Parameters: weight_ih (4H, I), weight_hh (4H, H), bias_ih (4H,), bias_hh (4H,);
    rows [0:H] input gate, [H:2H] forget gate, [2H:3H] cell candidate,
    [3H:4H] output gate.
    forward(x (B, I), state (h, c) each (B, H), or None = zeros) -> (h', c').
    backward((dh', dc')) -> (dx (B, I), (dh, dc)); dc' may be None (zeros).
    """

    gates = 4
    n_states = 2

    def __init__(self, input_size, hidden_size, bias=True, rng=None, dtype=np.float32):
        super().__init__(input_size, hidden_size, bias, rng, dtype)

    def step(self, x, state):
        h, c = state
        H = self.hidden_size
        z = (_affine(x, self.params["weight_ih"], self._b("bias_ih"))
             + _affine(h, self.params["weight_hh"], self._b("bias_hh")))      # (B, 4H)
        i = sigmoid(z[:, 0 * H:1 * H])                                        # (B, H)
        f = sigmoid(z[:, 1 * H:2 * H])
        g = np.tanh(z[:, 2 * H:3 * H])
        o = sigmoid(z[:, 3 * H:4 * H])
        c_new = f * c + i * g                                                 # (B, H)
        tc = np.tanh(c_new)
        h_new = o * tc                                                        # (B, H)
        return (h_new, c_new), (x, h, c, i, f, g, o, tc)

    def step_backward(self, dstate, cache):
        dh_new, dc_new = dstate
        x, h, c, i, f, g, o, tc = cache
        ### BEGIN SOLUTION
        # forward: h' = o * tanh(c')  ->  do = dh' * tanh(c'),  dc' += dh' * o * (1 - tanh(c')^2)
        do = dh_new * tc
        dc = dc_new + dh_new * o * (1 - tc * tc)
        # forward: c' = f * c + i * g  ->  df = dc' * c,  dc_prev = dc' * f,  di = dc' * g,  dg = dc' * i
        df = dc * c
        dc_prev = dc * f
        di = dc * g
        dg = dc * i
        # forward: i, f, o = sigmoid(z_i, z_f, z_o), g = tanh(z_g)
        #   ->  dz = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]
        dz = np.concatenate([di * i * (1 - i), df * f * (1 - f),
                             dg * (1 - g * g), do * o * (1 - o)], axis=1)    # (B, 4H)
        # forward: z = x W_ih^T + b_ih + h W_hh^T + b_hh
        #   ->  dW_ih += dz^T x, dW_hh += dz^T h, db += sum(dz), dx = dz W_ih, dh = dz W_hh
        self._accumulate(dz, x, dz, h)
        dx = kernels.matmul(dz, self.params["weight_ih"])
        dh_prev = kernels.matmul(dz, self.params["weight_hh"])
        ### END SOLUTION
        return dx, (dh_prev, dc_prev)


class GRUCell(_Cell):
    """GRU cell (PyTorch nn.GRUCell), gate order r, z, n.

    Parameters: weight_ih (3H, I), weight_hh (3H, H), bias_ih (3H,), bias_hh (3H,);
    rows [0:H] reset gate, [H:2H] update gate, [2H:3H] new-state candidate.
    forward(x (B, I), h (B, H) or None = zeros) -> h' (B, H).
    backward(dh' (B, H)) -> (dx (B, I), dh (B, H)).
    """

    gates = 3

    def __init__(self, input_size, hidden_size, bias=True, rng=None, dtype=np.float32):
        super().__init__(input_size, hidden_size, bias, rng, dtype)

    def step(self, x, state):
        (h,) = state
        H = self.hidden_size
        gi = _affine(x, self.params["weight_ih"], self._b("bias_ih"))        # (B, 3H)
        gh = _affine(h, self.params["weight_hh"], self._b("bias_hh"))        # (B, 3H)
        r = sigmoid(gi[:, 0:H] + gh[:, 0:H])                                  # (B, H)
        z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        ghn = gh[:, 2 * H:3 * H]
        n = np.tanh(gi[:, 2 * H:3 * H] + r * ghn)
        h_new = (1 - z) * n + z * h                                           # (B, H)
        return (h_new,), (x, h, r, z, n, ghn)

    def step_backward(self, dstate, cache):
        (dh_new,) = dstate
        x, h, r, z, n, ghn = cache
        # forward: h' = (1 - z) * n + z * h  ->  dn = dh'(1-z), dz = dh'(h-n), dh = dh' z
        dn = dh_new * (1 - z)
        dz = dh_new * (h - n)
        dh_direct = dh_new * z
        # forward: n = tanh(gi_n + r * gh_n)  ->  dan = dn (1-n^2), dgh_n = dan r, dr = dan gh_n
        dan = dn * (1 - n * n)
        dr = dan * ghn
        # forward: r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z)
        dar = dr * r * (1 - r)
        daz = dz * z * (1 - z)
        dgi = np.concatenate([dar, daz, dan], axis=1)                         # (B, 3H)
        dgh = np.concatenate([dar, daz, dan * r], axis=1)                     # (B, 3H)
        # forward: gi = x W_ih^T + b_ih, gh = h W_hh^T + b_hh
        self._accumulate(dgi, x, dgh, h)
        dx = kernels.matmul(dgi, self.params["weight_ih"])
        dh = kernels.matmul(dgh, self.params["weight_hh"]) + dh_direct
        return dx, (dh,)


def _split_layers(layer, where, state, what):
    """A stacked state (L, B, H) [or (h, c), each (L, B, H)] -> a list of L per-layer
    states in the public form (None stays None); one layer: [state] unchanged."""
    L, H = layer.num_layers, layer.hidden_size
    if L == 1 or state is None:
        return [state] * L
    two = layer.layers["cell"].n_states == 2
    if two and not (isinstance(state, (tuple, list)) and len(state) == 2):
        raise TypeError("%s: the LSTM %s must be a tuple (h, c)" % (where, what))
    parts = [None if a is None else np.asarray(a) for a in (state if two else (state,))]
    for a in parts:
        if a is not None and (a.ndim != 3 or a.shape[0] != L or a.shape[2] != H):
            raise ValueError("%s: with num_layers=%d the %s must be (num_layers, batch, "
                             "hidden) = (%d, B, %d), got shape %s" % (where, L, what, L, H,
                                                                      a.shape))
    if not two:
        return [parts[0][k] for k in range(L)]
    return [tuple(None if a is None else a[k] for a in parts) for k in range(L)]


class _LayerStates:
    """Spec of a stacked layer's initial state -> a list of per-layer states."""

    def __init__(self, what):
        self.what = what

    def check(self, layer, where, name, state, values):
        return _split_layers(layer, where, state, self.what)


class _LayerGrads:
    """Spec of a stacked layer's backward argument: dout or (dout, dstate_final)
    -> (dout, a list of per-layer final-state gradients)."""

    def check(self, layer, where, name, dout, values):
        dfinal = None
        if isinstance(dout, (tuple, list)):
            if len(dout) != 2:
                raise ValueError("%s: expected dout or (dout, dstate_final)" % where)
            dout, dfinal = dout
        return dout, _split_layers(layer, where, dfinal, "final state gradient")


class _Recurrent(Layer):
    """A cell run over a whole sequence, with BPTT.  Child layer: ``cell``."""

    cell_class = None

    def __init__(self, cell):
        super().__init__()
        self.add_layer("cell", cell)
        self.input_size, self.hidden_size = cell.input_size, cell.hidden_size

    @checked(x=Float(ndim=3, layout="batch, time, features", last="input_size"), state=_State())
    def forward(self, x, state=None):
        """x: (B, T, I), state: initial state or None -> (out (B, T, H), final state)."""
        if self._fast_path(x):
            return self._forward_sequence(x, state)     # the same numbers, whole sequence in C
        cell = self.layers["cell"]
        B, T, _ = x.shape
        out = np.empty((B, T, self.hidden_size), x.dtype)
        caches = []
        for t in range(T):
            state, cache = cell.step(x[:, t], state)      # state_t = cell(x_t, state_{t-1})
            out[:, t] = state[0]                          # out_t = h_t
            caches.append(cache)
        self._cache = (caches, B, T)
        return out, cell._public(state)

    @checked(dout=_SequenceGrad())
    def backward(self, dout):
        """dout: dL/dout (B, T, H), or a tuple (dout, dstate_final) (either may be None).

        Returns (dx (B, T, I), dstate_initial) - the initial state's gradient
        in the same form as the state.
        """
        if isinstance(self._cache[0], _SequenceCache):
            return self._backward_sequence(*dout)       # the forward took the fast path
        cell = self.layers["cell"]
        caches, B, T = self._cache
        dout, dstate = dout             # dL/dout (B, T, H) or None; dL/d(final state), a tuple
        dtype = cell.params["weight_ih"].dtype
        dx = np.empty((B, T, self.input_size), dtype)
        ### BEGIN SOLUTION
        for t in reversed(range(T)):
            # forward: out_t = h_t  ->  dh_t += dout_t (the output's share, plus what
            # step t+1 sent back through its state input, already in dstate)
            if dout is not None:
                dstate = (dstate[0] + dout[:, t],) + tuple(dstate[1:])
            # forward: state_t = cell(x_t, state_{t-1})  ->  dx_t, dstate_{t-1}
            dx[:, t], dstate = cell.step_backward(dstate, caches[t])
        ### END SOLUTION
        return dx, cell._public(dstate)

    def initial_state(self, batch_size):
        return self.layers["cell"]._public(self.layers["cell"].initial_state(batch_size))

    # -- the fast path: the whole sequence in one C call per direction --------
    # forward/backward above are the readable spec: one cell step at a time.
    # With the C backend an LSTM or GRU layer instead does the input
    # projection of all T steps as one matmul, the time loop in one kernel
    # call (kernels.lstm_sequence_forward, ...: W_hh packed once, the gate math
    # fused), and the weight gradients after BPTT as one matmul each.  The
    # numbers are the per-step path's (tests/test_rnn_sequence_fast_path.py).

    use_fast_path = True        # set False (class or instance) to force the per-step loop

    def _fast_path(self, x):
        # only the library's own cells: a subclass may change step/step_backward
        cell = self.layers["cell"]
        return (self.use_fast_path and kernels.get_backend() == "c"
                and type(cell) in (LSTMCell, GRUCell) and x.shape[0] > 0 and x.shape[1] > 0)

    def _forward_sequence(self, x, state):
        cell = self.layers["cell"]
        p, H = cell.params, self.hidden_size
        B, T, I = x.shape
        x2 = np.ascontiguousarray(x).reshape(B * T, I)
        gx = kernels.matmul(x2, p["weight_ih"], trans_b=True)        # (B*T, G*H) for all t
        h0 = state[0]
        if isinstance(cell, LSTMCell):
            bias = p["bias_ih"] + p["bias_hh"] if cell.use_bias else None
            out, gates, cs = kernels.lstm_sequence_forward(gx.reshape(B, T, 4 * H),
                                                           p["weight_hh"], h0, state[1], bias)
            saved, final = (gates, cs, state[1]), (out[:, -1].copy(), cs[:, -1].copy())
        else:
            b_i = b_hn = None
            if cell.use_bias:          # b_hr, b_hz add to the input side; b_hn is inside r * (.)
                b_i = p["bias_ih"].copy()
                b_i[:2 * H] += p["bias_hh"][:2 * H]
                b_hn = p["bias_hh"][2 * H:]
            out, gates = kernels.gru_sequence_forward(gx.reshape(B, T, 3 * H),
                                                      p["weight_hh"], b_hn, h0, b_i)
            saved, final = (gates,), (out[:, -1].copy(),)
        hprev = np.concatenate([h0[:, None], out[:, :-1]], axis=1)   # h_{t-1} (B, T, H)
        self._cache = (_SequenceCache(x2, hprev, saved), B, T)
        return out, cell._public(final)

    def _backward_sequence(self, dout, dstate):
        cell = self.layers["cell"]
        p, H = cell.params, self.hidden_size
        cache, B, T = self._cache
        if isinstance(cell, LSTMCell):
            gates, cs, c0 = cache.saved
            dz, dh0, dc0, db = kernels.lstm_sequence_backward(p["weight_hh"], gates, cs, c0,
                                                              dout, dstate[0], dstate[1])
            dgi = dgh = dz.reshape(B * T, 4 * H)
            dbi = dbh = db
            dinitial = (dh0, dc0)
        else:
            dgi, dgh, dh0, dbi, dbh = kernels.gru_sequence_backward(
                p["weight_hh"], cache.saved[0], cache.hprev, dout, dstate[0])
            dgi, dgh = dgi.reshape(B * T, 3 * H), dgh.reshape(B * T, 3 * H)
            dinitial = (dh0,)
        g = cell.grads                   # the weight gradients of all the steps: one matmul each
        kernels.matmul(dgi, cache.x, trans_a=True, out=g["weight_ih"], accumulate=True)
        kernels.matmul(dgh, cache.hprev.reshape(B * T, H), trans_a=True, out=g["weight_hh"],
                       accumulate=True)
        if cell.use_bias:
            g["bias_ih"] += dbi
            g["bias_hh"] += dbh
        dx = kernels.matmul(dgi, p["weight_ih"]).reshape(B, T, self.input_size)
        return dx, cell._public(dinitial)


class _SequenceCache:
    """What the fast path's backward needs: x (B*T, I), h_{t-1} (B, T, H), and the
    kernel's saved arrays (LSTM: gates, cs, c0; GRU: gates)."""

    def __init__(self, x, hprev, saved):
        self.x, self.hprev, self.saved = x, hprev, saved


class _Stacked(_Recurrent):
    """``num_layers`` sequence layers on top of each other, dropout between them (PyTorch's
    ``num_layers`` and ``dropout``).

    Layer 0 is this layer's own ``cell`` (run by :class:`_Recurrent`, so a
    one-layer stack is exactly the single layer); layer k >= 1 is the child
    ``layer{k}``, a one-layer sequence layer of the same kind reading H
    features, and ``drop{k}`` is the dropout applied to its input::

        out_0 = layer_0(x)                                   (B, T, H)
        out_k = layer_k(dropout(out_{k-1}))    k = 1 .. L-1  (B, T, H)
        out   = out_{L-1}

    Dropout is active in training mode only and never after the last layer.
    With L > 1 the states stack along a first axis, as PyTorch: h0 (L, B, H)
    (LSTM: (h0, c0), each (L, B, H)); their gradients come back the same way.
    Weights copy one to one: PyTorch's ``weight_ih_l{k}`` is ``cell.weight_ih``
    for k = 0 and ``layer{k}.cell.weight_ih`` above (see :meth:`torch_names`).
    """

    def __init__(self, cell, make_layer, num_layers, dropout, rng):
        super().__init__(cell)
        if not isinstance(num_layers, (int, np.integer)) or num_layers < 1:
            raise ValueError("%s: num_layers must be an integer >= 1, got %r"
                             % (type(self).__name__, num_layers))
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError("%s: dropout must be in [0, 1), got %r"
                             % (type(self).__name__, dropout))
        self.num_layers, self.dropout = int(num_layers), float(dropout)
        for k in range(1, self.num_layers):
            self.add_layer("drop%d" % k, Dropout(self.dropout, rng=child_rng(rng)))
            self.add_layer("layer%d" % k, make_layer())

    def _layer(self, k):
        return self if k == 0 else self.layers["layer%d" % k]

    def _stacked(self, states):
        """A list of L per-layer states -> one stacked state (L, B, H) [or (h, c)]."""
        if self.layers["cell"].n_states == 1:
            return np.stack(states)
        return tuple(np.stack([s[i] for s in states]) for i in range(2))

    @checked(state=_LayerStates("initial state"))
    def forward(self, x, state=None):
        """x: (B, T, I), state (see the class doc) -> (out (B, T, H), final state)."""
        if self.num_layers == 1:
            return super().forward(x, state[0])
        out, final = super().forward(x, state[0])                   # out_0 = layer_0(x)
        finals = [final]
        for k in range(1, self.num_layers):
            out = self.layers["drop%d" % k].forward(out)            # dropout(out_{k-1})
            out, final = self.layers["layer%d" % k].forward(out, state[k])
            finals.append(final)                                    # out_k = layer_k(.)
        return out, self._stacked(finals)

    @checked(dout=_LayerGrads())
    def backward(self, dout):
        """dout (B, T, H), or (dout, dstate_final) -> (dx (B, T, I), dstate_initial)."""
        dout, dfinals = dout            # dL/dout (B, T, H) or None; a list of L state gradients
        if self.num_layers == 1:
            return super().backward((dout, dfinals[0]))
        dstates = [None] * self.num_layers
        for k in reversed(range(1, self.num_layers)):
            # forward: out_k = layer_k(dropout(out_{k-1}))
            dout, dstates[k] = self.layers["layer%d" % k].backward((dout, dfinals[k]))
            dout = self.layers["drop%d" % k].backward(dout)
        # forward: out_0 = layer_0(x)
        dx, dstates[0] = super().backward((dout, dfinals[0]))
        return dx, self._stacked(dstates)

    def initial_state(self, batch_size):
        if self.num_layers == 1:
            return super().initial_state(batch_size)
        return self._stacked([super(_Stacked, self).initial_state(batch_size)] * self.num_layers)

    def torch_names(self):
        """{tinylm parameter name: PyTorch nn.RNN/LSTM/GRU parameter name}."""
        names = {}
        for k in range(self.num_layers):
            prefix = "cell." if k == 0 else "layer%d.cell." % k
            for n in self._layer(k).layers["cell"].params:
                names[prefix + n] = "%s_l%d" % (n, k)
        return names


class RNN(_Stacked):
    """Elman RNN over a sequence (PyTorch nn.RNN, batch_first=True).

    Parameters (in child ``cell``): cell.weight_ih (H, I), cell.weight_hh (H, H),
    cell.bias_ih (H,), cell.bias_hh (H,).
    forward(x (B, T, I), h0 (B, H) or None) -> (out (B, T, H), hT (B, H)).
    backward(dout) or backward((dout, dhT)) -> (dx (B, T, I), dh0 (B, H)).
    num_layers > 1 stacks layers with ``dropout`` between them; states are then
    (num_layers, B, H) (see :class:`_Stacked`).
    """

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", rng=None,
                 dtype=np.float32, num_layers=1, dropout=0.0):
        rng = default_rng(rng)
        super().__init__(RNNCell(input_size, hidden_size, bias, nonlinearity, rng, dtype),
                         lambda: RNN(hidden_size, hidden_size, bias, nonlinearity, rng, dtype),
                         num_layers, dropout, rng)


class LSTM(_Stacked):
    """LSTM over a sequence (PyTorch nn.LSTM, batch_first=True), gates i, f, g, o.

    Parameters (in child ``cell``): cell.weight_ih (4H, I), cell.weight_hh (4H, H),
    cell.bias_ih (4H,), cell.bias_hh (4H,).
    forward(x (B, T, I), state (h0, c0) each (B, H), or None)
        -> (out (B, T, H), (hT, cT)).
    backward(dout) or backward((dout, (dhT, dcT))) -> (dx, (dh0, dc0)).
    num_layers > 1 stacks layers with ``dropout`` between them; h and c are then
    (num_layers, B, H) each (see :class:`_Stacked`).
    """

    def __init__(self, input_size, hidden_size, bias=True, rng=None, dtype=np.float32,
                 num_layers=1, dropout=0.0):
        rng = default_rng(rng)
        super().__init__(LSTMCell(input_size, hidden_size, bias, rng, dtype),
                         lambda: LSTM(hidden_size, hidden_size, bias, rng, dtype),
                         num_layers, dropout, rng)


class GRU(_Stacked):
    """GRU over a sequence (PyTorch nn.GRU, batch_first=True), gates r, z, n.

    Parameters (in child ``cell``): cell.weight_ih (3H, I), cell.weight_hh (3H, H),
    cell.bias_ih (3H,), cell.bias_hh (3H,).
    forward(x (B, T, I), h0 (B, H) or None) -> (out (B, T, H), hT (B, H)).
    backward(dout) or backward((dout, dhT)) -> (dx (B, T, I), dh0 (B, H)).
    num_layers > 1 stacks layers with ``dropout`` between them; states are then
    (num_layers, B, H) (see :class:`_Stacked`).
    """

    def __init__(self, input_size, hidden_size, bias=True, rng=None, dtype=np.float32,
                 num_layers=1, dropout=0.0):
        rng = default_rng(rng)
        super().__init__(GRUCell(input_size, hidden_size, bias, rng, dtype),
                         lambda: GRU(hidden_size, hidden_size, bias, rng, dtype),
                         num_layers, dropout, rng)
