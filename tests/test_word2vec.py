"""word2vec (skip-gram with negative sampling): loss, hand-derived backward, helpers, training."""

import numpy as np
import pytest

from tinylm.gradcheck import check_layer
from tinylm.models.word2vec import (NegativeSampler, SkipGram, SkipGramConfig, WordVectors,
                                    skipgram_pairs, train_word2vec)


def batch(V=9, B=6, K=4, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, V, B)
    c[1] = c[0]                                   # repeated ids must add their gradients
    return c, rng.integers(0, V, B), rng.integers(0, V, (B, K))


def test_loss_matches_the_formula():
    m = SkipGram(SkipGramConfig(vocab_size=9, dim=5, seed=2, dtype="float64"))
    c, o, n = batch()
    Vin = m.layers["in_embed"].params["weight"]
    Uout = m.layers["out_embed"].params["weight"]
    sig = lambda x: 1 / (1 + np.exp(-x))
    want = 0.0
    for b in range(len(c)):
        want -= np.log(sig(Uout[o[b]] @ Vin[c[b]]))
        want -= sum(np.log(sig(-Uout[k] @ Vin[c[b]])) for k in n[b])
    assert float(m.forward(c, o, n)) == pytest.approx(want / len(c), rel=1e-12)


@pytest.mark.parametrize("K,seed", [(1, 0), (4, 1), (7, 2)])
def test_gradient_check(K, seed):
    m = SkipGram(SkipGramConfig(vocab_size=9, dim=5, seed=seed))
    m.layers["out_embed"].params["weight"] *= 4          # scores away from 0: sigmoid curves
    report = check_layer(m, batch(K=K, seed=seed), seed=seed, max_entries=None)
    assert report.ok, str(report)


def test_backward_scales_with_dout_and_accumulates():
    m = SkipGram(SkipGramConfig(vocab_size=9, dim=5, seed=3, dtype="float64"))
    c, o, n = batch()
    m.forward(c, o, n)
    m.backward(1.0)
    g1 = m.layers["in_embed"].grads["weight"].copy()
    m.zero_grad()
    m.forward(c, o, n)
    m.backward(2.5)
    m.backward(0.5)                                        # backward adds
    np.testing.assert_allclose(m.layers["in_embed"].grads["weight"], 3.0 * g1, rtol=1e-12)


def test_bad_inputs_say_what():
    m = SkipGram(SkipGramConfig(vocab_size=9, dim=5))
    c, o, n = batch()
    with pytest.raises(ValueError, match="negatives"):  # 1-D, not (B, K)
        m.forward(c, o, n[:, 0])
    with pytest.raises(ValueError, match="batch size"):
        m.forward(c, o[:-1], n)
    with pytest.raises(ValueError):
        m.forward(c, o + 100, n)                           # out of the vocabulary
    with pytest.raises(RuntimeError, match="forward"):
        SkipGram(SkipGramConfig(vocab_size=3, dim=2)).backward()


def test_skipgram_pairs_by_hand():
    c, o = skipgram_pairs([5, 6, 7], window=2)
    assert sorted(zip(c.tolist(), o.tolist())) == sorted(
        [(5, 6), (6, 7), (6, 5), (7, 6), (5, 7), (7, 5)])
    assert skipgram_pairs([1], 3)[0].size == 0


def test_negative_sampler_follows_counts_to_the_three_quarters():
    counts = np.array([1.0, 16.0, 0.0, 81.0])
    p = counts ** 0.75 / (counts ** 0.75).sum()
    n = 40000
    ids = NegativeSampler(counts).sample((n,), np.random.default_rng(0))
    freq = np.bincount(ids, minlength=4) / n
    assert freq[2] == 0
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-12)


def test_nearest_and_analogy_on_hand_made_vectors():
    words = ["<unk>", "man", "woman", "king", "queen", "apple"]
    vec = np.array([[9, 9, 9], [1, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1], [-1, 0, 0.2]], float)
    wv = WordVectors(words, vec)
    assert wv.analogy("man", "woman", "king")[0][0] == "queen"
    assert wv.nearest("king", 1)[0][0] != "king"
    assert "<unk>" not in [w for w, _ in wv.nearest("queen", 5)]
    assert wv.nearest("man", 5)[-1][0] == "apple"           # the opposite direction is last
    assert wv.similarity("man", "man") == pytest.approx(1.0)
    with pytest.raises(KeyError, match="prince"):
        wv.nearest("prince")


def test_training_puts_interchangeable_words_together():
    """Words used in the same contexts (two groups) end up nearest to their own group."""
    rng = np.random.default_rng(0)
    animals, tools = ["cat", "dog", "cow", "pig"], ["saw", "drill", "axe", "file"]
    lines = []
    for _ in range(1500):
        if rng.random() < 0.5:
            lines.append("the %s eats grass and sleeps" % rng.choice(animals))
        else:
            lines.append("a %s cuts wood with steel" % rng.choice(tools))
    text = " .\n".join(lines)
    wv, model, losses = train_word2vec(text, dim=16, window=2, negatives=4, steps=1500,
                                       batch_size=64, lr=2.0, min_count=1, subsample=None)
    assert np.mean(losses[-100:]) < 0.6 * np.mean(losses[:10])
    for group in (animals, tools):
        for w in group:
            top = [x for x, _ in wv.nearest(w, 3)]
            assert set(top) <= set(group), (w, top)
