"""The n-gram baseline: hand-computed probabilities, normalisation, unseen contexts,
perplexity, sampling, the model interface and its state."""

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.generate import generate_ids
from tinylm.models.ngram import NGramConfig, NGramLM

# Tokens 0 1 0 2 0 1: bigrams (0,1) x2, (1,0) x1, (0,2) x1, (2,0) x1;
# unigrams 0 x3, 1 x2, 2 x1.
TINY = [0, 1, 0, 2, 0, 1]


def test_mle_is_count_ratio_and_zero_for_unseen():
    m = NGramLM(order=2, smoothing="mle").fit(TINY)
    assert m.vocab_size == 3
    assert m.prob([0], 1) == pytest.approx(2 / 3)
    assert m.prob([0], 2) == pytest.approx(1 / 3)
    assert m.prob([0], 0) == 0.0                       # never seen: impossible
    assert m.logprob([0], 0) == -math.inf
    assert m.prob([], 0) == pytest.approx(3 / 6)       # unigram: c(w) / N


def test_add_k_formula():
    m = NGramLM(order=2, smoothing="add_k", k=0.5).fit(TINY)
    # (c(h w) + k) / (c(h) + k V), c(0 .) = 3, V = 3
    assert m.prob([0], 1) == pytest.approx((2 + 0.5) / (3 + 1.5))
    assert m.prob([0], 0) == pytest.approx((0 + 0.5) / (3 + 1.5))


def test_kneser_ney_by_hand():
    m = NGramLM(order=2, smoothing="kneser_ney", discount=0.5).fit(TINY)
    # An empty context is the top level of its query: raw unigram counts, N = 6, 3 types.
    assert m.prob([], 1) == pytest.approx((2 - 0.5) / 6 + 0.5 * 3 / 6 * (1 / 3))
    # Below the top, continuation counts N1+(. w): 0 <- {1, 2} = 2, 1 <- {0} = 1,
    # 2 <- {0} = 1; total 4, 3 types:
    # P_uni(w) = max(cc - 0.5, 0) / 4 + 0.5 * 3 / 4 * (1 / 3) = 0.5, 0.25, 0.25.
    # P(w | 0): c(0 .) = 3 with 2 follower types.
    assert m.prob([0], 1) == pytest.approx((2 - 0.5) / 3 + 0.5 * 2 / 3 * 0.25)
    assert m.prob([0], 0) == pytest.approx(0.5 * 2 / 3 * 0.5)
    assert m.prob([0], 2) == pytest.approx((1 - 0.5) / 3 + 0.5 * 2 / 3 * 0.25)


def test_unseen_context_backs_off():
    # vocab 4: token 3 never occurs, so context [3] was never seen.
    kn = NGramLM(order=2, smoothing="kneser_ney", discount=0.5, vocab_size=4).fit(TINY)
    # Unseen [3]: the continuation unigram alone, now with V = 4 in the uniform share.
    assert kn.prob([3], 0) == pytest.approx((2 - 0.5) / 4 + 0.5 * 3 / 4 * (1 / 4))
    assert kn.prob([3], 3) == pytest.approx(0.5 * 3 / 4 * (1 / 4))   # only the uniform share
    assert kn.prob([0], 3) == pytest.approx(0.5 * 2 / 3 * 0.5 * 3 / 4 * (1 / 4))
    ak = NGramLM(order=3, smoothing="add_k", k=1.0, vocab_size=4).fit(TINY)
    # context (2, 1) unseen -> longest seen suffix (1,) -> c(1 .) = 1, only "1 0"
    assert ak.prob([2, 1], 0) == pytest.approx((1 + 1) / (1 + 4))
    assert ak.prob([3, 3], 0) == pytest.approx((3 + 1) / (6 + 4))   # down to the unigram


corpora = st.lists(st.integers(0, 5), min_size=1, max_size=60)


@given(corpora, st.lists(st.integers(0, 6), max_size=4),
       st.sampled_from(["mle", "add_k", "kneser_ney"]), st.integers(1, 4))
def test_every_context_gives_a_distribution(ids, context, smoothing, order):
    m = NGramLM(order=order, smoothing=smoothing, k=0.3, vocab_size=7).fit(ids)
    p = m.distribution(context)
    assert p.shape == (7,)
    assert np.all(p >= 0)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    for w in range(7):
        assert m.prob(context, w) == pytest.approx(p[w], abs=1e-15)
    if smoothing != "mle":
        assert np.all(p > 0)                          # smoothing: nothing impossible


def test_chain_rule_and_perplexity():
    m = NGramLM(order=2, smoothing="add_k", k=1.0).fit(TINY)
    seq = [0, 1, 0, 2]
    expected = (math.log(m.prob([], 0)) + math.log(m.prob([0], 1))
                + math.log(m.prob([0, 1], 0)) + math.log(m.prob([0, 1, 0], 2)))
    assert m.sequence_logprob(seq) == pytest.approx(expected)
    assert m.perplexity(seq) == pytest.approx(math.exp(-expected / 4))
    # A uniform guess has perplexity V: add-k with a huge k is (almost) uniform.
    flat = NGramLM(order=1, smoothing="add_k", k=1e12, vocab_size=5).fit(TINY)
    assert flat.perplexity([4, 3, 2, 1, 0]) == pytest.approx(5.0, rel=1e-9)


def test_mle_perplexity_infinite_on_new_text_smoothed_finite():
    train, new = [0, 1, 2, 0, 1, 2, 0, 1, 2], [0, 2, 1]
    assert NGramLM(order=2, smoothing="mle").fit(train).perplexity(new) == math.inf
    for smoothing in ("add_k", "kneser_ney"):
        assert math.isfinite(NGramLM(order=2, smoothing=smoothing).fit(train).perplexity(new))


def test_longer_context_helps_on_real_text():
    from tinylm.data import load_corpus, split_train_val
    from tinylm.tokenizers import CharTokenizer
    text = load_corpus("pydoc", max_chars=60_000)
    tok = CharTokenizer.train(text)
    train, val = split_train_val(tok.encode(text), 0.1)
    ppl = [NGramLM(order=n).fit(train, vocab_size=tok.vocab_size).perplexity(val[:2000])
           for n in (1, 2, 3)]
    assert ppl[0] > ppl[1] > ppl[2]
    assert ppl[0] < tok.vocab_size                    # better than a uniform guess


def test_unseen_fraction():
    m = NGramLM(order=2).fit([0, 1, 2, 0, 1, 2])
    # bigrams of the new text: (0,1) seen, (1,0) unseen, (0,2) unseen, (2,0) seen
    assert m.unseen_fraction([0, 1, 0, 2, 0]) == pytest.approx(2 / 4)
    assert m.unseen_fraction([0, 1, 2]) == 0.0


def test_generate_follows_the_counts_and_is_seeded():
    def sample(model, context, length, seed):    # what NGramLM.generate did
        return generate_ids(model, context, max_length=len(context) + length, do_sample=True,
                            seed=seed)[0].tolist()

    cyc = NGramLM(order=2, smoothing="mle").fit([0, 1, 2] * 5)
    assert sample(cyc, [0], 7, seed=0) == [0, 1, 2, 0, 1, 2, 0, 1]   # one successor each
    m = NGramLM(order=3, smoothing="kneser_ney").fit(list(np.random.default_rng(0)
                                                          .integers(0, 6, 300)))
    a = sample(m, [1, 2], 50, seed=5)
    assert a == sample(m, [1, 2], 50, seed=5)
    assert a != sample(m, [1, 2], 50, seed=6)
    assert len(a) == 52 and a[:2] == [1, 2] and all(0 <= t < 6 for t in a)


def test_forward_and_loss_match_prob():
    m = NGramLM(order=3, smoothing="kneser_ney").fit(TINY * 3)
    x = np.array([[0, 1, 0], [2, 0, 1]])
    y = np.array([[1, 0, 2], [0, 1, 0]])
    logits = m.forward(x)
    assert logits.shape == (2, 3, 3)
    np.testing.assert_allclose(np.exp(logits).sum(-1), 1.0, rtol=1e-12)
    assert math.exp(logits[1, 2, 0]) == pytest.approx(m.prob([2, 0, 1], 0))
    nll = -np.mean(np.take_along_axis(logits, y[..., None], -1))
    assert m.loss(x, y) == pytest.approx(nll)
    assert m.backward() is None and m.parameters() == []


def test_state_dict_through_a_checkpoint(tmp_path):
    import dataclasses
    m = NGramLM(order=3, smoothing="kneser_ney").fit([0, 1, 2, 1, 0, 2, 2, 1] * 4)
    arrays = {"model." + k: v for k, v in m.state_dict().items()}
    save_checkpoint(tmp_path / "ng.npz", arrays, {"config": dataclasses.asdict(m.config)})
    arrays2, meta = load_checkpoint(tmp_path / "ng.npz")
    m2 = NGramLM(NGramConfig(**meta["config"]))
    m2.load_state_dict({k[len("model."):]: v for k, v in arrays2.items()})
    for ctx in ([], [0], [2, 1], [1, 1]):
        np.testing.assert_array_equal(m2.distribution(ctx), m.distribution(ctx))


def test_registry_builds_it():
    from tinylm.models import build_model
    m = build_model("ngram", {"order": 2, "vocab_size": 3, "smoothing": "add_k"})
    assert isinstance(m, NGramLM)
    m.fit(TINY)
    assert m.prob([0], 1) == pytest.approx(3 / 6)


def test_errors():
    with pytest.raises(ValueError, match="smoothing"):
        NGramLM(order=2, smoothing="witten_bell")
    with pytest.raises(ValueError, match="order"):
        NGramLM(order=0)
    with pytest.raises(ValueError, match="discount"):
        NGramLM(order=2, discount=1.5)
    m = NGramLM(order=2)
    with pytest.raises(RuntimeError, match="fit"):
        m.prob([0], 1)
    m = NGramLM(order=2, vocab_size=3)
    with pytest.raises(ValueError, match="outside vocab_size 3"):
        m.fit([0, 1, 5])
    m.fit(TINY)
    with pytest.raises(ValueError, match="outside vocab_size"):
        m.prob([0], 3)
    with pytest.raises(ValueError, match="outside vocab_size"):
        m.distribution([7])
    with pytest.raises(ValueError, match="empty"):
        m.perplexity([])
