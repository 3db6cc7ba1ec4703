"""Semantic search: rank the paragraphs of a text by meaning, not by shared words.

Every paragraph is turned into a unit vector by the sentence encoder
(:mod:`tinylm.pretrained`, all-MiniLM-L6-v2); so is the query.  For unit
vectors the cosine similarity is the dot product, so ranking is one
matrix-vector product::

    E: (n, 384) paragraph embeddings      q: (384,) query embedding
    scores = E q                          (n,) cosine similarities in [-1, 1]
    top k  = argsort(-scores)[:k]

Embedding a corpus takes a while (the pydoc topics: ~2,000 paragraphs), so
the embeddings are cached on disk: ``<key>.npy`` (the float32 matrix, loaded
with ``allow_pickle=False``) and ``<key>.json`` (what it holds), where the
key is a SHA-256 of the paragraphs' text, the model's files and the settings.
Change the corpus or the model and the key changes: a stale cache is never
used.  Cache folder: ``$TINYLM_CACHE/search``, default
``~/.cache/tinylm/search``.

Paragraphs are blocks of lines separated by blank lines.  A line underlined
with ``***``, ``===`` or ``---`` is a heading (the pydoc topics are written
that way): it names the section of the paragraphs that follow and is not a
paragraph itself.  Paragraphs with fewer than ``min_words`` words are
dropped, and :func:`load_paragraphs` keeps only the first of identical ones.
"""

import hashlib
import json
import os
import re
import sys
import time

import numpy as np

from tinylm.pretrained.encoder import SentenceEncoder

__all__ = ["Paragraph", "split_paragraphs", "load_paragraphs", "SearchIndex",
           "cache_key", "default_cache_dir", "Progress"]

CACHE_VERSION = 1
_UNDERLINE = re.compile(r"\s*([*=\-~^#])\1{2,}\s*")


class Paragraph:
    """One searchable paragraph: its text, its section heading, its first line."""

    __slots__ = ("text", "section", "line")

    def __init__(self, text, section, line):
        self.text, self.section, self.line = text, section, line

    def __repr__(self):
        return "Paragraph(%r, section=%r, line=%d)" % (self.text[:40], self.section, self.line)


def split_paragraphs(text, min_words=5):
    """A text -> list of Paragraph (see the module docstring).

    Lines of a paragraph are joined with single spaces (indentation dropped).
    """
    if not isinstance(text, str):
        raise TypeError("split_paragraphs: expected a str, got %s" % type(text).__name__)
    paragraphs, block, start, section = [], [], 0, ""

    def flush():
        if block:
            joined = " ".join(l.strip() for l in block)
            if len(joined.split()) >= min_words:
                paragraphs.append(Paragraph(joined, section, start + 1))
            block.clear()

    for i, line in enumerate(text.split("\n")):
        if _UNDERLINE.fullmatch(line) and block:
            # "Heading\n*******": the line before is a heading, not paragraph text.
            heading = block.pop().strip()
            flush()
            section = heading
            continue
        if not line.strip():
            flush()
            continue
        if not block:
            start = i
        block.append(line)
    flush()
    return paragraphs


def load_paragraphs(corpus="pydoc", min_words=5):
    """The paragraphs of a corpus: "pydoc" (default) or a path (file or folder).

    The text comes from :func:`tinylm.data.load_corpus`, which raises a clear
    CorpusError for a missing, binary or non-UTF-8 corpus.
    """
    from tinylm.data import load_corpus
    text = load_corpus(corpus)
    paragraphs, seen = [], set()
    for p in split_paragraphs(text, min_words):
        if p.text not in seen:           # the pydoc topics repeat some paragraphs
            seen.add(p.text)
            paragraphs.append(p)
    if not paragraphs:
        raise ValueError("the corpus %s has no paragraph of at least %d words"
                         % (corpus, min_words))
    return paragraphs


# --------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------

def default_cache_dir():
    root = os.environ.get("TINYLM_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "tinylm")
    return os.path.join(root, "search")


def _file_digest(path, h):
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def cache_key(encoder, paragraphs):
    """SHA-256 of the model files, the settings and every paragraph's text."""
    h = hashlib.sha256()
    h.update(b"tinylm-search-v%d\0" % CACHE_VERSION)
    folder = getattr(encoder, "model_dir", None)
    if folder is None:      # a model built in memory: hash its parameters
        for name, p, _ in encoder.named_parameters():
            h.update(name.encode() + b"\0")
            h.update(np.ascontiguousarray(p, np.float32).tobytes())
    else:
        for f in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
            path = os.path.join(folder, f)
            if os.path.exists(path):
                h.update(f.encode() + b"\0")
                _file_digest(path, h)
    tok = encoder.tokenizer
    h.update(json.dumps({"max_length": tok.max_length, "lower": tok.lower_case,
                         "normalize": encoder.normalize}).encode())
    for p in paragraphs:
        h.update(p.text.encode("utf-8") + b"\0")
    return h.hexdigest()


def _load_cache(cache_dir, key, n, dim):
    npy, meta = (os.path.join(cache_dir, key + ext) for ext in (".npy", ".json"))
    if not (os.path.exists(npy) and os.path.exists(meta)):
        return None
    try:
        with open(meta, encoding="utf-8") as f:
            info = json.load(f)
        emb = np.load(npy, allow_pickle=False)
    except (OSError, ValueError):
        return None                      # unreadable or half-written: recompute
    if (not isinstance(info, dict) or info.get("key") != key
            or emb.shape != (n, dim) or emb.dtype != np.float32 or not np.isfinite(emb).all()):
        return None
    return emb


def _save_cache(cache_dir, key, emb, info):
    os.makedirs(cache_dir, exist_ok=True)
    npy, meta = (os.path.join(cache_dir, key + ext) for ext in (".npy", ".json"))
    tmp = "%s.tmp%d" % (npy, os.getpid())
    with open(tmp, "wb") as f:
        np.save(f, emb.astype(np.float32), allow_pickle=False)
    os.replace(tmp, npy)
    tmp = "%s.tmp%d" % (meta, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(dict(info, key=key), f, indent=1)
    os.replace(tmp, meta)                # the .json last: it marks the pair complete


# --------------------------------------------------------------------------
# Progress display
# --------------------------------------------------------------------------

class Progress:
    """progress(done, total) -> a one-line display on a stream (stderr).

    On a terminal the line is redrawn in place; otherwise a line is printed at
    most every 10% so logs stay short.
    """

    def __init__(self, what, stream=None):
        self.what = what
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self.last_decile = -1

    def __call__(self, done, total):
        el = time.perf_counter() - self.t0
        left = el / done * (total - done) if done else 0.0
        msg = "%s: %d/%d (%3d%%)  %.0f s, ~%.0f s left" % (
            self.what, done, total, 100 * done // max(total, 1), el, left)
        if self.tty:
            self.stream.write("\r" + msg + ("\n" if done >= total else ""))
            self.stream.flush()
        else:
            decile = 10 * done // max(total, 1)
            if decile != self.last_decile or done >= total:
                self.last_decile = decile
                self.stream.write(msg + "\n")
                self.stream.flush()


# --------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------

class SearchIndex:
    """Paragraphs and their embeddings; ``search(query, k)`` ranks them.

    embeddings: (n, H) unit vectors, row i for paragraphs[i].
    """

    def __init__(self, encoder, paragraphs, embeddings):
        if not isinstance(encoder, SentenceEncoder):
            raise TypeError("SearchIndex: encoder must be a SentenceEncoder")
        embeddings = np.asarray(embeddings)
        if embeddings.shape != (len(paragraphs), encoder.dim):
            raise ValueError("SearchIndex: embeddings have shape %s, expected %s"
                             % (embeddings.shape, (len(paragraphs), encoder.dim)))
        self.encoder, self.paragraphs, self.embeddings = encoder, list(paragraphs), embeddings
        self.from_cache = False

    @classmethod
    def build(cls, encoder, paragraphs, cache_dir=None, use_cache=True, batch_size=32,
              progress=None):
        """Embed the paragraphs, or load them from the cache when the key matches.

        cache_dir: default :func:`default_cache_dir`.  progress: callable
        progress(done, total) while embedding.
        """
        paragraphs = list(paragraphs)
        if not paragraphs:
            raise ValueError("SearchIndex.build: no paragraphs to index")
        cache_dir = cache_dir or default_cache_dir()
        key = cache_key(encoder, paragraphs) if use_cache else None
        emb = _load_cache(cache_dir, key, len(paragraphs), encoder.dim) if use_cache else None
        from_cache = emb is not None
        if emb is None:
            emb = encoder.encode([p.text for p in paragraphs], batch_size=batch_size,
                                 progress=progress).astype(np.float32)
            if use_cache:
                _save_cache(cache_dir, key, emb, {
                    "model_dir": getattr(encoder, "model_dir", None),
                    "paragraphs": len(paragraphs), "dim": encoder.dim,
                    "created": time.strftime("%Y-%m-%d %H:%M:%S")})
        index = cls(encoder, paragraphs, emb)
        index.from_cache = from_cache
        return index

    def search(self, query, k=5):
        """Top-k paragraphs for a query: list of (score, Paragraph), best first."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("search: the query must be a non-empty string")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError("search: k must be a positive integer, got %r" % (k,))
        q = self.encoder.encode([query])[0].astype(np.float32)        # (H,)
        scores = self.embeddings @ q                                   # (n,) cosines
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]                     # by score, then index
        return [(float(scores[i]), self.paragraphs[i]) for i in top]
