"""Corpus loading and its errors, the train/val split, the batch sampler."""

import json

import numpy as np
import pytest

from tinylm.data import BatchSampler, CorpusError, load_corpus, split_train_val


# ------------------------------------------------------------------ corpora
def test_pydoc_corpus_is_the_sorted_topics():
    from pydoc_data.topics import topics
    text = load_corpus("pydoc")
    assert text == "".join(topics[k] for k in sorted(topics))
    assert len(text) > 100_000
    assert load_corpus() == text                      # the default


def test_code_corpus_is_deterministic_python_with_a_cap():
    a = load_corpus("code", max_chars=50_000)
    b = load_corpus(source="code", max_chars=50_000)
    assert a == b
    assert 40_000 < len(a) <= 50_000
    assert "def " in a and "import " in a


def test_file_and_folder(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes("\ufeffhello\r\nworld\n".encode("utf-8"))   # BOM and CRLF
    assert load_corpus(path=f) == "hello\nworld\n"
    assert load_corpus(str(f)) == "hello\nworld\n"
    assert load_corpus(source="path", path=f) == "hello\nworld\n"

    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("second", encoding="utf-8")
    (folder / "a.txt").write_text("first", encoding="utf-8")
    (folder / "sub" / "c.txt").write_text("third", encoding="utf-8")
    (folder / "skip.md").write_text("not matched", encoding="utf-8")
    (folder / ".hidden.txt").write_text("hidden", encoding="utf-8")
    assert load_corpus(path=folder) == "first\nsecond\nthird"
    assert load_corpus(path=folder, glob="*.md") == "not matched"


def test_max_chars_cuts_at_a_line_end(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("line one\nline two\nline three\n", encoding="utf-8")
    assert load_corpus(path=f, max_chars=20) == "line one\nline two\n"


# ------------------------------------------------------------------- errors
def test_missing_path(tmp_path):
    with pytest.raises(CorpusError, match="not found.*nope.txt"):
        load_corpus(path=tmp_path / "nope.txt")


def test_empty_file_and_folder(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("", encoding="utf-8")
    with pytest.raises(CorpusError, match="empty.txt.*empty"):
        load_corpus(path=f)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(CorpusError, match="no files matching"):
        load_corpus(path=folder)
    (folder / "blank.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(CorpusError, match="empty"):
        load_corpus(path=folder)


def test_binary_file_names_file_and_offset(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(CorpusError, match=r"model.bin.*binary.*offset 3"):
        load_corpus(path=f)


def test_non_utf8_file_names_file_and_byte_offset(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("café au lait".encode("latin-1"))    # é = 0xe9, invalid as UTF-8 here
    with pytest.raises(CorpusError, match=r"latin1.txt.*UTF-8.*0xe9.*offset 3"):
        load_corpus(path=f)
    # Inside a folder the bad file is named too.
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "good.txt").write_text("fine", encoding="utf-8")
    (folder / "bad.txt").write_bytes(b"ok \xff")
    with pytest.raises(CorpusError, match=r"bad.txt.*offset 3"):
        load_corpus(path=folder)


def test_corpus_error_is_a_value_error():
    assert issubclass(CorpusError, ValueError)


# -------------------------------------------------------------------- split
def test_split_is_a_deterministic_tail():
    ids = np.arange(100)
    train, val = split_train_val(ids, val_fraction=0.1)
    np.testing.assert_array_equal(train, np.arange(90))
    np.testing.assert_array_equal(val, np.arange(90, 100))
    assert train.dtype == np.int64
    t2, v2 = split_train_val(list(range(100)), 0.1)
    np.testing.assert_array_equal(t2, train)
    np.testing.assert_array_equal(v2, val)


def test_split_errors():
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(np.arange(10), 1.5)
    with pytest.raises(CorpusError):
        split_train_val([1], 0.5)
    with pytest.raises(ValueError, match="1-D"):
        split_train_val(np.zeros((2, 2), dtype=int))


# ------------------------------------------------------------------ sampler
def test_batches_are_windows_with_targets_shifted_by_one():
    ids = np.arange(1000) * 7 % 1000                 # distinct values: positions recoverable
    s = BatchSampler(ids, batch_size=5, block_size=8, seed=0)
    x, y = s.next_batch()
    assert x.shape == y.shape == (5, 8) and x.dtype == np.int64
    for b in range(5):
        start = int(np.where(ids == x[b, 0])[0][0])
        np.testing.assert_array_equal(x[b], ids[start:start + 8])
        np.testing.assert_array_equal(y[b], ids[start + 1:start + 9])


def test_every_start_reachable_and_never_out_of_range():
    ids = np.arange(12)
    s = BatchSampler(ids, batch_size=64, block_size=10, seed=1)
    starts = set()
    for _ in range(20):
        x, y = next(s)
        starts.update(x[:, 0].tolist())
        assert y.max() <= 11
    assert starts == {0, 1}                           # 12 tokens, T=10: starts 0 and 1


def test_same_seed_same_batches_and_resume(tmp_path):
    ids = np.arange(500)
    a = BatchSampler(ids, 4, 16, seed=42)
    b = BatchSampler(ids, 4, 16, seed=42)
    for _ in range(3):
        np.testing.assert_array_equal(a.next_batch()[0], b.next_batch()[0])
    state = json.loads(json.dumps(a.state_dict()))   # must survive JSON (checkpoint meta)
    expected = [a.next_batch()[0] for _ in range(3)]
    c = BatchSampler(ids, 4, 16, seed=999).load_state_dict(state)
    for e in expected:
        np.testing.assert_array_equal(c.next_batch()[0], e)
    assert c.batches == a.batches == 6


def test_corpus_shorter_than_one_sequence():
    with pytest.raises(CorpusError, match=r"5 tokens.*block_size \+ 1 = 6"):
        BatchSampler(np.arange(5), batch_size=2, block_size=5)
    BatchSampler(np.arange(6), batch_size=2, block_size=5)   # exactly one sequence fits


def test_sampler_argument_errors():
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(np.arange(100), 0, 4)
    with pytest.raises(ValueError, match="negative"):
        BatchSampler(np.array([1, -2, 3]), 1, 1)
    with pytest.raises(TypeError, match="integers"):
        BatchSampler(np.array([1.5, 2.0, 3.0]), 1, 1)
    s = BatchSampler(np.arange(100), 2, 4)
    with pytest.raises(ValueError, match="block_size"):
        s.load_state_dict(BatchSampler(np.arange(100), 2, 8).state_dict())


# ------------------------------------------------------- representative split
def test_split_text_interleaves_blocks_and_is_representative():
    from tinylm.data import split_text
    text = load_corpus("pydoc")
    train, val = split_text(text, val_fraction=0.1)
    assert len(train) + len(val) == len(text)
    assert abs(len(val) / len(text) - 0.1) < 0.01
    # validation comes from all over the corpus, not from its tail
    n = len(text)
    starts = [text.find(val[i:i + 100]) for i in range(0, len(val) - 100, len(val) // 40)]
    starts = [s for s in starts if s >= 0]             # (a sample may span two blocks)
    assert min(starts) < n // 5 and max(starts) > n * 4 // 5
    # a unigram model fit on train does worse on validation than on train
    # (on the old contiguous tail it did better: the tail is unrepresentative)
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    a = np.array([index[c] for c in train])
    b = np.array([index[c] for c in val])
    p = np.bincount(a, minlength=len(chars)) + 1.0
    p /= p.sum()
    assert -np.log(p[b]).mean() > -np.log(p[a]).mean()


def test_split_text_is_the_same_for_every_tokenizer():
    from tinylm.data import split_text
    from tinylm.tokenizers import BPETokenizer, CharTokenizer
    text = load_corpus("pydoc", max_chars=50_000)
    train, val = split_text(text)
    assert split_text(text) == (train, val)                  # deterministic
    for tok in (CharTokenizer.train(text), BPETokenizer.train(text[:20_000], 300)):
        assert tok.decode(tok.encode(val)) == val


def test_split_text_errors():
    from tinylm.data import split_text
    with pytest.raises(ValueError, match="val_fraction"):
        split_text("abc\n" * 100, val_fraction=1.5)
    with pytest.raises(CorpusError, match="cannot split"):
        split_text("a", val_fraction=0.1)
