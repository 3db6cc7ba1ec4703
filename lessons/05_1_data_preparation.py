"""Lesson 05_1 - data preparation: corpus -> token ids -> train/validation -> batches.

Accompanies: 000 §5.1 数据准备, 003 §3.1 数据预处理.

000 §5.1 says "use GPT-2's training data" (WebText: about 40 GB, never released as such); you start
from text that ships with Python instead, so every run is reproducible offline. You load a corpus
(and see the clear errors a bad file gives), turn it into one stream of token ids, split off the
validation text the right way (a contiguous tail - and see by measurement how a random split of
windows leaks training text into validation), and cut random (input, target) batches where the
target is the input shifted by one token.
"""

# %%
import os
import tempfile

import numpy as np

from tinylm.data import BatchSampler, CorpusError, load_corpus, split_train_val
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.tokenizers import BPETokenizer

L = Lesson(__doc__)
plt = matplotlib_agg()

# %%
L.step("1. Loading a corpus")
# tinylm.data.load_corpus: "pydoc" (Python's reference docs, English), "code" (the standard
# library's Python source), or a path to your own UTF-8 .txt file or folder.
text = load_corpus("pydoc", max_chars=L.pick(None, 100_000))
print("pydoc corpus: %d characters, %d lines" % (len(text), text.count("\n")))
print(text[:300])
code = load_corpus("code", max_chars=20_000)
print("code corpus (first 20,000 characters) starts with:\n" + code[:200])

# Problems with a user's corpus are clear exceptions naming the file, never a crash or garbage.
errors = []
with tempfile.TemporaryDirectory() as d:
    bad = os.path.join(d, "latin1.txt")
    with open(bad, "wb") as f:
        f.write("caf\u00e9 au lait".encode("latin-1"))          # not UTF-8
    empty = os.path.join(d, "empty.txt")
    open(empty, "w").close()
    for path in (bad, empty, os.path.join(d, "missing.txt")):
        try:
            load_corpus(path)
        except CorpusError as e:
            errors.append(str(e))
            print("CorpusError:", e)
L.check("a non-UTF-8, an empty and a missing file each raise a CorpusError", len(errors) == 3)

# %%
L.step("2. Text -> one stream of token ids")
# 003 §3.1: "convert the data to a format the model understands". For a language model that is
# one long array of token ids (lesson 02_2 builds the tokenizers); documents are simply joined.
tok = BPETokenizer.train(text[:L.pick(200_000, 50_000)], vocab_size=L.pick(512, 384))
ids = np.array(tok.encode(text), dtype=np.int64)            # (N,)
print("BPE vocabulary %d; %d characters -> %d tokens (%.2f chars per token)"
      % (tok.vocab_size, len(text), len(ids), len(text) / len(ids)))
print("ids[:12] =", ids[:12].tolist(), "->", repr(tok.decode(ids[:12])))
L.check("decoding the id stream gives back the corpus exactly", tok.decode(ids) == text)

# %%
L.step("3. Train / validation: hold out a contiguous tail")
# split_train_val keeps the LAST 10% of the stream as validation text.
train_ids, val_ids = split_train_val(ids, val_fraction=0.1)
print("train %d tokens, validation %d tokens" % (len(train_ids), len(val_ids)))
# Why not a random split? A common mistake: cut the stream into overlapping windows (as a batch
# sampler does), shuffle them, and call 10% of them validation. Measure how much validation text
# the training windows already contain:
T = 64
rng = np.random.default_rng(L.seed)
starts = np.arange(0, len(ids) - T, T // 4)                 # windows overlapping by 3/4
rng.shuffle(starts)
n_val = len(starts) // 10
val_starts, train_starts = starts[:n_val], starts[n_val:]
seen = np.zeros(len(ids), bool)                             # token positions inside a train window
for s in train_starts:
    seen[s:s + T] = True
leak_random = np.mean([seen[s:s + T].mean() for s in val_starts])
tail_start = len(train_ids)
seen_tail = np.zeros(len(ids), bool)
for s in range(0, tail_start - T, T // 4):                  # training windows of the tail split
    seen_tail[s:s + T] = True
leak_tail = seen_tail[tail_start:].mean()
print("random window split: %.0f%% of validation tokens sit inside some training window" %
      (100 * leak_random))
print("tail split:          %.0f%%" % (100 * leak_tail))
print("A leaky validation set measures memorisation, not generalisation.")
L.check("a random split of overlapping windows leaks most validation text into training",
        leak_random > 0.5, "%.2f" % leak_random)
L.check("the contiguous tail split leaks none", leak_tail == 0.0)

# %%
L.step("4. Batches: random windows, target = input shifted by one")
B, T = 8, L.pick(128, 32)
sampler = BatchSampler(train_ids, batch_size=B, block_size=T, seed=L.seed)
x, y = sampler.next_batch()                                 # (B, T) each
print("x, y shapes:", x.shape, y.shape)
print("row 0 input :", repr(tok.decode(x[0, :20])))
print("row 0 target:", repr(tok.decode(y[0, :20])))
print("at every position t the model sees x[:, :t+1] and must predict y[:, t] = the next token:"
      " B*T = %d predictions per batch" % (B * T))
L.check("y is x shifted by one token", np.array_equal(x[:, 1:], y[:, :-1]))


def window_starts(stream, row):
    """Every s with stream[s : s+len(row)] == row."""
    cand = np.flatnonzero(stream[:len(stream) - len(row)] == row[0])
    return [s for s in cand if np.array_equal(stream[s:s + len(row)], row)]


found = [window_starts(train_ids, row) for row in x]
L.check("every row is a window of the training stream, and its target is the next token",
        all(len(s) and train_ids[s[0] + T] == y[b, -1] for b, s in enumerate(found)))

# Resuming: the sampler's state (its RNG) is part of a checkpoint, so a resumed run sees the same
# batches as one that was never interrupted.
state = sampler.state_dict()
after = [sampler.next_batch()[0] for _ in range(3)]
resumed = BatchSampler(train_ids, batch_size=B, block_size=T, seed=123).load_state_dict(state)
L.check("a sampler restored from state_dict draws the very same batches",
        all(np.array_equal(a, resumed.next_batch()[0]) for a in after))

# How much of the training text has the model seen after k batches? A trick to see where the
# windows start: sample from the stream of POSITIONS 0..N-1 instead of token ids - the same
# sampler, so x[:, 0] is each window's start.
N = len(train_ids)
epochs = L.pick(3.0, 2.0)                                   # "epochs" = tokens drawn / N
steps = int(epochs * N / (B * T))
pos_sampler = BatchSampler(np.arange(N), batch_size=B, block_size=T, seed=L.seed)
covered = np.zeros(N, bool)
frac = np.empty(steps)
for k in range(steps):
    xb, _ = pos_sampler.next_batch()                        # (B, T) positions
    covered[xb.ravel()] = True
    frac[k] = covered.mean()
drawn = (np.arange(1, steps + 1) * B * T) / N               # tokens drawn so far, in epochs
# Each window covers a given position with probability about T / (N - T), so after k batches
# (k*B windows) the covered share is about 1 - (1 - T/(N-T))^(k B) ~= 1 - exp(-tokens drawn / N).
theory = 1 - (1 - T / (N - T)) ** (np.arange(1, steps + 1) * B)
one_epoch = frac[min(steps - 1, int(N / (B * T)) - 1)]
print("after one epoch's worth of tokens: %.0f%% of the training text seen (theory 1-1/e = 63%%)"
      % (100 * one_epoch))
print("after %.0f epochs: %.0f%%" % (epochs, 100 * frac[-1]))

fig, ax = plt.subplots(figsize=(6.5, 4))
ax.plot(drawn, 100 * frac, label="measured (BatchSampler, B=%d, T=%d)" % (B, T))
ax.plot(drawn, 100 * theory, "k--", label="1 - (1 - T/(N-T))^(kB)")
ax.axvline(1.0, color="gray", ls=":")
ax.set_xlabel("tokens drawn / training tokens  (\"epochs\")")
ax.set_ylabel("% of training positions seen at least once")
ax.set_title("Random windows cover the text only gradually")
ax.set_ylim(0, 100)
ax.legend(loc="lower right")
L.savefig(fig, "coverage.png")
L.check("measured coverage follows the formula within 3 points",
        np.max(np.abs(frac - theory)) < 0.03, "max gap %.3f" % np.max(np.abs(frac - theory)))
L.check("one epoch of random windows sees only about 63% of the text (55-70%)",
        0.55 < one_epoch < 0.70, "%.2f" % one_epoch)

# %%
L.finish()
