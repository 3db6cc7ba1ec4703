"""Optimizers against hand-computed steps and torch.optim; clipping, L1, schedules, state."""

import math

import numpy as np
import pytest

from tinylm.optim import (SGD, Adam, AdamW, clip_grad_norm, constant, l1_penalty,
                          step_decay, warmup_cosine)


def pair(values, grads):
    return np.array(values, dtype=np.float64), np.array(grads, dtype=np.float64)


# ------------------------------------------------------ hand-computed steps
def test_sgd_plain_step():
    p, g = pair([1.0, -2.0], [0.5, 0.25])
    SGD([(p, g)], lr=0.1).step()
    np.testing.assert_allclose(p, [1.0 - 0.05, -2.0 - 0.025], rtol=0, atol=1e-15)


def test_sgd_momentum_and_weight_decay_two_steps():
    p, g = pair([1.0], [0.5])
    opt = SGD([(p, g)], lr=0.1, momentum=0.9, weight_decay=0.1)
    opt.step()
    # d1 = 0.5 + 0.1*1 = 0.6; b1 = 0.6; p1 = 1 - 0.06 = 0.94
    assert p[0] == pytest.approx(0.94, abs=1e-15)
    opt.step()
    # d2 = 0.5 + 0.094 = 0.594; b2 = 0.9*0.6 + 0.594 = 1.134; p2 = 0.94 - 0.1134
    assert p[0] == pytest.approx(0.94 - 0.1134, abs=1e-15)


def test_adam_first_step_moves_by_lr_times_sign():
    # With bias correction, step 1 is m_hat/sqrt(v_hat) = g/|g|: each coordinate moves by ~lr.
    p, g = pair([1.0, 1.0, 1.0], [3.0, -0.001, 0.0])
    Adam([(p, g)], lr=0.01).step()
    # exactly: p - lr * g / (|g| + eps), eps = 1e-8
    expected = [1 - 0.01 * 3 / (3 + 1e-8), 1 + 0.01 * 0.001 / (0.001 + 1e-8), 1.0]
    np.testing.assert_allclose(p, expected, rtol=0, atol=1e-15)


def test_adam_two_steps_by_hand():
    p, g = pair([0.5], [0.2])
    b1, b2, lr, eps = 0.9, 0.999, 0.1, 1e-8
    opt = Adam([(p, g)], lr=lr, betas=(b1, b2), eps=eps, weight_decay=0.5)
    x, m, v = 0.5, 0.0, 0.0
    for t in (1, 2):
        d = 0.2 + 0.5 * x
        m = b1 * m + (1 - b1) * d
        v = b2 * v + (1 - b2) * d * d
        x = x - lr * (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps)
        opt.step()
        assert p[0] == pytest.approx(x, rel=1e-14)


def test_adamw_decay_is_decoupled():
    # Zero gradient: Adam's moments stay 0 and only the decay acts: p *= 1 - lr*wd.
    p, g = pair([2.0, -4.0], [0.0, 0.0])
    AdamW([(p, g)], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(p, [2.0 * 0.95, -4.0 * 0.95], rtol=1e-15)
    # Coupled Adam with the same zero gradient moves p by ~lr (the L2 term is normalised).
    q, h = pair([2.0, -4.0], [0.0, 0.0])
    Adam([(q, h)], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(q, [1.9, -3.9], rtol=1e-7)


def test_float32_params_stay_float32_and_in_place():
    p = np.ones(3, dtype=np.float32)
    g = np.full(3, 0.5, dtype=np.float32)
    alias = p
    for cls in (SGD, Adam, AdamW):
        cls([(p, g)], lr=0.1).step()
    assert p.dtype == np.float32 and alias is p and np.all(p < 1)


def test_bad_arguments():
    p, g = pair([1.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="shape"):
        SGD([(p, np.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        Adam([(p, g)], lr=-1)
    with pytest.raises(ValueError, match="betas"):
        Adam([(p, g)], betas=(1.0, 0.999))
    with pytest.raises(TypeError, match="pair"):
        SGD([p], lr=0.1)


# ------------------------------------------------------------ vs torch.optim
def _run_ours_and_torch(make_ours, make_torch, steps=6, seed=0):
    torch = pytest.importorskip("torch", reason="torch is the optional oracle for optimizers")
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    init = [rng.standard_normal(s) for s in shapes]
    grads_per_step = [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]

    ps = [x.copy() for x in init]
    gs = [np.zeros_like(x) for x in init]
    ours = make_ours(list(zip(ps, gs)))
    tps = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in init]
    theirs = make_torch(tps)
    for k in range(steps):
        for g, tp, new in zip(gs, tps, grads_per_step[k]):
            g[...] = new
            tp.grad = torch.tensor(new, dtype=torch.float64)
        ours.step()
        theirs.step()
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_sgd_momentum_weight_decay_matches_torch():
    _run_ours_and_torch(
        lambda ps: SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01),
        lambda tps: __import__("torch").optim.SGD(tps, lr=0.05, momentum=0.9, weight_decay=0.01))


def test_adam_matches_torch():
    _run_ours_and_torch(
        lambda ps: Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
        lambda tps: __import__("torch").optim.Adam(tps, lr=0.01, betas=(0.8, 0.99), eps=1e-6,
                                                   weight_decay=0.1))


def test_adamw_matches_torch():
    _run_ours_and_torch(
        lambda ps: AdamW(ps, lr=0.01, weight_decay=0.1),
        lambda tps: __import__("torch").optim.AdamW(tps, lr=0.01, weight_decay=0.1))


# --------------------------------------------------------------- state dict
@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: Adam(ps, lr=0.01),
    lambda ps: AdamW(ps, lr=0.01, weight_decay=0.1),
])
def test_state_dict_round_trip_continues_identically(make):
    rng = np.random.default_rng(3)
    init = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(6)]

    p, g = init.copy(), np.zeros((4, 3))
    ref = make([(p, g)])
    for k in range(6):
        g[...] = grads[k]
        ref.step()

    q, h = init.copy(), np.zeros((4, 3))
    first = make([(q, h)])
    for k in range(3):
        h[...] = grads[k]
        first.step()
    state = first.state_dict()
    assert all(isinstance(v, (np.ndarray, int, float, str, tuple)) for v in state.values())
    first.lr = 123.0                                   # clobber: the load must restore it
    q2, h2 = q.copy(), np.zeros((4, 3))
    resumed = make([(q2, h2)])
    resumed.load_state_dict(state)
    for k in range(3, 6):
        h2[...] = grads[k]
        resumed.step()
    np.testing.assert_array_equal(q2, p)               # bit-identical continuation


def test_load_state_dict_mismatch_errors():
    p, g = pair([1.0], [1.0])
    state = Adam([(p, g)]).state_dict()
    with pytest.raises(ValueError, match="Adam"):
        SGD([(p, g)], lr=0.1).load_state_dict(state)
    q, h = pair([1.0, 2.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        Adam([(q, h)]).load_state_dict(state)


# ------------------------------------------------------------ clipping, L1
def test_clip_grad_norm_scales_all_grads_together():
    g1 = np.array([3.0, 0.0])
    g2 = np.array([[0.0], [4.0]])
    params = [(np.zeros(2), g1), (np.zeros((2, 1)), g2)]
    total = clip_grad_norm(params, max_norm=1.0)
    assert total == pytest.approx(5.0)
    np.testing.assert_allclose(g1, [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(g2, [[0.0], [0.8]], rtol=1e-6)
    new_total = math.sqrt(np.sum(g1 ** 2) + np.sum(g2 ** 2))
    assert new_total == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_leaves_small_grads_alone():
    g = np.array([0.3, 0.4])
    assert clip_grad_norm([(np.zeros(2), g)], max_norm=1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(g, [0.3, 0.4])


def test_clip_grad_norm_nonfinite():
    g = np.array([np.nan, 1.0])
    assert math.isnan(clip_grad_norm([(np.zeros(2), g)], 1.0))
    with pytest.raises(FloatingPointError):
        clip_grad_norm([(np.zeros(2), g)], 1.0, error_if_nonfinite=True)


def test_l1_penalty_value_and_subgradient():
    p = np.array([2.0, -0.5, 0.0])
    g = np.array([1.0, 1.0, 1.0])
    loss = l1_penalty([(p, g)], lam=0.1)
    assert loss == pytest.approx(0.1 * 2.5)
    np.testing.assert_allclose(g, [1.1, 0.9, 1.0])


# --------------------------------------------------------------- schedules
def test_constant_and_step_decay():
    assert constant(0.3)(0) == constant(0.3)(10_000) == 0.3
    s = step_decay(1.0, step_size=10, gamma=0.5)
    assert [s(0), s(9), s(10), s(25)] == [1.0, 1.0, 0.5, 0.25]


def test_warmup_cosine_values():
    s = warmup_cosine(1.0, warmup=4, total=14, min_lr=0.1)
    assert [s(0), s(1), s(3)] == pytest.approx([0.25, 0.5, 1.0])
    assert s(4) == pytest.approx(1.0)                  # top of the cosine
    assert s(9) == pytest.approx(0.1 + 0.9 * 0.5)      # halfway: cos(pi/2) = 0
    assert s(14) == pytest.approx(0.1)
    assert s(100) == pytest.approx(0.1)
    values = [s(k) for k in range(4, 15)]
    assert all(a >= b for a, b in zip(values, values[1:]))   # decreasing after warm-up
    with pytest.raises(ValueError):
        warmup_cosine(1.0, warmup=10, total=5)
