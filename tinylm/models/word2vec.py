"""word2vec: skip-gram with negative sampling (seed 002 section 3, 词向量化).

A word w gets two vectors: v_w when it is the centre word (``in_embed``) and
u_w when it is a context word (``out_embed``).  Skip-gram asks, for each pair
(c, o) of a centre word and a word o at most ``window`` positions away, "is o
a real context of c?"  -- yes for o, no for K words drawn at random (negative
samples n_1..n_K, drawn from the unigram distribution raised to 3/4).
With sigma the logistic function and B pairs in a batch::

    v   = V_in[c]                     (B, D)      centre vectors
    u   = U_out[[o, n_1..n_K]]        (B, 1+K, D) the true context first, then negatives
    s   = u . v                       (B, 1+K)    scores
    y   = [+1, -1, ..., -1]           (1+K,)      the sign of each column
    L   = (1/B) sum_b sum_j -log sigma(y_j s_bj)  = (1/B) sum softplus(-y s)

Backward (d softplus(x)/dx = sigma(x))::

    ds  = -y * sigma(-y s) / B        (B, 1+K)
    du  = ds[..., None] * v[:, None]  (B, 1+K, D)  scattered into U_out's rows
    dv  = sum_j ds_bj u_bj            (B, D)       scattered into V_in's rows

After training, V_in's rows are the word vectors; words used in similar
contexts get vectors with a high cosine similarity, and some relations are
roughly directions (the analogy "a is to b as c is to ?": the word nearest to
v_b - v_a + v_c).  :func:`train_word2vec` trains on a text with plain SGD, as
the original (Mikolov et al. 2013): frequent words are subsampled, the
learning rate decays linearly to zero.  :class:`WordVectors` answers
nearest-neighbour and analogy queries.

Shapes: batch B, negatives K, vocabulary V, vector size D.
"""

from dataclasses import dataclass

import numpy as np

from tinylm.layers.activations import sigmoid
from tinylm.layers.base import Layer
from tinylm.layers.checks import Ids, Scalar, checked
from tinylm.layers.core import Embedding

__all__ = ["SkipGramConfig", "SkipGram", "skipgram_pairs", "NegativeSampler",
           "WordVectors", "train_word2vec"]


@dataclass
class SkipGramConfig:
    vocab_size: int = 1000    # V
    dim: int = 50             # D, the size of a word vector
    seed: int = 0
    dtype: str = "float32"


class SkipGram(Layer):
    """Skip-gram with negative sampling.  Children: in_embed, out_embed (Embedding(V, D)).

    forward(center (B,), context (B,), negatives (B, K)) int ids -> loss, 0-d array.
    backward(dout=1.0) -> None (ids have no gradient); adds into both tables.
    """

    def __init__(self, config=None):
        super().__init__()
        self.config = c = SkipGramConfig() if config is None else config
        if c.vocab_size < 1 or c.dim < 1:
            raise ValueError("SkipGram: vocab_size and dim must be >= 1, got %d, %d"
                             % (c.vocab_size, c.dim))
        rng = np.random.default_rng(c.seed)
        std = 0.5 / np.sqrt(c.dim)
        self.add_layer("in_embed", Embedding(c.vocab_size, c.dim, rng=rng, dtype=c.dtype,
                                             init_std=std))
        self.add_layer("out_embed", Embedding(c.vocab_size, c.dim, rng=rng, dtype=c.dtype,
                                              init_std=std))
        self._cache = None

    @property
    def vocab_size(self):
        return self.config.vocab_size

    def _same_batch(self, where, a):
        B = (a["center"].shape[0], a["context"].shape[0], a["negatives"].shape[0])
        if len(set(B)) != 1:
            raise ValueError("%s: center, context and negatives must have the same batch "
                             "size, got %d, %d, %d" % ((where,) + B))

    @checked(center=Ids("vocab_size", ndim=1), context=Ids("vocab_size", ndim=1),
             negatives=Ids("vocab_size", ndim=2), also=_same_batch)
    def forward(self, center, context, negatives):
        B, K = negatives.shape
        v = self.layers["in_embed"].forward(center)                          # (B, D)
        targets = np.concatenate([context[:, None], negatives], axis=1)      # (B, 1+K)
        u = self.layers["out_embed"].forward(targets)                        # (B, 1+K, D)
        s = np.einsum("bjd,bd->bj", u, v)                                    # (B, 1+K)
        y = np.ones(K + 1, s.dtype)
        y[1:] = -1                                                           # (1+K,)
        loss = np.logaddexp(0, -y * s).sum() / B                             # softplus(-y s)
        self._cache = (v, u, s, y)
        return np.asarray(loss, dtype=s.dtype)

    @checked(dout=Scalar())
    def backward(self, dout=1.0):
        v, u, s, y = self._cache
        B = s.shape[0]
        # forward: L = sum softplus(-y s) / B  ->  ds = -y sigma(-y s) / B
        ds = -y * sigmoid(-y * s) * (dout / B)                               # (B, 1+K)
        # forward: s = u . v  ->  du = ds v,  dv = sum_j ds_j u_j
        du = ds[..., None] * v[:, None, :]                                   # (B, 1+K, D)
        dv = np.einsum("bj,bjd->bd", ds, u)                                  # (B, D)
        # forward: u = U_out[targets], v = V_in[center]  ->  scatter-add
        self.layers["out_embed"].backward(du)
        self.layers["in_embed"].backward(dv)
        return None

    @property
    def vectors(self):
        """The word vectors: the centre table V_in (V, D)."""
        return self.layers["in_embed"].params["weight"]


def skipgram_pairs(ids, window):
    """Every (centre, context) pair at distance 1..window in a 1-D id array.

    Returns two int64 arrays (P,): centres and their contexts.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if window < 1:
        raise ValueError("skipgram_pairs: window must be >= 1, got %r" % (window,))
    c, o = [], []
    for d in range(1, int(window) + 1):
        if d >= ids.size:
            break
        c += [ids[:-d], ids[d:]]            # word t with the word d later, and the reverse
        o += [ids[d:], ids[:-d]]
    if not c:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(c), np.concatenate(o)


class NegativeSampler:
    """Draws word ids with probability count^power / sum(count^power) (power 3/4)."""

    def __init__(self, counts, power=0.75):
        counts = np.asarray(counts, dtype=np.float64)
        if counts.ndim != 1 or counts.size == 0 or (counts < 0).any() or counts.sum() <= 0:
            raise ValueError("NegativeSampler: counts must be a non-empty 1-D array of "
                             "non-negative numbers with a positive sum")
        p = counts ** power
        self.cdf = np.cumsum(p / p.sum())

    def sample(self, shape, rng):
        """Ids of the given shape, drawn by inverse CDF."""
        ids = np.searchsorted(self.cdf, rng.random(shape) * self.cdf[-1], side="right")
        return np.minimum(ids, self.cdf.size - 1).astype(np.int64)


class WordVectors:
    """Words and their vectors, for nearest-neighbour and analogy queries (cosine).

    words: list of V strings; vectors: (V, D).  ``skip`` names words never
    returned as answers (e.g. ``<unk>``).
    """

    def __init__(self, words, vectors, skip=("<unk>",)):
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise ValueError("WordVectors: %d words but vectors of shape %s"
                             % (len(words), vectors.shape))
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.vectors = vectors
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.unit = vectors / np.maximum(norms, 1e-12)               # rows of length 1
        self.skip = {self.index[w] for w in skip if w in self.index}

    def _id(self, word):
        if word not in self.index:
            raise KeyError("WordVectors: %r is not in the vocabulary (%d words)"
                           % (word, len(self.words)))
        return self.index[word]

    def __contains__(self, word):
        return word in self.index

    def vector(self, word):
        return self.vectors[self._id(word)]

    def similarity(self, a, b):
        """Cosine similarity of two words' vectors."""
        return float(self.unit[self._id(a)] @ self.unit[self._id(b)])

    def _top(self, query, exclude, k):
        q = query / max(np.linalg.norm(query), 1e-12)
        sims = self.unit @ q                                          # (V,) cosines
        sims[list(set(exclude) | self.skip)] = -np.inf
        order = np.argsort(-sims, kind="stable")[:k]
        return [(self.words[i], float(sims[i])) for i in order if np.isfinite(sims[i])]

    def nearest(self, word, k=5):
        """The k words with the most similar vectors: [(word, cosine), ...], best first."""
        i = self._id(word)
        return self._top(self.unit[i], [i], k)

    def analogy(self, a, b, c, k=1):
        """"a is to b as c is to ?": the words nearest to b - a + c (unit vectors),
        a, b and c excluded (as in word2vec's demo).  [(word, cosine), ...]."""
        ia, ib, ic = self._id(a), self._id(b), self._id(c)
        return self._top(self.unit[ib] - self.unit[ia] + self.unit[ic], [ia, ib, ic], k)


def train_word2vec(text, dim=50, window=2, negatives=5, min_count=3, steps=3000,
                   batch_size=256, lr=5.0, subsample=1e-3, lowercase=True, seed=0,
                   log=None):
    """Train skip-gram with negative sampling on a text; returns (WordVectors, model, losses).

    Words: :class:`tinylm.tokenizers.WordTokenizer` (words seen at least
    ``min_count`` times; rarer ones become ``<unk>`` and are dropped from the
    pairs).  Each pass over the text subsamples frequent words (a word of
    frequency f is kept with probability min(1, sqrt(t/f) + t/f), t =
    ``subsample``; None = keep all), forms all pairs within ``window`` and
    shuffles them.  Each step takes ``batch_size`` pairs and ``negatives``
    noise words per pair and does plain SGD, p -= lr_t * grad, with lr_t
    decaying linearly from ``lr`` to 0; since the loss is a mean over the
    batch, ``lr`` is per batch (5.0 with 256 pairs: ~0.02 per pair, the original's
    0.025).  ``log(step, loss)`` is called every 10% of the run.
    """
    from tinylm.tokenizers import WordTokenizer
    rng = np.random.default_rng(seed)
    tok = WordTokenizer.train(text, min_count=min_count, lowercase=lowercase)
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    ids = ids[ids != tok.unk_id]                                     # rare words are dropped
    if ids.size < 2 or tok.vocab_size < 3:
        raise ValueError("train_word2vec: the text has too few words seen min_count=%d "
                         "times (%d words, vocabulary %d)" % (min_count, ids.size,
                                                              tok.vocab_size))
    counts = np.bincount(ids, minlength=tok.vocab_size).astype(np.float64)
    sampler = NegativeSampler(counts)
    model = SkipGram(SkipGramConfig(vocab_size=tok.vocab_size, dim=dim, seed=seed))
    freq = counts / counts.sum()
    keep_p = (np.ones_like(freq) if subsample is None else
              np.minimum(1.0, np.sqrt(subsample / np.maximum(freq, 1e-12))
                         + subsample / np.maximum(freq, 1e-12)))
    losses, pairs, pos = [], None, 0
    for step in range(int(steps)):
        if pairs is None or pos + batch_size > pairs[0].size:       # a new pass over the text
            kept = ids[rng.random(ids.size) < keep_p[ids]]
            c, o = skipgram_pairs(kept, window)
            order = rng.permutation(c.size)
            pairs, pos = (c[order], o[order]), 0
            if c.size < batch_size:
                raise ValueError("train_word2vec: only %d pairs, fewer than batch_size=%d"
                                 % (c.size, batch_size))
        c, o = pairs[0][pos:pos + batch_size], pairs[1][pos:pos + batch_size]
        pos += batch_size
        neg = sampler.sample((batch_size, negatives), rng)
        model.zero_grad()
        loss = float(model.forward(c, o, neg))
        model.backward()
        rate = lr * (1 - step / steps)
        for p, g in model.parameters():
            p -= rate * g
        losses.append(loss)
        if log is not None and (step + 1) % max(1, steps // 10) == 0:
            log(step + 1, float(np.mean(losses[-max(1, steps // 10):])))
    return WordVectors(tok.itos, model.vectors.copy()), model, losses
