"""BERT's WordPiece tokenizer, from scratch: text -> token ids.

Two stages, exactly as in the original BERT code (and Hugging Face's
``BertTokenizer``):

1. **Basic tokenization** turns a string into words:

   * clean-up: drop NUL, U+FFFD and control characters; every whitespace
     character becomes a plain space;
   * CJK ideographs become words of their own (Chinese has no spaces, so a
     BERT vocabulary holds single characters);
   * for an *uncased* model: lower-case, then strip accents (Unicode NFD
     decomposition, then drop the combining marks, category ``Mn``:
     "Café" -> "cafe");
   * split on whitespace, then split every punctuation character off as a
     word of its own.  BERT's "punctuation" is every Unicode ``P*`` category
     plus all non-alphanumeric printable ASCII ("$", "+", "^", "`", ...).

2. **WordPiece** splits each word into vocabulary pieces, greedily, longest
   match first: "unaffable" -> "un", "##aff", "##able" (``##`` marks a piece
   that continues a word).  A word with no split, or longer than 100
   characters, becomes ``[UNK]``.

Finally ``[CLS] ... [SEP]`` wrap the sequence, and a batch is padded with
``[PAD]`` to its longest member, with an attention mask (1 = real token).

Maximum length: the tokenizer truncates to ``max_length`` tokens including
``[CLS]``/``[SEP]``; its default is the ``model_max_length`` of
``tokenizer_config.json`` (512 for all-MiniLM-L6-v2, as in Hugging Face),
capped at 512.  :mod:`tinylm.pretrained` passes 256 for all-MiniLM-L6-v2
instead, the ``max_seq_length`` of ``sentence_bert_config.json`` that
sentence-transformers uses (the length the model was fine-tuned with).

Fidelity: ids match Hugging Face's tokenizer exactly on ordinary text (checked
on every paragraph of the pydoc topics and thousands of random strings); they
can differ on characters newer than the Unicode tables of either side (Python's
``unicodedata`` vs the Rust tokenizers' tables), e.g. rare supplementary-plane
scripts.

Special tokens written literally in the text ("[SEP]") are kept as those
tokens, as Hugging Face's tokenizers do; pass ``split_special_tokens=True``
to treat them as ordinary text instead.
"""

import os
import re
import unicodedata

import numpy as np

from tinylm import limits

__all__ = ["WordPieceTokenizer", "basic_tokenize", "wordpiece", "Batch"]

MAX_CHARS_PER_WORD = 100
DEFAULT_MAX_LENGTH = 512


# --------------------------------------------------------------------------
# Character classes (BERT's definitions)
# --------------------------------------------------------------------------

def _is_whitespace(ch):
    """Space, tab, newline, carriage return, or a Unicode space separator (Zs)."""
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch):
    """A control, format, surrogate or private-use character (Cc, Cf, Cs, Co).

    Tab/newline/CR are whitespace, not control.  Unassigned code points (Cn)
    are kept, as Hugging Face's tokenizers keep them (the original BERT code
    dropped every C* category; the two differ only on unassigned code points).
    """
    if ch in "\t\n\r":
        return False
    cat = unicodedata.category(ch)
    return cat.startswith("C") and cat != "Cn"


def _is_punctuation(ch):
    """Unicode punctuation (P*) or any non-letter, non-digit printable ASCII."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


# The CJK Unified Ideographs blocks (not Hangul, not Hiragana/Katakana: those
# languages use spaces, and BERT treats them like any other letters).
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
               (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
               (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(ch):
    cp = ord(ch)
    return cp >= 0x3400 and any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


# ASCII text (most English input) goes through stage 1 as whole strings: the
# same character classes, tabulated once for the 128 ASCII characters, so that
# str.translate and one regular expression do what the loops below do per
# character (a third of an all-MiniLM-L6-v2 embedding call was spent here).
_ASCII = [chr(i) for i in range(128)]
_ASCII_CLEAN = {ord(ch): (None if ch == "\x00" or _is_control(ch)
                          else " " if _is_whitespace(ch) else ch) for ch in _ASCII}
_ASCII_PUNCTUATION = re.compile(
    "([%s])" % re.escape("".join(ch for ch in _ASCII if _is_punctuation(ch))))


# --------------------------------------------------------------------------
# Stage 1: basic tokenization
# --------------------------------------------------------------------------

def _clean(text):
    """Drop NUL / U+FFFD / control characters; whitespace -> ' '."""
    if text.isascii():
        return text.translate(_ASCII_CLEAN)
    out = []
    for ch in text:
        if ch == "\x00" or ch == "\ufffd" or _is_control(ch):
            continue
        out.append(" " if _is_whitespace(ch) else ch)
    return "".join(out)


def _strip_accents(word):
    """'Café' -> 'Cafe': NFD splits 'é' into 'e' + U+0301, then drop the Mn marks."""
    if word.isascii():
        return word
    return "".join(ch for ch in unicodedata.normalize("NFD", word)
                   if unicodedata.category(ch) != "Mn")


def _split_punctuation(word):
    """'hello,world!!' -> ['hello', ',', 'world', '!', '!']."""
    if word.isascii():
        return [w for w in _ASCII_PUNCTUATION.split(word) if w]
    words, current = [], []
    for ch in word:
        if _is_punctuation(ch):
            if current:
                words.append("".join(current))
                current = []
            words.append(ch)
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


def basic_tokenize(text, lower_case=True, strip_accents=None, chinese_chars=True):
    """Stage 1: a string -> list of words (see the module docstring).

    strip_accents: None means "strip when lower-casing" (BERT's default).
    """
    text = _clean(text)
    if chinese_chars and not text.isascii():
        text = "".join(" %s " % ch if _is_cjk(ch) else ch for ch in text)
    # NFC first so that a precomposed and a decomposed 'é' are the same word.
    text = unicodedata.normalize("NFC", text)
    words = []
    for word in text.split():
        if lower_case:
            word = word.lower()
            if strip_accents is not False:
                word = _strip_accents(word)
        elif strip_accents:
            word = _strip_accents(word)
        words.extend(_split_punctuation(word))
    # Stripping accents can leave an empty word (a lone combining mark).
    return [w for w in " ".join(words).split()]


# --------------------------------------------------------------------------
# Stage 2: WordPiece
# --------------------------------------------------------------------------

def wordpiece(word, vocab, unk="[UNK]", max_chars=MAX_CHARS_PER_WORD):
    """Stage 2: one word -> its pieces, greedy longest-match-first.

    'unaffable' -> ['un', '##aff', '##able'] when those are in the vocabulary;
    [unk] when some part of the word matches nothing or it is too long.
    """
    if len(word) > max_chars:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        piece = None
        while start < end:                      # try the longest piece first
            candidate = word[start:end]
            if start > 0:
                candidate = "##" + candidate
            if candidate in vocab:
                piece = candidate
                break
            end -= 1
        if piece is None:                       # no piece fits: the whole word is unknown
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


# --------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------

class Batch:
    """A padded batch of token ids.

    input_ids:      (n, T) int64, [CLS] ... [SEP] then [PAD]s
    attention_mask: (n, T) int64, 1 for real tokens, 0 for padding
    token_type_ids: (n, T) int64, all 0 (one segment per sequence)
    """

    def __init__(self, input_ids, attention_mask):
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        self.token_type_ids = np.zeros_like(input_ids)

    def __len__(self):
        return len(self.input_ids)

    def __repr__(self):
        return "Batch(input_ids=%s, attention_mask=%s)" % (
            self.input_ids.shape, self.attention_mask.shape)


def _read_vocab(path):
    """vocab.txt: one token per line; the line number (from 0) is the id."""
    try:
        lines = limits.read_text(path, "WordPiece vocabulary", limits.MAX_VOCAB_BYTES).split("\n")
    except FileNotFoundError:
        raise FileNotFoundError("WordPiece vocabulary not found: %s" % path) from None
    if lines and lines[-1] == "":
        lines.pop()                             # the final newline
    vocab = {}
    for i, token in enumerate(lines):
        vocab[token.rstrip("\r")] = i           # a repeated token keeps its last id
    if not vocab:
        raise ValueError("%s: the vocabulary is empty" % path)
    return vocab


class WordPieceTokenizer:
    """Text -> token ids with BERT's WordPiece (see the module docstring).

    vocab: dict token -> id (or a path to vocab.txt).  Build from a Hugging
    Face model folder with :meth:`from_pretrained`.
    """

    def __init__(self, vocab, lower_case=True, strip_accents=None, chinese_chars=True,
                 max_length=DEFAULT_MAX_LENGTH, unk_token="[UNK]", cls_token="[CLS]",
                 sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]",
                 split_special_tokens=False):
        if isinstance(vocab, (str, os.PathLike)):
            vocab = _read_vocab(vocab)
        self.vocab = dict(vocab)
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        self.lower_case = bool(lower_case)
        self.strip_accents = strip_accents
        self.chinese_chars = bool(chinese_chars)
        self.max_length = self._check_max_length(max_length)
        self.unk_token, self.cls_token = unk_token, cls_token
        self.sep_token, self.pad_token = sep_token, pad_token
        for role, tok in (("unk", unk_token), ("cls", cls_token),
                          ("sep", sep_token), ("pad", pad_token)):
            if tok not in self.vocab:
                raise ValueError("WordPieceTokenizer: the %s token %r is not in the "
                                 "vocabulary" % (role, tok))
        self.unk_id = self.vocab[unk_token]
        self.cls_id = self.vocab[cls_token]
        self.sep_id = self.vocab[sep_token]
        self.pad_id = self.vocab[pad_token]
        specials = [t for t in (unk_token, cls_token, sep_token, pad_token, mask_token)
                    if t in self.vocab]
        self._special_re = None if split_special_tokens else re.compile(
            "(%s)" % "|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)))

    @staticmethod
    def _check_max_length(n):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise ValueError("max_length must be an integer >= 2 (room for [CLS] and "
                             "[SEP]), got %r" % (n,))
        return int(n)

    @classmethod
    def from_pretrained(cls, folder, max_length=None):
        """Build from a Hugging Face folder: vocab.txt (+ tokenizer_config.json)."""
        folder = os.fspath(folder)
        cfg = {}
        cfg_path = os.path.join(folder, "tokenizer_config.json")
        if os.path.exists(cfg_path):
            cfg = limits.read_json(cfg_path, "tokenizer config", dict)
        if max_length is None:
            # Configs without a real limit write a huge number (1e30): cap it.
            max_length = int(min(cfg.get("model_max_length") or DEFAULT_MAX_LENGTH,
                                 DEFAULT_MAX_LENGTH))

        def token(key, default):
            t = cfg.get(key, default)
            return t.get("content", default) if isinstance(t, dict) else (t or default)

        vocab_path = os.path.join(folder, "vocab.txt")
        try:
            return cls(vocab_path,
                       lower_case=cfg.get("do_lower_case", True),
                       strip_accents=cfg.get("strip_accents"),
                       chinese_chars=cfg.get("tokenize_chinese_chars", True),
                       max_length=max_length,
                       unk_token=token("unk_token", "[UNK]"),
                       cls_token=token("cls_token", "[CLS]"),
                       sep_token=token("sep_token", "[SEP]"),
                       pad_token=token("pad_token", "[PAD]"),
                       mask_token=token("mask_token", "[MASK]"))
        except (TypeError, ValueError) as exc:      # say which folder
            if folder in str(exc):
                raise
            raise ValueError("%s: %s" % (vocab_path, exc)) from None

    def __len__(self):
        return len(self.vocab)

    # -- text -> pieces -> ids ---------------------------------------------
    def tokenize(self, text):
        """A string -> list of WordPiece tokens (no [CLS]/[SEP])."""
        if not isinstance(text, str):
            raise TypeError("tokenize: expected a str, got %s" % type(text).__name__)
        chunks = [text] if self._special_re is None else self._special_re.split(text)
        tokens = []
        for i, chunk in enumerate(chunks):
            if i % 2 == 1 and self._special_re is not None:   # a special token
                tokens.append(chunk)
                continue
            for word in basic_tokenize(chunk, self.lower_case, self.strip_accents,
                                       self.chinese_chars):
                tokens.extend(wordpiece(word, self.vocab, self.unk_token))
        return tokens

    def convert_tokens_to_ids(self, tokens):
        return [self.vocab.get(t, self.unk_id) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        return [self.inv_vocab.get(int(i), self.unk_token) for i in ids]

    def encode(self, text, max_length=None):
        """A string -> list of ids: [CLS] pieces [SEP], truncated to max_length."""
        max_length = self.max_length if max_length is None else self._check_max_length(max_length)
        ids = self.convert_tokens_to_ids(self.tokenize(text))[:max_length - 2]
        return [self.cls_id] + ids + [self.sep_id]

    def decode(self, ids, skip_special_tokens=True):
        """Ids -> text, joining '##' pieces (lossy: case/accents are gone)."""
        specials = {self.cls_id, self.sep_id, self.pad_id}
        toks = [t for i, t in zip(ids, self.convert_ids_to_tokens(ids))
                if not (skip_special_tokens and int(i) in specials)]
        return " ".join(toks).replace(" ##", "")

    def __call__(self, texts, max_length=None):
        """A list of strings -> a padded :class:`Batch` (pad to the longest)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("WordPieceTokenizer: empty list of texts")
        seqs = [self.encode(t, max_length) for t in texts]
        T = max(len(s) for s in seqs)
        ids = np.full((len(seqs), T), self.pad_id, dtype=np.int64)   # (n, T)
        mask = np.zeros((len(seqs), T), dtype=np.int64)               # (n, T)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = s
            mask[i, :len(s)] = 1
        return Batch(ids, mask)
