"""tinylm's layers against PyTorch's (optional oracle): weights copied across,
outputs and every gradient agree in float64.

Skipped when torch is not installed (CI installs torch==2.13.0).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is an optional test oracle "
                                            "(pip install torch==2.13.0)")

from tinylm.layers import (GRU, LSTM, LayerNorm, MultiHeadAttention, RNN,  # noqa: E402
                           TransformerBlock)
from tinylm.layers.examples import randomize_params  # noqa: E402

TOL = dict(rtol=1e-10, atol=1e-12)


def T(a, grad=False):
    t = torch.tensor(np.asarray(a), dtype=torch.float64)
    return t.requires_grad_(grad)


def close(a, b, what):
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else b
    np.testing.assert_allclose(a, b, err_msg=what, **TOL)


def copy_into_torch(pairs):
    """pairs: [(torch parameter, numpy array)]"""
    with torch.no_grad():
        for tp, arr in pairs:
            assert tuple(tp.shape) == arr.shape, (tp.shape, arr.shape)
            tp.copy_(torch.from_numpy(np.ascontiguousarray(arr)))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_recurrent_layers(kind):
    rng = np.random.default_rng(0)
    B, S, I, H = 3, 5, 4, 6
    ours = {"rnn": RNN, "lstm": LSTM, "gru": GRU}[kind](I, H, rng=rng, dtype=np.float64)
    randomize_params(ours, rng)
    theirs = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        I, H, batch_first=True, dtype=torch.float64)
    c = ours.layers["cell"].params
    copy_into_torch([(getattr(theirs, n + "_l0"), c[n])
                     for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")])
    x = rng.standard_normal((B, S, I))
    h0, c0 = rng.standard_normal((2, B, H))
    gout, gh, gc = rng.standard_normal((B, S, H)), *rng.standard_normal((2, B, H))

    state = (h0, c0) if kind == "lstm" else h0
    out, fin = ours.forward(x, state)
    dfin = (gh, gc) if kind == "lstm" else gh
    dx, dstate = ours.backward((gout, dfin))

    tx, th0, tc0 = T(x, True), T(h0[None], True), T(c0[None], True)
    if kind == "lstm":
        tout, (thn, tcn) = theirs(tx, (th0, tc0))
        loss = (tout * T(gout)).sum() + (thn[0] * T(gh)).sum() + (tcn[0] * T(gc)).sum()
    else:
        tout, thn = theirs(tx, th0)
        loss = (tout * T(gout)).sum() + (thn[0] * T(gh)).sum()
    loss.backward()

    close(out, tout, "out")
    if kind == "lstm":
        close(fin[0], thn[0], "hT"), close(fin[1], tcn[0], "cT")
        close(dstate[0], th0.grad[0], "dh0"), close(dstate[1], tc0.grad[0], "dc0")
    else:
        close(fin, thn[0], "hT"), close(dstate, th0.grad[0], "dh0")
    close(dx, tx.grad, "dx")
    g = ours.layers["cell"].grads
    for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        close(g[n], getattr(theirs, n + "_l0").grad, n)


def test_layernorm():
    rng = np.random.default_rng(1)
    ours = randomize_params(LayerNorm(7, dtype=np.float64), rng)
    theirs = torch.nn.LayerNorm(7, dtype=torch.float64)
    copy_into_torch([(theirs.weight, ours.params["weight"]), (theirs.bias, ours.params["bias"])])
    x, g = rng.standard_normal((2, 3, 7)) * 3, rng.standard_normal((2, 3, 7))
    y = ours.forward(x)
    dx = ours.backward(g)
    tx = T(x, True)
    ty = theirs(tx)
    (ty * T(g)).sum().backward()
    close(y, ty, "y"), close(dx, tx.grad, "dx")
    close(ours.grads["weight"], theirs.weight.grad, "dweight")
    close(ours.grads["bias"], theirs.bias.grad, "dbias")


def _mha_pairs(ours, theirs):
    L = ours.layers
    return [
        (theirs.in_proj_weight, np.concatenate([L[n].params["weight"]
                                                for n in ("q_proj", "k_proj", "v_proj")])),
        (theirs.in_proj_bias, np.concatenate([L[n].params["bias"]
                                              for n in ("q_proj", "k_proj", "v_proj")])),
        (theirs.out_proj.weight, L["out_proj"].params["weight"]),
        (theirs.out_proj.bias, L["out_proj"].params["bias"]),
    ]


def _mha_grads_close(ours, theirs):
    L = ours.layers
    gin = theirs.in_proj_weight.grad.numpy()
    bin_ = theirs.in_proj_bias.grad.numpy()
    D = ours.d_model
    for i, n in enumerate(("q_proj", "k_proj", "v_proj")):
        close(L[n].grads["weight"], gin[i * D:(i + 1) * D], n + ".weight")
        close(L[n].grads["bias"], bin_[i * D:(i + 1) * D], n + ".bias")
    close(L["out_proj"].grads["weight"], theirs.out_proj.weight.grad, "out_proj.weight")
    close(L["out_proj"].grads["bias"], theirs.out_proj.bias.grad, "out_proj.bias")


@pytest.mark.parametrize("mode", ["self", "causal", "padded", "cross"])
def test_multihead_attention(mode):
    rng = np.random.default_rng(2)
    B, S, D, H = 2, 5, 8, 2
    ours = randomize_params(MultiHeadAttention(D, H, causal=(mode == "causal"), rng=rng,
                                               dtype=np.float64), rng)
    theirs = torch.nn.MultiheadAttention(D, H, batch_first=True, dtype=torch.float64)
    copy_into_torch(_mha_pairs(ours, theirs))
    x = rng.standard_normal((B, S, D))
    mem = rng.standard_normal((B, 4, D)) if mode == "cross" else None
    kpm = None
    if mode == "padded":
        kpm = np.zeros((B, S), bool)
        kpm[1, 3:] = True
    g = rng.standard_normal((B, S, D))
    y = ours.forward(x, mem, key_padding_mask=kpm)
    back = ours.backward(g)

    tx = T(x, True)
    tmem = T(mem, True) if mem is not None else tx
    attn_mask = (torch.triu(torch.ones(S, S, dtype=torch.bool), 1) if mode == "causal"
                 else None)
    ty, _ = theirs(tx, tmem, tmem, key_padding_mask=None if kpm is None else torch.tensor(kpm),
                   attn_mask=attn_mask, need_weights=False)
    (ty * T(g)).sum().backward()
    close(y, ty, "y")
    if mode == "cross":
        close(back[0], tx.grad, "dx"), close(back[1], tmem.grad, "dmemory")
    else:
        close(back, tx.grad, "dx")
    _mha_grads_close(ours, theirs)


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_ln", "post_ln"])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_transformer_encoder_layer(norm_first, activation):
    rng = np.random.default_rng(3)
    B, S, D, H, F = 2, 5, 8, 2, 16
    ours = TransformerBlock(D, H, F, dropout=0.0, norm_first=norm_first, causal=True,
                            activation=activation, rng=rng, dtype=np.float64)
    randomize_params(ours, rng, scale=0.4)
    theirs = torch.nn.TransformerEncoderLayer(D, H, F, dropout=0.0, activation=activation,
                                              batch_first=True, norm_first=norm_first,
                                              dtype=torch.float64)
    theirs.train()           # dropout is 0; train mode keeps torch off its inference fast path
    L = ours.layers
    copy_into_torch(_mha_pairs(L["self_attn"], theirs.self_attn) + [
        (theirs.linear1.weight, L["ff"].layers["fc1"].params["weight"]),
        (theirs.linear1.bias, L["ff"].layers["fc1"].params["bias"]),
        (theirs.linear2.weight, L["ff"].layers["fc2"].params["weight"]),
        (theirs.linear2.bias, L["ff"].layers["fc2"].params["bias"]),
        (theirs.norm1.weight, L["ln1"].params["weight"]), (theirs.norm1.bias, L["ln1"].params["bias"]),
        (theirs.norm2.weight, L["ln2"].params["weight"]), (theirs.norm2.bias, L["ln2"].params["bias"]),
    ])
    x, g = rng.standard_normal((B, S, D)), rng.standard_normal((B, S, D))
    y = ours.forward(x)
    dx = ours.backward(g)
    tx = T(x, True)
    mask = torch.triu(torch.ones(S, S, dtype=torch.bool), 1)
    ty = theirs(tx, src_mask=mask, is_causal=True)
    (ty * T(g)).sum().backward()
    close(y, ty, "y"), close(dx, tx.grad, "dx")
    _mha_grads_close(L["self_attn"], theirs.self_attn)
    for ours_p, their_p in [(L["ff"].layers["fc1"], theirs.linear1),
                            (L["ff"].layers["fc2"], theirs.linear2),
                            (L["ln1"], theirs.norm1), (L["ln2"], theirs.norm2)]:
        close(ours_p.grads["weight"], their_p.weight.grad, "weight")
        close(ours_p.grads["bias"], their_p.bias.grad, "bias")
