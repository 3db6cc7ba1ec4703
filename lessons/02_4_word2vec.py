"""Lesson 02_4 - word2vec: skip-gram with negative sampling, nearest neighbours, analogies.

Accompanies: 002 §3 核心算法原理具体操作步骤 (词向量化), 001 §3 核心算法原理具体操作步骤 (1. 词嵌入层).

002 §3 turns words into vectors (词向量化) before modelling. The classic way to learn such vectors
from raw text alone is word2vec (Mikolov et al. 2013): a word's vector should predict the words
around it. You form the (centre, context) pairs, write the negative-sampling loss and its
backward by hand and check them against tinylm.models.word2vec.SkipGram and finite differences,
train vectors on Python's reference text, and look at nearest neighbours and an analogy or two -
including where they fail on a small corpus.
"""

# %%
import numpy as np

from tinylm.data import load_corpus
from tinylm.models.word2vec import SkipGram, SkipGramConfig, skipgram_pairs, train_word2vec
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.tokenizers import WordTokenizer

L = Lesson(__doc__)
plt = matplotlib_agg()
rng = np.random.default_rng(L.seed)

# %%
L.step("1. Pairs: every word and its neighbours")
# The labels come from the text itself (lesson 01_2): each word c, each word o at most `window`
# positions away gives a pair (c, o) - "o occurs near c".
sentence = "the return value of the function is the value of the last expression"
tok = WordTokenizer.train(sentence)
ids = np.array(tok.encode(sentence))
c, o = skipgram_pairs(ids, window=2)
print("%d words, window 2 -> %d pairs, e.g. %s" % (len(ids), len(c), ", ".join(
    "(%s, %s)" % (tok.itos[a], tok.itos[b]) for a, b in list(zip(c, o))[:6])))
n = len(ids)
L.check("window w gives every word its neighbours at distance 1..w: 2(w n - w(w+1)/2) pairs",
        len(c) == 2 * (2 * n - 3), "%d pairs" % len(c))

# %%
L.step("2. The loss and its backward, by hand")
# v = V_in[c] (centre vector), u_o = U_out[o] (context vector), K random "noise" words n_k:
#   L = -log sigma(u_o . v) - sum_k log sigma(-u_nk . v)
# i.e. "o is a real neighbour" (score up) and "the noise words are not" (scores down). With
# s = u . v and y = +1 for o, -1 for the noise words: L = sum_j softplus(-y_j s_j), and
#   dL/ds_j = -y_j sigma(-y_j s_j);  dL/dv = sum_j dL/ds_j u_j;  dL/du_j = dL/ds_j v.
V, D, B, K = 20, 8, 4, 3
sg = SkipGram(SkipGramConfig(vocab_size=V, dim=D, seed=L.seed, dtype="float64"))
center, context = rng.integers(0, V, B), rng.integers(0, V, B)
neg = rng.integers(0, V, (B, K))
Vin = sg.layers["in_embed"].params["weight"]
Uout = sg.layers["out_embed"].params["weight"]


def loss_by_hand(Vin, Uout):
    v = Vin[center]                                                  # (B, D)
    u = Uout[np.concatenate([context[:, None], neg], 1)]             # (B, 1+K, D)
    s = np.einsum("bjd,bd->bj", u, v)                                # (B, 1+K)
    y = np.array([1.0] + [-1.0] * K)
    return np.logaddexp(0, -y * s).sum() / B, (v, u, s, y)


loss, (v, u, s, y) = loss_by_hand(Vin, Uout)
ds = -y / (1 + np.exp(y * s)) / B                                    # -y sigma(-y s) / B
dVin, dUout = np.zeros_like(Vin), np.zeros_like(Uout)
np.add.at(dVin, center, np.einsum("bj,bjd->bd", ds, u))              # scatter-add (lesson 02_3)
np.add.at(dUout, np.concatenate([context[:, None], neg], 1), ds[..., None] * v[:, None])
sg.zero_grad()
lib_loss = float(sg.forward(center, context, neg))
sg.backward()
g_in, g_out = sg.layers["in_embed"].grads["weight"], sg.layers["out_embed"].grads["weight"]
L.check("the loss by hand equals SkipGram.forward's", abs(loss - lib_loss) < 1e-12)
L.check("the gradients by hand equal SkipGram.backward's",
        np.allclose(dVin, g_in, atol=1e-12) and np.allclose(dUout, g_out, atol=1e-12))
# finite differences on every entry the batch touches
err = 0.0
for table, grad in ((Vin, dVin), (Uout, dUout)):
    for idx in zip(*np.nonzero(grad)):
        old = table[idx]
        table[idx] = old + 1e-6
        lp = loss_by_hand(Vin, Uout)[0]
        table[idx] = old - 1e-6
        lm = loss_by_hand(Vin, Uout)[0]
        table[idx] = old
        num = (lp - lm) / 2e-6
        err = max(err, abs(num - grad[idx]) / max(abs(num) + abs(grad[idx]), 1e-8))
L.check("the gradient matches central differences (float64, rel. err < 1e-6)", err < 1e-6,
        "max rel err %.1e" % err)

# %%
L.step("3. Train word vectors on Python's reference text")
text = load_corpus("pydoc")
steps = L.pick(6000, 2500)
wv, model, losses = train_word2vec(text, dim=50, window=2, negatives=5, min_count=3,
                                   steps=steps, seed=L.seed)
print("%d words seen at least 3 times; %d SGD steps of 256 pairs; loss %.2f -> %.2f"
      % (len(wv.words) if hasattr(wv, "words") else model.config.vocab_size, steps,
         np.mean(losses[:50]), np.mean(losses[-50:])))
fig, ax = plt.subplots(figsize=(6, 3.5))
w = 50
ax.plot(np.convolve(losses, np.ones(w) / w, mode="valid"))
ax.set_xlabel("SGD step")
ax.set_ylabel("negative-sampling loss (mean of %d steps)" % w)
ax.set_title("word2vec on pydoc")
L.savefig(fig, "word2vec_loss.png")
L.check("the loss fell by a third", np.mean(losses[-50:]) < 0.67 * np.mean(losses[:50]),
        "%.2f -> %.2f" % (np.mean(losses[:50]), np.mean(losses[-50:])))

# %%
L.step("4. Nearest neighbours and analogies")
probes = ["true", "list", "function", "integer", "raise", "class"]
near = {}
for p in probes:
    if p in wv:
        near[p] = [x for x, _ in wv.nearest(p, k=5)]
        print("%-10s -> %s" % (p, ", ".join(near[p])))
for a, b, c_ in (("true", "false", "yes"), ("list", "lists", "string"),
                 ("int", "integer", "str")):
    if all(x in wv for x in (a, b, c_)):
        print("%s : %s = %s : %s" % (a, b, c_, wv.analogy(a, b, c_, k=1)[0][0]))
L.check("'false' is among the 5 nearest neighbours of 'true'", "false" in near.get("true", []),
        str(near.get("true")))
L.check("the neighbours of 'list' include another container type",
        bool({"tuple", "dict", "set", "sequence", "string", "dictionary", "lists"}
             & set(near.get("list", []))), str(near.get("list")))
print("""
Analogies are weak here: the famous king - man + woman = queen needs billions of words. What a
small corpus does give is words used in the same places (true/false, list/tuple) close together.
Modern LMs learn such vectors as their first layer (the embedding, lessons 02_3 and 03_4), trained
by next-token prediction instead of this separate objective.""")

# %%
L.finish()
