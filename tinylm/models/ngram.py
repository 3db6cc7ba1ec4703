"""A count-based n-gram language model: the statistical baseline (lesson 01_1).

A language model gives the probability of a token sequence.  By the chain
rule of probability, exactly::

    P(w_1 .. w_N) = P(w_1) * P(w_2 | w_1) * ... * P(w_N | w_1 .. w_{N-1})

An n-gram model makes one simplifying (Markov) assumption: a token depends
only on the previous ``n - 1`` tokens, its *context* h::

    P(w_i | w_1 .. w_{i-1})  ~=  P(w_i | w_{i-n+1} .. w_{i-1})

and estimates that from counts ``c(.)`` in a training text.  The plain
maximum-likelihood estimate is ``P(w | h) = c(h w) / c(h)``.  It fails on
new text: any n-gram never seen in training gets probability 0, so one
unseen n-gram makes the whole sequence impossible (log-probability -inf,
perplexity infinite), and the longer n, the more n-grams are unseen.
Smoothing moves some probability mass to the unseen ones.  Three choices,
``smoothing=``:

``"mle"``
    ``c(h w) / c(h')`` -- no smoothing (to *see* the failure).
``"add_k"``
    ``(c(h' w) + k) / (c(h') + k V)`` (Laplace for k = 1): every token of
    the vocabulary V gets at least ``k / (c(h') + k V)``.
``"kneser_ney"`` (default)
    interpolated Kneser-Ney with one absolute discount D (0.75): subtract
    D from every seen count and give the freed mass to a lower-order
    distribution, recursively down to uniform::

        P(w | h) = max(c(h w) - D, 0) / c(h)
                   + D * N1+(h .) / c(h) * P_lower(w | h without its first token)

    where ``N1+(h .)`` is the number of distinct tokens seen after h.  The
    lower orders use *continuation counts* ``N1+(. h w)`` (in how many
    distinct contexts h w was seen) instead of ``c(h w)``: a token that is
    frequent but only ever after one word (``Francisco`` after ``San``)
    should not be a likely guess after an unseen context.  At the bottom,
    ``P_lower`` of the empty context interpolates with the uniform 1 / V,
    so every token has probability > 0.

Unseen contexts.  For ``"mle"`` and ``"add_k"`` a context h never seen in
training is *backed off*: the longest suffix h' of h that was seen is used
instead (the empty context always is).  Kneser-Ney needs no special rule: a
level whose context count is 0 passes everything to the level below.  Each
rule gives a proper distribution over the V tokens for every context
(tested).  A context shorter than ``order - 1`` (the first tokens of a text)
is answered by the model of that shorter order: its top level uses the raw
counts of the shorter n-grams.

The model fits the :class:`~tinylm.layers.base.Layer` interface of the
other models (``forward(idx) -> (B, T, V)`` log-probabilities used as
logits, ``loss(x, y)``), so ``tinylm.generate`` and evaluation code work on
it; it has no parameters, ``fit`` counts instead of gradient training, and
``backward`` does nothing.  ``state_dict`` holds the n-gram count tables as
integer arrays (for checkpoints).
"""

import dataclasses
import math
from collections import Counter, defaultdict

import numpy as np

from tinylm.layers.base import Layer

__all__ = ["NGramConfig", "NGramLM", "SMOOTHINGS"]

SMOOTHINGS = ("mle", "add_k", "kneser_ney")


@dataclasses.dataclass
class NGramConfig:
    """order: n (1 = unigram, 2 = bigram, ...); vocab_size: V (ids 0..V-1);
    k: add-k pseudo-count; discount: Kneser-Ney's D in (0, 1)."""
    vocab_size: int = 256
    order: int = 3
    smoothing: str = "kneser_ney"
    k: float = 1.0
    discount: float = 0.75

    @property
    def block_size(self):
        """The longest context the model looks at (generation crops to it)."""
        return max(1, self.order - 1)

    def validate(self):
        if not isinstance(self.order, int) or self.order < 1:
            raise ValueError("n-gram order must be an integer >= 1, got %r" % (self.order,))
        if not isinstance(self.vocab_size, int) or self.vocab_size < 1:
            raise ValueError("vocab_size must be an integer >= 1, got %r" % (self.vocab_size,))
        if self.smoothing not in SMOOTHINGS:
            raise ValueError("smoothing must be one of %s, got %r"
                             % (", ".join(SMOOTHINGS), self.smoothing))
        if not self.k > 0:
            raise ValueError("add-k needs k > 0, got %r (k = 0 is smoothing='mle')" % (self.k,))
        if not 0 < self.discount < 1:
            raise ValueError("the Kneser-Ney discount must be in (0, 1), got %r"
                             % (self.discount,))


class _Table:
    """Counts of n-grams of one length n, grouped by context.

    next[h] = {w: count of (h, w)}   for contexts h of length n - 1
    total[h] = sum of next[h]        (the denominator c(h) or N1+(. h .))
    types[h] = len(next[h])          (N1+(h .), distinct followers)
    """

    def __init__(self, counts):
        self.next = defaultdict(dict)
        for gram, c in counts.items():
            self.next[gram[:-1]][gram[-1]] = c
        self.next = dict(self.next)
        self.total = {h: sum(f.values()) for h, f in self.next.items()}

    def get(self, h, w):
        f = self.next.get(h)
        return 0 if f is None else f.get(w, 0)

    def vector(self, h, V):
        """(V,) float array of the counts after h."""
        v = np.zeros(V)
        f = self.next.get(h)
        if f:
            v[np.fromiter(f.keys(), dtype=np.int64, count=len(f))] = \
                np.fromiter(f.values(), dtype=np.float64, count=len(f))
        return v


class NGramLM(Layer):
    """Count-based n-gram LM over token ids.

    ``NGramLM(order=3, smoothing="kneser_ney")`` or ``NGramLM(NGramConfig(...))``;
    then ``fit(ids)``.  ``vocab_size`` may be left to ``fit`` (max id + 1).
    """

    def __init__(self, config=None, **kwargs):
        super().__init__()
        if config is None:
            vocab_size = kwargs.pop("vocab_size", None)
            config = NGramConfig(**kwargs, vocab_size=vocab_size or 1)
            self._vocab_from_data = vocab_size is None
        else:
            if kwargs:
                raise TypeError("give either a config or keyword arguments, not both")
            self._vocab_from_data = False
        config.validate()
        self.config = config
        self.tables = None   # raw[n], n = 1..order: _Table of n-gram counts
        self.cont = None     # cont[n], n = 1..order-1: continuation counts (Kneser-Ney)
        self._cache = None

    @property
    def order(self):
        return self.config.order

    @property
    def vocab_size(self):
        return self.config.vocab_size

    # ------------------------------------------------------------------ fit
    def fit(self, ids, vocab_size=None):
        """Count every n-gram (n = 1 .. order) of the token stream ``ids`` (N,)."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError("fit needs a non-empty 1-D token stream, got shape %s" % (ids.shape,))
        if ids.dtype.kind not in "iu" or ids.min() < 0:
            raise ValueError("token ids must be non-negative integers")
        if vocab_size is not None:
            self.config.vocab_size = int(vocab_size)
        elif self._vocab_from_data:
            self.config.vocab_size = int(ids.max()) + 1
        if ids.max() >= self.vocab_size:
            raise ValueError("token id %d at position %d is outside vocab_size %d"
                             % (ids.max(), int(np.argmax(ids)), self.vocab_size))
        seq = ids.tolist()
        counts = {n: Counter(zip(*(seq[i:] for i in range(n))))
                  for n in range(1, self.order + 1)}
        self._build(counts)
        return self

    def _build(self, counts):
        """counts[n]: Counter of n-gram tuples -> count; builds all tables."""
        self.tables = {n: _Table(counts[n]) for n in range(1, self.order + 1)}
        # Continuation count of the n-gram g = (h, w): in how many distinct
        # contexts u the (n+1)-gram (u, h, w) was seen.
        self.cont = {}
        for n in range(1, self.order):
            cc = Counter(gram[1:] for gram in counts[n + 1])
            self.cont[n] = _Table(cc)

    def _check_fitted(self):
        if self.tables is None:
            raise RuntimeError("this NGramLM has no counts yet: call fit(ids) first")

    def _context(self, context):
        """The last order-1 tokens of context, as a tuple of ints, checked."""
        ctx = tuple(int(t) for t in list(context)[max(0, len(context) - self.order + 1):])
        for t in ctx:
            if not 0 <= t < self.vocab_size:
                raise ValueError("context token %d is outside vocab_size %d"
                                 % (t, self.vocab_size))
        return ctx

    # ----------------------------------------------------------- probability
    def _backoff_context(self, h):
        """Longest suffix of h seen in training (for mle / add_k)."""
        while h and self.tables[len(h) + 1].total.get(h, 0) == 0:
            h = h[1:]
        return h

    def prob(self, context, token):
        """P(token | context), using the last order-1 tokens of the context."""
        self._check_fitted()
        h = self._context(context)
        w = int(token)
        if not 0 <= w < self.vocab_size:
            raise ValueError("token %d is outside vocab_size %d" % (w, self.vocab_size))
        V = self.vocab_size
        c = self.config
        if c.smoothing in ("mle", "add_k"):
            h = self._backoff_context(h)
            table = self.tables[len(h) + 1]
            count, total = table.get(h, w), table.total.get(h, 0)
            if c.smoothing == "mle":
                return count / total
            return (count + c.k) / (total + c.k * V)
        # Kneser-Ney, from the uniform distribution up to the full context.
        D = c.discount
        p = 1.0 / V
        for n in range(1, len(h) + 2):              # n-gram length at this level
            table = self.tables[n] if n == len(h) + 1 else self.cont[n]
            hn = h[len(h) - n + 1:]                 # the last n-1 context tokens
            total = table.total.get(hn, 0)
            if total == 0:
                continue                            # unseen context: keep the lower level
            types = len(table.next[hn])
            p = max(table.get(hn, w) - D, 0.0) / total + D * types / total * p
        return p

    def logprob(self, context, token):
        """log P(token | context), natural log (-inf if the probability is 0)."""
        p = self.prob(context, token)
        return math.log(p) if p > 0 else -math.inf

    def distribution(self, context):
        """P(. | context) as a (V,) float64 array summing to 1."""
        self._check_fitted()
        h = self._context(context)
        V = self.vocab_size
        c = self.config
        if c.smoothing in ("mle", "add_k"):
            h = self._backoff_context(h)
            table = self.tables[len(h) + 1]
            counts, total = table.vector(h, V), table.total.get(h, 0)
            if c.smoothing == "mle":
                return counts / total
            return (counts + c.k) / (total + c.k * V)
        D = c.discount
        p = np.full(V, 1.0 / V)
        for n in range(1, len(h) + 2):
            table = self.tables[n] if n == len(h) + 1 else self.cont[n]
            hn = h[len(h) - n + 1:]
            total = table.total.get(hn, 0)
            if total == 0:
                continue
            types = len(table.next[hn])
            p = np.maximum(table.vector(hn, V) - D, 0.0) / total + D * types / total * p
        return p

    def sequence_logprob(self, ids):
        """log P(w_1 .. w_N) by the chain rule: sum_i log P(w_i | w_<i)."""
        ids = [int(t) for t in ids]
        return sum(self.logprob(ids[:i], ids[i]) for i in range(len(ids)))

    def perplexity(self, ids):
        """exp(-(1/N) log P(w_1 .. w_N)): the effective number of equally likely
        choices per token (V for a uniform guess; inf if some token has P = 0)."""
        ids = list(ids)
        if not ids:
            raise ValueError("perplexity of an empty sequence is undefined")
        lp = self.sequence_logprob(ids)
        return math.exp(-lp / len(ids)) if lp > -math.inf else math.inf

    def unseen_fraction(self, ids):
        """Fraction of the positions of ``ids`` whose n-gram (the token with its
        full context of order-1 tokens) never occurred in training: the share of
        a text on which the unsmoothed counts have nothing to say.  Grows
        quickly with the order -- the reason counts fail (lesson 01_1)."""
        self._check_fitted()
        ids = [int(t) for t in ids]
        n = self.order
        grams = [tuple(ids[i - n + 1:i + 1]) for i in range(n - 1, len(ids))]
        if not grams:
            raise ValueError("need at least order = %d tokens, got %d" % (n, len(ids)))
        table = self.tables[n]
        return sum(table.get(g[:-1], g[-1]) == 0 for g in grams) / len(grams)

    # --------------------------------------------- the common model interface
    def forward(self, idx):
        """idx (B, T) ints -> (B, T, V) log P(next | idx[b, :t+1]) (use as logits).

        Position t sees the last order-1 tokens of its row up to and including t.
        """
        idx = np.asarray(idx)
        if idx.ndim != 2:
            raise ValueError("forward expects (B, T) token ids, got shape %s" % (idx.shape,))
        B, T = idx.shape
        out = np.empty((B, T, self.vocab_size))
        with np.errstate(divide="ignore"):           # log 0 = -inf under mle
            for b in range(B):
                row = idx[b].tolist()
                for t in range(T):
                    out[b, t] = np.log(self.distribution(row[:t + 1]))
        return out

    def loss(self, x, y):
        """Mean negative log-likelihood (nats/token) of targets y (B, T) after x (B, T)."""
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.ndim != 2:
            raise ValueError("loss expects x and y of the same (B, T) shape, got %s and %s"
                             % (x.shape, y.shape))
        total = 0.0
        for b in range(x.shape[0]):
            row = x[b].tolist()
            for t in range(x.shape[1]):
                total -= self.logprob(row[:t + 1], y[b, t])
        return total / y.size

    def backward(self, dout=None):
        """Nothing to do: an n-gram model has no parameters (``fit`` counts)."""
        return None

    # ----------------------------------------------------------- state
    def state_dict(self):
        """The raw count tables as arrays: ``ngrams<n>`` (M, n) int64 and ``counts<n>`` (M,)."""
        self._check_fitted()
        state = {}
        for n, table in self.tables.items():
            grams = [h + (w,) for h, f in table.next.items() for w in f]
            counts = [table.next[g[:-1]][g[-1]] for g in grams]
            state["ngrams%d" % n] = np.array(grams, dtype=np.int64).reshape(len(grams), n)
            state["counts%d" % n] = np.array(counts, dtype=np.int64)
        return state

    def load_state_dict(self, state, strict=True):
        counts = {}
        for n in range(1, self.order + 1):
            try:
                grams, cs = np.asarray(state["ngrams%d" % n]), np.asarray(state["counts%d" % n])
            except KeyError as e:
                raise KeyError("n-gram state is missing %s (order %d model)" % (e, self.order))
            if grams.ndim != 2 or grams.shape[1] != n or cs.shape != (grams.shape[0],):
                raise ValueError("n-gram state for n=%d has shapes %s and %s"
                                 % (n, grams.shape, cs.shape))
            if grams.size and (grams.min() < 0 or grams.max() >= self.vocab_size):
                raise ValueError("n-gram state for n=%d has ids outside vocab_size %d"
                                 % (n, self.vocab_size))
            counts[n] = Counter({tuple(g): int(c) for g, c in zip(grams.tolist(), cs.tolist())})
        self._build(counts)
        return self

    def __repr__(self):
        c = self.config
        return "NGramLM(order=%d, smoothing=%r, vocab_size=%d)" % (c.order, c.smoothing,
                                                                   c.vocab_size)
