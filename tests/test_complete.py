"""tinylm.complete: the OpenAI-Completions-shaped call (seed 003 section 5) on tinylm models."""

import numpy as np
import pytest

from tinylm.complete import Completion, complete
from tinylm.generate import generate_ids
from tinylm.layers.base import Layer
from tinylm.tokenizers import CharTokenizer

TEXT = "hello world, the quick brown fox jumps over the lazy dog.\n"


class ToyLM(Layer):
    """Fixed random logits that depend on the last two tokens."""

    def __init__(self, V, seed=0):
        super().__init__()
        self.table = np.random.default_rng(seed).standard_normal((V, V, V)) * 3.0

    def forward(self, idx):
        idx = np.asarray(idx)
        prev = np.concatenate([idx[:, :1], idx[:, :-1]], axis=1)
        return self.table[prev, idx]


@pytest.fixture
def pair():
    tok = CharTokenizer.train(TEXT)
    return ToyLM(tok.vocab_size), tok


def test_greedy_choices_are_the_greedy_continuation(pair):
    m, tok = pair
    r = complete(pair, "the ", max_tokens=12, temperature=0, n=3)
    want = tok.decode([int(t) for t in generate_ids(m, tok.encode("the "), max_length=16)[0][4:]])
    assert [c.text for c in r.choices] == [want] * 3
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in r.choices)
    assert r.usage == {"prompt_tokens": 4, "completion_tokens": 36, "total_tokens": 40}
    assert r["choices"][0]["text"] == want and r.object == "text_completion"


def test_stop_cuts_before_the_earliest_stop_string(pair):
    m, tok = pair
    full = complete(pair, "the ", max_tokens=30, temperature=0).choices[0].text
    a, b = full[5:7], full[9:11]                     # two substrings of the continuation
    assert a and b and full.find(a) < full.find(b)
    r = complete(pair, "the ", max_tokens=30, temperature=0, stop=[b, a])
    assert r.choices[0].text == full[:full.find(a)]
    assert r.choices[0].finish_reason == "stop"
    r = complete(pair, "the ", max_tokens=30, temperature=0, stop="not in there")
    assert r.choices[0].text == full and r.choices[0].finish_reason == "length"


def test_sampling_is_seeded_and_n_choices_differ(pair):
    kw = dict(max_tokens=20, temperature=1.5, n=4)
    a = complete(pair, "qu", seed=1, **kw)
    b = complete(pair, "qu", seed=1, **kw)
    c = complete(pair, "qu", seed=2, **kw)
    texts = [ch.text for ch in a.choices]
    assert texts == [ch.text for ch in b.choices]
    assert texts != [ch.text for ch in c.choices]
    assert len(set(texts)) > 1


def test_a_list_of_prompts_gives_n_choices_each_in_order(pair):
    r = complete(pair, ["the ", "fox"], max_tokens=5, temperature=0, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    one = complete(pair, "fox", max_tokens=5, temperature=0).choices[0].text
    assert r.choices[2].text == r.choices[3].text == one


def test_completion_create_spelling_of_the_seed(pair):
    m, tok = pair
    r = Completion.create(engine=pair, prompt="hello", max_tokens=7, temperature=0)
    assert r.choices[0].text == complete(m, "hello", max_tokens=7, temperature=0,
                                         tokenizer=tok).choices[0].text
    with pytest.raises(ValueError, match="engine"):
        Completion.create(prompt="x")


@pytest.mark.parametrize("kw,err", [
    (dict(max_tokens=0), ValueError), (dict(n=0), ValueError),
    (dict(temperature=-1), ValueError), (dict(top_p=0), ValueError),
    (dict(stop=""), ValueError), (dict(prompt=3), TypeError), (dict(prompt=""), ValueError),
    (dict(prompt="Z"), ValueError),                  # outside the char vocabulary
])
def test_bad_arguments_say_what(pair, kw, err):
    args = dict(prompt="the ")
    args.update(kw)
    with pytest.raises(err):
        complete(pair, **args)


def test_needs_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        complete(ToyLM(3), "x")


def test_on_a_checkpoint_written_by_tinylm_train(tmp_path):
    from tinylm.cli import main
    out = str(tmp_path / "run")
    assert main(["train", "--preset", "gpt-tiny", "--max-chars", "5000", "--steps", "3",
                 "--out", out, "--sample-length", "5"]) == 0
    r = complete(out + "/best.npz", "The ", max_tokens=10, n=2, seed=0, stop="\n")
    assert len(r.choices) == 2 and r.model == "gpt"
    for c in r.choices:
        assert "\n" not in c.text
        assert (c.finish_reason == "stop") == (len(c.text) < 10)
    with pytest.raises(ValueError, match="tokenizer"):
        complete(out + "/best.npz", "The ", tokenizer=object())


def test_generation_ends_once_every_choice_has_stopped(pair):
    """With stop strings, sampling stops early: the texts are the no-stop texts cut at the
    first stop, and usage counts only the tokens up to the stop."""
    kw = dict(max_tokens=60, temperature=1.2, n=3, seed=0)
    free = complete(pair, "the ", **kw)
    stop = "\n"
    assert all(stop in c.text for c in free.choices)        # every choice reaches it
    cut = complete(pair, "the ", stop=stop, **kw)
    assert [c.text for c in cut.choices] == [c.text[:c.text.index(stop)] for c in free.choices]
    assert all(c.finish_reason == "stop" for c in cut.choices)
    assert cut.usage["completion_tokens"] == sum(len(c.text) + 1 for c in cut.choices)


def test_stopping_criteria_in_generate_ids(pair):
    m, tok = pair
    ids = tok.encode("qu")
    full = generate_ids(m, ids, max_length=40, do_sample=True, num_return_sequences=2, seed=3)
    calls = []

    def at_ten(rows):
        calls.append(rows.shape[1])
        return np.full(rows.shape[0], rows.shape[1] >= 10)
    early = generate_ids(m, ids, max_length=40, do_sample=True, num_return_sequences=2,
                         seed=3, stopping_criteria=at_ten)
    np.testing.assert_array_equal(early, full[:, :10])
    assert calls[-1] == 10
    with pytest.raises(ValueError, match="beam"):
        generate_ids(m, ids, max_length=9, num_beams=2, stopping_criteria=at_ten)
