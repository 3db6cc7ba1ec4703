"""GPT: whole-model gradient check (float64), init, KV cache, errors, a tiny run."""

import numpy as np
import pytest

from tinylm import kernels, optim
from tinylm.gradcheck import numerical_gradient, relative_error
from tinylm.models import MODELS, build_model
from tinylm.models.gpt import GPT, GPTConfig
from tinylm.training import layer_rngs

from conftest import GRAD_RTOL

# The floor of the relative error.  Rounding in a central difference of the
# whole model's loss is about 1e-16 * |L| * (number of summed terms) / eps,
# ~1e-9 absolute here, so gradients are compared relative to max(1e-2, |a|+|n|):
# relative 1e-7 for the O(1e-2..1) gradients, absolute 1e-9 below that.
FLOOR = 1e-2


def tiny(**kw):
    cfg = dict(vocab_size=7, block_size=6, n_layer=2, n_head=2, d_model=8, d_ff=12,
               dtype="float64", seed=3)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg))


def _whole_model_gradcheck(model, x, y, per_param=5, seed=0):
    """Compare backward() with central differences of loss(x, y) on sampled entries.

    Dropout masks are made identical across the many loss evaluations by
    restoring every layer RNG before each forward.
    """
    # random, O(1) parameters: at the N(0, 0.02) init many gradients are ~1e-6,
    # below what central differences resolve against a loss of ~2
    pr = np.random.default_rng(seed + 100)
    for name, p, _ in model.named_parameters():
        base = 1.0 if name.endswith("ln1.weight") or name.endswith("ln2.weight") \
            or name.endswith("ln_f.weight") else 0.0
        p[...] = base + pr.normal(0.0, 0.4, p.shape)
    rngs = layer_rngs(model)
    states = {k: g.bit_generator.state for k, g in rngs.items()}

    def reset():
        for k, g in rngs.items():
            g.bit_generator.state = states[k]

    reset()
    model.loss(x, y)
    model.zero_grad()
    model.backward()
    pick = np.random.default_rng(seed)
    worst = {}
    for name, p, g in model.named_parameters():
        analytic = g.copy()
        idx = pick.choice(p.size, size=min(per_param, p.size), replace=False)

        def f(v, p=p):
            old = p.copy()
            p[...] = v
            reset()
            out = model.loss(x, y)
            p[...] = old
            return out
        num = numerical_gradient(f, p, indices=idx)
        err = relative_error(analytic.reshape(-1)[idx], num.reshape(-1)[idx], FLOOR)
        worst[name] = float(err.max())
    return worst


@pytest.mark.parametrize("kw,backend", [(dict(), "c"), (dict(), "numpy"),
                                        (dict(tie_weights=True), "numpy"),
                                        (dict(dropout=0.3), "numpy")],
                         ids=["untied-c", "untied-numpy", "tied", "dropout"])
def test_whole_model_gradient_check_float64(kw, backend):
    if backend not in kernels.available_backends():
        pytest.skip("the C extension is not built")
    model = tiny(**kw)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 7, (3, 6))
    y = rng.integers(0, 7, (3, 6))
    with kernels.backend(backend):
        worst = _whole_model_gradcheck(model, x, y)
    bad = {k: v for k, v in worst.items() if v > GRAD_RTOL}
    assert not bad, bad
    assert len(worst) == len(list(model.named_parameters()))


def test_random_upstream_gradient_scales_backward():
    """backward(dout) = dout * backward(1): the scalar upstream gradient is honoured."""
    model = tiny()
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 7, (2, 5)), rng.integers(0, 7, (2, 5))
    model.loss(x, y)
    model.zero_grad()
    model.backward(1.0)
    g1 = [g.copy() for _, _, g in model.named_parameters()]
    model.loss(x, y)
    model.zero_grad()
    model.backward(-0.37)
    for a, (_, _, b) in zip(g1, model.named_parameters()):
        np.testing.assert_allclose(b, -0.37 * a, rtol=1e-12, atol=1e-15)


def test_tied_head_shares_one_array_listed_once():
    m = tiny(tie_weights=True)
    names = [n for n, _, _ in m.named_parameters()]
    assert "head.weight" not in names and "tok_emb.weight" in names
    assert m.layers["head"].params["weight"] is m.layers["tok_emb"].params["weight"]
    untied = tiny()
    assert untied.num_parameters() - m.num_parameters() == 7 * 8


def test_init_statistics():
    m = GPT(GPTConfig(vocab_size=50, n_layer=4, d_model=64, n_head=4, block_size=32))
    p = dict((n, a) for n, a, _ in m.named_parameters())
    assert abs(p["blocks.0.self_attn.q_proj.weight"].std() - 0.02) < 0.003
    assert abs(p["blocks.1.ff.fc2.weight"].std() - 0.02 / np.sqrt(8)) < 0.001
    assert abs(p["blocks.2.self_attn.out_proj.weight"].std() - 0.02 / np.sqrt(8)) < 0.001
    assert np.all(p["blocks.0.ff.fc1.bias"] == 0)
    assert np.all(p["blocks.0.ln1.weight"] == 1)
    assert p["head.weight"].dtype == np.float32
    # at init the prediction is near uniform: loss ~ log V
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, (4, 32))
    assert abs(m.loss(x, x) - np.log(50)) < 0.05


def test_same_seed_same_model_different_seed_different():
    a, b, c = tiny(seed=1), tiny(seed=1), tiny(seed=2)
    for (_, pa, _), (_, pb, _), (_, pc, _) in zip(a.named_parameters(), b.named_parameters(),
                                                  c.named_parameters()):
        np.testing.assert_array_equal(pa, pb)
    assert any(not np.array_equal(pa, pc) for (_, pa, _), (_, pc, _)
               in zip(a.named_parameters(), c.named_parameters()) if pa.std() > 0)


def test_kv_cache_equals_full_forward():
    m = tiny(block_size=12, dropout=0.2)     # dropout must be off in eval / steps
    m.eval()
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 7, (3, 12))
    full = m.forward(idx)                                     # (3, 12, 7)
    cache = m.init_cache(3)
    pieces = [m.forward_step(idx[:, :5], cache)]              # a prompt of 5
    for t in range(5, 12):
        pieces.append(m.forward_step(idx[:, t:t + 1], cache))  # then one at a time
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="block_size"):
        m.forward_step(idx[:, :1], cache)                     # position 12 does not exist


def test_kv_cache_generation_equals_uncached_float32():
    from tinylm.generate import generate_ids
    m = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, d_model=16, seed=4))
    kw = dict(max_length=24, do_sample=True, seed=7, num_return_sequences=2)
    a = generate_ids(m, [1, 2, 3], use_cache=True, **kw)     # passes block_size: crops
    b = generate_ids(m, [1, 2, 3], use_cache=False, **kw)
    np.testing.assert_array_equal(a, b)
    g1 = generate_ids(m, [5], max_length=16, use_cache=True)
    g2 = generate_ids(m, [5], max_length=16, use_cache=False)
    np.testing.assert_array_equal(g1, g2)


def test_clear_errors():
    m = tiny()
    with pytest.raises(ValueError, match="block_size"):
        m.forward(np.zeros((1, 7), int))
    with pytest.raises(IndexError, match="out of range"):
        m.forward(np.full((1, 3), 7))
    with pytest.raises(TypeError):
        m.forward(np.zeros((1, 3)))                    # float ids
    with pytest.raises(ValueError, match="batch, time"):
        m.forward(np.zeros(3, int))
    with pytest.raises(ValueError, match="divide"):
        GPTConfig(d_model=10, n_head=3)
    with pytest.raises(ValueError, match="unknown config key"):
        build_model("gpt", {"n_layers": 2})
    with pytest.raises(ValueError, match="unknown model"):
        build_model("gpt5", {})


def test_registry_and_state_dict_roundtrip():
    cfg, cls = MODELS["gpt"]
    assert cfg is GPTConfig and cls is GPT
    a = build_model("gpt", dict(vocab_size=7, block_size=6, n_layer=1, n_head=2, d_model=8,
                                seed=1))
    b = build_model("gpt", dict(vocab_size=7, block_size=6, n_layer=1, n_head=2, d_model=8,
                                seed=2))
    b.load_state_dict(a.state_dict())
    x = np.arange(12).reshape(2, 6) % 7
    np.testing.assert_array_equal(a.forward(x), b.forward(x))


def test_loss_falls_on_a_tiny_run():
    """Memorise a short repeating sequence: the loss must fall far below log V."""
    m = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, d_model=16, seed=0))
    params = m.parameters()
    opt = optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    seq = np.array([0, 1, 2, 3, 4, 2, 1, 0, 3, 0])
    x, y = seq[None, :8].repeat(4, 0), seq[None, 1:9].repeat(4, 0)
    first = m.loss(x, y)
    for _ in range(80):
        m.loss(x, y)
        m.zero_grad()
        m.backward()
        opt.step()
    last = m.loss(x, y)
    assert first > 1.4 and last < 0.2, (first, last)


def test_key_bias_gradient_is_exactly_zero():
    """k = a W_k^T + b_k adds q.b_k to every score of a row: softmax ignores it."""
    model = tiny()
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 7, (3, 6)), rng.integers(0, 7, (3, 6))
    model.loss(x, y)
    model.zero_grad()
    model.backward()
    g = dict((n, g) for n, _, g in model.named_parameters())
    assert np.abs(g["blocks.0.self_attn.k_proj.bias"]).max() < 1e-12
    assert np.abs(g["blocks.0.self_attn.q_proj.bias"]).max() > 1e-9
