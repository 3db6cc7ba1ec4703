"""Beam search and no_repeat_ngram_size in tinylm.generate (Hugging Face's semantics).

* a beam wide enough to keep every prefix equals exhaustive search (tiny vocabulary);
* length_penalty divides the summed log-probability by generated_length ** length_penalty;
* no_repeat_ngram_size bans tokens that complete an n-gram already in the sequence;
* the cached and the recomputing paths agree (GPT's key/value cache, an LSTM's state);
* with torch and transformers installed, the output equals Hugging Face's ``generate`` on a
  tiny random GPT-2, for every argument.
"""

import itertools

import numpy as np
import pytest

from tinylm.generate import banned_ngram_mask, generate, generate_ids, sequence_log_prob
from tinylm.layers.losses import log_softmax
from tinylm.layers.base import Layer
from toy_lm import CachedToyLM, ToyLM


def seq_logprob(model, seq, P):
    """Sum of log p(seq[t] | seq[:t]) over the generated positions t >= P."""
    lp = log_softmax(model.forward(np.asarray([seq]))[0].astype(np.float64))
    return sum(lp[t - 1, seq[t]] for t in range(P, len(seq)))


def exhaustive(model, prompt, max_length, V, eos=None, length_penalty=1.0):
    """Every finished hypothesis and its score, best first (ties: by sequence)."""
    P = len(prompt)
    hyps = {}
    for tail in itertools.product(range(V), repeat=max_length - P):
        tail = list(tail)
        if eos is not None and eos in tail:
            tail = tail[:tail.index(eos) + 1]          # a hypothesis ends at its first eos
        seq = tuple(prompt + tail)
        if seq not in hyps:
            hyps[seq] = seq_logprob(model, seq, P) / len(tail) ** length_penalty
    return sorted(hyps.items(), key=lambda kv: (-kv[1], kv[0]))


def test_wide_beam_equals_exhaustive_search():
    V, prompt, L = 3, [1], 5                  # 4 new tokens: 81 sequences
    m = ToyLM(V, seed=3, scale=2.0)
    ranked = exhaustive(m, prompt, L, V)
    out = generate_ids(m, prompt, max_length=L, num_beams=V ** 3, num_return_sequences=5)
    assert [tuple(r) for r in out] == [s for s, _ in ranked[:5]]
    # and the scores differ enough that the order is not a tie-break accident
    assert ranked[0][1] - ranked[1][1] > 1e-6


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.5, -1.0])
def test_wide_beam_with_eos_equals_exhaustive_search(length_penalty):
    """With eos, early_stopping="never" makes beam search exact once the beam is wide."""
    V, prompt, L, eos = 3, [2, 0], 6, 1
    m = ToyLM(V, seed=7, scale=1.5)
    ranked = exhaustive(m, prompt, L, V, eos=eos, length_penalty=length_penalty)
    out = generate_ids(m, prompt, max_length=L, num_beams=V ** 4, num_return_sequences=3,
                       eos_token_id=eos, length_penalty=length_penalty,
                       early_stopping="never")
    got = []
    for r in out:
        r = list(r)
        if eos in r[len(prompt):]:
            r = r[:r.index(eos, len(prompt)) + 1]
        got.append(tuple(r))
    assert got == [s for s, _ in ranked[:3]]


def test_sequence_log_prob_is_the_beam_score():
    m = ToyLM(4, seed=5, scale=2.0)
    rows = generate_ids(m, [1, 2], max_length=7, num_beams=6, num_return_sequences=3)
    got = sequence_log_prob(m, rows, 2)
    want = [seq_logprob(m, tuple(r), 2) for r in rows]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] >= got[1] >= got[2]                       # rows come best first
    with pytest.raises(ValueError, match="prompt_length"):
        sequence_log_prob(m, rows, 0)


def test_narrow_beam_can_miss_the_best_sequence_and_one_beam_is_greedy():
    """Beam search is a heuristic: with few beams it can be beaten by exhaustive search."""
    V, L = 3, 6
    missed = 0
    for seed in range(20):
        m = ToyLM(V, seed=seed, scale=2.0)
        best = exhaustive(m, [0], L, V)[0][0]
        greedy = generate_ids(m, [0], max_length=L)[0]
        np.testing.assert_array_equal(generate_ids(m, [0], max_length=L, num_beams=1)[0],
                                      greedy)
        two = tuple(generate_ids(m, [0], max_length=L, num_beams=2)[0])
        missed += two != best
        # a beam never scores below greedy's sequence
        assert seq_logprob(m, two, 1) >= seq_logprob(m, tuple(greedy), 1) - 1e-12
    assert missed > 0


class TwoStepLM(Layer):
    """After the prompt: eos or 'a' with p = 0.5 each; after 'a': eos with p = 0.6."""

    V, EOS, A, B = 3, 0, 1, 2

    def forward(self, idx):
        idx = np.asarray(idx)
        p = np.empty(idx.shape + (3,))
        p[...] = [0.5, 0.5, 0.0 + 1e-12]
        p[idx == self.A] = [0.6, 0.2, 0.2]
        return np.log(p)


@pytest.mark.parametrize("length_penalty,expected_tail", [
    (0.0, [0]),          # log .5 = -0.69  beats  log(.5*.6) = -1.20
    (1.0, [1, 0]),       # -0.69 / 1  loses to  -1.20 / 2 = -0.60 (eos counts in the length)
    (-1.0, [0]),         # a negative penalty favours short sequences even more
])
def test_length_penalty_divides_by_generated_length(length_penalty, expected_tail):
    m = TwoStepLM()
    out = generate_ids(m, [2], max_length=6, num_beams=2, eos_token_id=0,
                       length_penalty=length_penalty, early_stopping="never")
    assert list(out[0]) == [2] + expected_tail


def test_banned_ngram_mask_by_hand():
    seqs = np.array([[1, 2, 3, 1, 2],       # bigram (2, 3) seen; last token 2 -> ban 3
                     [4, 4, 4, 4, 0]])      # last token 0 never seen before -> nothing
    ban = banned_ngram_mask(seqs, 2, 5)
    assert ban[0].tolist() == [False, False, False, True, False]
    assert not ban[1].any()
    # trigram: tail (1, 2) was followed by 3 -> ban 3
    assert banned_ngram_mask(seqs, 3, 5)[0].tolist() == [False, False, False, True, False]
    # unigram: every token already in the row is banned
    assert banned_ngram_mask(seqs, 1, 5)[1].tolist() == [True, False, False, False, True]
    # a sequence shorter than n - 1 tokens bans nothing
    assert not banned_ngram_mask(seqs[:, :1], 3, 5).any()


@pytest.mark.parametrize("kw", [dict(), dict(num_beams=3, num_return_sequences=3),
                                dict(do_sample=True, seed=1, num_return_sequences=4)])
def test_no_repeat_ngram_size_leaves_no_repeated_ngram(kw):
    V, n = 6, 3
    m = ToyLM(V, seed=2, scale=4.0)          # sharp: without the ban it loops
    plain = generate_ids(m, [0, 1], max_length=40, **kw)
    out = generate_ids(m, [0, 1], max_length=40, no_repeat_ngram_size=n, **kw)

    def repeats(row):
        grams = [tuple(row[i:i + n]) for i in range(len(row) - n + 1)]
        return len(grams) - len(set(grams))
    assert max(repeats(list(r)) for r in plain) > 0        # the test can fail
    assert all(repeats(list(r)) == 0 for r in out)


def test_beam_cache_equals_recompute_on_toy_gpt_and_lstm():
    from tinylm.models import build_model
    models = [CachedToyLM(5, seed=4, scale=2.0),
              build_model("gpt", dict(vocab_size=7, block_size=16, n_layer=2, n_head=2,
                                      d_model=16, seed=1, dtype="float64")),
              build_model("lstm", dict(vocab_size=7, emb_dim=8, hidden=16, seed=1,
                                       dtype="float64"))]
    for m in models:
        for kw in (dict(num_beams=3, num_return_sequences=2),
                   dict(num_beams=4, eos_token_id=3, length_penalty=0.5),
                   dict(num_beams=2, no_repeat_ngram_size=2)):
            a = generate_ids(m, [1, 2], max_length=20, use_cache=True, **kw)
            b = generate_ids(m, [1, 2], max_length=20, use_cache=False, **kw)
            np.testing.assert_array_equal(a, b)


def test_beam_search_past_gpt_context_crops_and_recomputes():
    from tinylm.models import build_model
    m = build_model("gpt", dict(vocab_size=7, block_size=6, n_layer=1, n_head=2, d_model=8,
                                seed=2, dtype="float64"))
    a = generate_ids(m, [1, 2, 3], max_length=15, num_beams=3, use_cache=True)
    b = generate_ids(m, [1, 2, 3], max_length=15, num_beams=3, use_cache=False)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, 15)


def test_eos_stops_greedy_rows_and_pads_them():
    m = TwoStepLM()
    out = generate_ids(m, [2], max_length=8, eos_token_id=0)
    assert out.tolist() == [[2, 0]]          # greedy takes eos (ties go to the lower id)
    from tinylm.tokenizers import CharTokenizer
    tok = CharTokenizer.train("xab")          # ids: a=0 b=1 x=2
    assert generate(m, tok, "x", max_length=8, eos_token_id=0) == ["xa"]


@pytest.mark.parametrize("kw,match", [
    (dict(num_beams=0), "num_beams"),
    (dict(num_beams=2, do_sample=True), "beam sampling"),
    (dict(num_beams=2, num_return_sequences=3), "at most num_beams"),
    (dict(num_beams=2, early_stopping="sometimes"), "early_stopping"),
    (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
    (dict(num_beams=2, length_penalty=float("nan")), "length_penalty"),
])
def test_bad_beam_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        generate_ids(ToyLM(3, scale=2.0), [0], max_length=5, **kw)


# -- Hugging Face as an oracle ----------------------------------------------------------


@pytest.fixture(scope="module")
def hf_gpt2():
    torch = pytest.importorskip("torch", reason="torch is the optional oracle for HF parity")
    transformers = pytest.importorskip("transformers",
                                       reason="transformers is the oracle for HF parity")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=12, n_positions=32, n_embd=16, n_layer=1,
                                  n_head=2, bos_token_id=0, eos_token_id=1)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.mul_(8.0)                        # sharper next-token distributions

    class Wrapped(Layer):
        """The Hugging Face model behind tinylm's forward(idx) -> logits contract."""

        def forward(self, idx):
            with torch.no_grad():
                return hf(torch.tensor(np.asarray(idx))).logits.double().numpy()
    return torch, hf, Wrapped()


@pytest.mark.parametrize("kw", [
    dict(num_beams=3),
    dict(num_beams=4, length_penalty=2.0),
    dict(num_beams=4, length_penalty=-1.0),
    dict(num_beams=3, early_stopping=True),
    dict(num_beams=3, early_stopping="never", length_penalty=1.5),
    dict(num_beams=3, no_repeat_ngram_size=2),
    dict(num_beams=5, num_return_sequences=3),
    dict(no_repeat_ngram_size=2),
    dict(num_beams=4, length_penalty=0.0),
    dict(num_beams=3, early_stopping=True, length_penalty=-2.0),
])
@pytest.mark.parametrize("prompt", [[3, 4, 5], [7], [2, 9, 2, 9]])
def test_equals_hugging_face_generate(hf_gpt2, kw, prompt):
    torch, hf, ours = hf_gpt2
    ref = hf.generate(torch.tensor([prompt]), max_length=14, do_sample=False,
                      eos_token_id=1, pad_token_id=1, **kw).numpy()
    got = generate_ids(ours, prompt, max_length=14, eos_token_id=1, **kw)
    np.testing.assert_array_equal(got, ref)


def test_hugging_face_cases_include_sequences_that_end_early(hf_gpt2):
    """The parity cases above exercise eos and length_penalty: some beams end before
    max_length, and the penalty changes which sequence wins."""
    _, _, ours = hf_gpt2
    outs = {lp: generate_ids(ours, [3, 4, 5], max_length=14, num_beams=4, eos_token_id=1,
                             length_penalty=lp) for lp in (-1.0, 2.0)}
    assert outs[-1.0].shape[1] < 14
    assert outs[-1.0].shape != outs[2.0].shape or (outs[-1.0] != outs[2.0]).any()
