"""Lesson 02_1 - a neural network language model, with backpropagation by hand.

Accompanies: 000 §2.1 深度学习与神经网络, 002 §4 数学模型和公式详细讲解举例说明.

002 §4 writes a network as three equations (an affine map, tanh, softmax) and its training as
"the gradients dL/dW and dL/db". You turn those equations into a small character-level language
model (Bengio-style: the previous few characters -> the next one), derive every gradient line by
line, check each against finite differences in float64, and train it with those gradients. You
also sort out what each symbol of 002 §4 really is - the document calls `s` "the input layer's
weights", but `s` is the input - and see that tinylm.models.mlp.MLPLM is the same network.
"""

# %%
import math

import numpy as np

from tinylm.data import load_corpus, split_train_val
from tinylm.gradcheck import check_layer, numerical_gradient, relative_error
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models.mlp import MLPConfig, MLPLM
from tinylm.optim import Adam
from tinylm.tokenizers import CharTokenizer

L = Lesson(__doc__)
plt = matplotlib_agg()
rng = np.random.default_rng(L.seed)

# %%
L.step("1. What the symbols of 002 §4 are")
# 002 §4:   x = W s + b,   h = tanh(W x + b),   y = softmax(W' h + b)
# It says "x is the input data, s is the input layer's weights". Read the first equation again:
# W multiplies s, so W is the weight matrix and s is what the layer is applied to - the INPUT.
# For a language model the input is the previous n tokens, each as a one-hot vector (all zeros
# but a 1 at the token's id), stacked:  s = [onehot(w_{t-n+1}); ...; onehot(w_t)]  (n*V,).
# Then x = W s + b is a learned vector for the context (W s just picks columns of W: an
# embedding lookup, lesson 02_3), h = tanh(...) is the hidden layer and y = softmax(...) is
# P(next token | context). The three equations also reuse the names W and b for DIFFERENT
# matrices; below they get their own names.
n, E, H = 3, 16, L.pick(128, 64)                         # context tokens, width per token, hidden
text = load_corpus("pydoc", max_chars=L.pick(300_000, 60_000))
tok = CharTokenizer.train(text)
V = tok.vocab_size
table = [
    ("s", "input layer's weights", "the INPUT: n one-hot vectors stacked", "(n*V,) = (%d,)" % (n * V)),
    ("W, b (eq. 1)", "weights, bias", "first layer: W0, b0", "(n*E, n*V), (n*E,) = (%d, %d), (%d,)" % (n * E, n * V, n * E)),
    ("x", "input data", "the context's vector (embeddings)", "(n*E,) = (%d,)" % (n * E)),
    ("W, b (eq. 2)", "(same names)", "hidden layer: W1, b1", "(H, n*E), (H,) = (%d, %d), (%d,)" % (H, n * E, H)),
    ("h", "hidden activation", "hidden activation", "(H,) = (%d,)" % H),
    ("W', b (eq. 3)", "output weights", "output layer: W2, b2", "(V, H), (V,) = (%d, %d), (%d,)" % (V, H, V)),
    ("y", "prediction", "P(next token | context)", "(V,) = (%d,), sums to 1" % V),
]
print("%-14s %-24s %-40s %s" % ("symbol", "002 §4 says", "what it is", "shape here"))
for row in table:
    print("%-14s %-24s %-40s %s" % row)

# %%
L.step("2. The forward pass, and the backward pass line by line")
ids = np.array(tok.encode(text), dtype=np.int64)
train_ids, val_ids = split_train_val(ids, 0.1)


def examples(stream):
    """All (context, next) pairs of a stream: ctx (N, n) ids, nxt (N,) ids."""
    ctx = np.lib.stride_tricks.sliding_window_view(stream[:-1], n)     # (N, n)
    return ctx, stream[n:]


def one_hot_context(ctx):
    """ctx (B, n) ids -> s (B, n*V): block j is onehot(ctx[:, j])."""
    B = ctx.shape[0]
    s = np.zeros((B, n * V))
    s[np.arange(B)[:, None], np.arange(n) * V + ctx] = 1.0
    return s


def init_params(dtype=np.float64):
    def uni(shape, fan_in):                                 # U(-1/sqrt(fan_in), +) as nn.Linear
        return rng.uniform(-1, 1, shape).astype(dtype) / math.sqrt(fan_in)
    return {"W0": uni((n * E, n * V), n), "b0": np.zeros(n * E, dtype),
            "W1": uni((H, n * E), n * E), "b1": uni((H,), n * E),
            "W2": uni((V, H), H), "b2": uni((V,), H)}


def forward(P, s, target):
    """s (B, n*V), target (B,) -> mean cross-entropy loss, and the cache for backward."""
    x = s @ P["W0"].T + P["b0"]                             # (B, n*E)  x = W s + b
    a = x @ P["W1"].T + P["b1"]                             # (B, H)
    h = np.tanh(a)                                          # (B, H)    h = tanh(W x + b)
    z = h @ P["W2"].T + P["b2"]                             # (B, V)    logits
    z = z - z.max(axis=1, keepdims=True)                    # (B, V)    stable (lesson 04_1)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)    # (B, V)    y = softmax(W' h + b)
    B = len(target)
    loss = -np.mean(np.log(p[np.arange(B), target]))        # ()        L = mean(-log y[target])
    return loss, (s, x, h, p, target)


def backward(P, cache):
    """Gradients of the mean loss w.r.t. every parameter: a dict like P."""
    s, x, h, p, target = cache
    B = len(target)
    G = {}
    # forward: L = mean(-log p[target]), p = softmax(z)  ->  dz = (p - onehot(target)) / B
    dz = p.copy()
    dz[np.arange(B), target] -= 1.0
    dz /= B                                                 # (B, V)
    # forward: z = h W2^T + b2  ->  dW2 = dz^T h,  db2 = sum_rows dz,  dh = dz W2
    G["W2"] = dz.T @ h                                      # (V, H)
    G["b2"] = dz.sum(axis=0)                                # (V,)
    dh = dz @ P["W2"]                                       # (B, H)
    # forward: h = tanh(a)  ->  da = dh * (1 - h^2)
    da = dh * (1.0 - h * h)                                 # (B, H)
    # forward: a = x W1^T + b1  ->  dW1 = da^T x,  db1 = sum_rows da,  dx = da W1
    G["W1"] = da.T @ x                                      # (H, n*E)
    G["b1"] = da.sum(axis=0)                                # (H,)
    dx = da @ P["W1"]                                       # (B, n*E)
    # forward: x = s W0^T + b0  ->  dW0 = dx^T s,  db0 = sum_rows dx   (s is data: no ds needed)
    G["W0"] = dx.T @ s                                      # (n*E, n*V)
    G["b0"] = dx.sum(axis=0)                                # (n*E,)
    return G


# %%
L.step("3. Gradient check: every parameter against central differences (float64)")
# numerical dL/dp_i = (L(p + eps e_i) - L(p - eps e_i)) / (2 eps), on a random sample of entries
# of each parameter; compared by the relative error with a floor (tinylm.gradcheck).
P = init_params()
for k in P:                                                 # random values everywhere (b0 too)
    P[k] += 0.1 * rng.standard_normal(P[k].shape)
ctx, nxt = examples(train_ids[:200])
s_small, t_small = one_hot_context(ctx[:16]), nxt[:16]
loss0, cache = forward(P, s_small, t_small)
G = backward(P, cache)
worst = 0.0
for name in P:
    def f(value, name=name):
        Q = dict(P)
        Q[name] = value
        return forward(Q, s_small, t_small)[0]
    idx = rng.choice(P[name].size, size=min(40, P[name].size), replace=False)
    # W0's columns for tokens absent from this batch have exact zero gradient; include some
    # entries that are non-zero: the columns of the ids in the batch.
    if name == "W0":
        cols = (np.arange(n) * V + ctx[:16]).ravel()
        idx = np.concatenate([idx[:20], rng.choice(E * n, 20) * (n * V) + rng.choice(cols, 20)])
    # central differences with steps eps and 2 eps, combined (Richardson) to cancel the eps^2
    # error term - the same recipe tinylm.gradcheck.check_layer uses
    num = (4 * numerical_gradient(f, P[name], 1e-3, idx)
           - numerical_gradient(f, P[name], 2e-3, idx)) / 3
    err = relative_error(G[name].ravel()[idx], num.ravel()[idx]).max()
    worst = max(worst, err)
    print("  %-3s %-12s max relative error %.2e   (|grad| up to %.1e)"
          % (name, str(P[name].shape), err, np.abs(G[name].ravel()[idx]).max()))
L.check("the hand-derived backward pass matches finite differences (rel err <= 1e-7)",
        worst <= 1e-7, "worst %.1e" % worst)

# A wrong line is caught: forget the (1 - h^2) of tanh and the check fails loudly.
s_, x_, h_, p_, t_ = cache
dz_ = p_.copy()
dz_[np.arange(16), t_] -= 1
dz_ /= 16
bad_dW1 = (dz_ @ P["W2"]).T @ x_                            # missing the tanh derivative
num_W1 = numerical_gradient(lambda w: forward(dict(P, W1=w), s_small, t_small)[0], P["W1"],
                            eps=1e-5, indices=np.arange(30))
bad_err = relative_error(bad_dW1.ravel()[:30], num_W1.ravel()[:30]).max()
print("with the tanh derivative left out, dW1's relative error is %.2f" % bad_err)
L.check("the check catches a backward pass with one line wrong", bad_err > 1e-3,
        "rel err %.2f" % bad_err)

# %%
L.step("4. Train it with its own gradients")
P = init_params()                                           # float64, as in the check
grads = {k: np.zeros_like(v) for k, v in P.items()}
opt = Adam([(P[k], grads[k]) for k in P], lr=3e-3)         # tinylm.optim.Adam updates in place
ctx_tr, nxt_tr = examples(train_ids)
ctx_va, nxt_va = examples(val_ids[:L.pick(10_000, 2_000)])
s_va = one_hot_context(ctx_va)
steps, batch = L.pick(2000, 300), 128
history, val_history = [], []
for step in range(steps):
    pick = rng.integers(0, len(nxt_tr), batch)
    loss, cache = forward(P, one_hot_context(ctx_tr[pick]), nxt_tr[pick])
    for k, g in backward(P, cache).items():
        grads[k][...] = g
    opt.step()
    history.append(float(loss))
    if step % max(1, steps // 20) == 0 or step == steps - 1:
        val_history.append((step, float(forward(P, s_va, nxt_va)[0])))
        print("step %5d  train loss %.3f  val loss %.3f" % (step, loss, val_history[-1][1]))
# Two baselines in nats/character: a uniform guess (log V) and the unigram frequencies (no context).
freq = np.bincount(train_ids, minlength=V) + 1.0
unigram = float(-np.mean(np.log(freq[nxt_va] / freq.sum())))
final_val = val_history[-1][1]
print("uniform guess %.3f nats, unigram (no context) %.3f nats, network %.3f nats"
      % (math.log(V), unigram, final_val))
ctx_ids = tok.encode("The")
for _ in range(80):                                         # sample w ~ y = P(. | last n chars)
    _, (_, _, _, p, _) = forward(P, one_hot_context(np.array([ctx_ids[-n:]])), np.array([0]))
    ctx_ids.append(int(rng.choice(V, p=p[0])))
print("sample:", repr(tok.decode(ctx_ids)))

fig, ax = plt.subplots(figsize=(7, 4.2))
ax.plot(np.arange(steps), history, alpha=0.4, label="training batch loss")
ax.plot(*zip(*val_history), "o-", label="validation loss")
ax.axhline(math.log(V), color="gray", ls="--", label="uniform guess, log V")
ax.axhline(unigram, color="tab:red", ls=":", label="unigram frequencies (no context)")
ax.set_xlabel("training step (batch of %d)" % batch)
ax.set_ylabel("cross-entropy (nats per character)")
ax.set_title("002 §4's network as a character LM (context %d)" % n)
ax.legend(loc="center right")
L.savefig(fig, "mlp_training.png")
L.check("training lowers the validation loss well below the no-context baseline",
        final_val < unigram - 0.3, "%.3f vs unigram %.3f" % (final_val, unigram))

# %%
L.step("5. The same network in tinylm: models.mlp.MLPLM")
# MLPLM writes x = W0 s as an Embedding lookup: x = concat(C[w_{t-n+1}], ..., C[w_t]). That is
# x = W0 s with W0 block-diagonal, each block the same table C^T (one table shared by the n
# positions) and b0 = 0. Copy our trained layers into MLPLM with such a W0 and compare outputs.
model = MLPLM(MLPConfig(vocab_size=V, context=n, emb_dim=E, hidden=H, dtype="float64"))
C = model.layers["embed"].params["weight"]              # (V+1, E)
W0 = np.zeros((n * E, n * V))
for j in range(n):
    W0[j * E:(j + 1) * E, j * V:(j + 1) * V] = C[:V].T                      # block j = C^T
Q = dict(init_params(), W0=W0, b0=np.zeros(n * E),
         W1=P["W1"], b1=P["b1"], W2=P["W2"], b2=P["b2"])
model.layers["fc1"].params["weight"][...] = Q["W1"]
model.layers["fc1"].params["bias"][...] = Q["b1"]
model.layers["fc2"].params["weight"][...] = Q["W2"]
model.layers["fc2"].params["bias"][...] = Q["b2"]
seq = val_ids[:40][None, :]                                 # (1, 40)
logits = model.forward(seq)[0, n - 1:-1]                    # positions with a full window
ctx_s, nxt_s = examples(val_ids[:40])
_, (_, _, _, p_ours, _) = forward(Q, one_hot_context(ctx_s), nxt_s)
p_lib = np.exp(logits - logits.max(1, keepdims=True))
p_lib /= p_lib.sum(1, keepdims=True)
diff = np.abs(p_lib - p_ours).max()
print("max |P_ours - P_MLPLM| = %.1e" % diff)
L.check("MLPLM computes exactly 002 §4's equations (with W0 s as an embedding lookup)",
        diff < 1e-12, "%.1e" % diff)
report = check_layer(MLPLM(MLPConfig(vocab_size=11, context=3, emb_dim=4, hidden=6)),
                     np.array([[1, 5, 3, 7, 2]]), max_entries=20)
print(report)
L.check("tinylm.gradcheck passes on the whole MLPLM (random upstream gradient)", report.ok,
        "max rel err %.1e" % report.max_error)

# %%
L.finish()
