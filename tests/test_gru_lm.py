"""The GRU language model and stacked (num_layers) recurrent LMs."""

import numpy as np
import pytest

from tinylm.generate import generate_ids
from tinylm.gradcheck import check_layer
from tinylm.models import build_model, model_names


def small(name, **kw):
    cfg = dict(vocab_size=7, emb_dim=5, hidden=6, seed=1, dtype="float64")
    cfg.update(kw)
    return build_model(name, cfg)


def test_gru_is_registered():
    assert "gru" in model_names()
    m = build_model("gru")
    assert type(m).__name__ == "GRULM"
    assert m.layers["rnn"].layers["cell"].params["weight_ih"].shape == (3 * 256, 64)


@pytest.mark.parametrize("name", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("L,dropout", [(1, 0.0), (2, 0.3)])
def test_gradient_check_whole_model(name, L, dropout):
    m = small(name, num_layers=L, dropout=dropout)
    m.train()
    idx = np.random.default_rng(0).integers(0, 7, (2, 4))
    report = check_layer(m, (idx,), seed=1, max_entries=20)
    assert report.ok, str(report)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_stacked_forward_step_in_pieces_equals_whole(name):
    m = small(name, num_layers=3)
    m.eval()
    idx = np.random.default_rng(2).integers(0, 7, (2, 9))
    whole = m.forward(idx)
    cache = m.init_cache(2)
    parts = [m.forward_step(idx[:, a:b], cache) for a, b in ((0, 4), (4, 5), (5, 9))]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-12)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_beam_search_reorders_a_stacked_state(name):
    """num_layers=2 and batch 2 = num_beams: a cache reordered along the wrong axis would
    change the result; cached and recomputed beam search must agree."""
    m = small(name, num_layers=2, vocab_size=9, hidden=8)
    for K in (2, 3):
        a = generate_ids(m, [1, 2], max_length=14, num_beams=K, num_return_sequences=K)
        b = generate_ids(m, [1, 2], max_length=14, num_beams=K, num_return_sequences=K,
                         use_cache=False)
        np.testing.assert_array_equal(a, b)


def test_stateful_training_carries_a_stacked_state():
    m = small("gru", num_layers=2, stateful=True)
    m.train()
    x = np.random.default_rng(3).integers(0, 7, (4, 5))
    m.loss(x, x)
    m.backward()
    assert m.state.shape == (2, 4, 6)
    carried = m.state.copy()
    first = m.forward(x)
    m.reset_state()
    fresh = m.forward(x)
    assert not np.allclose(first, fresh)               # the carried (L, B, H) state was used
    m.forward(x[:3])                                   # a new batch size starts afresh
    assert m.state.shape == (2, 3, 6) and carried.shape == (2, 4, 6)
