"""Lesson 05_2 - 002's Keras LSTM language model, rebuilt, and what its loss leaves out.

Accompanies: 002 §5 项目实践：代码实例和详细解释说明.

002 §5 builds Embedding -> LSTM -> Dense(softmax) in Keras, trained with Adam and sparse
cross-entropy. You rebuild it from tinylm pieces and train it. Its LSTM(units) returns only the
LAST hidden state, so each training sequence of T tokens teaches it one next-token prediction. A
language model can learn from every position at the same cost (return_sequences=True in Keras);
you train both on the same batches and compare.
"""

# %%
import time

import numpy as np

from tinylm.layers import SoftmaxCrossEntropy
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models.rnn import LSTMLM, LSTMLMConfig
from tinylm.train import TrainConfig, Trainer, prepare_data

L = Lesson(__doc__)
plt = matplotlib_agg()

# %%
L.step("1. The Keras snippet, line by line in tinylm")
# Keras (002 §5)                                        tinylm
#   Embedding(input_dim=vocab_size, output_dim=E)   ->   layers.Embedding(V, E)
#   LSTM(units)          (returns h_T only)         ->   layers.LSTM(E, H), then take out[:, -1]
#   Dense(vocab_size, activation='softmax')         ->   layers.Linear(H, V) + softmax in the loss
#   loss='sparse_categorical_crossentropy'          ->   layers.SoftmaxCrossEntropy (integer targets)
#   optimizer='adam'                                ->   optim.Adam (TrainConfig(optimizer="adam"))
# tinylm.models.rnn.LSTMLM is that network with the Dense layer applied at EVERY position.
# The Keras model is the same network whose loss sees only the last position: we get it by
# marking every other target "ignore" (-100), which SoftmaxCrossEntropy skips.


class LastTokenLSTM(LSTMLM):
    """002 §5's model: the loss counts only the prediction after the last input token.

    Same parameters as LSTMLM; loss(x (B, T), y (B, T)) uses y[:, -1] only, like Keras's
    model.fit(train_data, train_labels) with one label per sequence."""

    def loss(self, x, y):
        y_last = np.full_like(y, self.ignore_index)       # (B, T) all ignored ...
        y_last[:, -1] = y[:, -1]                          # ... except the last position
        return super().loss(x, y_last)


# tinylm.train.prepare_data: load the corpus, train a character tokenizer, split 90/10
tok, train_ids, val_ids = prepare_data("pydoc", "char", max_chars=L.pick(400_000, 120_000))
V = tok.vocab_size
T = 32
cfg = dict(vocab_size=V, emb_dim=32, hidden=L.pick(128, 64), block_size=T, seed=0)
print("corpus: %d train / %d validation characters, vocabulary %d" % (len(train_ids),
                                                                      len(val_ids), V))

# %%
L.step("2. Train both on the same batches")
STEPS = L.pick(600, 120)
CHUNK = L.pick(100, 30)
tcfg = dict(steps=STEPS, batch_size=32, block_size=T, optimizer="adam", lr=1e-2, min_lr=1e-3,
            warmup=10, eval_interval=10 ** 9, eval_batches=4, seed=0, plot=False)

# a fixed validation set: n windows of T inputs and their next tokens
n_val = L.pick(256, 64)
xv = val_ids[:n_val * T].reshape(n_val, T)
yv = val_ids[1:n_val * T + 1].reshape(n_val, T)
ce = SoftmaxCrossEntropy()


def val_losses(model):
    """(loss at the last position, loss over all positions) on the validation windows."""
    model.eval()
    logits = model.forward(xv)                                      # (n, T, V)
    model.train()
    last = ce.forward(logits[:, -1], yv[:, -1])
    every = ce.forward(logits, yv)
    acc = float(np.mean(np.argmax(logits[:, -1], -1) == yv[:, -1]))
    return float(last), float(every), acc


runs = {}
for name, cls in (("last token only (002 §5)", LastTokenLSTM),
                  ("every position", LSTMLM)):
    model = cls(LSTMLMConfig(**cfg))
    trainer = Trainer(model, tok, train_ids, val_ids, TrainConfig(**tcfg), log=None)
    hist = {"step": [0], "last": [], "every": [], "acc": []}
    for v, k in zip(val_losses(model), ("last", "every", "acc")):
        hist[k].append(v)
    t0 = time.time()
    while trainer.step < STEPS:
        res = trainer.fit(until=trainer.step + CHUNK)
        if res.stopped not in ("done", "interrupted"):          # e.g. a non-finite loss
            raise RuntimeError("%s: training stopped (%s)" % (name, res.stopped))
        hist["step"].append(trainer.step)
        for v, k in zip(val_losses(model), ("last", "every", "acc")):
            hist[k].append(v)
    hist["time"] = time.time() - t0
    runs[name] = hist
    print("%-26s %d steps in %5.1f s | validation: last-position loss %.3f (accuracy %.1f%%), "
          "all-position loss %.3f" % (name, STEPS, hist["time"], hist["last"][-1],
                                      100 * hist["acc"][-1], hist["every"][-1]))

# %%
L.step("3. Compare")
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for name, h in runs.items():
    axes[0].plot(h["step"], h["last"], "o-", label=name)
    axes[1].plot(h["step"], h["every"], "o-", label=name)
axes[0].set_title("Predicting the token after a %d-char window" % T)
axes[1].set_title("Predicting every next token (a real LM's job)")
for ax in axes:
    ax.set_xlabel("training step (batches of 32 windows)")
    ax.set_ylabel("validation cross-entropy (nats/char)")
    ax.grid(alpha=0.3)
    ax.legend()
L.savefig(fig, "last_vs_every_position.png")

a, b = runs["last token only (002 §5)"], runs["every position"]
print("per training window the last-token model gets 1 target, the every-position model %d;"
      " the LSTM runs over all %d positions in both, so a step costs about the same "
      "(%.1f s vs %.1f s here)." % (T, T, a["time"], b["time"]))
L.check("both models learned (validation last-position loss fell)",
        a["last"][-1] < a["last"][0] and b["last"][-1] < b["last"][0],
        "%.2f->%.2f, %.2f->%.2f" % (a["last"][0], a["last"][-1], b["last"][0], b["last"][-1]))
L.check("training on every position wins even on the last-token task it was not singled out for",
        b["last"][-1] < a["last"][-1] - 0.1, "%.3f vs %.3f" % (b["last"][-1], a["last"][-1]))
L.check("the last-token model is a poor language model at the other positions",
        b["every"][-1] < a["every"][-1] - 0.1, "%.3f vs %.3f" % (b["every"][-1], a["every"][-1]))

# %%
print("""
What to take away: 002 §5's code is a correct sequence classifier ('which token comes after this
window?'), but as a language model it wastes T-1 of every T targets. Predicting every position
(Keras: LSTM(units, return_sequences=True) and a Dense on every step, with targets shifted by
one) is how language models are trained - lessons 05_3 (Transformer) and 03_2 do the same.""")
L.finish()
