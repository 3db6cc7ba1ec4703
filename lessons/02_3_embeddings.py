"""Lesson 02_3 - embeddings: a token id becomes a learned vector.

Accompanies: 001 §3 核心算法原理具体操作步骤 (1. 词嵌入层), 000 §2.3 大型语言模型.

001 §3 says the embedding layer "turns the input text into vectors, each word's position in a
high-dimensional space". You see what that layer computes - a one-hot vector times a matrix, which
is just picking a row - and what its backward pass must do: add each upstream gradient row into
the row it came from (a scatter-add), where the obvious one-liner silently loses repeated tokens.
Then you train a small language model and look at the vectors it learned: which tokens ended up
close together (nearest neighbours) and a 2-D picture of the space.
"""

# %%
import numpy as np

from tinylm.data import BatchSampler, load_corpus, split_train_val
from tinylm.gradcheck import check_layer
from tinylm.layers import Embedding
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models.mlp import MLPConfig, MLPLM
from tinylm.optim import Adam
from tinylm.tokenizers import CharTokenizer

L = Lesson(__doc__)
plt = matplotlib_agg()
rng = np.random.default_rng(L.seed)

# %%
L.step("1. An embedding is one-hot x matrix = a row lookup")
V, D = 10, 4
emb = Embedding(V, D, rng=L.seed, dtype=np.float64)        # weight E: (V, D)
E = emb.params["weight"]
ids = np.array([[2, 5, 2], [7, 2, 0]])                      # (B, T) = (2, 3) token ids
one_hot = np.eye(V)[ids]                                    # (2, 3, V): a 1 at each id
y_matmul = one_hot @ E                                      # (2, 3, D)
y_lookup = emb.forward(ids)                                 # (2, 3, D)  tinylm: E[ids]
print("ids:\n", ids)
print("E[2] =", np.round(E[2], 3), " onehot(2) @ E =", np.round(y_matmul[0, 0], 3))
L.check("Embedding.forward(ids) equals one_hot(ids) @ E exactly",
        np.array_equal(y_lookup, y_matmul))
print("the lookup never builds the (B, T, V) one-hot array: for V = 50,000 that saves\n"
      "50,000 multiply-adds per output number, almost all of them by zero")

# %%
L.step("2. Its backward is a scatter-add")
# forward: y = onehot @ E   ->   dE = onehot^T @ dy: row v of dE is the SUM of dy over every
# position where id v occurs. Token 2 occurs three times above, so it gets three rows.
dy = rng.standard_normal(ids.shape + (D,))                  # a random upstream gradient
dE_true = np.einsum("btv,btd->vd", one_hot, dy)            # onehot^T dy, the definition
dE_wrong = np.zeros_like(E)
dE_wrong[ids] += dy                                         # looks right, is wrong: with repeated
#                                                             ids only ONE of the writes survives
dE_right = np.zeros_like(E)
np.add.at(dE_right, ids, dy)                                # unbuffered: every row is added
emb.zero_grad()
emb.backward(dy)                                            # tinylm.layers.Embedding.backward
print("row 2 of dE: definition %s\n            fancy +=   %s   <- lost two of three rows"
      % (np.round(dE_true[2], 3), np.round(dE_wrong[2], 3)))
L.check("np.add.at (and Embedding.backward) give onehot^T dy; fancy-index += does not",
        np.allclose(dE_right, dE_true) and np.allclose(emb.grads["weight"], dE_true)
        and not np.allclose(dE_wrong, dE_true))
report = check_layer(Embedding(V, D, rng=1), (ids,), max_entries=None)
print(report)
L.check("gradient check of Embedding (float64, random upstream, repeated ids) passes",
        report.ok, "max rel err %.1e" % report.max_error)

# %%
L.step("3. Learn embeddings: train a small character language model")
# tinylm.models.mlp.MLPLM (lesson 02_1): the previous 8 characters' embeddings -> tanh layer ->
# next character. The embeddings start as small random vectors; only the LM objective shapes them.
text = load_corpus("pydoc", max_chars=L.pick(None, 200_000))
tok = CharTokenizer.train(text)
ids_all = np.array(tok.encode(text), dtype=np.int64)
train_ids, val_ids = split_train_val(ids_all, 0.1)
model = MLPLM(MLPConfig(vocab_size=tok.vocab_size, context=8, emb_dim=16, hidden=128,
                        block_size=32, seed=L.seed))
table = model.layers["embed"].params["weight"]              # (V+1, 16); row V is the left pad
table *= 0.1                                                # in place: start nearly neutral
GROUPS = {"digits": "0123456789", "vowels": "aeiou", "consonants": "bcdfghlmnprst",
          "capitals": "ABCDEFIMNPRST", "brackets & punctuation": "()[]{}.,:;"}
group_ids = {g: [tok.stoi[c] for c in cs if c in tok.stoi] for g, cs in GROUPS.items()}


def cosine_table(W):
    """Unit-length rows of an embedding table: W (V, D) -> (V, D)."""
    return W / np.linalg.norm(W, axis=1, keepdims=True)


def mean_cos(W, a, b):
    """Mean cosine similarity between the tokens of two id lists (pairs of distinct ids)."""
    U = cosine_table(W)
    return float(np.mean([U[i] @ U[j] for i in a for j in b if i != j]))


before = {g: mean_cos(table, ii, ii) for g, ii in group_ids.items()}
opt = Adam(model.parameters(), lr=3e-3)
sampler = BatchSampler(train_ids, batch_size=16, block_size=32, seed=L.seed)
steps = L.pick(4000, 500)
for step in range(steps):
    x, y = sampler.next_batch()
    loss = model.loss(x, y)
    model.zero_grad()
    model.backward()
    opt.step()
    if step % (steps // 5) == 0 or step == steps - 1:
        print("step %5d  train loss %.3f nats/char" % (step, loss))

# %%
L.step("4. What the vectors learned: nearest neighbours and a 2-D map")
W = table[:tok.vocab_size].astype(np.float64)               # (V, 16), drop the pad row
U = cosine_table(W)
for c in "a e A 1 ( . :".split():
    sims = U @ U[tok.stoi[c]]                               # cosine similarity to every token
    nearest = [tok.itos[j] for j in np.argsort(-sims) if j != tok.stoi[c]][:6]
    print("nearest to %r: %s" % (c, " ".join(repr(t) for t in nearest)))
after = {g: mean_cos(W, ii, ii) for g, ii in group_ids.items()}
print("%-24s %10s %10s" % ("mean cosine within", "at start", "trained"))
for g in GROUPS:
    print("%-24s %10.2f %10.2f" % (g, before[g], after[g]))
digits_vs_letters = mean_cos(W, group_ids["digits"], group_ids["vowels"] + group_ids["consonants"])
print("digits vs letters: %.2f" % digits_vs_letters)

# 2-D map: project the vectors on their two main directions (PCA via the SVD).
shown = [i for ii in group_ids.values() for i in ii]
Wc = W[shown] - W[shown].mean(axis=0)
_, _, Vt = np.linalg.svd(Wc, full_matrices=False)
xy = Wc @ Vt[:2].T                                          # (n, 2)
fig, ax = plt.subplots(figsize=(7.5, 6))
k = 0
for (g, ii), color in zip(group_ids.items(), plt.cm.tab10.colors):
    pts = xy[k:k + len(ii)]
    ax.scatter(pts[:, 0], pts[:, 1], color=color, label=g, s=18)
    for (px, py), i in zip(pts, ii):
        ax.annotate(tok.itos[i], (px, py), fontsize=11, color=color,
                    xytext=(3, 3), textcoords="offset points")
    k += len(ii)
ax.set_xlabel("principal direction 1")
ax.set_ylabel("principal direction 2")
ax.set_title("Learned character embeddings (16-D, projected to 2-D)")
ax.legend(fontsize=9)
L.savefig(fig, "embeddings_2d.png")

L.check("before training the groups are unrelated (|mean cosine| < 0.15)",
        all(abs(v) < 0.15 for v in before.values()),
        ", ".join("%.2f" % v for v in before.values()))
L.check("after training the digits point the same way (mean cosine > 0.3)",
        after["digits"] > 0.3, "%.2f" % after["digits"])
L.check("digits are far more alike to each other than to letters",
        after["digits"] > digits_vs_letters + 0.3,
        "%.2f vs %.2f" % (after["digits"], digits_vs_letters))

# %%
L.finish()
