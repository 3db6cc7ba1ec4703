"""Lesson 04_1 - softmax and cross-entropy: the loss every language model minimises.

Accompanies: 000 §4.2 模型训练, 002 §4 数学模型和公式详细讲解举例说明 (损失函数),
003 §4 数学模型和公式详细讲解举例说明.

A model's last layer gives a score (logit) per vocabulary token; softmax turns scores into
probabilities and cross-entropy scores them against the token that really came next. You compute
softmax so that it never overflows (log-sum-exp), see that mean cross-entropy is exactly the
negative log-likelihood of 003 §4 divided by the number of tokens (and that it must be MINIMISED -
003 §4 says to minimise the log-likelihood itself, which has the wrong sign), derive the famous
gradient dL/dz = p - y and check it, and see by experiment why classification uses cross-entropy
rather than the mean squared error 002 §4 lists beside it.
"""

# %%
import math

import numpy as np

from tinylm.gradcheck import check_layer
from tinylm.layers import Linear, MSELoss, Softmax, SoftmaxCrossEntropy, log_softmax, softmax
from tinylm.teaching.lesson import Lesson, matplotlib_agg

L = Lesson(__doc__)
plt = matplotlib_agg()
rng = np.random.default_rng(L.seed)

# %%
L.step("1. Softmax without overflow: subtract the maximum")
z = np.array([1000.0, 1001.0, 1002.0])                      # large logits happen in real models
with np.errstate(over="ignore", invalid="ignore"):
    naive = np.exp(z) / np.exp(z).sum()                     # exp(1000) = inf -> inf / inf = nan
print("naive softmax of", z, "->", naive)
# softmax(z) = softmax(z - c) for any constant c (the factor exp(-c) cancels). With c = max(z)
# the largest exponent is exp(0) = 1: nothing overflows, and at least one term of the sum is 1.
stable = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
print("stable softmax:", stable, "  tinylm.layers.softmax:", softmax(z))
L.check("the naive formula gives NaN; subtracting the max gives the right answer",
        np.isnan(naive).all() and np.allclose(stable, softmax(z - 1000.0))
        and np.allclose(softmax(z), stable))
# log p_i = z_i - logsumexp(z), with logsumexp(z) = m + log(sum exp(z - m)): no log(0) either.
z_small = np.array([0.0, -800.0])
with np.errstate(divide="ignore"):
    print("log(softmax) of", z_small, "naively:", np.log(softmax(z_small)),
          " log_softmax:", log_softmax(z_small))
L.check("log_softmax stays finite where log(softmax) gives -inf",
        np.isfinite(log_softmax(z_small)).all() and np.isclose(log_softmax(z_small)[1], -800.0))

# %%
L.step("2. Cross-entropy is the negative log-likelihood per token")
# 003 §4: log P(w_1..w_N) = sum_i log P(w_i | w_<i). A language model outputs logits z_i (V,) at
# each position; cross-entropy at position i is -log softmax(z_i)[w_i]. So
#     mean cross-entropy = -(1/N) log P(w_1..w_N)        and perplexity = exp(that).
# Training MINIMISES the cross-entropy = MAXIMISES the log-likelihood. (003 §4 calls the
# log-likelihood itself "the loss" and says to minimise it: that would make the text LESS likely.)
# 002 §4's  L = (1/N) sum_i L_i,  L_i = (1/M) sum_j CE(y_j, yhat_j)  is the same mean, over N
# sequences of a batch and M positions in each ("M = sample count" there means tokens per
# sequence); y_j is the id of the true next token, yhat_j the predicted distribution.
V, N = 7, 12
logits = rng.standard_normal((N, V)) * 2                    # (N, V): one row per position
tokens = rng.integers(0, V, N)                              # (N,): the text w_1..w_N
logp_text = sum(log_softmax(logits[i])[tokens[i]] for i in range(N))    # chain rule, in logs
ce = SoftmaxCrossEntropy()
loss = float(ce.forward(logits, tokens))                    # tinylm: mean over positions
print("log P(text) = %.4f,  -log P / N = %.4f,  SoftmaxCrossEntropy = %.4f,  perplexity = %.2f"
      % (logp_text, -logp_text / N, loss, math.exp(loss)))
L.check("mean cross-entropy = -(1/N) log P(text)", abs(loss + logp_text / N) < 1e-12)
L.check("a uniform prediction scores cross-entropy log V (perplexity V)",
        abs(float(ce.forward(np.zeros((N, V)), tokens)) - math.log(V)) < 1e-12)

# %%
L.step("3. The gradient: dL/dz = p - y")
# For one position with true token t:  L = -log p_t = lse(z) - z_t,  lse(z) = log sum_j exp(z_j).
#   d lse / d z_j = exp(z_j) / sum exp = p_j          d z_t / d z_j = [j == t] = y_j (one-hot)
# so  dL/dz = p - y.  Averaging over N positions divides it by N. No division by p, no exp of
# anything big: softmax and cross-entropy are fused into one layer for this reason.
ce.forward(logits, tokens)
dz = ce.backward(1.0)                                       # tinylm SoftmaxCrossEntropy.backward
p = softmax(logits)
y = np.eye(V)[tokens]                                       # (N, V) one-hot targets
L.check("SoftmaxCrossEntropy.backward returns (p - y) / N", np.allclose(dz, (p - y) / N))
report = check_layer(SoftmaxCrossEntropy(), (logits, tokens))
print(report)
L.check("gradient check of SoftmaxCrossEntropy passes (float64, central differences)",
        report.ok, "max rel err %.1e" % report.max_error)
rep_sm = check_layer(Softmax(), (logits,))                  # random upstream: sum(g*p) is not const
L.check("gradient check of Softmax (dz = p * (dp - sum(dp p))) passes", rep_sm.ok,
        "max rel err %.1e" % rep_sm.max_error)

# %%
L.step("4. Why not the mean squared error? A confidently wrong start")
# 002 §4 lists MSE and cross-entropy side by side. For probabilities they behave very
# differently. Take the true class's logit z_t with the rest fixed, p_t = softmax(z)_t:
#   cross-entropy:  dL/dz_t = p_t - 1          -> about -1 when the model is confidently wrong
#   MSE on p:       L = sum_j (p_j - y_j)^2    -> dL/dz_t carries a factor p_t (1 - p_t) ~ 0
# So MSE barely moves a model that is confidently wrong. An experiment: a linear classifier on
# three clusters of points, started with weights that confidently predict the wrong class.
K, D, n_pts = 3, 2, 300
centres = np.array([[3.0, 0.0], [-1.5, 2.6], [-1.5, -2.6]])
labels = np.repeat(np.arange(K), n_pts // K)
X = centres[labels] + rng.standard_normal((n_pts, D))
W_bad = 2.0 * np.roll(centres, -1, axis=0)    # row k points at cluster k+1: all wrong, confidently


def train(loss_name, steps, lr):
    lin = Linear(D, K, rng=L.seed, dtype=np.float64)
    lin.params["weight"][...] = W_bad
    lin.params["bias"][...] = 0.0
    sm, mse, xent = Softmax(), MSELoss(), SoftmaxCrossEntropy()
    acc, losses = [], []
    for _ in range(steps):
        zz = lin.forward(X)                                 # (n, K)
        if loss_name == "cross-entropy":
            losses.append(float(xent.forward(zz, labels)))
            dzz = xent.backward(1.0)
        else:
            pp = sm.forward(zz)
            losses.append(float(mse.forward(pp, np.eye(K)[labels])) * K)   # sum over classes
            dzz = sm.backward(mse.backward(1.0)[0] * K)
        acc.append(np.mean(zz.argmax(axis=1) == labels))
        lin.zero_grad()
        lin.backward(dzz)
        for name in ("weight", "bias"):
            lin.params[name] -= lr * lin.grads[name]         # plain gradient descent
    return np.array(acc), np.array(losses)


steps = 300                                                 # cheap: same in --fast
acc_ce, loss_ce = train("cross-entropy", steps, lr=0.5)
acc_mse, loss_mse = train("MSE", steps, lr=0.5)
print("accuracy after %d steps: cross-entropy %.0f%%, MSE %.0f%% (start: %.0f%%)"
      % (steps, 100 * acc_ce[-1], 100 * acc_mse[-1], 100 * acc_ce[0]))

p_t = np.linspace(1e-4, 1 - 1e-4, 400)
# With two classes (z = [z_t, 0]) p_t = sigmoid(z_t), and the gradients w.r.t. z_t are:
g_ce = p_t - 1                                              # d(-log p_t)/dz_t
g_mse = 2 * (p_t - 1) * p_t * (1 - p_t) * 2                 # d((p_t-1)^2 + (1-p_t-0)^2)/dz_t
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
ax = axes[0]
ax.plot(p_t, np.abs(g_ce), label="cross-entropy: |p - 1|")
ax.plot(p_t, np.abs(g_mse), label="MSE on probabilities")
ax.set_xlabel("probability given to the true class, p_t")
ax.set_ylabel("|dL / dz_t| (gradient on the true logit)")
ax.set_title("Confidently wrong (p_t near 0): MSE gives no push")
ax.legend()
ax = axes[1]
ax.plot(100 * acc_ce, label="cross-entropy")
ax.plot(100 * acc_mse, label="MSE")
ax.set_xlabel("gradient-descent step (lr 0.5)")
ax.set_ylabel("training accuracy (%)")
ax.set_ylim(0, 105)
ax.set_title("3-class linear classifier, confidently wrong start")
ax.legend()
L.savefig(fig, "mse_vs_ce.png")
L.check("at p_t = 0.01 the MSE gradient is < 5% of cross-entropy's",
        abs(g_mse[np.searchsorted(p_t, 0.01)]) < 0.05 * abs(g_ce[np.searchsorted(p_t, 0.01)]))
L.check("from the confidently wrong start, cross-entropy reaches >= 95% accuracy",
        acc_ce[-1] >= 0.95, "%.2f" % acc_ce[-1])
L.check("... while MSE, same steps and learning rate, is still far behind (>= 20 points less)",
        acc_mse[-1] <= acc_ce[-1] - 0.2, "%.2f" % acc_mse[-1])

# %%
L.finish()
