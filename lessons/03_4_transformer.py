"""Lesson 03_4 - one Transformer block, piece by piece, and why it runs in parallel.

Accompanies: 000 §3.2 变压器（Transformer）, 001 §4.1 Transformer架构,
004 核心概念与联系, 004 Transformer编码器：.

You assemble a Transformer block from its parts - multi-head self-attention, a position-wise
feed-forward network, residual connections, layer normalisation - and check it against
tinylm.layers.TransformerBlock and by a float64 gradient check. You then see why positions must
be added (attention alone ignores word order) - once, at the input, not in every layer as 004
has it (⚠) - and why a Transformer computes all positions at once while an RNN must walk through
them one step after another.
"""

# %%
import time

import numpy as np

from tinylm.gradcheck import check_layer
from tinylm.layers import RNN, SinusoidalPositionalEncoding, TransformerBlock
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models import build_model

L = Lesson(__doc__)
plt = matplotlib_agg()
rng = np.random.default_rng(L.seed)

# %%
L.step("1. The block, written out")
# Pre-LN block (GPT-2 style; the original paper and BERT put the LayerNorm after the sum):
#     x = x + self_attn(ln1(x))        every position mixes in information from the others
#     y = x + ff(ln2(x))               the same two-layer MLP at every position
# The "x +" is the residual connection: each sub-block only adds a correction to its input.
B, T, D, H = 2, 6, 16, 4
block = TransformerBlock(D, H, d_ff=4 * D, norm_first=True, causal=False, rng=0,
                         dtype=np.float64)
x = rng.standard_normal((B, T, D))
P = block.layers                     # its children: self_attn, ln1, ff, ln2 (and dropouts, p=0)
h = x + P["self_attn"].forward(P["ln1"].forward(x))       # (B, T, D)
y_by_hand = h + P["ff"].forward(P["ln2"].forward(h))      # (B, T, D)
y_block = block.forward(x)
print("x %s -> y %s: a block keeps the shape, so blocks stack" % (x.shape, y_block.shape))
for name, layer in P.items():
    print("  %-9s %-22s %6d parameters" % (name, type(layer).__name__,
                                            sum(p.size for _, p, _ in layer.named_parameters())))
L.check("the two residual lines above compute exactly what TransformerBlock.forward does",
        np.allclose(y_by_hand, y_block, rtol=0, atol=1e-12),
        "max |diff| %.1e" % np.max(np.abs(y_by_hand - y_block)))

# the LayerNorm inside: every position's vector normalised to mean 0, variance 1 (then scaled)
z = P["ln1"].forward(x)
print("after ln1: mean %.1e, std %.3f per position" % (np.abs(z.mean(-1)).max(), z.std(-1).mean()))

# %%
L.step("2. Its backward pass, checked numerically")
# TransformerBlock.backward (tinylm/layers/transformer.py) mirrors the forward lines: for
# y = x + f(x) the gradient reaches x twice, dx = dy + f'(x)^T dy. check_layer compares every
# gradient with central differences in float64, for a random upstream gradient.
small = TransformerBlock(8, 2, d_ff=16, norm_first=True, causal=True, rng=1, dtype=np.float64)
report = check_layer(small, rng.standard_normal((2, 4, 8)), seed=0, max_entries=20)
print(report)
L.check("gradient check of the block (input and all parameters) passes at <= 1e-7",
        report.ok and report.max_error <= 1e-7, "max rel err %.1e" % report.max_error)

# %%
L.step("3. Attention alone does not know word order")
# Self-attention treats its input as a SET: permute the positions and the outputs are permuted
# the same way, nothing else changes. "dog bites man" and "man bites dog" would look alike.
# Adding a position signal (here the sinusoids of Vaswani et al., SinusoidalPositionalEncoding)
# makes the same token at different positions different vectors.
perm = rng.permutation(T)
y = block.forward(x)
y_perm = block.forward(x[:, perm])
equivariant = np.max(np.abs(y_perm - y[:, perm]))
pe = SinusoidalPositionalEncoding(64, D)
yp = block.forward(pe.forward(x))
yp_perm = block.forward(pe.forward(x[:, perm]))
with_pos = np.max(np.abs(yp_perm - yp[:, perm]))
print("permuted input, no positions:   max |f(x[perm]) - f(x)[perm]| = %.1e" % equivariant)
print("permuted input, with positions: max |f(x[perm]) - f(x)[perm]| = %.1e" % with_pos)
L.check("without positions the block is permutation-equivariant (order is invisible)",
        equivariant < 1e-12, "%.1e" % equivariant)
L.check("with positional encodings the order matters", with_pos > 1e-3, "%.1e" % with_pos)

# ⚠ 004 (Transformer编码器) lists positional embeddings among the parts of every encoder layer.
# They are added ONCE, to the token embeddings at the input - in 004's own PyTorch code too
# (pos_encoder runs once, before transformer_encoder) and in tinylm's GPT (pos_emb, then the
# blocks). Deeper layers still know the order: each block only ADDS to its input (the residual
# connection), so the position signal travels up the residual stream.
block2 = TransformerBlock(D, H, d_ff=4 * D, norm_first=True, causal=False, rng=1,
                          dtype=np.float64)
deep = block2.forward(block.forward(pe.forward(x)))
deep_perm = block2.forward(block.forward(pe.forward(x[:, perm])))
deep_diff = np.max(np.abs(deep_perm - deep[:, perm]))
print("two blocks, positions added once at the input: max |f(x[perm]) - f(x)[perm]| = %.1e"
      % deep_diff)
L.check("positions added once at the input still make order matter two blocks up",
        deep_diff > 1e-3, "%.1e" % deep_diff)
g = build_model("gpt", vocab_size=50, n_layer=4, n_head=4, d_model=32, block_size=16)
pos_params = [n for n, _, _ in g.named_parameters() if "pos" in n]
print("tinylm GPT, 4 blocks: position parameters:", pos_params)
L.check("tinylm's 4-layer GPT has exactly one position table, outside the blocks",
        len(pos_params) == 1 and not pos_params[0].startswith("blocks"), str(pos_params))

fig, ax = plt.subplots(figsize=(6.5, 3.5))
im = ax.imshow(pe.table[:64].T, aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
ax.set_xlabel("position")
ax.set_ylabel("dimension")
ax.set_title("Sinusoidal positional encoding (d_model=%d)" % D)
fig.colorbar(im, ax=ax)
L.savefig(fig, "positional_encoding.png")

# %%
L.step("4. All positions at once vs one step at a time")
# A causal block's output at position t depends on x[:, :t+1] only, yet one call computes all T
# outputs together (a few large matrix products). An RNN's h_t needs h_{t-1}: T dependent steps.
causal = TransformerBlock(D, H, norm_first=True, causal=True, rng=2, dtype=np.float64)
xc = rng.standard_normal((B, T, D))
all_at_once = causal.forward(xc)
one_by_one = np.stack([causal.forward(xc[:, :t + 1])[:, t] for t in range(T)], axis=1)
L.check("the parallel causal block equals running it prefix by prefix",
        np.allclose(all_at_once, one_by_one, rtol=0, atol=1e-12),
        "max |diff| %.1e" % np.max(np.abs(all_at_once - one_by_one)))

Dm = 64
tb = TransformerBlock(Dm, 4, norm_first=True, causal=True, rng=3)        # float32, fused C attention
rnn = RNN(Dm, Dm, rng=3)
lengths = L.pick([16, 32, 64, 128, 256, 512], [16, 64, 128])
Bt = 8
t_tf, t_rnn = [], []


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


for n in lengths:
    xs = rng.standard_normal((Bt, n, Dm)).astype(np.float32)
    tb.forward(xs)
    rnn.forward(xs)                                                     # warm up
    t_tf.append(best_of(lambda: tb.forward(xs), L.pick(5, 3)))
    t_rnn.append(best_of(lambda: rnn.forward(xs), L.pick(5, 3)))
# Arithmetic per token (multiply + add = 2 FLOPs):
#   RNN:   h_t = tanh(x_t W_ih^T + h_{t-1} W_hh^T)          2 matrices D x D      -> 4 D^2
#   block: q, k, v, out projections 4 D^2, feed-forward 2 x 4 D^2 -> 24 D^2, plus causal
#          attention scores and mixing ~ 2 T D (each query meets T/2 keys on average)
flops_rnn = 4 * Dm ** 2 * np.ones(len(lengths))
flops_tf = 24 * Dm ** 2 + 2 * np.array(lengths) * Dm
rate_tf = flops_tf * Bt * np.array(lengths) / np.array(t_tf) / 1e9
rate_rnn = flops_rnn * Bt * np.array(lengths) / np.array(t_rnn) / 1e9
for i, n in enumerate(lengths):
    print("T=%4d  Transformer block %7.2f ms, %5.0fk FLOP/token, %5.2f GFLOP/s   |   "
          "RNN layer %7.2f ms, %3.0fk FLOP/token, %5.2f GFLOP/s"
          % (n, 1e3 * t_tf[i], flops_tf[i] / 1e3, rate_tf[i], 1e3 * t_rnn[i],
             flops_rnn[i] / 1e3, rate_rnn[i]))
fig, ax = plt.subplots(figsize=(6.5, 4))
ax.plot(lengths, rate_tf, "o-", label="Transformer block (all positions in one call)")
ax.plot(lengths, rate_rnn, "s-", label="RNN layer (a loop over T dependent steps)")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("sequence length T")
ax.set_ylabel("useful arithmetic rate (GFLOP/s)")
ax.set_title("How well each layer uses the CPU (batch %d, width %d)" % (Bt, Dm))
ax.legend()
ax.grid(alpha=0.3)
L.savefig(fig, "parallel_vs_sequential.png")
print("""Read the plot: the block does several times more arithmetic per token than the RNN, but
it arrives as a few big matrix products over all B*T positions, which vectorise and spread over
every core; the RNN's work comes as T small products, each waiting for the one before (and here
each also pays Python's per-step overhead). On a GPU the gap is far larger.
That parallelism, not only 'long-range dependencies' (000 §3.2), is why Transformers replaced
RNNs for training.""")

# %%
L.finish()
