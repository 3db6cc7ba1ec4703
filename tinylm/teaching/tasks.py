"""Small synthetic sequence-to-sequence tasks (for the encoder-decoder lessons).

A real translation corpus is too big for a laptop lesson, so lesson 03_3 uses
a *translation-like* task whose answer is known exactly: the source is a
random string of symbols, and the target is a fixed transformation of it.

* ``"copy"``      target = source
* ``"reverse"``   target = source reversed
* ``"translate"`` target = source reversed, each symbol mapped through a fixed
  random one-to-one "dictionary" (a permutation of the symbols, chosen by the
  task's seed) - word order *and* vocabulary change, like a toy translation.

Lengths vary from example to example (``min_len .. max_len``), which is what
lets a lesson plot accuracy against input length: a decoder that only sees
the encoder's final state (the fixed-length-vector bottleneck) degrades on
long inputs, one with attention over the encoder states does not.

Token ids (the same for source and target)::

    PAD = 0   padding after the end of a shorter sequence
    BOS = 1   "begin": the decoder's first input
    EOS = 2   "end": the decoder's last target
    3 .. 3 + num_symbols - 1   the symbols

A batch is four arrays (``Ls = max source length in the batch``,
``Lt = max target length + 1``)::

    src      (B, Ls)  int64   symbols, right-padded with PAD
    tgt_in   (B, Lt)  int64   [BOS, y1, ..., yn, PAD ...]   decoder inputs
    tgt_out  (B, Lt)  int64   [y1, ..., yn, EOS, PAD ...]   decoder targets
    src_len  (B,)     int64   true source lengths

in the order of ``Seq2Seq.loss(src, tgt_in, tgt_out, src_len)``, so
``model.loss(*task.batch(32))`` trains on a fresh batch
so ``tgt_out[:, t]`` is what the decoder must predict after reading
``tgt_in[:, :t+1]`` (teacher forcing), and PAD targets are ignored by the loss.
"""

import numpy as np

from tinylm.models.seq2seq import BOS, EOS, PAD   # the model's special ids

NUM_SPECIAL = 3

TRANSFORMS = ("copy", "reverse", "translate")

__all__ = ["PAD", "BOS", "EOS", "TRANSFORMS", "SequenceTask",
           "token_accuracy", "sequence_accuracy", "strip_special", "accuracy_by_length"]


class SequenceTask:
    """Generator of (source, target) pairs for a fixed transformation.

    Parameters
    ----------
    num_symbols : int >= 2     size of the symbol alphabet
    min_len, max_len : int     source lengths are uniform in [min_len, max_len]
    transform : str            one of ``TRANSFORMS``
    seed : int                 seeds both the "dictionary" of ``"translate"``
                               and the example stream of :meth:`batch`
    """

    def __init__(self, num_symbols=10, min_len=3, max_len=12, transform="reverse", seed=0):
        if transform not in TRANSFORMS:
            raise ValueError("SequenceTask: transform must be one of %s, got %r"
                             % (TRANSFORMS, transform))
        if int(num_symbols) < 2:
            raise ValueError("SequenceTask: num_symbols must be >= 2, got %r" % (num_symbols,))
        if not 1 <= int(min_len) <= int(max_len):
            raise ValueError("SequenceTask: need 1 <= min_len <= max_len, got min_len=%r, "
                             "max_len=%r" % (min_len, max_len))
        self.num_symbols = int(num_symbols)
        self.min_len = int(min_len)
        self.max_len = int(max_len)
        self.transform = transform
        self.seed = int(seed)
        # The "dictionary": symbol s -> mapping[s] (only used by "translate").
        self.mapping = np.random.default_rng(self.seed).permutation(self.num_symbols)
        self.rng = np.random.default_rng(self.seed + 1)

    @property
    def vocab_size(self):
        """Number of token ids: PAD, BOS, EOS and the symbols."""
        return NUM_SPECIAL + self.num_symbols

    def target_of(self, source):
        """The target symbol sequence (1-D int array) for one source sequence."""
        source = np.asarray(source, dtype=np.int64)
        sym = source - NUM_SPECIAL                       # symbol numbers 0 .. S-1
        if sym.size and (sym.min() < 0 or sym.max() >= self.num_symbols):
            raise ValueError("SequenceTask.target_of: source contains ids outside the "
                             "symbols %d..%d" % (NUM_SPECIAL, self.vocab_size - 1))
        if self.transform == "copy":
            out = sym
        elif self.transform == "reverse":
            out = sym[::-1]
        else:  # translate
            out = self.mapping[sym[::-1]]
        return out + NUM_SPECIAL

    def batch(self, batch_size, length=None, rng=None):
        """Draw a batch; returns ``(src, tgt_in, tgt_out, src_len)`` (see module doc).

        ``length`` fixes every source length (for accuracy-vs-length curves);
        by default lengths are drawn uniformly from [min_len, max_len].
        ``rng`` (a numpy Generator) replaces the task's own stream, e.g. for a
        fixed validation set.
        """
        rng = self.rng if rng is None else rng
        B = int(batch_size)
        if B < 1:
            raise ValueError("SequenceTask.batch: batch_size must be >= 1, got %r" % (batch_size,))
        if length is None:
            lens = rng.integers(self.min_len, self.max_len + 1, size=B)
        else:
            if int(length) < 1:
                raise ValueError("SequenceTask.batch: length must be >= 1, got %r" % (length,))
            lens = np.full(B, int(length))
        Ls = int(lens.max())
        Lt = Ls + 1                                       # the target plus BOS / EOS
        src = np.full((B, Ls), PAD, dtype=np.int64)
        tgt_in = np.full((B, Lt), PAD, dtype=np.int64)
        tgt_out = np.full((B, Lt), PAD, dtype=np.int64)
        for b, n in enumerate(lens):
            s = rng.integers(NUM_SPECIAL, self.vocab_size, size=n)
            y = self.target_of(s)
            src[b, :n] = s
            tgt_in[b, 0] = BOS
            tgt_in[b, 1:n + 1] = y
            tgt_out[b, :n] = y
            tgt_out[b, n] = EOS
        return src, tgt_in, tgt_out, lens.astype(np.int64)


def strip_special(ids):
    """Cut a 1-D id sequence at its first EOS and drop PAD/BOS: the symbols."""
    out = []
    for t in np.asarray(ids).tolist():
        if t == EOS:
            break
        if t >= NUM_SPECIAL:
            out.append(t)
    return out


def token_accuracy(pred, tgt_out):
    """Fraction of non-PAD target positions where ``pred`` (B, Lt) equals ``tgt_out``."""
    pred = np.asarray(pred)
    tgt_out = np.asarray(tgt_out)
    L = min(pred.shape[1], tgt_out.shape[1])
    keep = tgt_out[:, :L] != PAD
    if not keep.any():
        raise ValueError("token_accuracy: the targets are all PAD")
    return float((pred[:, :L] == tgt_out[:, :L])[keep].mean())


def sequence_accuracy(pred, tgt_out):
    """Fraction of rows whose predicted symbols (up to EOS) equal the target's exactly."""
    pred = np.asarray(pred)
    tgt_out = np.asarray(tgt_out)
    if pred.shape[0] != tgt_out.shape[0]:
        raise ValueError("sequence_accuracy: %d predictions for %d targets"
                         % (pred.shape[0], tgt_out.shape[0]))
    hits = [strip_special(p) == strip_special(t) for p, t in zip(pred, tgt_out)]
    return float(np.mean(hits))


def accuracy_by_length(model, task, lengths, num_examples=100, seed=0):
    """Greedy-decoding accuracy of a seq2seq model for each source length.

    model: anything with ``translate(src, src_len=...) -> (ids, weights)``
    (e.g. :class:`tinylm.models.seq2seq.Seq2Seq`); task: a SequenceTask;
    lengths: the source lengths to test (they may exceed the training range).
    The test examples come from their own generator (``seed``), not the
    task's training stream.  Returns {length: (sequence accuracy, token accuracy)}.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for n in lengths:
        src, _, tgt_out, src_len = task.batch(num_examples, length=int(n), rng=rng)
        pred, _ = model.translate(src, src_len=src_len)
        out[int(n)] = (sequence_accuracy(pred, tgt_out), token_accuracy(pred, tgt_out))
    return out
