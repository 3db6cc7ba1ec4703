"""Lesson 03_1 - recurrent networks: backpropagation through time, vanishing and exploding gradients.

Accompanies: 000 §3.1 递归神经网络（RNN）, 002 §2 核心概念与联系.

000 §3.1 describes an RNN as hidden units connected in a loop, so information passes from one
time step to the next. You write that loop - forward and backward through time (BPTT) - in a
dozen lines and check it against tinylm.layers.RNN and finite differences. Then you measure how
strongly the loss at the last step still depends on inputs further and further back: the gradient
shrinks (vanishes) or grows (explodes) geometrically with the distance. Finally you train a
character RNN language model with a large learning rate and see gradient clipping keep it stable.
"""

# %%
import numpy as np

from tinylm.data import BatchSampler, load_corpus, split_train_val
from tinylm.gradcheck import check_layer
from tinylm.layers import RNN
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models.rnn import RNNLM, RNNLMConfig
from tinylm.optim import SGD, clip_grad_norm
from tinylm.tokenizers import CharTokenizer

L = Lesson(__doc__)
plt = matplotlib_agg()
rng = np.random.default_rng(L.seed)

# %%
L.step("1. The recurrence and backpropagation through time, by hand")
#   h_t = tanh(x_t W_ih^T + h_{t-1} W_hh^T + b)        (B, H), the same weights at every t
# The output at step t is h_t (a language model puts a Linear layer on it). Backward: h_t is
# used twice - by the output at t and by step t+1 - so its gradient is the SUM of both; walking
# t = T-1 .. 0 keeps the second part in dh_next. Every step adds into the same weight gradients.


def rnn_forward(x, h0, W_ih, W_hh, b):
    """x (B, T, I), h0 (B, H) -> hs: list of T+1 states (B, H), hs[0] = h0."""
    hs = [h0]
    for t in range(x.shape[1]):
        hs.append(np.tanh(x[:, t] @ W_ih.T + hs[-1] @ W_hh.T + b))   # h_t = tanh(a_t)
    return hs


def rnn_backward(dout, x, hs, W_ih, W_hh):
    """dout = dL/dh_t for every t (B, T, H) -> dx (B, T, I), dh0 (B, H), dW_ih, dW_hh, db."""
    dW_ih, dW_hh = np.zeros_like(W_ih), np.zeros_like(W_hh)
    db = np.zeros(W_hh.shape[0])
    dx = np.zeros(x.shape)
    dh_next = np.zeros_like(hs[0])                          # what step t+1 sends back to h_t
    for t in reversed(range(x.shape[1])):
        dh = dout[:, t] + dh_next                           # h_t feeds the output AND step t+1
        da = dh * (1 - hs[t + 1] ** 2)                      # forward: h_t = tanh(a_t)
        # forward: a_t = x_t W_ih^T + h_{t-1} W_hh^T + b
        dW_ih += da.T @ x[:, t]
        dW_hh += da.T @ hs[t]
        db += da.sum(axis=0)
        dx[:, t] = da @ W_ih
        dh_next = da @ W_hh                                 # -> h_{t-1}
    return dx, dh_next, dW_ih, dW_hh, db


B, T, I, H = 3, 7, 4, 5
rnn = RNN(I, H, rng=L.seed, dtype=np.float64)               # tinylm.layers.RNN (PyTorch's nn.RNN)
p = {k.split(".")[-1]: v for k, v, _ in rnn.named_parameters()}
x = rng.standard_normal((B, T, I))
h0 = rng.standard_normal((B, H))
dout = rng.standard_normal((B, T, H))                       # a random upstream gradient
hs = rnn_forward(x, h0, p["weight_ih"], p["weight_hh"], p["bias_ih"] + p["bias_hh"])
dx, dh0, dW_ih, dW_hh, db = rnn_backward(dout, x, hs, p["weight_ih"], p["weight_hh"])
out, hT = rnn.forward(x, h0)
rnn.zero_grad()
dx_lib, dh0_lib = rnn.backward(dout)
g = {k.split(".")[-1]: gr for k, _, gr in rnn.named_parameters()}
err = max(np.abs(a - b).max() for a, b in [
    (np.stack(hs[1:], 1), out), (dx, dx_lib), (dh0, dh0_lib), (dW_ih, g["weight_ih"]),
    (dW_hh, g["weight_hh"]), (db, g["bias_ih"]), (db, g["bias_hh"])])
print("hand BPTT vs tinylm.layers.RNN: max difference %.1e (outputs and all gradients)" % err)
L.check("the dozen-line BPTT equals tinylm.layers.RNN (forward and every gradient)", err < 1e-12,
        "%.1e" % err)
report = check_layer(RNN(I, H, rng=1), (x, h0))
print(report)
L.check("gradient check of RNN over 7 steps (inputs, initial state, weights) passes", report.ok,
        "max rel err %.1e" % report.max_error)

# %%
L.step("2. How far back does the gradient reach?")
# Put a loss on the LAST step only and measure |dL/dx_t| for every earlier input x_t. From the
# backward loop, going back one step multiplies the gradient by diag(1 - h_t^2) W_hh: a product
# of T - t such matrices. If W_hh shrinks vectors (largest singular value < 1, and tanh' <= 1
# shrinks more) the gradient vanishes geometrically; if it stretches them, it can explode.
H, I, B, T = 64, 16, 16, L.pick(80, 50)
x = 0.5 * rng.standard_normal((B, T, I))
distance = np.arange(T)[::-1]                               # T-1-t: steps between x_t and the loss
scales = [0.5, 1.0, 1.5, 3.0]                               # must be increasing (a check below)
curves = {}
for r in scales:
    layer = RNN(I, H, rng=L.seed, dtype=np.float64)
    Q, _ = np.linalg.qr(rng.standard_normal((H, H)))         # orthogonal: every singular value 1
    layer.layers["cell"].params["weight_hh"][...] = r * Q   # ... so all are r
    layer.forward(x)
    d = np.zeros((B, T, H))
    d[:, -1] = rng.standard_normal((B, H))                  # loss at the last step only
    dxr, _ = layer.backward(d)
    curves[r] = np.linalg.norm(dxr, axis=2).mean(axis=0)    # (T,) mean |dL/dx_t|
    print("W_hh = %.1f x orthogonal: |dL/dx| at distance 0: %.2e, 10: %.2e, 30: %.2e"
          % (r, curves[r][-1], curves[r][-11], curves[r][-31]))

fig, ax = plt.subplots(figsize=(7, 4.5))
for r in scales:
    ax.semilogy(distance, curves[r], label="W_hh singular values = %.1f" % r)
ax.set_xlabel("distance T-1-t between input x_t and the loss (time steps)")
ax.set_ylabel("mean |dL / dx_t| (log scale)")
ax.set_title("tanh RNN: gradients vanish or explode with distance")
ax.legend()
L.savefig(fig, "rnn_gradient_vs_distance.png")
L.check("with W_hh = 0.5 x orthogonal the gradient 20 steps back is < 1e-6 of the nearest",
        curves[0.5][-21] < 1e-6 * curves[0.5][-1], "ratio %.1e" % (curves[0.5][-21] / curves[0.5][-1]))
at30 = [curves[r][-31] / curves[r][-1] for r in scales]
L.check("30 steps back, the gradient ratio grows with the size of W_hh",
        all(a < b for a, b in zip(at30, at30[1:])), ", ".join("%.1e" % a for a in at30))
L.check("with W_hh = 3 x orthogonal it explodes: 30 steps back it is > 10x the nearest",
        at30[-1] > 10, "ratio %.1e" % at30[-1])

# %%
L.step("3. Exploding gradients in training, and gradient clipping")
# A character RNN LM (tinylm.models.rnn.RNNLM: Embedding -> RNN -> Linear, BPTT over 48 steps)
# trained with plain SGD and a large learning rate, twice: as is, and with the global gradient
# norm clipped to 1 (tinylm.optim.clip_grad_norm: if |g| > 1, g <- g / |g|; the direction is kept).
text = load_corpus("pydoc", max_chars=200_000)
tok = CharTokenizer.train(text)
train_ids, _ = split_train_val(np.array(tok.encode(text), dtype=np.int64), 0.1)
steps = L.pick(500, 150)
runs = {}
for clip in (None, 1.0):
    model = RNNLM(RNNLMConfig(vocab_size=tok.vocab_size, emb_dim=32, hidden=64, block_size=48,
                              seed=L.seed))
    opt = SGD(model.parameters(), lr=4.0)
    sampler = BatchSampler(train_ids, batch_size=16, block_size=48, seed=L.seed)
    losses, norms = [], []
    for step in range(steps):
        xb, yb = sampler.next_batch()
        losses.append(model.loss(xb, yb))
        model.zero_grad()
        model.backward()
        if clip is None:
            norms.append(float(np.sqrt(sum(np.sum(gr.astype(np.float64) ** 2)
                                           for _, gr in model.parameters()))))
        else:
            norms.append(clip_grad_norm(model.parameters(), clip))   # returns the norm before
        opt.step()
    runs[clip] = (np.array(losses), np.array(norms))
    print("clip %-4s: final loss %.2f (mean of last 20 steps), largest gradient norm %.0f, "
          "median %.1f" % (clip, runs[clip][0][-20:].mean(), runs[clip][1].max(),
                           np.median(runs[clip][1])))

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for clip, name in ((None, "no clipping"), (1.0, "clip norm at 1")):
    axes[0].plot(runs[clip][0], label=name)
    axes[1].semilogy(runs[clip][1], label=name)
axes[0].set_xlabel("SGD step (lr 4.0)")
axes[0].set_ylabel("training loss (nats/char)")
axes[0].set_title("Character RNN LM, large learning rate")
axes[0].legend()
axes[1].set_xlabel("SGD step")
axes[1].set_ylabel("gradient norm before clipping (log scale)")
axes[1].set_title("Spikes: exploding gradients")
axes[1].legend()
L.savefig(fig, "rnn_clipping.png")
loss_plain, loss_clip = runs[None][0][-20:].mean(), runs[1.0][0][-20:].mean()
L.check("with clipping the RNN LM learns (final loss < 2.6 nats/char)", loss_clip < 2.6,
        "%.2f" % loss_clip)
L.check("without clipping the same run is wrecked by gradient spikes (loss >= 1 nat worse)",
        not np.isfinite(loss_plain) or loss_plain > loss_clip + 1.0,
        "%.2f vs %.2f" % (loss_plain, loss_clip))
L.check("the unclipped run saw gradient spikes over 10x its median norm",
        runs[None][1].max() > 10 * np.median(runs[None][1]),
        "max %.0f, median %.1f" % (runs[None][1].max(), np.median(runs[None][1])))

# %%
L.finish()
