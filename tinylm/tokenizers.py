"""Tokenizers: text <-> lists of integer ids.

Three ways to cut text into tokens, from the smallest vocabulary to the
shortest sequences (lesson 02_2 compares them):

* :class:`CharTokenizer` -- one token per Unicode character seen in training.
  Tiny vocabulary, long sequences.  A character never seen in training has no
  id: ``encode`` raises ``ValueError`` naming the character and its position.
* :class:`WordTokenizer` -- one token per word or punctuation mark (rule
  below).  Large vocabulary, short sequences; rare and unseen words become
  ``<unk>`` (id 0), so ``decode(encode(s))`` loses them.
* :class:`BPETokenizer` -- byte-level byte-pair encoding (as in GPT-2).  The
  base vocabulary is the 256 byte values, so *every* string is encodable and
  ``decode(encode(s)) == s`` exactly; training learns merges of frequent
  adjacent pairs, each merge adding one token.

Common interface::

    tok = CharTokenizer.train(text)        # also WordTokenizer / BPETokenizer
    ids = tok.encode("some text")          # list[int]
    text = tok.decode(ids)                 # str
    tok.vocab_size                         # int, ids are 0 .. vocab_size-1
    d = tok.to_dict()                      # JSON-serialisable dict
    tok = tokenizer_from_dict(d)           # any kind, dispatched on d["type"]
    tok.save("tok.json"); tok = load_tokenizer("tok.json")   # or Class.load

Reading a tokenizer (a JSON file, or the dict inside a checkpoint) checks
the limits of :mod:`tinylm.limits` (JSON size and depth, at most
``MAX_BPE_MERGES`` merges, BPE tokens of at most ``MAX_BPE_TOKEN_BYTES``
bytes, ids that are integers) and raises :class:`TokenizerError` (a
``ValueError``) naming the problem.
"""

import heapq
import json
import re
from collections import Counter
from numbers import Integral

from tinylm import limits
from tinylm.limits import FormatError

__all__ = ["CharTokenizer", "WordTokenizer", "BPETokenizer",
           "tokenizer_from_dict", "load_tokenizer", "TOKENIZERS", "TokenizerError"]


class TokenizerError(FormatError):
    """A tokenizer file or dict that is malformed or over a limit."""


class _Tokenizer:
    """Shared plumbing: id checks, JSON save/load."""

    kind = None  # "char" | "word" | "bpe", the "type" key of to_dict()

    @property
    def vocab_size(self):
        raise NotImplementedError

    def _check_ids(self, ids):
        """ids -> list[int], each in [0, vocab_size), else ValueError saying which."""
        out = []
        for pos, i in enumerate(ids):
            try:
                j = int(i)
            except (TypeError, ValueError):
                raise TypeError("token at position %d is %r, not an integer id" % (pos, i))
            if j != i or not 0 <= j < self.vocab_size:
                raise ValueError("token id %r at position %d is outside the vocabulary "
                                 "[0, %d) of this %s tokenizer"
                                 % (i, pos, self.vocab_size, self.kind))
            out.append(j)
        return out

    def to_dict(self):
        raise NotImplementedError

    def save(self, path):
        """Write the tokenizer as JSON (UTF-8)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False)

    @classmethod
    def load(cls, path):
        """Read a tokenizer saved by :meth:`save`; it must be of this class's kind."""
        tok = load_tokenizer(path)
        if not isinstance(tok, cls):
            raise ValueError("%s holds a %r tokenizer, not %r" % (path, tok.kind, cls.kind))
        return tok

    def __repr__(self):
        return "%s(vocab_size=%d)" % (type(self).__name__, self.vocab_size)


# ==========================================================================
# Characters
# ==========================================================================
class CharTokenizer(_Tokenizer):
    """One id per character; the vocabulary is the sorted set of training characters."""

    kind = "char"

    def __init__(self, chars):
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError("CharTokenizer vocabulary entries must be single "
                                 "characters, got %r" % (c,))
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer vocabulary has duplicate characters")
        if not chars:
            raise ValueError("CharTokenizer needs at least one character")
        self.itos = chars                                  # id -> char
        self.stoi = {c: i for i, c in enumerate(chars)}    # char -> id

    @classmethod
    def train(cls, text):
        """Vocabulary = every distinct character of ``text``, sorted by code point."""
        if not text:
            raise ValueError("cannot train a CharTokenizer on empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self):
        return len(self.itos)

    def encode(self, text):
        stoi = self.stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            for pos, c in enumerate(text):
                if c not in stoi:
                    raise ValueError("character %r (U+%04X) at position %d is not in the "
                                     "CharTokenizer vocabulary (%d characters)"
                                     % (c, ord(c), pos, self.vocab_size)) from None
            raise  # not reached

    def decode(self, ids):
        return "".join(self.itos[i] for i in self._check_ids(ids))

    def to_dict(self):
        return {"type": self.kind, "chars": "".join(self.itos)}

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d["chars"], str):
            raise TokenizerError("'chars' must be a string, got %s" % type(d["chars"]).__name__)
        return cls(list(d["chars"]))


# ==========================================================================
# Words
# ==========================================================================
# The splitting rule: a token is either a run of word characters (letters,
# digits, underscore: regex \w+) or ONE other non-space character (each
# punctuation mark is its own token).  Whitespace only separates tokens and
# is dropped.  "Don't panic!" -> ["Don", "'", "t", "panic", "!"].
# Chinese is written without spaces, so a run of \w would make a whole clause
# one "word"; each CJK ideograph is its own token instead (as BERT's basic
# tokenizer does): "大语言模型。" -> ["大", "语", "言", "模", "型", "。"].  Real Chinese
# word segmentation needs a dictionary or a model; that is out of scope here
# (byte-level BPE learns multi-character pieces from data instead).
# Japanese kana and Korean hangul are not split (Korean uses spaces).
_CJK = ("\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
        "\U00020000-\U0002a6df\U0002a700-\U0002ebef\U0002f800-\U0002fa1f")
WORD_PATTERN = re.compile("[%s]|[^\\W%s]+|[^\\w\\s]" % (_CJK, _CJK))
# CJK ideographs and CJK / full-width punctuation: no spaces around them when decoding.
_CJK_CHAR = re.compile("[%s\u3000-\u303f\uff00-\uffef]" % _CJK)

# Decoding puts one space between tokens, except before these ...
_NO_SPACE_BEFORE = set(".,;:!?)]}%")
# ... and after these.
_NO_SPACE_AFTER = set("([{$")


class WordTokenizer(_Tokenizer):
    """Words and punctuation marks as tokens, ``<unk>`` (id 0) for the rest.

    Splitting: :data:`WORD_PATTERN` (runs of ``\\w`` characters, each CJK
    ideograph on its own, or one punctuation mark); whitespace is dropped.  With ``lowercase=True`` text is
    lower-cased before splitting.  Decoding joins tokens with single spaces,
    with no space before closing punctuation ``. , ; : ! ? ) ] } %`` and
    none after opening ``( [ { $``, and none around CJK characters -- readable, not an exact inverse (the
    original spacing is gone; quotes get spaces on both sides).
    """

    kind = "word"
    UNK = "<unk>"

    def __init__(self, words, lowercase=False):
        words = list(words)
        if not words or words[0] != self.UNK:
            raise ValueError("WordTokenizer vocabulary must start with %r" % self.UNK)
        if len(set(words)) != len(words):
            raise ValueError("WordTokenizer vocabulary has duplicate words")
        self.itos = words
        self.stoi = {w: i for i, w in enumerate(words)}
        self.lowercase = bool(lowercase)
        self.unk_id = 0

    @staticmethod
    def split(text, lowercase=False):
        """The splitting rule alone: text -> list of word / punctuation strings."""
        if lowercase:
            text = text.lower()
        return WORD_PATTERN.findall(text)

    @classmethod
    def train(cls, text, min_count=1, max_size=None, lowercase=False):
        """Vocabulary: ``<unk>``, then words seen >= ``min_count`` times, most
        frequent first (ties alphabetical), at most ``max_size`` ids in total."""
        if min_count < 1:
            raise ValueError("min_count must be >= 1, got %r" % (min_count,))
        if max_size is not None and max_size < 1:
            raise ValueError("max_size must be >= 1 (room for <unk>), got %r" % (max_size,))
        counts = Counter(cls.split(text, lowercase))
        counts.pop(cls.UNK, None)
        kept = sorted((w for w, c in counts.items() if c >= min_count),
                      key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[:max_size - 1]
        return cls([cls.UNK] + kept, lowercase=lowercase)

    @property
    def vocab_size(self):
        return len(self.itos)

    def encode(self, text):
        get = self.stoi.get
        return [get(w, 0) for w in self.split(text, self.lowercase)]

    def decode(self, ids):
        out = []
        prev = None
        for i in self._check_ids(ids):
            w = self.itos[i]
            if (prev is not None and w not in _NO_SPACE_BEFORE and prev not in _NO_SPACE_AFTER
                    and not _CJK_CHAR.fullmatch(w) and not _CJK_CHAR.fullmatch(prev)):
                out.append(" ")
            out.append(w)
            prev = w
        return "".join(out)

    def to_dict(self):
        return {"type": self.kind, "words": list(self.itos), "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, d):
        words = d["words"]
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise TokenizerError("'words' must be a list of strings")
        return cls(words, lowercase=d.get("lowercase", False) is True)


# ==========================================================================
# Byte-level BPE
# ==========================================================================
# Pre-split (GPT-2's idea, written for the standard library's `re`, which has
# no \p{L}): merges never cross the boundaries of these pieces, so " the"
# can become one token but "e." cannot.  A piece is
#   an English contraction suffix         's 't 're 've 'm 'll 'd
#   an optional space + letters           [^\W\d_] = word chars minus digits and _
#   an optional space + digits
#   an optional space + other symbols     (incl. underscore)
#   whitespace not followed by a non-space (so the last space joins the next word)
#   any other whitespace
# Together the alternatives match every character, so the pieces concatenate
# back to the text exactly (tested).
BPE_PATTERN = re.compile(
    r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


class BPETokenizer(_Tokenizer):
    """Byte-level BPE: ids 0..255 are bytes, id 256+r is merge number r.

    ``merges[r] = (a, b)`` says: the adjacent tokens ``a`` and ``b`` become
    the new token ``256 + r``, whose bytes are ``bytes(a) + bytes(b)``.
    Encoding UTF-8-encodes each pre-split piece and repeatedly applies the
    lowest-ranked (earliest learned) merge present, until none applies.
    Decoding concatenates the tokens' bytes and decodes UTF-8; ids that cut a
    character in half (possible in model samples, never from ``encode``) are
    shown as U+FFFD.
    """

    kind = "bpe"

    def __init__(self, merges=()):
        self.merges = []
        self.ranks = {}                               # (a, b) -> rank r
        self.vocab = [bytes([i]) for i in range(256)]  # id -> bytes
        if len(merges) > limits.MAX_BPE_MERGES:
            raise TokenizerError("%d BPE merges, more than the limit of %d "
                                 "(tinylm.limits.MAX_BPE_MERGES)"
                                 % (len(merges), limits.MAX_BPE_MERGES))
        for r, pair in enumerate(merges):
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(
                    isinstance(x, Integral) and not isinstance(x, bool) for x in pair)):
                raise TokenizerError("merge %d is %r, not a pair of integer ids" % (r, pair))
            a, b = int(pair[0]), int(pair[1])
            n = 256 + r
            if not (0 <= a < n and 0 <= b < n):
                raise TokenizerError("merge %d %r refers to an id not defined before it"
                                     % (r, pair))
            if (a, b) in self.ranks:
                raise TokenizerError("merge %d %r is a duplicate" % (r, pair))
            if len(self.vocab[a]) + len(self.vocab[b]) > limits.MAX_BPE_TOKEN_BYTES:
                raise TokenizerError("merge %d %r makes a token of %d bytes, more than the "
                                     "limit of %d (tinylm.limits.MAX_BPE_TOKEN_BYTES)"
                                     % (r, pair, len(self.vocab[a]) + len(self.vocab[b]),
                                        limits.MAX_BPE_TOKEN_BYTES))
            self.merges.append((a, b))
            self.ranks[(a, b)] = r
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self._cache = {}

    @staticmethod
    def split(text):
        """The pre-split alone: text -> list of pieces (joining them gives text)."""
        return BPE_PATTERN.findall(text)

    @classmethod
    def train(cls, text, vocab_size=512, verbose=False):
        """Learn ``vocab_size - 256`` merges from ``text``.

        Counting is incremental: the pair counts are built once; a merge only
        revisits the distinct pieces that contain the merged pair (found
        through an index pair -> pieces) and updates the counts of the pairs
        around it.  The next pair comes from a max-heap with stale entries
        skipped.  Ties go to the smallest pair (deterministic).  Training
        stops early if no pair occurs twice.
        """
        if vocab_size < 256:
            raise ValueError("a byte-level BPE vocabulary has at least 256 ids, got %r"
                             % (vocab_size,))
        # Distinct pieces with their frequencies; each as a list of token ids.
        piece_counts = Counter(cls.split(text))
        words = [list(p.encode("utf-8")) for p in piece_counts]
        freqs = list(piece_counts.values())

        pair_counts = Counter()      # (a, b) -> occurrences weighted by piece frequency
        where = {}                   # (a, b) -> set of piece indices containing it
        for wi, (w, f) in enumerate(zip(words, freqs)):
            for pair in zip(w, w[1:]):
                pair_counts[pair] += f
                where.setdefault(pair, set()).add(wi)
        heap = [(-c, pair) for pair, c in pair_counts.items()]
        heapq.heapify(heap)

        merges = []
        while len(merges) < vocab_size - 256 and heap:
            negc, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) != -negc:
                continue                           # stale heap entry
            if -negc < 2:
                break                              # nothing repeats any more
            new_id = 256 + len(merges)
            merges.append(pair)
            a, b = pair
            changed = set()
            for wi in where.pop(pair, ()):
                w, f = words[wi], freqs[wi]
                if len(w) < 2:
                    continue
                # Remove this piece's old pairs, merge, add its new pairs.
                for p in zip(w, w[1:]):
                    pair_counts[p] -= f
                    changed.add(p)
                merged, i = [], 0
                while i < len(w):
                    if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                        merged.append(new_id)
                        i += 2
                    else:
                        merged.append(w[i])
                        i += 1
                words[wi] = merged
                for p in zip(merged, merged[1:]):
                    pair_counts[p] += f
                    changed.add(p)
                    where.setdefault(p, set()).add(wi)
            pair_counts.pop(pair, None)
            changed.discard(pair)
            for p in changed:
                c = pair_counts.get(p, 0)
                if c > 0:
                    heapq.heappush(heap, (-c, p))
                else:
                    pair_counts.pop(p, None)
            if verbose and len(merges) % 100 == 0:
                print("bpe: %d merges" % len(merges))
        return cls(merges)

    @property
    def vocab_size(self):
        return 256 + len(self.merges)

    def _encode_piece(self, piece):
        """One pre-split piece -> ids, by applying merges in rank order."""
        ids = self._cache.get(piece)
        if ids is not None:
            return ids
        ids = list(piece.encode("utf-8"))
        ranks = self.ranks
        while len(ids) > 1:
            # The earliest-learned merge among the adjacent pairs.
            best = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, float("inf")))
            r = ranks.get(best)
            if r is None:
                break
            new_id, out, i = 256 + r, [], 0
            while i < len(ids):
                if i + 1 < len(ids) and ids[i] == best[0] and ids[i + 1] == best[1]:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def encode(self, text):
        if not isinstance(text, str):
            raise TypeError("encode takes a str, got %s" % type(text).__name__)
        out = []
        for piece in self.split(text):
            out.extend(self._encode_piece(piece))
        return out

    def decode_bytes(self, ids):
        """ids -> the raw bytes they stand for."""
        return b"".join(self.vocab[i] for i in self._check_ids(ids))

    def decode(self, ids):
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_str(self, i):
        """A readable form of one token (its bytes, decoded with U+FFFD where cut)."""
        return self.vocab[self._check_ids([i])[0]].decode("utf-8", errors="replace")

    def to_dict(self):
        return {"type": self.kind, "merges": [list(m) for m in self.merges]}

    @classmethod
    def from_dict(cls, d):
        merges = d["merges"]
        if not isinstance(merges, list):
            raise TokenizerError("'merges' must be a list, got %s" % type(merges).__name__)
        return cls(merges)


# ==========================================================================
TOKENIZERS = {"char": CharTokenizer, "word": WordTokenizer, "bpe": BPETokenizer}


def tokenizer_from_dict(d):
    """Rebuild any tokenizer from its :meth:`to_dict` form; TokenizerError if malformed."""
    if not isinstance(d, dict) or "type" not in d:
        raise TokenizerError("a tokenizer dict must be a dict with a 'type' key, got %r"
                             % (type(d).__name__,))
    cls = TOKENIZERS.get(d["type"]) if isinstance(d["type"], str) else None
    if cls is None:
        raise TokenizerError("unknown tokenizer type %r (known: %s)"
                             % (d["type"], ", ".join(sorted(TOKENIZERS))))
    try:
        return cls.from_dict(d)
    except TokenizerError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise TokenizerError("malformed %r tokenizer dict: %s" % (d["type"], e)) from None


def load_tokenizer(path):
    """Read a tokenizer JSON file written by ``save`` (any kind)."""
    try:
        with open(path, "rb") as f:
            data = f.read(limits.MAX_JSON_BYTES + 1)
    except IsADirectoryError:
        raise TokenizerError("%s is a folder, not a tokenizer JSON file" % path) from None
    try:
        d = limits.loads_json(data, "tokenizer %s" % path)
    except FormatError as e:
        raise TokenizerError(str(e)) from None
    try:
        return tokenizer_from_dict(d)
    except TokenizerError as e:
        raise TokenizerError("tokenizer %s: %s" % (path, e)) from None
