"""Lesson 09_2 - tuning: the learning rate first, then the model size for your compute.

Accompanies: 000 §9 附录：常见问题与解答 (问题 1, 问题 2), 004 附录：常见问题与解答 (如何选择合适的预训练模型？).

000 §9 says "adjust the architecture, parameters and training strategy" and 004 says "bigger models
are usually better but cost more". You make both concrete: a learning-rate sweep (the single
most important setting; too small wastes steps, too large diverges), and a fixed compute budget
spent on models of different sizes - a bigger model gets fewer steps for the same FLOPs, so the
best choice depends on the budget.
"""

# %%
import math

import numpy as np

from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models import build_model
from tinylm.train import TrainConfig, Trainer, prepare_data

L = Lesson(__doc__)
plt = matplotlib_agg()

tok, train_ids, val_ids = prepare_data("pydoc", "char", max_chars=L.pick(465_000, 150_000))
V = tok.vocab_size
T, B = 32, 16


def gpt(d_model, n_layer=1):
    return build_model("gpt", vocab_size=V, n_layer=n_layer, n_head=4, d_model=d_model,
                       block_size=T, seed=0)


def train(model, steps, lr, warmup=None):
    cfg = TrainConfig(steps=steps, batch_size=B, block_size=T, lr=lr, min_lr=lr / 10,
                      warmup=max(steps // 10, 1) if warmup is None else warmup,
                      eval_interval=10 ** 9, eval_batches=L.pick(16, 4), seed=0, plot=False)
    res = Trainer(model, tok, train_ids, val_ids, cfg, log=None).fit()
    return res.val_loss if res.stopped == "done" and math.isfinite(res.val_loss) else math.inf


# %%
L.step("1. A learning-rate sweep")
# Same model, same batches, same number of steps; only the peak learning rate changes
# (warm-up + cosine schedule, AdamW). Sweep on a log scale: what matters is the factor.
lrs = L.pick([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1], [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
STEPS = L.pick(300, 60)
losses = []
for lr in lrs:
    losses.append(train(gpt(64), STEPS, lr))
    print("lr %7.0e: validation loss %s" % (lr, "diverged" if math.isinf(losses[-1])
                                             else "%.3f" % losses[-1]))
best = int(np.argmin(losses))
fig, ax = plt.subplots(figsize=(6.5, 4))
finite = [i for i, l in enumerate(losses) if math.isfinite(l)]
ax.plot([lrs[i] for i in finite], [losses[i] for i in finite], "o-", label="after %d steps"
        % STEPS)
for i, l in enumerate(losses):
    if not math.isfinite(l):
        ax.axvline(lrs[i], color="red", ls=":", label="diverged" if i == len(losses) - 1 or
                   math.isfinite(losses[i + 1]) else None)
ax.plot(lrs[best], losses[best], "r*", ms=14, label="best: %.0e" % lrs[best])
ax.set_xscale("log")
ax.set_xlabel("peak learning rate")
ax.set_ylabel("validation loss (nats/char)")
ax.set_title("Learning-rate sweep, GPT d_model=64, 1 layer")
ax.legend()
ax.grid(alpha=0.3)
L.savefig(fig, "lr_sweep.png")
L.check("the best learning rate lies inside the sweep (too small and too large both lose)",
        0 < best < len(lrs) - 1, "best %.0e" % lrs[best])
L.check("the extremes are clearly worse than the best (> 0.2 nats)",
        losses[0] > losses[best] + 0.2 and losses[-1] > losses[best] + 0.2,
        "%.2f / %.2f / %.2f" % (losses[0], losses[best], losses[-1]))

# %%
L.step("2. Model size for a fixed compute budget")
# Training compute C ~ 6 N x tokens (lesson 08_1 counts it), N = weights in the matrix
# products. For a budget C, a model with N weights can afford C / (6 N B T) steps.
lr = lrs[best]
sizes = L.pick([32, 64, 128, 256], [32, 64, 128])


def n_matmul(d):
    return 12 * d * d + d * V                       # one layer: attention, MLP, output head


budgets = L.pick([6e10, 2.4e11], [6e10])
results = {}
for C in budgets:
    results[C] = []
    for d in sizes:
        steps = int(C / (6 * n_matmul(d) * B * T))
        loss = train(gpt(d), steps, lr, warmup=max(steps // 10, 1)) if steps >= 5 else math.inf
        results[C].append((n_matmul(d), steps, loss))
        print("budget %.1e FLOPs, d_model %3d: N=%7d, %5d steps -> validation loss %s"
              % (C, d, n_matmul(d), steps, "%.3f" % loss if math.isfinite(loss) else "-"))
fig, ax = plt.subplots(figsize=(6.5, 4))
for C, rows in results.items():
    Ns = [r[0] for r in rows if math.isfinite(r[2])]
    ls = [r[2] for r in rows if math.isfinite(r[2])]
    ax.plot(Ns, ls, "o-", label="budget %.1e FLOPs" % C)
    i = int(np.argmin(ls))
    ax.plot(Ns[i], ls[i], "k*", ms=12)
ax.set_xscale("log")
ax.set_xlabel("weights in matrix products N (bigger model = fewer steps)")
ax.set_ylabel("validation loss (nats/char)")
ax.set_title("Same compute, different sizes (star = best)")
ax.legend()
ax.grid(alpha=0.3)
L.savefig(fig, "size_for_budget.png")
rows = results[budgets[0]]
ls = [r[2] for r in rows]
ibest = int(np.argmin(ls))
print("best size for %.0e FLOPs: d_model %d (N=%d, %d steps)"
      % (budgets[0], sizes[ibest], rows[ibest][0], rows[ibest][1]))
L.check("with a small budget the largest model is not the best choice",
        ibest < len(sizes) - 1 and ls[-1] > ls[ibest] + 0.05,
        "best d_model %d: %.3f vs largest %.3f" % (sizes[ibest], ls[ibest], ls[-1]))
if len(budgets) > 1:
    big = [r[2] for r in results[budgets[-1]]]
    print("best size for %.1e FLOPs: d_model %d" % (budgets[-1], sizes[int(np.argmin(big))]))
    L.check("a bigger budget does not favour a smaller model",
            int(np.argmin(big)) >= ibest, "d_model %d vs %d" % (sizes[int(np.argmin(big))],
                                                                  sizes[ibest]))
print("""How to use this: sweep the learning rate on a small model first (it transfers roughly to
nearby sizes), then spend the budget on the size that wins at that budget - for large models,
Hoffmann et al. 2022 ('Chinchilla') found ~20 training tokens per parameter. 004's 'bigger is
better' holds only when you can also afford to train the bigger model long enough.""")

# %%
L.finish()
