"""Label smoothing in SoftmaxCrossEntropy: the formula, gradient checks, PyTorch parity."""

import numpy as np
import pytest

from tinylm.gradcheck import check_layer
from tinylm.layers.losses import SoftmaxCrossEntropy, log_softmax


def data(shape=(3, 4), V=6, seed=0, ignore=True):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(shape + (V,)) * 2
    t = rng.integers(0, V, shape)
    if ignore:
        t[0, 1] = t[2, 3] = -100
    return z, t


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 1.0])
def test_loss_is_the_mixture_of_onehot_and_uniform(eps):
    z, t = data()
    got = float(SoftmaxCrossEntropy(label_smoothing=eps).forward(z, t))
    lp = log_softmax(z)
    keep = t != -100
    q = np.full(z.shape, eps / z.shape[-1])                     # target distribution
    q[keep, t[keep]] += 1 - eps
    want = -(q * lp)[keep].sum() / keep.sum()
    assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("eps", [0.1, 0.7])
@pytest.mark.parametrize("ignore", [False, True])
def test_gradient_check(eps, ignore):
    z, t = data(seed=1, ignore=ignore)
    report = check_layer(SoftmaxCrossEntropy(label_smoothing=eps), (z, t), seed=2,
                         max_entries=None)
    assert report.ok, str(report)


def test_smoothing_changes_the_gradient_by_eps_onehot_minus_uniform():
    z, t = data(seed=3)
    plain, smooth = SoftmaxCrossEntropy(), SoftmaxCrossEntropy(label_smoothing=0.2)
    plain.forward(z, t)
    smooth.forward(z, t)
    diff = smooth.backward(1.0) - plain.backward(1.0)
    keep = t != -100
    want = np.full(z.shape, -0.2 / 6)
    want[keep, t[keep]] += 0.2
    want *= keep[..., None] / keep.sum()
    np.testing.assert_allclose(diff, want, atol=1e-15)


def test_all_ignored_and_bad_values():
    z, t = data()
    t[...] = -100
    ce = SoftmaxCrossEntropy(label_smoothing=0.3)
    assert float(ce.forward(z, t)) == 0.0
    assert not ce.backward().any()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="label_smoothing"):
            SoftmaxCrossEntropy(label_smoothing=bad)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.45, 1.0])
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_equals_pytorch(eps, ignore_index):
    torch = pytest.importorskip("torch", reason="PyTorch is an optional test oracle "
                                                "(pip install torch==2.13.0)")
    z, t = data(seed=4)
    if ignore_index != -100:
        t[t == -100] = ignore_index                          # a real class id is ignored
    ce = SoftmaxCrossEntropy(ignore_index=ignore_index, label_smoothing=eps)
    loss = ce.forward(z, t)
    dz = ce.backward(0.7)
    tz = torch.tensor(z, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tz.reshape(-1, z.shape[-1]),
                                           torch.tensor(t.reshape(-1)),
                                           ignore_index=ignore_index, label_smoothing=eps)
    (tl * 0.7).backward()
    np.testing.assert_allclose(float(loss), tl.item(), rtol=1e-12)
    np.testing.assert_allclose(dz, tz.grad.numpy(), rtol=1e-10, atol=1e-15)
