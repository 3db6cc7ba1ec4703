"""Lesson 04_3 - training by gradient descent: SGD, momentum, Adam, AdamW on one language model.

Accompanies: 003 §3.2 模型训练, 000 §4.2 模型训练.

003 §3.2 says training maximises the likelihood of the data "by stochastic gradient descent (SGD)
or its variants". You write the four update rules in a few lines and check them against
tinylm.optim, watch them on a narrow valley where plain SGD zig-zags, measure how noisy a
mini-batch gradient is as the batch grows (the "stochastic" in SGD), and train the same small GPT
with each optimizer, each at its own best learning rate from a small sweep, loss curves side by
side.
"""

# %%
import numpy as np

from tinylm import optim
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models import build_model
from tinylm.train import TrainConfig, Trainer, prepare_data

L = Lesson(__doc__)
plt = matplotlib_agg()
rng = np.random.default_rng(L.seed)

# %%
L.step("1. Four update rules, by hand and in tinylm.optim")
# g: the gradient of the loss at p; lr: the learning rate.
#   SGD        p -= lr * g
#   momentum   b = mu * b + g;  p -= lr * b            (a running sum of past gradients)
#   Adam       m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  bias-correct both;
#              p -= lr * m_hat / (sqrt(v_hat) + eps)   (a per-weight step size)
#   AdamW      p *= 1 - lr * wd, then the Adam step    (weight decay kept out of m and v)


def by_hand(rule, p, grads, lr, mu=0.9, b1=0.9, b2=0.999, eps=1e-8, wd=0.1):
    p = p.copy()
    b, m, v = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if rule == "sgd":
            p -= lr * g
        elif rule == "momentum":
            b = mu * b + g
            p -= lr * b
        else:
            if rule == "adamw":
                p *= 1 - lr * wd
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            p -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


p0 = rng.standard_normal(5)
grads = [rng.standard_normal(5) for _ in range(3)]
makers = {"sgd": lambda pg: optim.SGD(pg, lr=0.1),
          "momentum": lambda pg: optim.SGD(pg, lr=0.1, momentum=0.9),
          "adam": lambda pg: optim.Adam(pg, lr=0.1),
          "adamw": lambda pg: optim.AdamW(pg, lr=0.1, weight_decay=0.1)}
for rule, make in makers.items():
    p, g = p0.copy(), np.zeros(5)
    opt = make([(p, g)])
    for gi in grads:
        g[...] = gi
        opt.step()
    diff = float(np.abs(p - by_hand(rule, p0, grads, 0.1)).max())
    L.check("%s: three steps by hand equal tinylm.optim's" % rule, diff < 1e-12,
            "max diff %.1e" % diff)

# %%
L.step("2. A narrow valley: why momentum and Adam help")
# f(x, y) = (x^2 + 50 y^2) / 2: steep across (y), shallow along (x). The largest stable SGD
# step is set by the steep direction (lr < 2/50), so progress along x is slow.
H = np.array([1.0, 50.0])


def descend(rule, lr, steps=60):
    p, g = np.array([-9.0, 1.0]), np.zeros(2)
    opt = {"sgd": lambda: optim.SGD([(p, g)], lr=lr),
           "momentum": lambda: optim.SGD([(p, g)], lr=lr, momentum=0.9),
           "adam": lambda: optim.Adam([(p, g)], lr=lr)}[rule]()
    path = [p.copy()]
    for _ in range(steps):
        g[...] = H * p                               # the gradient of f
        opt.step()
        path.append(p.copy())
    return np.array(path)


paths = {"SGD lr 0.035": descend("sgd", 0.035), "momentum 0.9, lr 0.035":
         descend("momentum", 0.035), "Adam lr 0.5": descend("adam", 0.5)}
fvals = {k: float(0.5 * (H * v[-1] ** 2).sum()) for k, v in paths.items()}
fig, ax = plt.subplots(figsize=(7, 3.5))
xx, yy = np.meshgrid(np.linspace(-10, 2, 200), np.linspace(-1.5, 1.5, 100))
ax.contour(xx, yy, 0.5 * (xx ** 2 + 50 * yy ** 2), levels=15, colors="lightgray")
for k, v in paths.items():
    ax.plot(v[:, 0], v[:, 1], ".-", ms=3, label="%s: f = %.1e after 60 steps" % (k, fvals[k]))
ax.set_title("f = (x^2 + 50 y^2) / 2, start (-9, 1)")
ax.legend(fontsize=8)
L.savefig(fig, "valley.png")
for k, f in fvals.items():
    print("%-24s f after 60 steps: %.2e" % (k, f))
L.check("on the narrow valley momentum ends far lower than SGD at the same lr (10x)",
        fvals["momentum 0.9, lr 0.035"] * 10 < fvals["SGD lr 0.035"],
        "%.1e vs %.1e" % (fvals["momentum 0.9, lr 0.035"], fvals["SGD lr 0.035"]))

# %%
L.step("3. The 'stochastic' in SGD: mini-batch gradient noise vs batch size")
# A mini-batch gradient is an average over B random windows: an unbiased estimate of the
# gradient over all the data, whose noise (variance) falls like 1/B.
tok, train_ids, val_ids = prepare_data("pydoc", "char", max_chars=L.pick(465_000, 150_000))
T = 32


def gpt():
    return build_model("gpt", vocab_size=tok.vocab_size, n_layer=2, n_head=4, d_model=64,
                       block_size=T, seed=0)


model = gpt()
params = model.parameters()


def grad_of(idx):
    x = np.stack([train_ids[i:i + T] for i in idx])
    y = np.stack([train_ids[i + 1:i + T + 1] for i in idx])
    model.zero_grad()
    model.loss(x, y)
    model.backward()
    return np.concatenate([g.ravel() for _, g in params]).astype(np.float64)


pool = rng.integers(0, len(train_ids) - T - 1, size=256)       # "all the data" for this step
g_full = grad_of(pool)
batch_sizes = [1, 4, 16, 64]
noise = []
for Bs in batch_sizes:
    errs = [np.sum((grad_of(rng.choice(pool, Bs)) - g_full) ** 2)
            for _ in range(L.pick(12, 6))]
    noise.append(float(np.mean(errs)))
    print("batch %3d: mean |g_batch - g|^2 = %.3e" % (Bs, noise[-1]))
slope = float(np.polyfit(np.log(batch_sizes), np.log(noise), 1)[0])
fig, ax = plt.subplots(figsize=(5.5, 4))
ax.loglog(batch_sizes, noise, "o-", label="measured (slope %.2f)" % slope)
ax.loglog(batch_sizes, noise[0] / np.array(batch_sizes), "k--", label="1/B")
ax.set_xlabel("batch size B")
ax.set_ylabel("mean squared gradient error")
ax.set_title("Mini-batch gradient noise")
ax.legend()
L.savefig(fig, "gradient_noise.png")
L.check("gradient noise falls about like 1/B (log-log slope between -1.3 and -0.7)",
        -1.3 < slope < -0.7, "slope %.2f" % slope)

# %%
L.step("4. One language model, four optimizers")
# Same GPT, same batches (seed), same warm-up + cosine schedule; each optimizer gets the best of
# a few learning rates (a fair race needs each at its own best; 09_2 shows an LR sweep).
STEPS = L.pick(400, 120)
SWEEP = {"SGD": ("sgd", 0.0, L.pick([0.3, 1.0, 3.0], [1.0])),
         "SGD + momentum 0.9": ("sgd", 0.9, L.pick([0.03, 0.1, 0.3], [0.1])),
         "Adam": ("adam", 0.9, L.pick([1e-3, 3e-3, 1e-2], [3e-3])),
         "AdamW (decay 0.1)": ("adamw", 0.9, L.pick([1e-3, 3e-3, 1e-2], [3e-3]))}
best, every = {}, {}
for name, (kind, beta1, lrs) in SWEEP.items():
    for lr in lrs:
        m = gpt()
        cfg = TrainConfig(steps=STEPS, batch_size=16, block_size=T, optimizer=kind, lr=lr,
                          min_lr=lr / 10, warmup=STEPS // 10, beta1=beta1,
                          weight_decay=0.1 if kind == "adamw" else 0.0,
                          eval_interval=max(STEPS // 8, 1), eval_batches=4, seed=0, plot=False)
        tr = Trainer(m, tok, train_ids, val_ids, cfg, log=None)
        res = tr.fit()
        val = res.val_loss if np.isfinite(res.val_loss) else np.inf
        print("%-20s lr %-7g validation loss %.3f" % (name, lr, val))
        norm = float(np.sqrt(sum(float((p.astype(np.float64) ** 2).sum())
                                 for n, p, _ in m.named_parameters() if p.ndim == 2)))
        every[name, lr] = (val, norm)
        if name not in best or val < best[name]["val"]:
            best[name] = dict(val=val, lr=lr, hist=dict(tr.history), norm=norm)
fig, ax = plt.subplots(figsize=(7, 4.5))
for name, b in best.items():
    h = b["hist"]
    ax.plot(h["val_step"], h["val_loss"], "o-", ms=3, label="%s (lr %g)" % (name, b["lr"]))
ax.set_xlabel("step")
ax.set_ylabel("validation loss (nats/char)")
ax.set_title("The same GPT, four optimizers, each at its best lr")
ax.legend()
ax.grid(alpha=0.3)
L.savefig(fig, "optimizers.png")
for name, b in best.items():
    print("%-20s best lr %-7g validation loss %.3f   weight norm %.1f"
          % (name, b["lr"], b["val"], b["norm"]))
L.check("Adam beats plain SGD on the GPT in the same steps",
        best["Adam"]["val"] < best["SGD"]["val"],
        "%.3f vs %.3f" % (best["Adam"]["val"], best["SGD"]["val"]))
# Momentum mu adds up the last ~1/(1-mu) gradients: where they agree, its step at lr is about
# plain SGD's at lr/(1-mu). On this problem that is most of what it does:
a, b = every["SGD + momentum 0.9", 0.1][0], every["SGD", 1.0][0]
L.check("momentum 0.9 at lr 0.1 lands within 0.1 nats of plain SGD at lr 1.0 (= 0.1/(1-0.9))",
        abs(a - b) < 0.1, "%.3f vs %.3f" % (a, b))
lr_a = best["Adam"]["lr"]
L.check("AdamW's decoupled decay leaves smaller weights than Adam at the same lr (%g)" % lr_a,
        every["AdamW (decay 0.1)", lr_a][1] < every["Adam", lr_a][1],
        "norm %.2f vs %.2f" % (every["AdamW (decay 0.1)", lr_a][1], every["Adam", lr_a][1]))
print("""
Momentum's own gain shows on the narrow valley of step 2, where gradients across the valley
cancel in the running sum and those along it add up. Why Adam wins here: a Transformer's weights get gradients of very different sizes (embeddings of
rare characters, layer norms, attention); Adam divides each by its own running RMS, so one
learning rate suits them all. Plain SGD must use a step small enough for the steepest direction.
AdamW's decay is a regulariser (lesson 09_1), not a speed-up: in a short run it changes the loss
little and the weights more.""")

# %%
L.finish()
