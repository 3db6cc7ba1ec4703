"""Lesson 08_1 - what a language model costs: FLOPs, memory, scaling, deployment.

Accompanies: 000 §8 总结：未来发展趋势与挑战, 002 §8 总结：未来发展趋势与挑战,
002 §9 附录：常见问题与解答 (问题 2), 003 §8 总结：未来发展趋势与挑战,
003 §9 附录：常见问题与解答 (问题 1, 问题 2), 001 §7 总结：未来发展趋势与挑战,
004 总结：未来发展趋势与挑战.

You count the arithmetic of a GPT by instrumenting tinylm's matmul kernel and compare it with
the rule of thumb (2N FLOPs per token forward, 6N to train), train models of several sizes and
see loss fall as a power law of size and compute - not "in proportion", as 002 §9 answers -
and measure two deployment costs: the key/value cache, and weights stored as int8. Last, what the
summaries (总结) warn of, measured on a small model: it knows only its training domain.
"""

# %%
import math

import numpy as np

from tinylm import kernels
from tinylm.data import load_corpus
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models import build_model
from tinylm.pretrained.packaged import load_packaged_model
from tinylm.train import TrainConfig, Trainer, evaluate, prepare_data

L = Lesson(__doc__)
plt = matplotlib_agg()
rng = np.random.default_rng(L.seed)


class FlopCounter:
    """Counts the FLOPs of every kernels.matmul / attention call while active (with ...:).

    Every Linear layer and every attention in tinylm goes through tinylm.kernels, so wrapping
    those functions sees all the heavy arithmetic. A product (m x k) @ (k x n) costs 2 m k n."""

    def __enter__(self):
        self.matmul = 0
        self.attention = 0
        self._saved = (kernels.matmul, kernels.attention, kernels.attention_backward)
        mm, att, att_b = self._saved

        def matmul(a, b, trans_a=False, trans_b=False, out=None, accumulate=False, bias=None):
            k, m = a.shape[-2:] if trans_a else a.shape[-2:][::-1]
            n = b.shape[-2] if trans_b else b.shape[-1]
            batch = int(np.prod(a.shape[:-2])) if a.ndim > 2 else 1
            self.matmul += 2 * batch * m * k * n                # (a bias adds m n: not counted)
            return mm(a, b, trans_a=trans_a, trans_b=trans_b, out=out, accumulate=accumulate,
                      bias=bias)

        def attention(q, k, v, causal=False, scale=None):
            B, H, Tq, dh = q.shape
            self.attention += 4 * B * H * Tq * k.shape[2] * dh      # q k^T and P v
            return att(q, k, v, causal=causal, scale=scale)

        def attention_backward(q, k, v, o, lse, dout, causal=False, scale=None):
            B, H, Tq, dh = q.shape
            self.attention += 8 * B * H * Tq * k.shape[2] * dh      # four products of that size
            return att_b(q, k, v, o, lse, dout, causal=causal, scale=scale)

        kernels.matmul, kernels.attention, kernels.attention_backward = (
            matmul, attention, attention_backward)
        return self

    def __exit__(self, *exc):
        kernels.matmul, kernels.attention, kernels.attention_backward = self._saved


def linear_weights(model):
    """Number of weights in matrices that multiply activations (all Linear layers)."""
    return sum(p.size for n, p, _ in model.named_parameters()
               if n.endswith("weight") and p.ndim == 2 and "emb" not in n)


# %%
L.step("1. FLOPs per token, counted")
# Rule of thumb (Kaplan et al. 2020): with N weights in the matrix products, a forward pass costs
# 2N FLOPs per token (one multiply-add per weight), the backward twice that, so training costs
# ~6N per token, plus attention's own products, which grow with the context length T.
tok, train_ids, val_ids = prepare_data("pydoc", "char", max_chars=L.pick(465_000, 150_000))
V = tok.vocab_size
gpt = build_model("gpt", vocab_size=V, n_layer=2, n_head=4, d_model=64, block_size=64, seed=0)
B, T = 8, 64
x = rng.integers(0, V, size=(B, T))
y = rng.integers(0, V, size=(B, T))
N = linear_weights(gpt)
with FlopCounter() as fwd:
    gpt.loss(x, y)
with FlopCounter() as both:
    gpt.loss(x, y)
    gpt.zero_grad()
    gpt.backward()
per_tok_fwd = fwd.matmul / (B * T)
per_tok_train = both.matmul / (B * T)
Lc, D = gpt.config.n_layer, gpt.config.d_model
print("GPT: %d layers, d_model %d, vocabulary %d: %s parameters, N = %s in matrix products "
      "(12 L D^2 + D V = %s)" % (Lc, D, V, "{:,}".format(gpt.num_parameters()),
                                 "{:,}".format(N), "{:,}".format(12 * Lc * D * D + D * V)))
print("forward:  %8.0f matmul FLOPs/token = %.2f x N   (+ attention %.0f/token)"
      % (per_tok_fwd, per_tok_fwd / N, fwd.attention / (B * T)))
print("training: %8.0f matmul FLOPs/token = %.2f x N   (+ attention %.0f/token)"
      % (per_tok_train, per_tok_train / N, (both.attention) / (B * T)))
L.check("forward matmul FLOPs are exactly 2N per token", fwd.matmul == 2 * N * B * T,
        "%d vs %d" % (fwd.matmul, 2 * N * B * T))
L.check("training (forward + backward) costs about 6N per token",
        5.5 <= per_tok_train / N <= 6.0 + 1e-9, "%.2f N" % (per_tok_train / N))
L.check("N = 12 L D^2 + D V (attention 4 D^2, feed-forward 8 D^2 per layer, plus the head)",
        N == 12 * Lc * D * D + D * V)
# (backward = 2 products per weight matrix: dL/dW and dL/dx. Frameworks skip dL/dx where no
#  one needs it, e.g. for the very first layer's input, hence "about" 6N.)

# %%
L.step("2. Loss against model size and compute")
# The same data, the same number of steps, models of growing width. Training compute of a run
# = (FLOPs per step, counted as above) x steps.
widths = L.pick([16, 32, 64, 128], [16, 32, 64])
STEPS = L.pick(600, 80)
runs = []
for d in widths:
    m = build_model("gpt", vocab_size=V, n_layer=2, n_head=4, d_model=d, block_size=64, seed=0)
    cfg = TrainConfig(steps=STEPS, batch_size=16, block_size=64, lr=3e-3, min_lr=3e-4,
                      warmup=max(STEPS // 20, 1), eval_interval=max(STEPS // 6, 1),
                      eval_batches=L.pick(16, 4), seed=0, plot=False)
    tr = Trainer(m, tok, train_ids, val_ids, cfg, log=None)
    xb = rng.integers(0, V, size=(16, 64))
    with FlopCounter() as c:                        # one training step's arithmetic
        m.loss(xb, xb)
        m.zero_grad()
        m.backward()
    step_flops = c.matmul + c.attention
    m.zero_grad()
    res = tr.fit()
    h = res.history
    runs.append(dict(d=d, N=m.num_parameters(), flops=step_flops,
                     C=np.array(h["val_step"]) * step_flops, loss=np.array(h["val_loss"]),
                     steps=np.array(h["val_step"])))
    print("d_model %4d: %8s parameters, %.2e FLOPs/step, %d steps in %4.0f s, val loss %.3f"
          % (d, "{:,}".format(m.num_parameters()), step_flops, res.step, res.elapsed,
             res.val_loss))

Ns = np.array([r["N"] for r in runs], float)
final = np.array([r["loss"][-1] for r in runs])
slope, icpt = np.polyfit(np.log(Ns), np.log(final), 1)
print("fit over the final losses: loss ~ %.2f * N^%.3f" % (math.exp(icpt), slope))
print("N grows %.0fx from the smallest to the largest model; the loss falls %.2fx."
      % (Ns[-1] / Ns[0], final[0] / final[-1]))
# The pure power law L = a N^b goes to 0 as N grows: it models no floor. The usual form
# (Kaplan et al. 2020; Hoffmann et al. 2022) adds an irreducible term E - the entropy of the
# text itself, which no model can predict away:  L = E + A N^-alpha. Only L - E, the REDUCIBLE
# part, falls as a power law. Fit it: for each E on a grid below the smallest loss, a straight
# line through log(L - E) vs log N; keep the E with the smallest squared error in log L.


def fit_with_floor(N, Lv):
    best = None
    for E in np.linspace(0.0, 0.999 * Lv.min(), 400):
        b, a = np.polyfit(np.log(N), np.log(Lv - E), 1)
        err = float(np.sum((np.log(E + np.exp(a) * N ** b) - np.log(Lv)) ** 2))
        if best is None or err < best[0]:
            best = (err, E, math.exp(a), -b)
    return best


err_f, E_fit, A_fit, alpha = fit_with_floor(Ns, final)
err_p = float(np.sum((icpt + slope * np.log(Ns) - np.log(final)) ** 2))
print("fit with a floor:  loss ~ %.2f + %.2f * N^-%.3f   (squared log error %.1e; pure power "
      "law %.1e)" % (E_fit, A_fit, alpha, err_f, err_p))
for n_, f_ in zip(Ns, final):
    print("   N %8s: measured %.3f, power law %.3f, with floor %.3f"
          % ("{:,}".format(int(n_)), f_, math.exp(icpt) * n_ ** slope, E_fit + A_fit * n_ ** -alpha))

fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2))
for r in runs:
    axes[0].plot(r["C"], r["loss"], "o-", ms=3, label="d_model=%d (N=%s)"
                 % (r["d"], "{:,}".format(r["N"])))
Cmin = runs[0]["C"][0]
Cs = np.geomspace(Cmin, max(r["C"][-1] for r in runs), 50)
axes[0].plot(Cs, runs[0]["loss"][0] * Cmin / Cs, "k:", label='"proportional": loss ~ 1/C')
axes[0].set_xscale("log")
axes[0].set_yscale("log")
axes[0].set_ylim(min(final) * 0.8, max(r["loss"][0] for r in runs) * 1.1)
axes[0].set_xlabel("training compute C (FLOPs)")
axes[0].set_ylabel("validation loss (nats/char)")
axes[0].set_title("Loss vs compute, %d steps each" % STEPS)
axes[0].legend(fontsize=8)
axes[1].plot(Ns, final, "o", label="final validation loss")
Ng = np.geomspace(Ns[0] / 2, Ns[-1] * 8, 50)
axes[1].plot(Ng, np.exp(icpt) * Ng ** slope, "-", label="pure power law: %.2f N^%.3f"
             % (math.exp(icpt), slope))
axes[1].plot(Ng, E_fit + A_fit * Ng ** -alpha, "--", label="with a floor: %.2f + %.1f N^-%.2f"
             % (E_fit, A_fit, alpha))
axes[1].set_xscale("log")
axes[1].set_yscale("log")
axes[1].set_xlabel("parameters N")
axes[1].set_ylabel("validation loss (nats/char)")
axes[1].set_title("A straight line on log-log axes = a power law")
axes[1].legend()
from matplotlib.ticker import FormatStrFormatter
for ax in axes:
    ax.grid(alpha=0.3, which="both")
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.1f"))   # plain numbers on the log axis
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.1f"))
L.savefig(fig, "scaling.png")
L.check("bigger models reach lower loss (same data, same steps)",
        all(a > b for a, b in zip(final, final[1:])), " ".join("%.3f" % f for f in final))
L.check("loss is far from proportional to size: %.0fx the parameters give < 2x lower loss"
        % (Ns[-1] / Ns[0]), final[0] / final[-1] < 2.0, "%.2fx" % (final[0] / final[-1]))
# Whether a floor shows depends on the run: the --fast runs (80 steps) flatten early (E well
# above 0: the step budget is the floor), the full runs give E ~ 0 (no floor visible yet). Both
# say the same thing: these models are under-trained, still improving when training stopped.
big = runs[-1]
i = int(np.searchsorted(big["steps"], 2 * STEPS // 3))          # the evaluation at ~2/3
L.check("the largest model was still improving in its last third of training (under-trained)",
        big["loss"][-1] < big["loss"][i] - 0.01, "%.3f at step %d, %.3f at step %d"
        % (big["loss"][i], big["steps"][i], big["loss"][-1], big["steps"][-1]))
print("""002 §9 Q2 answers 'yes, performance is proportional to compute'. Measured, it is not: loss
falls slowly, roughly as a power law of size (Kaplan et al. 2020 found exponents of ~ -0.05 to
-0.08 for large models). Written with its floor, L = E + A N^-alpha, each halving of the
REDUCIBLE part L - E costs a multiple of the parameters (and compute), so returns diminish.
Two cautions on these numbers: a handful of small models fit either curve (the floor E is poorly
determined by so few points - the extra parameter always fits at least as well), and every
model here trained for the same %d steps, so the larger ones are further from convergence; real
scaling laws are measured at convergence or at the compute-optimal size (Hoffmann et al. 2022).
Lesson 09_2 chooses a size for a fixed budget.""" % STEPS)

# %%
L.step("3. Deployment: the key/value cache")
# Generating with a cache keeps, per layer, keys and values of every past token:
# 2 (k and v) x L layers x T tokens x D numbers per sequence.
big = runs[-1]
m = build_model("gpt", vocab_size=V, n_layer=2, n_head=4, d_model=widths[-1], block_size=64)
cache = m.init_cache(4)
m.forward_step(rng.integers(0, V, size=(4, 50)), cache)
measured = sum(layer[kv].nbytes for layer in cache["layers"] for kv in ("k", "v"))
formula = 2 * m.config.n_layer * 4 * 50 * m.config.d_model * 4          # float32: 4 bytes
print("cache after 50 tokens, batch 4: %d bytes measured, 2 L B T D x 4 bytes = %d"
      % (measured, formula))
L.check("KV cache memory = 2 x layers x batch x tokens x d_model x bytes", measured == formula)
for name, nl, dm, ctx in (("GPT-2 small", 12, 768, 1024), ("a 7B model (32 x 4096)", 32, 4096,
                                                            4096)):
    print("  %-24s context %5d: %7.1f MB per sequence in float16"
          % (name, ctx, 2 * nl * ctx * dm * 2 / 2 ** 20))

# %%
L.step("4. Deployment: int8 weights")
# Store each weight matrix as int8 with one float scale per row: w ~ scale_r * q, q in -127..127.
# 4x less memory than float32; the question is what it costs in loss.
model = tr.model                                   # the largest model trained above
val_before = evaluate(model, val_ids, 64, 16, max_batches=L.pick(16, 4))
bytes32, bytes8 = 0, 0
saved = {}
for name, p, _ in model.named_parameters():
    if p.ndim != 2:
        continue                                   # biases and norms stay float32 (tiny)
    scale = np.abs(p).max(axis=1, keepdims=True) / 127.0                 # (rows, 1)
    scale[scale == 0] = 1.0
    q = np.clip(np.round(p / scale), -127, 127).astype(np.int8)         # what would be stored
    saved[name] = p.copy()
    p[...] = q.astype(np.float32) * scale                                # dequantised, in place
    bytes32 += p.nbytes
    bytes8 += q.nbytes + scale.astype(np.float32).nbytes
val_after = evaluate(model, val_ids, 64, 16, max_batches=L.pick(16, 4))
for name, p, _ in model.named_parameters():
    if name in saved:
        p[...] = saved[name]
print("weight matrices: %.0f kB in float32, %.0f kB as int8 + scales (%.2fx smaller)"
      % (bytes32 / 1024, bytes8 / 1024, bytes32 / bytes8))
print("validation loss: float32 %.4f, int8 weights %.4f (change %+.4f)"
      % (val_before, val_after, val_after - val_before))
L.check("int8 weights take < 30% of the float32 memory", bytes8 < 0.3 * bytes32,
        "%.2fx" % (bytes32 / bytes8))
L.check("int8 weights change the validation loss by < 0.02 nats", abs(val_after - val_before)
        < 0.02, "%+.4f" % (val_after - val_before))

# %%
L.step("5. What 'dozens of GPUs for weeks' (003 §9) means in FLOPs")
# C ~ 6 N D for N parameters and D training tokens.
for name, n, d in (("GPT-2 (1.5B params, ~10B tokens)", 1.5e9, 10e9),
                   ("GPT-3 (175B params, 300B tokens)", 175e9, 300e9)):
    c = 6 * n * d
    gpu_days = c / (100e12 * 0.4) / 86400        # a 100 TFLOP/s GPU at 40% utilisation
    print("  %-34s C = %.1e FLOPs = %8.0f GPU-days (100 TFLOP/s at 40%%)" % (name, c, gpu_days))
print("  this lesson's largest run: C = %.1e FLOPs" % runs[-1]["C"][-1])

# %%
L.step("6. What a small model cannot do (001 §7 总结, 004 总结, 003 §9 问题 2)")
# 001 §7 and 004's summary name the open problems: cost (steps 1-5), bias, safety,
# interpretability. Two limits can be measured on the small GPT that ships with tinylm (trained
# on Python's reference documentation only): it knows its domain and little else, and it
# cannot read what its tokenizer never saw. Its biases are its data's: it writes like a
# reference manual, whatever you ask. 003 §9 Q2 ("can an LLM generate any kind of text?")
# answers "in theory yes, if the training data holds it" - the second half is the whole answer.
pm, ptok, pmeta = load_packaged_model()
held_out = np.array(ptok.encode(load_corpus("pydoc")[-20_000:]), dtype=np.int64)
story = ("The old fisherman walked down to the harbour before sunrise. His daughter had mended "
         "the nets the night before, and the boat smelled of salt and tar. They rowed past the "
         "lighthouse while the gulls circled above, hoping for a share of the morning catch. "
         "By noon the wind had turned, and the sea grew rough and grey. ") * 2
story_ids = np.array(ptok.encode(story), dtype=np.int64)
in_domain = evaluate(pm, held_out, 128, 16, max_batches=2)
out_domain = evaluate(pm, story_ids, 128, 16)
print("packaged GPT: held-out Python docs %.2f nats/char; a plain English story %.2f nats/char"
      % (in_domain, out_domain))
try:
    ptok.encode("语言模型")
    reads_chinese = True
except ValueError as e:
    reads_chinese = False
    print("Chinese text:", e)
L.check("outside its training domain the small model predicts far worse (+0.3 nats/char)",
        out_domain > in_domain + 0.3, "%.2f vs %.2f" % (out_domain, in_domain))
L.check("it cannot even read characters its tokenizer never saw (Chinese)", not reads_chinese)

# %%
L.finish()
