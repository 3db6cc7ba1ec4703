"""Corpora, the train/validation split and random batches of token windows.

Lesson 05_1 walks through these three steps::

    text = load_corpus("pydoc")                  # str: the whole corpus
    ids = np.array(tokenizer.encode(text))       # (N,) int token ids
    train_ids, val_ids = split_train_val(ids, val_fraction=0.1)
    sampler = BatchSampler(train_ids, batch_size=16, block_size=64, seed=0)
    x, y = sampler.next_batch()                  # (16, 64) each; y = x shifted by one

Corpora that need no download:

* ``"pydoc"`` -- the English reference text that ships with CPython
  (``pydoc_data.topics``: the language reference topics ``help()`` shows),
  the topics joined in sorted key order; about 465 kB.
* ``"code"`` -- Python source files of the standard library (tests and
  site-packages excluded), in sorted path order, capped at ``max_chars``
  (default 1,000,000 characters, cut at a line end).  Files that are not
  UTF-8 are skipped.
* a path -- a UTF-8 text file, or a folder whose files matching ``glob``
  (default ``"**/*.txt"``) are read in sorted path order; hidden files and
  folders (names starting with ``.``) are skipped.

Every problem with a user's corpus raises :class:`CorpusError` (a
``ValueError``) naming the file, and for undecodable bytes the byte offset.
Line ends ``\\r\\n`` are normalised to ``\\n`` and a UTF-8 byte-order mark
is dropped.
"""

import sysconfig
from pathlib import Path

import numpy as np

__all__ = ["CorpusError", "load_corpus", "split_text", "split_train_val", "BatchSampler",
           "CORPORA", "DEFAULT_GLOB", "VAL_BLOCKS"]

CORPORA = ("pydoc", "code")
DEFAULT_GLOB = "**/*.txt"
CODE_MAX_CHARS = 1_000_000
VAL_BLOCKS = 100       # split_text cuts the corpus into this many blocks


class CorpusError(ValueError):
    """The corpus cannot be used: missing, empty, binary, not UTF-8, too short."""


# ==========================================================================
# Loading
# ==========================================================================
def load_corpus(source="pydoc", path=None, glob=None, max_chars=None):
    """Return the corpus text (a str).

    source: ``"pydoc"``, ``"code"``, or ``"path"`` (then ``path`` names a file
    or folder).  Passing ``path=...`` alone, or a path as ``source``, also
    reads that path.  ``glob`` selects files inside a folder.  ``max_chars``
    cuts the text (at a line end) to at most that many characters.
    """
    if path is None and source not in CORPORA and source != "path":
        path, source = source, "path"          # load_corpus("my_text.txt")
    if path is not None:
        if source not in ("path", "pydoc"):     # "pydoc" is only the default
            raise ValueError("give either source=%r or path=%r, not both" % (source, path))
        text = _read_path(Path(path), glob or DEFAULT_GLOB)
    elif source == "pydoc":
        text = _pydoc_text()
    elif source == "code":
        text = _stdlib_code(CODE_MAX_CHARS if max_chars is None else max_chars)
    else:
        raise ValueError("source=%r needs path=..." % (source,))
    if max_chars is not None:
        text = _cut(text, max_chars)
    if not text.strip():
        raise CorpusError("the corpus %s is empty" % (path if path is not None else source))
    return text


def _cut(text, max_chars):
    """At most max_chars characters, ending at a newline when there is one."""
    if max_chars < 1:
        raise ValueError("max_chars must be >= 1, got %r" % (max_chars,))
    if len(text) <= max_chars:
        return text
    end = text.rfind("\n", 0, max_chars)
    return text[:end + 1] if end > 0 else text[:max_chars]


def _pydoc_text():
    from pydoc_data.topics import topics
    return "".join(topics[k] for k in sorted(topics))


def _stdlib_code(max_chars):
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
    parts, total = [], 0
    for f in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        if skip.intersection(f.relative_to(root).parts):
            continue
        try:
            text = f.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "\0" in text or not text.strip():
            continue
        parts.append(text.replace("\r\n", "\n"))
        total += len(text)
        if total >= max_chars:
            break
    return _cut("\n\n".join(parts), max_chars)


def _read_file(f):
    """One UTF-8 text file -> str; CorpusError for binary / non-UTF-8 content."""
    try:
        data = f.read_bytes()
    except OSError as e:
        raise CorpusError("cannot read corpus file %s: %s" % (f, e.strerror or e)) from None
    nul = data.find(b"\0")
    if nul >= 0:
        raise CorpusError("corpus file %s looks binary (NUL byte at byte offset %d); "
                          "give a UTF-8 text file" % (f, nul))
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError("corpus file %s is not UTF-8: byte 0x%02x at byte offset %d "
                          "(%s)" % (f, data[e.start], e.start, e.reason)) from None
    return text.replace("\r\n", "\n")


def _read_path(p, glob):
    if not p.exists():
        raise CorpusError("corpus path not found: %s" % p)
    if p.is_file():
        text = _read_file(p)
        if not text.strip():
            raise CorpusError("corpus file %s is empty" % p)
        return text
    if not p.is_dir():
        raise CorpusError("corpus path %s is neither a file nor a folder" % p)
    files = sorted((f for f in p.glob(glob) if f.is_file()
                    and not any(part.startswith(".") for part in f.relative_to(p).parts)),
                   key=lambda f: f.relative_to(p).as_posix())
    if not files:
        raise CorpusError("corpus folder %s has no files matching %r (choose another "
                          "glob, e.g. '**/*.py')" % (p, glob))
    texts = [t for t in (_read_file(f) for f in files) if t.strip()]
    if not texts:
        raise CorpusError("corpus folder %s: all %d files matching %r are empty"
                          % (p, len(files), glob))
    return "\n".join(texts)


# ==========================================================================
# Splitting
# ==========================================================================
def split_text(text, val_fraction=0.1, blocks=VAL_BLOCKS):
    """Split the corpus TEXT into (train_text, val_text) by interleaved blocks.

    The text is cut into ``blocks`` blocks of about equal length, each ending
    at a line end where there is one; block ``i`` goes to validation when
    ``floor((i + 1) * val_fraction) > floor(i * val_fraction)`` -- for 0.1,
    blocks 9, 19, ..., 99: ten blocks spread evenly over the whole corpus, so
    validation text is as varied as training text (a contiguous tail is one
    kind of text only).  Each side is its blocks joined in order.

    Splitting the text, not the token ids, makes the split the same for
    every tokenizer: char, word and BPE models are validated on the same
    characters.  Deterministic.  ``tinylm train`` uses it.
    """
    if not isinstance(text, str):
        raise TypeError("text must be a str, got %s" % type(text).__name__)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("val_fraction must be in (0, 1), got %r" % (val_fraction,))
    if int(blocks) < 2:
        raise ValueError("blocks must be >= 2, got %r" % (blocks,))
    n, blocks = len(text), int(blocks)
    cuts = [0]
    for i in range(1, blocks):
        target = max(cuts[-1], n * i // blocks)
        nl = text.find("\n", target, n * (i + 1) // blocks)   # the next line end in this block
        cuts.append(nl + 1 if nl >= 0 else target)
    cuts.append(n)
    train, val = [], []
    for i in range(blocks):
        side = val if int((i + 1) * val_fraction) > int(i * val_fraction) else train
        side.append(text[cuts[i]:cuts[i + 1]])
    train_text, val_text = "".join(train), "".join(val)
    if not train_text or not val_text:
        raise CorpusError("cannot split a corpus of %d characters into train and "
                          "validation text (val_fraction=%r)" % (n, val_fraction))
    return train_text, val_text


def split_train_val(ids, val_fraction=0.1):
    """Split a token stream into (train, val): the LAST ``val_fraction`` is validation.

    ids: (N,) sequence of token ids.  Returns two int64 arrays, (N - n_val,)
    and (n_val,), with ``n_val = max(1, round(N * val_fraction))``.  A
    contiguous tail (not a random shuffle of windows) keeps validation text
    unseen: random windows would overlap training windows.  Deterministic.
    """
    ids = _as_ids(ids, "ids")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("val_fraction must be in (0, 1), got %r" % (val_fraction,))
    n = len(ids)
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_val < 1:
        raise CorpusError("cannot split %d tokens into train and validation "
                          "(val_fraction=%r)" % (n, val_fraction))
    return ids[:n - n_val], ids[n - n_val:]


def _as_ids(ids, what):
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError("%s must be a 1-D sequence of token ids, got shape %s"
                         % (what, arr.shape))
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError("%s must be integers, got dtype %s" % (what, arr.dtype))
    if arr.size and arr.min() < 0:
        raise ValueError("%s contains a negative id %d at position %d"
                         % (what, arr.min(), int(np.argmin(arr))))
    return arr.astype(np.int64, copy=False)


# ==========================================================================
# Batching
# ==========================================================================
class BatchSampler:
    """Random windows of a token stream, as (input, target) pairs.

    Each batch draws ``batch_size`` start positions ``s`` uniformly from
    ``0 .. N - block_size - 1`` and returns::

        x[b] = ids[s_b     : s_b + T]        # (B, T) inputs
        y[b] = ids[s_b + 1 : s_b + T + 1]    # (B, T) targets: the next token

    so ``y[b, t]`` is the token after ``x[b, t]``.  The random generator's
    state is part of :meth:`state_dict`, so a resumed run draws the same
    batches as an uninterrupted one.
    """

    def __init__(self, ids, batch_size, block_size, seed=0):
        self.ids = _as_ids(ids, "ids")
        if int(batch_size) < 1 or int(block_size) < 1:
            raise ValueError("batch_size and block_size must be >= 1, got %r and %r"
                             % (batch_size, block_size))
        self.batch_size = int(batch_size)
        self.block_size = int(block_size)
        if len(self.ids) < self.block_size + 1:
            raise CorpusError("the token stream has %d tokens, shorter than one sequence "
                              "(block_size + 1 = %d tokens); use more text or a smaller "
                              "block_size" % (len(self.ids), self.block_size + 1))
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.batches = 0                              # batches drawn so far
        self._offsets = np.arange(self.block_size)    # (T,)

    def next_batch(self, rows=None):
        """-> (x, y), both (batch_size, block_size) int64.

        rows: a slice of the batch to return instead of all of it (a
        data-parallel rank's shard); the random generator advances by the
        whole batch either way, so every shard comes from the same batch.
        """
        n_starts = len(self.ids) - self.block_size    # valid s: 0 .. n_starts-1
        starts = self.rng.integers(0, n_starts, size=self.batch_size)     # (B,)
        if rows is not None:
            starts = starts[rows]
        index = starts[:, None] + self._offsets[None, :]                   # (B, T)
        self.batches += 1
        return self.ids[index], self.ids[index + 1]

    def __iter__(self):
        return self

    def __next__(self):
        return self.next_batch()

    def state_dict(self):
        """JSON-serialisable state: the RNG state and the batch count."""
        return {"rng": self.rng.bit_generator.state, "batches": self.batches,
                "batch_size": self.batch_size, "block_size": self.block_size}

    def load_state_dict(self, state):
        if (state.get("batch_size"), state.get("block_size")) != (self.batch_size,
                                                                  self.block_size):
            raise ValueError("sampler state is for batch_size=%r block_size=%r, this "
                             "sampler has %d and %d"
                             % (state.get("batch_size"), state.get("block_size"),
                                self.batch_size, self.block_size))
        self.rng.bit_generator.state = state["rng"]
        self.batches = int(state["batches"])
        return self
