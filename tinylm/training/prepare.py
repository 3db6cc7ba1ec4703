"""From a corpus name to token ids: load the text, train a tokenizer, split train/validation."""

import numpy as np

from tinylm import data as tdata
from tinylm import tokenizers as tk

__all__ = ["make_tokenizer", "prepare_data", "SPLITS"]


def make_tokenizer(kind, text, vocab_size=None):
    if kind == "char":
        return tk.CharTokenizer.train(text)
    if kind == "word":
        return tk.WordTokenizer.train(text, max_size=vocab_size or 8000)
    if kind == "bpe":
        return tk.BPETokenizer.train(text, vocab_size=vocab_size or 512)
    raise ValueError("unknown tokenizer %r; choose char, word or bpe" % (kind,))


SPLITS = ("blocks", "tail")


def prepare_data(data="pydoc", tokenizer="char", glob=None, val_fraction=0.1,
                 vocab_size=None, max_chars=None, split="blocks"):
    """Load a corpus, train a tokenizer on it, split it into train and validation ids.

    data: "pydoc", "code" or a path (file or folder; see tinylm.data.load_corpus).
    tokenizer: "char" | "word" | "bpe", or an already-trained tokenizer.
    max_chars: cut the corpus to about this many characters (quick runs).
    split: "blocks" (the default): :func:`tinylm.data.split_text`, interleaved
    blocks of the text, the same characters for every tokenizer; "tail": the
    last ``val_fraction`` of the token ids (checkpoints made before "blocks").
    A tokenizer given by name is learned from the whole corpus.
    Returns (tokenizer, train_ids, val_ids) with int64 id arrays.
    """
    text = tdata.load_corpus(source=data, glob=glob, max_chars=max_chars)
    tok = tokenizer if not isinstance(tokenizer, str) else \
        make_tokenizer(tokenizer, text, vocab_size)
    if split == "tail":
        ids = np.asarray(tok.encode(text), dtype=np.int64)
        train_ids, val_ids = tdata.split_train_val(ids, val_fraction=val_fraction)
        return tok, np.asarray(train_ids), np.asarray(val_ids)
    if split != "blocks":
        raise ValueError("unknown validation split %r; choose one of: %s"
                         % (split, ", ".join(SPLITS)))
    train_text, val_text = tdata.split_text(text, val_fraction=val_fraction)
    return (tok, np.asarray(tok.encode(train_text), dtype=np.int64),
            np.asarray(tok.encode(val_text), dtype=np.int64))

