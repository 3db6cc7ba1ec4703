"""Lesson 05_3 - 004's PyTorch TransformerModel, rebuilt and trained as a language model.

Accompanies: 004 项目实践：代码实例和详细解释说明, 000 §5.3 模型训练, 003 §3.3 模型评估.

You rebuild 004's TransformerModel (embedding x sqrt(d), sinusoidal positions, post-LN encoder
layers with a square "subsequent" mask, a linear decoder) from tinylm layers, fix what the
snippet gets wrong or leaves unsaid, and train it with a warm-up + cosine learning-rate schedule
(000 §5.3), measuring perplexity on held-out text (003 §3.3).
"""

# %%
import dataclasses
import math

import numpy as np

from tinylm.generate import generate
from tinylm.gradcheck import check_layer
from tinylm.layers import (Dropout, Embedding, Linear, SinusoidalPositionalEncoding,
                           TransformerBlock)
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models import LanguageModel
from tinylm.train import TrainConfig, Trainer, prepare_data

L = Lesson(__doc__)
plt = matplotlib_agg()
rng = np.random.default_rng(L.seed)

# %%
L.step("1. What the snippet gets wrong")
# (a) forward() calls math.sqrt, but the snippet imports only torch, nn and F: the first forward
#     pass stops with a NameError. Here is that line, run without `import math`:
snippet_line = "src = src * math.sqrt(ninp)"
try:
    exec(snippet_line, {"src": 1.0, "ninp": 64})
    missing_math = None
except NameError as exc:
    missing_math = str(exc)
print("running %r without importing math: NameError: %s" % (snippet_line, missing_math))
L.check("004's forward needs `import math`, which the snippet lacks",
        missing_math is not None and "math" in missing_math, missing_math or "")

# (b) The mask. _generate_square_subsequent_mask(sz), in NumPy:
sz = 5
allowed = (np.triu(np.ones((sz, sz))) == 1).T                       # lower triangle, j <= i
mask = np.where(allowed, 0.0, -np.inf)                               # added to the scores
print("004's mask for sz=5 (0 = may attend, -inf = may not):\n%s" % mask)
L.check("the 'square subsequent mask' lets position i see only j <= i (a causal mask)",
        np.array_equal(allowed, np.tril(np.ones((sz, sz), bool))))
# So although 004 calls it an ENCODER (TransformerEncoder), with that mask every position sees
# only its past: it is a decoder-only (GPT-style) language model, just post-LN and without
# cross-attention. tinylm.models.gpt.GPT is the same idea, pre-LN.

# (c) Layout. nn.TransformerEncoderLayer's default is batch_first=False: inputs are
#     (T, B, D) "sequence-first", and PositionalEncoding adds pe[:x.size(0)] along axis 0.
#     Feed it the usual (B, T) batches and it silently treats the batch axis as time. Step 3
#     shows what that does. tinylm is batch-first everywhere: (B, T) ids, (B, T, D) activations.

# %%
L.step("2. The model in tinylm")


@dataclasses.dataclass
class TransformerModelConfig:
    vocab_size: int = 65      # 004: ntoken
    d_model: int = 64         # 004: ninp
    n_head: int = 4           # 004: nhead
    d_ff: int = 256           # 004: nhid
    n_layer: int = 2          # 004: nlayers
    dropout: float = 0.1      # 004 defaults to 0.5, far too much for a model this small
    block_size: int = 64      # the longest sequence (004: max_len=5000 of its PositionalEncoding)
    seed: int = 0
    dtype: str = "float32"


class TransformerModel(LanguageModel):
    """004's TransformerModel, batch-first: idx (B, T) -> logits (B, T, V).

    x = encoder(idx) * sqrt(d)      (B, T, D)   Embedding, uniform(-0.1, 0.1) init as in 004
    x = dropout(x + PE[0:T])        (B, T, D)   sinusoidal positions
    x = block_l(x), l = 1..n_layer  (B, T, D)   post-LN, ReLU, causal (= 004's mask)
    z = decoder(x)                  (B, T, V)   Linear, uniform(-0.1, 0.1), bias 0
    """

    def __init__(self, config):
        super().__init__(config)
        c = config
        r = np.random.default_rng(c.seed)
        dt = np.dtype(c.dtype)
        self.add_layer("encoder", Embedding(c.vocab_size, c.d_model, rng=r, dtype=dt))
        self.add_layer("pos_encoder", SinusoidalPositionalEncoding(c.block_size, c.d_model))
        self.add_layer("pos_drop", Dropout(c.dropout, rng=c.seed + 1))
        for i in range(c.n_layer):
            self.add_layer("layer%d" % i, TransformerBlock(
                c.d_model, c.n_head, d_ff=c.d_ff, dropout=c.dropout, norm_first=False,
                causal=True, activation="relu", rng=r, dtype=dt))
        self.add_layer("decoder", Linear(c.d_model, c.vocab_size, rng=r, dtype=dt))
        # 004's init_weights
        self.layers["encoder"].params["weight"][...] = r.uniform(-0.1, 0.1, (c.vocab_size,
                                                                             c.d_model))
        self.layers["decoder"].params["weight"][...] = r.uniform(-0.1, 0.1, (c.vocab_size,
                                                                             c.d_model))
        self.layers["decoder"].params["bias"][...] = 0.0
        self.scale = math.sqrt(c.d_model)

    def _blocks(self):
        return [self.layers["layer%d" % i] for i in range(self.config.n_layer)]

    def _forward(self, idx):
        P = self.layers
        x = P["encoder"].forward(idx) * self.scale                # (B, T, D)
        x = P["pos_drop"].forward(P["pos_encoder"].forward(x))    # (B, T, D)
        for blk in self._blocks():
            x = blk.forward(x)                                    # (B, T, D)
        return P["decoder"].forward(x)                            # (B, T, V)

    def _backward(self, dlogits):
        P = self.layers
        dx = P["decoder"].backward(dlogits)                       # forward: z = decoder(x)
        for blk in reversed(self._blocks()):
            dx = blk.backward(dx)                                 # forward: x = block(x)
        dx = P["pos_encoder"].backward(P["pos_drop"].backward(dx))  # forward: dropout(x + PE)
        P["encoder"].backward(dx * self.scale)                    # forward: encoder(idx) * sqrt(d)


tok, train_ids, val_ids = prepare_data("pydoc", "char", max_chars=L.pick(465_000, 120_000))
cfg = TransformerModelConfig(vocab_size=tok.vocab_size, d_model=64, n_head=4, d_ff=256,
                             n_layer=L.pick(2, 1), block_size=64)
model = TransformerModel(cfg)
print("TransformerModel: %s parameters, vocabulary %d (characters)"
      % ("{:,}".format(model.num_parameters()), tok.vocab_size))

# the backward above, checked against central differences (float64, a tiny copy, no dropout).
# ReLU has a kink at 0, and a finite difference that crosses it is wrong by design: a small
# step (eps=1e-5) with a larger floor, as tinylm/gradcheck.py's docstring advises.
tiny = TransformerModel(TransformerModelConfig(vocab_size=11, d_model=8, n_head=2, d_ff=16,
                                               n_layer=2, dropout=0.0, block_size=8,
                                               dtype="float64"))
report = check_layer(tiny, rng.integers(0, 11, size=(2, 5)), seed=0, max_entries=10, eps=1e-5,
                     floor=1e-2)
L.check("gradient check of TransformerModel (every parameter) passes at <= 1e-7",
        report.ok and report.max_error <= 1e-7, "max rel err %.1e" % report.max_error)

# causality, measured: change the last tokens and the earlier logits must not move
model.eval()
x = rng.integers(0, cfg.vocab_size, size=(2, 16))
x2 = x.copy()
x2[:, 10:] = rng.integers(0, cfg.vocab_size, size=(2, 6))
z, z2 = model.forward(x), model.forward(x2)
leak = np.max(np.abs(z[:, :10] - z2[:, :10]))
L.check("changing tokens 10.. leaves the logits at positions 0..9 unchanged (causal)",
        leak < 1e-5, "max change %.1e" % leak)

# %%
L.step("3. Sequence-first vs batch-first, by experiment")
# Emulate feeding (B, T) batches to a model that expects (T, B): it attends along the batch axis
# (and its causal mask then runs over the batch: sequence b sees sequences 0..b).
# Change sequence 0 only and see whether sequence 3's predictions move.
xb = rng.integers(0, cfg.vocab_size, size=(4, 16))                   # (B, T), batch-first
xb2 = xb.copy()
xb2[0] = rng.integers(0, cfg.vocab_size, size=16)                    # change sequence 0 only
right = np.max(np.abs(model.forward(xb)[3] - model.forward(xb2)[3]))
wrong = np.max(np.abs(model.forward(xb.T).transpose(1, 0, 2)[3]
                      - model.forward(xb2.T).transpose(1, 0, 2)[3]))
print("sequence 3's logits move by %.1e with the right layout, by %.1e with the axes swapped"
      % (right, wrong))
L.check("with the right layout sequences in a batch are independent", right < 1e-5,
        "%.1e" % right)
L.check("with batch and time swapped, one sequence leaks into another", wrong > 1e-3,
        "%.1e" % wrong)
model.train()

# %%
L.step("4. Training: warm-up + cosine schedule, perplexity on validation text")
# tinylm.train.Trainer: AdamW, gradient clipping, lr = optim.warmup_cosine(...)(step):
# a linear rise over `warmup` steps (Adam's moment estimates are poor at the start, and a
# post-LN Transformer is fragile then), then a cosine decay to min_lr.
STEPS = L.pick(1200, 100)
PEAK = 3e-2          # deliberately high: where a schedule matters most
runs = {}
for name, warmup, min_lr in (("warm-up + cosine", STEPS // 10, PEAK / 10),
                             ("constant", 0, PEAK)):
    m = TransformerModel(cfg)
    tc = TrainConfig(steps=STEPS, batch_size=16, block_size=cfg.block_size, lr=PEAK,
                     min_lr=min_lr, warmup=warmup, eval_interval=max(STEPS // 5, 1),
                     eval_batches=L.pick(16, 4), seed=0, plot=False)
    tr = Trainer(m, tok, train_ids, val_ids, tc, log=None)
    res = tr.fit()
    runs[name] = (tr, res)
    print("%-17s %d steps in %.0f s: validation loss %.3f nats/char, perplexity %.2f"
          % (name, res.step, res.elapsed, res.val_loss, math.exp(res.val_loss)))

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for name, (tr, res) in runs.items():
    h = res.history
    axes[0].plot(h["step"], h["lr"], label=name)
    axes[1].plot(h["val_step"], [math.exp(v) for v in h["val_loss"]], "o-", label=name)
axes[0].set_xlabel("step")
axes[0].set_ylabel("learning rate")
axes[0].set_title("Learning-rate schedules")
axes[0].legend()
axes[1].set_xlabel("step")
axes[1].set_ylabel("validation perplexity (per character)")
axes[1].set_yscale("log")
axes[1].set_title("Perplexity = exp(cross-entropy) on held-out text")
axes[1].legend()
for ax in axes:
    ax.grid(alpha=0.3)
L.savefig(fig, "schedule_and_perplexity.png")

tr, res = runs["warm-up + cosine"]
lrs = np.array(res.history["lr"])
L.check("the schedule rises during warm-up, peaks at lr, and ends at min_lr",
        lrs[0] < lrs[STEPS // 10 - 1] and abs(lrs.max() - PEAK) < 1e-9
        and abs(lrs[-1] - PEAK / 10) < 0.01 * PEAK,
        "first %.1e, max %.1e, last %.1e" % (lrs[0], lrs.max(), lrs[-1]))
const = runs["constant"][1]
L.check("at this high peak rate, warm-up + cosine ends lower than a constant rate",
        res.val_loss < const.val_loss - 0.05, "%.3f vs %.3f" % (res.val_loss, const.val_loss))
ppl = math.exp(res.val_loss)
L.check("validation perplexity fell far below the vocabulary size (a uniform guess)",
        ppl < 0.25 * tok.vocab_size, "ppl %.1f vs V=%d" % (ppl, tok.vocab_size))
sample = generate(tr.model, tok, "The ", max_length=L.pick(160, 60), do_sample=True,
                  temperature=0.8, seed=0)[0]
print("a sample from the trained model:\n  %r" % sample)
print("""PEAK = 3e-2 is deliberately too high for this model: with PEAK = 3e-3 both schedules end
close together and much lower (full mode, measured: perplexity ~5.7 instead of ~14). At a
high peak, warm-up buys safety at the start (large steps on a fresh post-LN Transformer knock it
into a bad region) and the cosine decay lets the last steps settle into a minimum.
Perplexity exp(loss) reads as 'as unsure as a uniform choice among ppl characters'; a uniform
guess over the vocabulary would score V.""")

# %%
L.finish()
