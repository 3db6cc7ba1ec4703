"""Stacked recurrent layers (num_layers, dropout between layers): gradient checks, the one-layer
case unchanged, and parity with PyTorch's nn.RNN/LSTM/GRU(num_layers=L) in float64."""

import numpy as np
import pytest

from tinylm.gradcheck import check_layer
from tinylm.layers import GRU, LSTM, RNN
from tinylm.layers.examples import randomize_params

KINDS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def make(kind, I, H, L, dropout=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return randomize_params(KINDS[kind](I, H, rng=rng, dtype=np.float64, num_layers=L,
                                        dropout=dropout), rng)


def state(kind, L, B, H, rng):
    h = rng.standard_normal((L, B, H))
    return (h, rng.standard_normal((L, B, H))) if kind == "lstm" else h


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("L,dropout", [(2, 0.0), (3, 0.4)])
def test_gradient_check(kind, L, dropout):
    rng = np.random.default_rng(1)
    layer = make(kind, 3, 4, L, dropout, seed=2)
    layer.train()
    x = rng.standard_normal((2, 5, 3))
    report = check_layer(layer, (x, state(kind, L, 2, 4, rng)), seed=3)
    assert report.ok, str(report)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_one_layer_is_the_plain_layer(kind):
    """num_layers=1: same parameters (cell.*), same state shapes as before."""
    layer = KINDS[kind](3, 4, rng=0, num_layers=1, dropout=0.0)
    assert sorted(n for n, _, _ in layer.named_parameters()) == [
        "cell.bias_hh", "cell.bias_ih", "cell.weight_hh", "cell.weight_ih"]
    out, fin = layer.forward(np.ones((2, 3, 3), np.float32))
    h = fin[0] if kind == "lstm" else fin
    assert out.shape == (2, 3, 4) and h.shape == (2, 4)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_dropout_only_between_layers_and_only_in_training(kind):
    layer = make(kind, 3, 4, 3, dropout=0.5, seed=4)
    x = np.random.default_rng(0).standard_normal((2, 6, 3))
    layer.eval()
    a, _ = layer.forward(x)
    b, _ = layer.forward(x)
    np.testing.assert_array_equal(a, b)
    no_drop = make(kind, 3, 4, 3, dropout=0.0, seed=4)
    np.testing.assert_allclose(a, no_drop.forward(x)[0], rtol=1e-12)   # eval: no dropout
    layer.train()
    c, _ = layer.forward(x)
    assert not np.allclose(a, c)


def test_torch_names_and_state_errors():
    layer = LSTM(3, 4, num_layers=2)
    names = layer.torch_names()
    assert names["cell.weight_ih"] == "weight_ih_l0"
    assert names["layer1.cell.bias_hh"] == "bias_hh_l1"
    assert len(names) == 8 == len(list(layer.named_parameters()))
    x = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(ValueError, match="num_layers"):
        layer.forward(x, (np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32)))
    with pytest.raises(TypeError, match="tuple"):
        layer.forward(x, np.zeros((2, 2, 4), np.float32))
    with pytest.raises(ValueError, match="num_layers"):
        GRU(3, 4, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        GRU(3, 4, num_layers=2, dropout=1.0)
    h, c = layer.initial_state(5)
    assert h.shape == c.shape == (2, 5, 4)


# -- PyTorch as the oracle ------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("L", [1, 2, 3])
def test_equals_pytorch_num_layers(kind, L):
    torch = pytest.importorskip("torch", reason="PyTorch is an optional test oracle "
                                                "(pip install torch==2.13.0)")
    rng = np.random.default_rng(L)
    B, T, I, H = 3, 5, 4, 6
    ours = make(kind, I, H, L, dropout=0.3, seed=L)   # dropout 0.3, compared in eval mode
    ours.eval()
    theirs = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        I, H, num_layers=L, dropout=0.3 if L > 1 else 0.0, batch_first=True,
        dtype=torch.float64).eval()
    params = {n: p for n, p, _ in ours.named_parameters()}
    with torch.no_grad():
        for ours_name, torch_name in ours.torch_names().items():
            getattr(theirs, torch_name).copy_(torch.from_numpy(params[ours_name]))
    x = rng.standard_normal((B, T, I))
    s0 = state(kind, L, B, H, rng)
    gout = rng.standard_normal((B, T, H))
    gfin = state(kind, L, B, H, rng)
    if L == 1:                                        # one layer: states are (B, H)
        s0 = tuple(a[0] for a in s0) if kind == "lstm" else s0[0]
        gfin_ours = tuple(a[0] for a in gfin) if kind == "lstm" else gfin[0]
    else:
        gfin_ours = gfin
    out, fin = ours.forward(x, s0)
    dx, ds0 = ours.backward((gout, gfin_ours))

    t = lambda a, g=False: torch.tensor(np.asarray(a), dtype=torch.float64).requires_grad_(g)
    tx = t(x, True)
    if kind == "lstm":
        th0, tc0 = (t(a.reshape(L, B, H), True) for a in s0)
        tout, (thn, tcn) = theirs(tx, (th0, tc0))
        loss = ((tout * t(gout)).sum() + (thn * t(gfin[0])).sum() + (tcn * t(gfin[1])).sum())
    else:
        th0 = t(np.reshape(s0, (L, B, H)), True)
        tout, thn = theirs(tx, th0)
        loss = (tout * t(gout)).sum() + (thn * t(gfin)).sum()
    loss.backward()

    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, tout.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
    if kind == "lstm":
        np.testing.assert_allclose(np.reshape(fin[0], (L, B, H)), thn.detach().numpy(), **tol)
        np.testing.assert_allclose(np.reshape(fin[1], (L, B, H)), tcn.detach().numpy(), **tol)
        np.testing.assert_allclose(np.reshape(ds0[0], (L, B, H)), th0.grad.numpy(), **tol)
        np.testing.assert_allclose(np.reshape(ds0[1], (L, B, H)), tc0.grad.numpy(), **tol)
    else:
        np.testing.assert_allclose(np.reshape(fin, (L, B, H)), thn.detach().numpy(), **tol)
        np.testing.assert_allclose(np.reshape(ds0, (L, B, H)), th0.grad.numpy(), **tol)
    grads = {n: g for n, _, g in ours.named_parameters()}
    for ours_name, torch_name in ours.torch_names().items():
        np.testing.assert_allclose(grads[ours_name], getattr(theirs, torch_name).grad.numpy(),
                                   err_msg=ours_name, **tol)
