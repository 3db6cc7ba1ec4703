"""Lesson 04_2 - self-attention, from a weighted sum to softmax(QK^T/sqrt(d))V, and its backward.

Accompanies: 000 §4.1 自注意力机制, 001 §4.2 自注意力机制, 004 数学模型和公式详细讲解举例说明 (自注意力机制).

001 §4.2 writes self-attention as y_i = sum_j W_ij x_j but never says where the weights W come
from; 000 §4.1 only says they come from "a linear transformation" and "a softmax". You fill the
gap: W = softmax of query-key dot products computed FROM the inputs, with learned projections
Q, K, V. You measure why the scores are divided by sqrt(d), build the causal mask a language model
needs, derive the backward pass step by step and check it, assemble 004's multi-head formula with
its output matrix W^O and match it to tinylm's MultiHeadAttention, and train a tiny attention
model whose heat map shows it learned to look exactly where the task requires.
"""

# %%
import math

import numpy as np

from tinylm import kernels
from tinylm.gradcheck import check_layer, numerical_gradient, relative_error
from tinylm.layers import (Embedding, LearnedPositionalEmbedding, Linear, MultiHeadAttention,
                           SoftmaxCrossEntropy, softmax)
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.optim import Adam

L = Lesson(__doc__)
plt = matplotlib_agg()
rng = np.random.default_rng(L.seed)

# %%
L.step("1. y_i = sum_j W_ij x_j: where do the weights come from?")
# In 001 §4.2 the W_ij are not parameters: they are recomputed for every input. Each output y_i
# is a weighted average of ALL inputs x_j, with weights saying how relevant x_j is to position i.
# Relevance = a dot product, turned into weights that are >= 0 and sum to 1 by a softmax:
#     W = softmax(X X^T)   (row-wise)        Y = W X
# A Transformer lets each position play three roles through learned matrices (004):
#     Q = X W_q (what I look for)   K = X W_k (what I contain)   V = X W_v (what I pass on)
#     Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V
T, D = 5, 8
X = rng.standard_normal((T, D))                             # (T, D): 5 token vectors
Wt = softmax(X @ X.T)                                       # (T, T), no parameters at all
Y = Wt @ X                                                  # (T, D): y_i = sum_j W_ij x_j
print("W = softmax(X X^T):\n", np.round(Wt, 3))
L.check("each row of W is a probability distribution (>= 0, sums to 1)",
        np.all(Wt >= 0) and np.allclose(Wt.sum(axis=1), 1))


def attention(q, k, v, causal=False):
    """q (..., Tq, d), k, v (..., Tk, d) -> o (..., Tq, d), P (..., Tq, Tk). NumPy, the formula."""
    d = q.shape[-1]
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(d)           # (..., Tq, Tk) scores
    if causal:
        Tq, Tk = s.shape[-2:]
        future = np.triu(np.ones((Tq, Tk), bool), k=1)      # j > i: a key in the future
        s = np.where(future, -np.inf, s)                    # exp(-inf) = 0 after softmax
    p = softmax(s)                                          # (..., Tq, Tk) weights, rows sum to 1
    return p @ v, p                                         # (..., Tq, d)


W_q, W_k, W_v = (rng.standard_normal((D, D)) / math.sqrt(D) for _ in range(3))
o, P = attention(X @ W_q, X @ W_k, X @ W_v)
o_kernel, _ = kernels.attention((X @ W_q)[None, None], (X @ W_k)[None, None],
                                (X @ W_v)[None, None])
L.check("our four-line attention equals tinylm.kernels.attention",
        np.allclose(o, o_kernel[0, 0], atol=1e-12))

# %%
L.step("2. Why divide by sqrt(d)?")
# If q and k have independent entries of mean 0 and variance 1, q.k is a sum of d such products:
# its variance is d. Unscaled scores grow like sqrt(d), the softmax turns almost one-hot, and its
# gradient P * (dP - rowsum(dP P)) goes to 0. Dividing by sqrt(d) keeps the variance at 1 for
# every d. Measure it:
dims = [4, 16, 64, 256, 1024]
Tn = 32
std_raw, std_scaled, max_raw, max_scaled = [], [], [], []
for d in dims:
    q = rng.standard_normal((64, Tn, d))
    k = rng.standard_normal((64, Tn, d))
    s = q @ np.swapaxes(k, -1, -2)                          # (64, Tn, Tn) unscaled scores
    std_raw.append(s.std())
    std_scaled.append((s / math.sqrt(d)).std())
    max_raw.append(softmax(s).max(axis=-1).mean())          # the largest weight in each row
    max_scaled.append(softmax(s / math.sqrt(d)).max(axis=-1).mean())
    print("d=%5d  score std: unscaled %6.2f, scaled %.2f   largest weight per row: unscaled %.2f,"
          " scaled %.2f" % (d, std_raw[-1], std_scaled[-1], max_raw[-1], max_scaled[-1]))
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
axes[0].loglog(dims, std_raw, "o-", label="q.k (unscaled)")
axes[0].loglog(dims, std_scaled, "s-", label="q.k / sqrt(d)")
axes[0].loglog(dims, np.sqrt(dims), "k:", label="sqrt(d)")
axes[0].set_xlabel("head dimension d")
axes[0].set_ylabel("standard deviation of the scores")
axes[0].set_title("Dot products grow like sqrt(d)")
axes[0].legend()
axes[1].semilogx(dims, max_raw, "o-", label="softmax(q.k)")
axes[1].semilogx(dims, max_scaled, "s-", label="softmax(q.k / sqrt(d))")
axes[1].axhline(1 / Tn, color="gray", ls=":", label="uniform (1/%d)" % Tn)
axes[1].set_xlabel("head dimension d")
axes[1].set_ylabel("mean of the largest attention weight per row")
axes[1].set_title("Unscaled, attention collapses onto one key")
axes[1].legend()
L.savefig(fig, "sqrt_d_scaling.png")
L.check("unscaled score std grows like sqrt(d): 1024 vs 4 is 16x (within 15%)",
        abs(std_raw[-1] / std_raw[0] / 16 - 1) < 0.15, "%.1fx" % (std_raw[-1] / std_raw[0]))
L.check("scaled scores keep std 1 (within 10%) at every d",
        all(abs(s - 1) < 0.1 for s in std_scaled), ", ".join("%.2f" % s for s in std_scaled))
L.check("at d=1024 unscaled attention is nearly one-hot (largest weight > 0.9), scaled is not (< 0.5)",
        max_raw[-1] > 0.9 and max_scaled[-1] < 0.5, "%.2f vs %.2f" % (max_raw[-1], max_scaled[-1]))

# %%
L.step("3. The causal mask: a language model must not see the future")
# Position i predicts token i+1, so it may attend only to keys j <= i. Scores of future keys are
# set to -inf before the softmax (their weight becomes exactly 0).
T = 6
X = rng.standard_normal((T, D))
o1, P1 = attention(X @ W_q, X @ W_k, X @ W_v, causal=True)
print("causal attention weights (rows: queries i, columns: keys j):\n", np.round(P1, 2))
X2 = X.copy()
X2[4:] = rng.standard_normal((2, D))                        # change the last two tokens
o2, _ = attention(X2 @ W_q, X2 @ W_k, X2 @ W_v, causal=True)
L.check("changing tokens 4 and 5 leaves outputs 0..3 exactly unchanged",
        np.array_equal(o1[:4], o2[:4]) and not np.allclose(o1[4:], o2[4:]))
L.check("the weights above the diagonal are exactly 0", np.all(np.triu(P1, 1) == 0))

# %%
L.step("4. The backward pass, step by step")
# Forward (one head):  S = Q K^T / sqrt(d);  P = softmax(S);  O = P V.  Given dO = dL/dO:
#   O = P V                ->  dV = P^T dO           dP = dO V^T
#   P = softmax(S) per row ->  dS = P * (dP - rowsum(dP * P))   (the softmax Jacobian, 04_1)
#   S = Q K^T / sqrt(d)    ->  dQ = dS K / sqrt(d)   dK = dS^T Q / sqrt(d)
# Masked entries have P = 0, so dS = 0 there: the mask needs no extra backward code.


def attention_backward(q, k, v, p, do):
    """Gradients of attention() w.r.t. q, k, v, given its weights p and dL/do."""
    d = q.shape[-1]
    dv = np.swapaxes(p, -1, -2) @ do                        # (..., Tk, d)
    dp = do @ np.swapaxes(v, -1, -2)                        # (..., Tq, Tk)
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))  # (..., Tq, Tk)
    dq = ds @ k / math.sqrt(d)                              # (..., Tq, d)
    dk = np.swapaxes(ds, -1, -2) @ q / math.sqrt(d)         # (..., Tk, d)
    return dq, dk, dv


Tq, dh = 5, 4
q, k, v = (rng.standard_normal((Tq, dh)) for _ in range(3))
do = rng.standard_normal((Tq, dh))                          # random upstream gradient
worst = 0.0
for causal in (False, True):
    out, p = attention(q, k, v, causal)
    grads = attention_backward(q, k, v, p, do)
    for name, arr, g in zip("qkv", (q, k, v), grads):
        def f(a, name=name):
            qq, kk, vv = (a if n == name else x for n, x in zip("qkv", (q, k, v)))
            return float(np.sum(attention(qq, kk, vv, causal)[0] * do))     # L = sum(dO * O)
        # central differences, steps eps and 2 eps combined (Richardson), as tinylm.gradcheck
        num = (4 * numerical_gradient(f, arr, 1e-3) - numerical_gradient(f, arr, 2e-3)) / 3
        worst = max(worst, relative_error(g, num).max())
    # the library's fused kernel computes the same gradients from the saved log-sum-exp
    o_k, lse = kernels.attention(q[None, None], k[None, None], v[None, None], causal=causal)
    lib = kernels.attention_backward(q[None, None], k[None, None], v[None, None], o_k, lse,
                                     do[None, None], causal=causal)
    lib_err = max(np.abs(a[0, 0] - b).max() for a, b in zip(lib, grads))
    print("causal=%-5s  max |ours - tinylm.kernels.attention_backward| = %.1e" % (causal, lib_err))
    L.check("our backward equals the C/NumPy kernel's (causal=%s)" % causal, lib_err < 1e-12,
            "%.1e" % lib_err)
print("gradient check (float64, central differences): worst relative error %.1e" % worst)
L.check("dQ, dK, dV pass the gradient check at <= 1e-7 (plain and causal)", worst <= 1e-7,
        "%.1e" % worst)

# %%
L.step("5. Multi-head attention with W^O (004)")
# 004:  MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, ...)
# What 004 leaves out: each head works in d_model / h dimensions, and the h matrices W_i^Q
# (d_model x d_model/h) are simply column blocks of ONE d_model x d_model matrix - so all heads
# cost one big matmul. W^O (d_model x d_model) mixes what the heads found.
Dm, n_heads, T = 12, 3, 6
mha = MultiHeadAttention(Dm, n_heads, causal=True, rng=L.seed, dtype=np.float64)
Wm = {n: (mha.layers[n].params["weight"].T, mha.layers[n].params["bias"])
      for n in ("q_proj", "k_proj", "v_proj", "out_proj")}        # y = x W + b, W = weight^T
X = rng.standard_normal((T, Dm))
dhd = Dm // n_heads
heads = []
for hd in range(n_heads):
    cols = slice(hd * dhd, (hd + 1) * dhd)                  # head hd's block of columns
    qh, kh, vh = (X @ Wm[n][0][:, cols] + Wm[n][1][cols] for n in ("q_proj", "k_proj", "v_proj"))
    heads.append(attention(qh, kh, vh, causal=True)[0])     # (T, d_model / h)
ours = np.concatenate(heads, axis=1) @ Wm["out_proj"][0] + Wm["out_proj"][1]   # Concat(...) W^O
theirs = mha.forward(X[None])[0]
L.check("004's formula, head by head, equals tinylm.layers.MultiHeadAttention",
        np.allclose(ours, theirs, atol=1e-12), "%.1e" % np.abs(ours - theirs).max())
rep = check_layer(MultiHeadAttention(8, 2, causal=True, rng=1), (rng.standard_normal((2, 5, 8)),),
                  max_entries=30)
print(rep)
L.check("gradient check of MultiHeadAttention (causal, 2 heads) passes", rep.ok,
        "max rel err %.1e" % rep.max_error)

# %%
L.step("6. A heat map: train attention to look 3 tokens back")
# Task: a sequence of random tokens; at position i output the token at position i-3 (the first
# three positions are not scored). Only attention can move information between positions, and
# only positions tell it WHERE to look: token embedding + learned position embedding ->
# one causal attention head -> Linear -> softmax cross-entropy.
Vt, Tt, Dt, lag = 16, 12, 32, 3
emb = Embedding(Vt, Dt, rng=L.seed, init_std=0.5)
pos = LearnedPositionalEmbedding(Tt, Dt, rng=L.seed, init_std=0.5)
att = MultiHeadAttention(Dt, 1, causal=True, rng=L.seed)
head = Linear(Dt, Vt, rng=L.seed)
ce = SoftmaxCrossEntropy(ignore_index=-100)
params = emb.parameters() + pos.parameters() + att.parameters() + head.parameters()
opt = Adam(params, lr=1e-2)


def task(n):
    seq = rng.integers(0, Vt, (n, Tt))
    tgt = np.full((n, Tt), -100)                            # -100: not scored
    tgt[:, lag:] = seq[:, :-lag]                            # target at i = token at i - 3
    return seq, tgt


steps = L.pick(400, 150)
for step in range(steps):
    seq, tgt = task(32)
    z = head.forward(att.forward(pos.forward(emb.forward(seq))))
    loss = float(ce.forward(z, tgt))
    for _, gr in params:
        gr[...] = 0
    emb.backward(pos.backward(att.backward(head.backward(ce.backward(1.0)))))
    opt.step()
    if step % (steps // 4) == 0 or step == steps - 1:
        print("step %4d  loss %.3f (chance log %d = %.2f)" % (step, loss, Vt, math.log(Vt)))
seq, tgt = task(500)
_, weights = att.forward(pos.forward(emb.forward(seq)), return_weights=True)   # (500, 1, T, T)
z = head.forward(att.forward(pos.forward(emb.forward(seq))))
acc = np.mean(z[:, lag:].argmax(-1) == tgt[:, lag:])
mean_w = weights[:, 0].mean(axis=0)                          # (T, T) averaged over sequences
on_lag = np.mean([mean_w[i, i - lag] for i in range(lag, Tt)])
print("accuracy %.0f%%; mean attention weight on the key 3 back: %.2f" % (100 * acc, on_lag))
fig, ax = plt.subplots(figsize=(5.5, 4.8))
im = ax.imshow(mean_w, cmap="viridis", vmin=0, vmax=1)
ax.set_xlabel("key position j")
ax.set_ylabel("query position i")
ax.set_title("Learned causal attention (target: token i-3)")
fig.colorbar(im, ax=ax, label="attention weight (mean over 500 sequences)")
L.savefig(fig, "attention_heatmap.png")
L.check("the model solves the task (>= 90% accuracy; chance is 6%)", acc >= 0.9, "%.2f" % acc)
L.check("and it does so by attending to the key 3 back (mean weight > 0.8)", on_lag > 0.8,
        "%.2f" % on_lag)

# %%
L.finish()
