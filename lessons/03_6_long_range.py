"""Lesson 03_6 - long-range dependencies: RNN vs LSTM vs Transformer, accuracy vs distance.

Accompanies: 000 §3.2 变压器（Transformer）, 000 §2.3 大型语言模型, 000 §3.1 递归神经网络（RNN）.

000 §3.2 says a Transformer handles long-range dependencies better than an RNN, but shows nothing.
You measure it: three language models of about the same size - a tanh RNN, an LSTM and a
one-layer GPT - learn one task in which the token they must output lies k positions back, for
several k. Accuracy against k is the plot; the checks hold the claim to it. The lesson also
corrects two things in 000 §2.3 and its headings (the names of the models, and what LLMs are
built on today).
"""

# %%
import time

import numpy as np

from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models import build_model
from tinylm.optim import Adam, clip_grad_norm

L = Lesson(__doc__)
plt = matplotlib_agg()

# %%
L.step("1. The task: output the token that lies k positions back")
# A sequence is   v  d d d ... d  ?     (length k + 1)
#   v: one of 8 "value" tokens (0..7), the one to recall;
#   d: k - 1 distractor tokens (8..15), random;
#   ?: the query token (16). At the query the model must output v, which is k positions back.
# It is an ordinary next-token language model: x is the sequence, y is -100 (not counted by the
# cross-entropy, tinylm's ignore_index) everywhere except at the query, where it is v.
# Chance is 1 in 8.
N_VAL, N_DIS, Q = 8, 8, 16
VOCAB = 17
IGNORE = -100


def batch(rng, n, k):
    x = rng.integers(N_VAL, N_VAL + N_DIS, size=(n, k + 1))     # (n, k+1) distractors
    v = rng.integers(0, N_VAL, size=n)                           # (n,) values to recall
    x[:, 0], x[:, -1] = v, Q
    y = np.full_like(x, IGNORE)
    y[:, -1] = v                                                 # only the query is scored
    return x, y


x, y = batch(np.random.default_rng(0), 2, 5)
print("k = 5, two sequences:\n x =", x.tolist(), "\n y =", y.tolist())
L.check("the token to output lies exactly k positions before the query",
        bool(np.all(x[:, -1 - 5] == y[:, -1])))

# %%
L.step("2. Three models of about the same size")
# All three read the sequence left to right and are trained the same way (Adam, clipping, the
# same batches). The GPT sees every earlier position through attention; the RNN and the LSTM
# must carry v in their state through k - 1 updates.
KS = L.pick([2, 5, 10, 20, 40], [2, 24])
STEPS = L.pick(500, 250)
BATCH = 32


def make(kind, seed):
    if kind == "RNN (tanh)":
        return build_model("rnn", vocab_size=VOCAB, emb_dim=16, hidden=104, seed=seed)
    if kind == "LSTM":
        return build_model("lstm", vocab_size=VOCAB, emb_dim=16, hidden=48, seed=seed)
    return build_model("gpt", vocab_size=VOCAB, n_layer=1, n_head=2, d_model=32,
                       block_size=max(KS) + 1, seed=seed)


KINDS = ["RNN (tanh)", "LSTM", "Transformer (1-layer GPT)"]
sizes = {kind: make(kind, 0).num_parameters() for kind in KINDS}
for kind in KINDS:
    print("%-26s %6s parameters" % (kind, "{:,}".format(sizes[kind])))
L.check("the three models are of similar size (largest / smallest < 1.3)",
        max(sizes.values()) / min(sizes.values()) < 1.3,
        ", ".join("%s %d" % (k, v) for k, v in sizes.items()))

# %%
L.step("3. Train each model for each k; test on fresh sequences")


def train_and_test(kind, k, seed):
    model = make(kind, seed)
    params = model.parameters()
    opt = Adam(params, lr=3e-3)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(STEPS):
        xb, yb = batch(rng, BATCH, k)
        model.zero_grad()
        model.loss(xb, yb)
        model.backward()
        clip_grad_norm(params, 1.0)
        opt.step()
    model.eval()
    xt, yt = batch(np.random.default_rng(10_000 + seed), 1000, k)
    pred = model.forward(xt)[:, -1].argmax(-1)                      # (1000,)
    return float(np.mean(pred == yt[:, -1]))


acc = {kind: [] for kind in KINDS}
seconds = {kind: 0.0 for kind in KINDS}
for k in KS:
    for kind in KINDS:
        t0 = time.perf_counter()
        acc[kind].append(train_and_test(kind, k, L.seed))
        seconds[kind] += time.perf_counter() - t0
    print("k = %2d: " % k + "   ".join("%s %3.0f%%" % (kind.split(" ")[0], 100 * acc[kind][-1])
                                    for kind in KINDS))
print("training time over all k: " + ", ".join("%s %.1f s" % (kind.split(" ")[0], s)
                                               for kind, s in seconds.items()))

fig, ax = plt.subplots(figsize=(7, 4.5))
for kind, marker in zip(KINDS, "osD"):
    ax.plot(KS, [100 * a for a in acc[kind]], marker + "-", label="%s, %s params"
            % (kind, "{:,}".format(sizes[kind])))
ax.axhline(100 / N_VAL, color="gray", ls=":", label="chance (1 in 8)")
ax.set_xlabel("k: how far back the needed token lies")
ax.set_ylabel("test accuracy (%%) after %d Adam steps" % STEPS)
ax.set_ylim(0, 105)
ax.set_title("Long-range dependency: same task, same budget")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
L.savefig(fig, "accuracy_vs_distance.png")

far = -1
gpt_acc, rnn_acc, lstm_acc = (acc[k] for k in ("Transformer (1-layer GPT)", "RNN (tanh)",
                                               "LSTM"))
L.check("every model solves the short dependency (k = 2, >= 90%)",
        min(a[0] for a in acc.values()) >= 0.9,
        ", ".join("%.2f" % a[0] for a in acc.values()))
L.check("the Transformer still solves it at the longest k = %d (>= 90%%)" % KS[far],
        gpt_acc[far] >= 0.9, "%.2f" % gpt_acc[far])
L.check("at k = %d the tanh RNN is at least 30 points below the Transformer" % KS[far],
        gpt_acc[far] - rnn_acc[far] >= 0.3, "%.2f vs %.2f" % (rnn_acc[far], gpt_acc[far]))
L.check("the LSTM does no better than the Transformer at k = %d" % KS[far],
        lstm_acc[far] <= gpt_acc[far] + 1e-9, "%.2f vs %.2f" % (lstm_acc[far], gpt_acc[far]))
print("""
What this shows, and what it does not: with the same size, data and steps, attention reaches
the token k positions back in one step, whatever k, while a recurrent model must keep it in its
state through k - 1 updates, and the gradient that teaches it to do so shrinks with k (lesson
03_1's plot). An LSTM (lesson 03_2) keeps it better than the plain RNN, and with more steps or
a forget-gate bias it can learn long delays too - so "better" here means easier to learn in a
given budget, not impossible for the RNN. The price of attention: the GPT reads a fixed window
(block_size positions) and its cost grows with the square of the context length.""")

# %%
L.step("4. Two corrections to 000 §2.3 and the headings")
# 000 §2.3 says LLMs are "usually based on RNN or Transformer" architectures. Every model the
# documents name (GPT-2, GPT-3, BERT) and today's large models are Transformers; RNN language
# models were the state of the art before 2018 and remain a research line, not the usual base.
# The experiment above is the reason: with attention, distance costs nothing to learn, and all
# positions train in parallel (lesson 03_4), which is what made training on huge corpora feasible.
print("""
Names: 000 writes 递归神经网络 for RNN. 递归神经网络 is the recursive neural network (applied over
a tree, e.g. a parse tree); the recurrent network of 000 §3.1 - the body text itself says 循环 -
is 循环神经网络. And 变压器 is the electrical transformer: the model is called Transformer, left
untranslated, in Chinese texts (as 001 and 004 do).""")

# %%
L.finish()
