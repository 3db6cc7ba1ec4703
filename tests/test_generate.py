"""tinylm.generate: greedy/sampling arguments, max_length, prompts, caches."""

import numpy as np
import pytest

from tinylm.generate import generate, generate_ids, next_token_distribution
from tinylm.tokenizers import CharTokenizer
from tinylm.layers.base import Layer
from toy_lm import CachedToyLM, ToyLM


TEXT = "hello world, the quick brown fox"


@pytest.fixture
def tok():
    return CharTokenizer.train(TEXT)


def test_greedy_is_deterministic_and_max_length_is_total_length(tok):
    m = ToyLM(tok.vocab_size)
    a = generate(m, tok, "hel", max_length=20)
    b = generate(m, tok, "hel", max_length=20)
    assert a == b and len(a) == 1
    assert a[0].startswith("hel") and len(tok.encode(a[0])) == 20


def test_greedy_follows_argmax(tok):
    m = ToyLM(tok.vocab_size)
    ids = generate_ids(m, tok.encode("wo"), max_length=6)[0]
    for t in range(2, 6):
        logits = m.forward(ids[None, :t])[0, -1]
        assert ids[t] == int(np.argmax(logits))


def test_top_k_1_equals_greedy(tok):
    m = ToyLM(tok.vocab_size)
    greedy = generate(m, tok, "the", max_length=25)
    sampled = generate(m, tok, "the", max_length=25, do_sample=True, top_k=1,
                       temperature=1.7, seed=5)
    assert sampled == greedy


def test_seeds_reproduce_and_differ(tok):
    m = ToyLM(tok.vocab_size)
    kw = dict(max_length=40, do_sample=True, num_return_sequences=3)
    a = generate(m, tok, "q", seed=1, **kw)
    b = generate(m, tok, "q", seed=1, **kw)
    c = generate(m, tok, "q", seed=2, **kw)
    assert a == b
    assert a != c
    assert len(a) == 3 and len(set(a)) > 1      # the rows are independent draws


def test_cache_path_equals_recompute_path(tok):
    m = CachedToyLM(tok.vocab_size)
    for kw in (dict(), dict(do_sample=True, seed=3, top_p=0.9, num_return_sequences=2)):
        a = generate_ids(m, tok.encode("fox"), max_length=30, use_cache=True, **kw)
        b = generate_ids(m, tok.encode("fox"), max_length=30, use_cache=False, **kw)
        np.testing.assert_array_equal(a, b)


def test_prompt_errors(tok):
    m = ToyLM(tok.vocab_size)
    with pytest.raises(ValueError, match="Z"):          # names the unknown character
        generate(m, tok, "heZlo", max_length=10)
    with pytest.raises(ValueError, match="empty"):
        generate(m, tok, "", max_length=10)
    with pytest.raises(ValueError, match="max_length"):
        generate(m, tok, "hello", max_length=3)


@pytest.mark.parametrize("kw", [dict(temperature=0.0, do_sample=True),
                                dict(top_k=0, do_sample=True),
                                dict(top_p=1.5, do_sample=True),
                                dict(num_return_sequences=2),         # greedy twice
                                dict(max_length=0)])
def test_bad_arguments(tok, kw):
    m = ToyLM(tok.vocab_size)
    args = dict(max_length=10)
    args.update(kw)
    with pytest.raises(ValueError):
        generate(m, tok, "he", **args)


def test_distribution_top_k_top_p_and_temperature():
    z = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    np.testing.assert_allclose(next_token_distribution(z), [[0.5, 0.3, 0.15, 0.05]])
    np.testing.assert_allclose(next_token_distribution(z, top_k=2), [[0.625, 0.375, 0, 0]])
    # nucleus: smallest set reaching 0.75 is {0.5, 0.3}
    np.testing.assert_allclose(next_token_distribution(z, top_p=0.75), [[0.625, 0.375, 0, 0]])
    np.testing.assert_allclose(next_token_distribution(z, top_p=0.1), [[1, 0, 0, 0]])
    # temperature 2 = square roots, renormalised
    p = np.sqrt([0.5, 0.3, 0.15, 0.05])
    np.testing.assert_allclose(next_token_distribution(z, temperature=2.0), [p / p.sum()])


def test_sampling_frequencies_match_the_distribution():
    """Many single-step draws: empirical frequencies match p (a 5-sigma band)."""
    V = 4
    p = np.array([0.5, 0.3, 0.15, 0.05])

    class Fixed(Layer):
        def forward(self, idx):
            return np.broadcast_to(np.log(p), idx.shape + (V,))

    n = 4000
    ids = generate_ids(Fixed(), [0], max_length=2, do_sample=True, num_return_sequences=n,
                       seed=0)[:, 1]
    freq = np.bincount(ids, minlength=V) / n
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n))


def test_eval_mode_during_generation_and_restored(tok):
    m = ToyLM(tok.vocab_size)
    seen = []
    fwd = m.forward

    def spy(idx):
        seen.append(m.training)
        return fwd(idx)
    m.forward = spy
    m.train()
    generate(m, tok, "he", max_length=5)
    assert seen and not any(seen)
    assert m.training


def test_recurrent_cache_carries_past_block_size():
    """An LSTM has no context limit: with its cache, token t sees all t tokens before it."""
    from tinylm.models import build_model
    m = build_model("lstm", dict(vocab_size=9, emb_dim=8, hidden=16, block_size=4, seed=1))
    ids = generate_ids(m, [1, 2], max_length=12, use_cache=True)[0]
    m.eval()
    for t in range(2, 12):
        assert ids[t] == int(np.argmax(m.forward(ids[None, :t])[0, -1]))
