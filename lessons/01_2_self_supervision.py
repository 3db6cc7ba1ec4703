"""Lesson 01_2 - where a language model's labels come from, and counts -> networks -> Transformer.

Accompanies: 001 §1 背景介绍, 001 §2 核心概念与联系, 002 §1 背景介绍, 003 §1 背景介绍,
004 背景介绍, 003 §2.2 大语言模型, 003 §2.3 深度学习, 001 §8 附录：常见问题与解答 (问题 1).

The four documents open (背景介绍) with the same story: language models went from counting to
neural networks to Transformers, and grew large. 001 §2 adds the idea that makes the growth
possible - self-supervision: the training labels are made from the text itself. You make those
labels (for the causal and the masked objective) and check that no annotator is needed, then
measure the story on one corpus: unigram, bigram and 5-gram counts, a small MLP language model
(a neural LM of 2003's design) and the small GPT that ships with tinylm, each scored on the same
held-out text, with its size in parameters (003 §2.2's yardstick for "large").
"""

# %%
import math

import numpy as np

from tinylm.data import BatchSampler, load_corpus, split_text
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models import build_model
from tinylm.models.bert import BERT, BERTConfig
from tinylm.models.ngram import NGramLM
from tinylm.pretrained.packaged import load_packaged_model
from tinylm.train import TrainConfig, Trainer, evaluate

L = Lesson(__doc__)
plt = matplotlib_agg()

# %%
L.step("1. Labels from the text itself (001 §2: 自监督学习)")
# The packaged GPT was trained on the "pydoc" corpus, characters as tokens; everything below
# uses its tokenizer and the same train/validation split (tinylm.data.split_text: every tenth
# block of the text is held out, so validation text is as varied as training text).
gpt, tok, meta = load_packaged_model()
text = load_corpus("pydoc")
train_text, val_text = split_text(text, val_fraction=meta["train_config"]["val_fraction"])
train_ids = np.array(tok.encode(train_text), dtype=np.int64)      # (N_train,)
val_ids = np.array(tok.encode(val_text), dtype=np.int64)          # (N_val,)
print("corpus: %d characters -> %d training / %d validation tokens (vocabulary %d)"
      % (len(text), len(train_ids), len(val_ids), tok.vocab_size))

# Causal LM (GPT; 001 §2 "predict the next word"): input = the text, label = the text moved
# one token left. Every position of raw text is a labelled example. These are the batches
# tinylm's Trainer feeds (tinylm.data.BatchSampler): check that they are nothing but raw text.
xb, yb = BatchSampler(train_ids, batch_size=64, block_size=32, seed=L.seed).next_batch()
print("example: context %r -> label %r" % (tok.decode(xb[0]), tok.decode([yb[0, -1]])))
raw = train_ids.tobytes()
windows_ok = all(np.concatenate([xb[r], yb[r, -1:]]).tobytes() in raw for r in range(len(xb)))
L.check("causal LM: every (input, label) row is a 33-token stretch of the raw text, shifted by one",
        windows_ok and np.array_equal(xb[:, 1:], yb[:, :-1]))

# Masked LM (BERT; lesson 03_5): hide 15% of the tokens, the label is the hidden token
# (tinylm.models.bert.BERT.mask_tokens, the masking the BERT lessons train with).
mlm = BERT(BERTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2,
                      d_model=16, seed=0))
window = train_ids[:32 * 64].reshape(64, 32)
masked_input, labels = mlm.mask_tokens(window, rng=np.random.default_rng(L.seed))
scored = labels != mlm.ignore_index
print("masked LM: %d of %d positions hidden and scored" % (scored.sum(), scored.size))
L.check("masked LM: the labels are the original tokens at the scored positions, nothing else",
        np.array_equal(labels[scored], window[scored]) and 0.1 < scored.mean() < 0.2,
        "%.1f%% scored" % (100 * scored.mean()))
print("""
So a corpus of N tokens gives N - 1 next-token labels (causal) or about 0.15 N (masked), for
free. The training itself is ordinary supervised learning - a cross-entropy against a target,
lesson 04_1 - only the targets are cut from the input instead of written by people. That is
the honest form of 001 §8 问题 1 ("LLMs use self-supervision, traditional ML uses supervised
learning"): the loss is the same kind; what changes is where the labels come from, and so how
many there can be. Fine-tuning (lesson 03_5) then uses a few human labels again.""")

# %%
L.step("2. From counts to networks to a Transformer, on one corpus")
# All models are scored on the same held-out characters, in nats per character (lower is
# better; e^loss is the perplexity, "how many equally likely choices per character").
M = L.pick(20_000, 3_000)                 # n-gram scoring is a Python loop: keep it short
held_out = val_ids[:M + 1]
results = {}                              # name -> (loss, parameters)
for order in (1, 2, 5):
    ng = NGramLM(order=order, smoothing="kneser_ney" if order > 1 else "add_k",
                 vocab_size=tok.vocab_size).fit(train_ids)
    loss = math.log(ng.perplexity(held_out[1:].tolist()))
    results["%d-gram counts" % order] = (loss, ng)
    print("%-22s %.3f nats/char" % ("%d-gram counts" % order, loss))

# A neural LM of Bengio et al. (2003)'s design: the previous 8 characters -> embeddings ->
# tanh hidden layer -> softmax (tinylm.models.mlp; lesson 02_1 derives its backward).
mlp = build_model("mlp", vocab_size=tok.vocab_size, context=8, emb_dim=24, hidden=256, seed=0)
steps = L.pick(1500, 250)
Trainer(mlp, tok, train_ids, val_ids,
        TrainConfig(steps=steps, batch_size=32, block_size=64, lr=3e-3, min_lr=3e-4, warmup=50,
                    eval_interval=10 ** 9, eval_batches=2, seed=0, plot=False), log=None).fit()
results["MLP (2003 design)"] = (evaluate(mlp, held_out, 64, 16), mlp)
print("%-22s %.3f nats/char after %d steps" % ("MLP (2003 design)", results["MLP (2003 design)"][0],
                                               steps))
# The packaged GPT (2018's design, decoder-only Transformer): trained by
# scripts/train_packaged_model.py for meta["step"] steps on the same training text.
results["GPT (packaged)"] = (evaluate(gpt, held_out, gpt.config.block_size, 16), gpt)
print("%-22s %.3f nats/char (trained %d steps by scripts/train_packaged_model.py)"
      % ("GPT (packaged)", results["GPT (packaged)"][0], meta["step"]))
uniform = math.log(tok.vocab_size)
print("%-22s %.3f nats/char (a uniform guess over %d characters)" % ("no model", uniform,
                                                                     tok.vocab_size))
L.check("every model beats the uniform guess",
        all(r[0] < uniform for r in results.values()))
L.check("more context helps the counts: 1-gram > 2-gram > 5-gram loss",
        results["1-gram counts"][0] > results["2-gram counts"][0] > results["5-gram counts"][0],
        " > ".join("%.3f" % results["%d-gram counts" % o][0] for o in (1, 2, 5)))
L.check("the neural LM of 2003's design beats the bigram counts",
        results["MLP (2003 design)"][0] < results["2-gram counts"][0],
        "%.3f vs %.3f" % (results["MLP (2003 design)"][0], results["2-gram counts"][0]))
L.check("the GPT beats the MLP", results["GPT (packaged)"][0] < results["MLP (2003 design)"][0],
        "%.3f vs %.3f" % (results["GPT (packaged)"][0], results["MLP (2003 design)"][0]))
# ⚠ The story of 背景介绍 ("neural networks replaced counting") is about scale. On 420k
# characters of repetitive reference text, Kneser-Ney-smoothed 5-gram counts are as good as the
# small GPT (which also reads each 128-character window from scratch: 64 characters of context
# on average). Networks pull ahead with more data, longer contexts and more compute.
L.check("at this small scale the smoothed 5-gram is as good as the GPT (within 0.1 nats)",
        results["5-gram counts"][0] < results["GPT (packaged)"][0] + 0.1,
        "%.3f vs %.3f" % (results["5-gram counts"][0], results["GPT (packaged)"][0]))

# %%
L.step("3. Size in parameters (003 §2.2 大语言模型, 003 §2.3 深度学习)")
# 003 §2.2 measures "large" by the number of parameters. An n-gram model's "parameters" are its
# stored counts; a network's are its weights. 003 §2.3: deep learning stacks layers that learn
# their own features (here: embeddings, hidden units, attention), instead of hand-made ones.


def n_params(m):
    if isinstance(m, NGramLM):                     # one stored count per distinct n-gram
        return sum(len(v) for k, v in m.state_dict().items() if k.startswith("counts"))
    return m.num_parameters()


names = list(results)
sizes = [n_params(results[n][1]) for n in names]
for n, s in zip(names, sizes):
    print("%-22s %10s parameters   %.3f nats/char" % (n, "{:,}".format(s), results[n][0]))
GPT3 = 175e9
print("GPT-3 (003 §1): 175,000,000,000 parameters = %.0f x the packaged GPT"
      % (GPT3 / results["GPT (packaged)"][1].num_parameters()))
fig, ax = plt.subplots(figsize=(7, 4.5))
for n, s in zip(names, sizes):
    ax.scatter(s, results[n][0], s=40)
    ax.annotate(n, (s, results[n][0]), textcoords="offset points", xytext=(5, 5), fontsize=8)
ax.axhline(uniform, color="gray", ls=":", label="uniform guess")
ax.set_xscale("log")
ax.set_xlabel("parameters (stored counts for n-grams)")
ax.set_ylabel("held-out loss (nats/char)")
ax.set_title("One corpus: counts, a 2003-style MLP, a 2018-style GPT")
ax.legend()
ax.grid(alpha=0.3)
L.savefig(fig, "timeline_on_one_corpus.png")
half = NGramLM(order=5, smoothing="kneser_ney",
               vocab_size=tok.vocab_size).fit(train_ids[:len(train_ids) // 2])
n_half, n_full = n_params(half), sizes[names.index("5-gram counts")]
print("5-gram counts from half the training text: %s; from all of it: %s"
      % ("{:,}".format(n_half), "{:,}".format(n_full)))
L.check("the n-gram model's size grows with its data (the GPT's is fixed by its design)",
        n_half < 0.8 * n_full, "%d vs %d" % (n_half, n_full))
print("""
Counts need a number for every context they have seen - the table grows with the data - and
know nothing about contexts they have not; a network has a fixed size chosen by its design,
shares its weights across contexts and generalises (lesson 01_1 step 5).
That - and self-supervised labels in unlimited supply - is why the timeline of 背景介绍 went
from counting to ever larger networks.""")

# %%
L.finish()
