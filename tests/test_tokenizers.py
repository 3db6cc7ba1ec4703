"""Tokenizers: round trips, the splitting rules, BPE merges, JSON save/load, errors."""

import json

import pytest
from hypothesis import given, strategies as st

from tinylm.tokenizers import (BPETokenizer, CharTokenizer, WordTokenizer,
                               load_tokenizer, tokenizer_from_dict)

SAMPLE = ("The quick brown fox jumps over the lazy dog. The dog sleeps; "
          "the fox doesn't! (Quick, quick.) 12 foxes, 3 dogs -- 你好世界.\n")


# -------------------------------------------------------------------- char
def test_char_vocab_is_sorted_distinct_chars():
    tok = CharTokenizer.train("banana")
    assert tok.itos == ["a", "b", "n"]
    assert tok.vocab_size == 3
    assert tok.encode("nab") == [2, 0, 1]


@given(st.text(min_size=1))
def test_char_round_trip_on_training_text(text):
    tok = CharTokenizer.train(text)
    assert tok.decode(tok.encode(text)) == text


def test_char_unknown_character_names_char_and_position():
    tok = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match=r"'z'.*position 2"):
        tok.encode("abz")


def test_char_decode_rejects_out_of_range_ids():
    tok = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match="position 1"):
        tok.decode([0, 3])
    with pytest.raises(ValueError):
        tok.decode([-1])


# -------------------------------------------------------------------- word
def test_word_split_keeps_punctuation_as_tokens():
    assert WordTokenizer.split("Don't panic, Arthur!") == \
        ["Don", "'", "t", "panic", ",", "Arthur", "!"]
    assert WordTokenizer.split("x_1 = f(y)") == ["x_1", "=", "f", "(", "y", ")"]


def test_word_vocab_frequency_order_min_count_and_cap():
    text = "b b b a a c d d d d ."
    tok = WordTokenizer.train(text)
    assert tok.itos == ["<unk>", "d", "b", "a", ".", "c"]   # ties alphabetical
    tok2 = WordTokenizer.train(text, min_count=2)
    assert tok2.itos == ["<unk>", "d", "b", "a"]
    tok3 = WordTokenizer.train(text, max_size=3)
    assert tok3.itos == ["<unk>", "d", "b"]
    assert tok3.encode("d a zebra b") == [1, 0, 0, 2]


def test_word_decode_joins_sensibly():
    tok = WordTokenizer.train(SAMPLE)
    text = "The dog sleeps; the fox (quick, quick.) jumps!"
    assert tok.decode(tok.encode(text)) == text


def test_word_lowercase_option():
    tok = WordTokenizer.train("The the THE", lowercase=True)
    assert tok.itos == ["<unk>", "the"]
    assert tok.encode("tHe") == [1]


def test_word_unknown_maps_to_unk():
    tok = WordTokenizer.train("hello world")
    assert tok.decode(tok.encode("hello there world")) == "hello <unk> world"


# -------------------------------------------------------------------- bpe
@given(st.text())
def test_bpe_presplit_covers_every_character(text):
    assert "".join(BPETokenizer.split(text)) == text


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(SAMPLE * 3, vocab_size=300)


@given(st.text())
def test_bpe_round_trip_any_unicode(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


@given(st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF)))
def test_bpe_round_trip_chinese(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_untrained_is_utf8_bytes():
    tok = BPETokenizer()
    assert tok.vocab_size == 256
    assert tok.encode("é你") == list("é你".encode("utf-8"))


def test_bpe_first_merge_is_most_frequent_pair_and_shortens():
    # Pieces: "aaab" x1 -> pairs (a,a) x2, (a,b) x1; " ab" x3 -> ( ,a) x3, (a,b) x3.
    # (a,b) occurs 4 times, more than any other pair.
    tok = BPETokenizer.train("aaab ab ab ab", vocab_size=257)
    assert tok.merges == [(ord("a"), ord("b"))]
    assert tok.encode("ab") == [256]
    assert tok.encode("aab") == [ord("a"), 256]


def test_bpe_merges_applied_by_rank():
    # merge 0: (a, b) -> 256; merge 1: (256, c) -> 257; merge 2: (b, c) -> 258.
    # "abc": rank 0 applies first -> [256, c] -> rank 1 -> [257]; (b, c) never fires.
    tok = BPETokenizer([(97, 98), (256, 99), (98, 99)])
    assert tok.encode("abc") == [257]
    assert tok.encode("bc") == [258]
    assert tok.vocab[257] == b"abc"


def test_bpe_training_matches_a_naive_recount():
    """The incremental counts must pick the same merges as a full recount per merge."""
    text = SAMPLE * 2 + "aaaa aaa aa a ababab"
    fast = BPETokenizer.train(text, vocab_size=320)

    pieces = [list(p.encode("utf-8")) for p in BPETokenizer.split(text)]
    merges = []
    while len(merges) < 320 - 256:
        counts = {}
        for w in pieces:
            for p in zip(w, w[1:]):
                counts[p] = counts.get(p, 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < 2:
            break
        new = 256 + len(merges)
        merges.append(best)
        for k, w in enumerate(pieces):
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            pieces[k] = out
    assert fast.merges == merges


def test_bpe_compresses_and_stops_when_nothing_repeats():
    tok = BPETokenizer.train(SAMPLE * 5, vocab_size=400)
    assert len(tok.encode(SAMPLE)) < len(SAMPLE.encode("utf-8")) / 2
    small = BPETokenizer.train("abcdef", vocab_size=400)   # no pair occurs twice
    assert small.merges == []


def test_bpe_decode_of_a_cut_character_is_replacement_char():
    tok = BPETokenizer()
    ids = tok.encode("你")
    assert tok.decode(ids[:2]) == "\ufffd"


def test_bpe_rejects_bad_merges():
    with pytest.raises(ValueError, match="not defined"):
        BPETokenizer([(97, 300)])
    with pytest.raises(ValueError, match="at least 256"):
        BPETokenizer.train("abc", vocab_size=10)


# ------------------------------------------------------------- save / load
@pytest.mark.parametrize("make", [
    lambda: CharTokenizer.train(SAMPLE),
    lambda: WordTokenizer.train(SAMPLE, min_count=1, lowercase=True),
    lambda: BPETokenizer.train(SAMPLE * 3, vocab_size=300),
])
def test_save_load_round_trip(tmp_path, make):
    tok = make()
    path = tmp_path / "tok.json"
    tok.save(path)
    json.loads(path.read_text(encoding="utf-8"))        # plain JSON
    back = load_tokenizer(path)
    assert type(back) is type(tok)
    assert back.to_dict() == tok.to_dict()
    assert back.vocab_size == tok.vocab_size
    text = "The fox (quick) doesn't 12."
    assert back.encode(text) == tok.encode(text)
    assert type(tok).load(path).to_dict() == tok.to_dict()
    assert tokenizer_from_dict(tok.to_dict()).to_dict() == tok.to_dict()


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(bad)
    with pytest.raises(ValueError, match="unknown tokenizer type"):
        tokenizer_from_dict({"type": "sentencepiece"})
    with pytest.raises(ValueError, match="malformed"):
        tokenizer_from_dict({"type": "bpe"})
    path = tmp_path / "c.json"
    CharTokenizer.train("abc").save(path)
    with pytest.raises(ValueError, match="'char' tokenizer"):
        BPETokenizer.load(path)


def test_word_split_puts_each_cjk_ideograph_in_its_own_token():
    # Chinese has no spaces: \w+ alone would return the whole clause as one "word".
    assert WordTokenizer.split("大语言模型是一种技术。") == \
        ["大", "语", "言", "模", "型", "是", "一", "种", "技", "术", "。"]
    assert WordTokenizer.split("GPT-3有1750亿参数") == \
        ["GPT", "-", "3", "有", "1750", "亿", "参", "数"]
    tok = WordTokenizer.train("语言模型预测下一个词。language models")
    ids = tok.encode("语言模型预测下一个词。")
    assert 0 not in ids and len(ids) == 11
    assert tok.decode(ids) == "语言模型预测下一个词。"          # no spaces between CJK tokens
    assert tok.decode(tok.encode("language models")) == "language models"
