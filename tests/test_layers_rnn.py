"""RNN, LSTM and GRU: gradient checks, sequence = cell stepped by hand, truncated BPTT."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import GRAD_RTOL
from tinylm.gradcheck import check_layer
from tinylm.layers import GRU, GRUCell, LSTM, LSTMCell, RNN, RNNCell
from tinylm.layers.examples import randomize_params

SEQ = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
CELL = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}


def _state(kind, rng, B, H):
    if kind == "lstm":
        return (rng.standard_normal((B, H)), rng.standard_normal((B, H)))
    return rng.standard_normal((B, H))


def _assert_ok(report):
    assert report.ok, "\n" + str(report)
    assert report.max_error <= GRAD_RTOL


def _gates_differ(layer):
    """randomize_params gives every gate its own bias values."""
    for _, p, _ in layer.named_parameters():
        if p.ndim == 1:
            G = p.size // layer.hidden_size if hasattr(layer, "hidden_size") else 1
            chunks = p.reshape(G, -1)
            assert all(not np.allclose(chunks[i], chunks[j])
                       for i in range(G) for j in range(i + 1, G))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@settings(max_examples=4)
@given(B=st.integers(1, 3), T=st.integers(1, 4), I=st.integers(1, 4), H=st.integers(1, 4),
       with_state=st.booleans(), seed=st.integers(0, 1000))
def test_sequence_gradcheck(kind, B, T, I, H, with_state, seed):
    rng = np.random.default_rng(seed)
    layer = randomize_params(SEQ[kind](I, H, rng=rng, dtype=np.float64), rng)
    _gates_differ(layer.layers["cell"])
    x = rng.standard_normal((B, T, I))
    inputs = (x, _state(kind, rng, B, H)) if with_state else (x,)
    _assert_ok(check_layer(layer, inputs, seed=seed))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@settings(max_examples=4)
@given(B=st.integers(1, 3), I=st.integers(1, 4), H=st.integers(1, 4), seed=st.integers(0, 1000))
def test_cell_gradcheck(kind, B, I, H, seed):
    rng = np.random.default_rng(seed)
    cell = randomize_params(CELL[kind](I, H, rng=rng, dtype=np.float64), rng)
    _assert_ok(check_layer(cell, (rng.standard_normal((B, I)), _state(kind, rng, B, H)),
                           seed=seed))


def test_relu_rnn_gradcheck():
    rng = np.random.default_rng(5)
    layer = randomize_params(RNN(3, 4, nonlinearity="relu", rng=rng, dtype=np.float64), rng)
    _assert_ok(check_layer(layer, (rng.standard_normal((2, 4, 3)),),
                           eps=1e-5, floor=1e-2))   # small step: never cross the kink


def test_copy_paste_gate_bug_is_caught():
    """Swapping two gates' derivatives must fail the check (biases differ per gate)."""

    class SwappedLSTMCell(LSTMCell):
        def step_backward(self, dstate, cache):
            x, h, c, i, f, g, o, tc = cache
            # bug: uses the forget gate where the input gate belongs
            return super().step_backward(dstate, (x, h, c, f, f, g, o, tc))

    rng = np.random.default_rng(0)
    cell = randomize_params(SwappedLSTMCell(3, 4, rng=rng, dtype=np.float64), rng)
    report = check_layer(cell, (rng.standard_normal((2, 3)), _state("lstm", rng, 2, 4)))
    assert not report.ok


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_sequence_equals_cell_stepped_by_hand(kind):
    rng = np.random.default_rng(1)
    B, T, I, H = 2, 5, 3, 4
    seq = randomize_params(SEQ[kind](I, H, rng=rng, dtype=np.float64), rng)
    cell = CELL[kind](I, H, dtype=np.float64)
    cell.load_state_dict({k[len("cell."):]: v for k, v in seq.state_dict().items()})
    x = rng.standard_normal((B, T, I))
    s0 = _state(kind, rng, B, H)
    out, sT = seq.forward(x, s0)
    s = s0
    for t in range(T):
        s = cell.forward(x[:, t], s)
        h = s[0] if kind == "lstm" else s
        np.testing.assert_allclose(out[:, t], h, rtol=1e-13, atol=1e-14)
    for a, b in zip(np.atleast_1d(sT) if kind != "lstm" else sT,
                    np.atleast_1d(s) if kind != "lstm" else s):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_truncated_bptt_state_handoff(kind):
    """Two halves with the state passed on == one forward over the whole sequence,
    and the backward of the halves (second half's dstate0 fed into the first
    half's final state) == the whole backward."""
    rng = np.random.default_rng(2)
    B, T, I, H = 2, 6, 3, 4
    layer = randomize_params(SEQ[kind](I, H, rng=rng, dtype=np.float64), rng)
    x = rng.standard_normal((B, T, I))
    dout = rng.standard_normal((B, T, H))
    s0 = _state(kind, rng, B, H)

    out, sT = layer.forward(x, s0)
    layer.zero_grad()
    dx, ds0 = layer.backward(dout)
    whole = {n: g.copy() for n, _, g in layer.named_parameters()}

    layer.zero_grad()
    out1, s_mid = layer.forward(x[:, :3], s0)
    first = layer._cache
    out2, sT2 = layer.forward(x[:, 3:], s_mid)
    np.testing.assert_allclose(np.concatenate([out1, out2], 1), out, rtol=1e-13, atol=1e-14)
    for a, b in zip(sT2 if kind == "lstm" else (sT2,), sT if kind == "lstm" else (sT,)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
    dx2, ds_mid = layer.backward(dout[:, 3:])
    layer._cache = first                         # back to the first chunk's forward
    dx1, ds0_halves = layer.backward((dout[:, :3], ds_mid))
    np.testing.assert_allclose(np.concatenate([dx1, dx2], 1), dx, rtol=1e-12, atol=1e-13)
    for a, b in zip(ds0_halves if kind == "lstm" else (ds0_halves,),
                    ds0 if kind == "lstm" else (ds0,)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    for n, _, g in layer.named_parameters():
        np.testing.assert_allclose(g, whole[n], rtol=1e-12, atol=1e-13, err_msg=n)


def test_lstm_gate_order_is_pytorch_ifgo():
    """With only the forget-gate rows of the bias large, c' = c (f = 1, i = 0)."""
    H = 3
    cell = LSTMCell(2, H, dtype=np.float64)
    for _, p, _ in cell.named_parameters():
        p[...] = 0
    b = cell.params["bias_ih"]
    b[0:H] = -50          # i -> 0
    b[H:2 * H] = 50       # f -> 1
    c = np.array([[0.3, -0.7, 1.5]])
    h_new, c_new = cell.forward(np.ones((1, 2)), (np.zeros((1, H)), c))
    np.testing.assert_allclose(c_new, c, atol=1e-15)


def test_state_errors():
    with pytest.raises(TypeError, match=r"tuple \(h, c\)"):
        LSTM(2, 3).forward(np.zeros((1, 4, 2), np.float32), np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="initial h has shape"):
        RNN(2, 3).forward(np.zeros((2, 4, 2), np.float32), np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="batch, time, features"):
        GRU(2, 3).forward(np.zeros((1, 2, 4, 2), np.float32))
