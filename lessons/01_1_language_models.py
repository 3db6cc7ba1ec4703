"""Lesson 01_1 - what a language model is: counting n-grams.

Accompanies: 000 §1 背景介绍, 003 §2.1 语言模型, 003 §4 数学模型和公式详细讲解举例说明.

A language model gives a probability to every piece of text. You build the oldest kind, a
count-based n-gram model, on a real English corpus; compute P(w1..wN) with the chain rule of
003 §4 and check it against the counts by hand; sample text from it; measure perplexity on held-out
text; and see why raw counts fail: the longer the context, the more of new text was never seen,
and one unseen n-gram makes the whole text "impossible" unless probability is smoothed.
"""

# %%
import math
from collections import Counter

import numpy as np

from tinylm.data import load_corpus, split_train_val
from tinylm.generate import generate_ids
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models.ngram import NGramLM
from tinylm.tokenizers import WordTokenizer

L = Lesson(__doc__)
plt = matplotlib_agg()

# %%
L.step("1. A corpus as a stream of word ids")
# The corpus: the English reference text that ships with Python (tinylm.data.load_corpus).
# Words (lower-cased) are the tokens here; lesson 02_2 compares other ways to cut text.
text = load_corpus("pydoc", max_chars=L.pick(None, 120_000))
tok = WordTokenizer.train(text, lowercase=True)
ids = np.array(tok.encode(text), dtype=np.int64)           # (N,) every word is in the vocabulary
train_ids, val_ids = split_train_val(ids, val_fraction=0.1)
val_ids = val_ids[:L.pick(20_000, 2_000)]                  # scoring is a Python loop: keep it short
print("characters %d, words %d, vocabulary V = %d" % (len(text), len(ids), tok.vocab_size))
print("train %d words, validation %d words (the last 10%% of the text, never trained on)"
      % (len(train_ids), len(val_ids)))
print("first words:", tok.decode(ids[:25]))

# %%
L.step("2. The chain rule: P(w1..wN) = prod_i P(w_i | w_1..w_{i-1})")
# 003 §4 writes the probability of a text as a product of next-word probabilities. That is exact
# (the chain rule of probability). An n-gram model makes ONE approximation: P(w_i | everything
# before) ~= P(w_i | the previous n-1 words), estimated by counting:  c(h w) / c(h).
bigram = NGramLM(order=2, smoothing="mle", vocab_size=tok.vocab_size).fit(train_ids)
sentence = "the value of the expression is returned ."
s_ids = tok.encode(sentence)
pair_counts = Counter(zip(train_ids[:-1].tolist(), train_ids[1:].tolist()))   # c(h w)
word_counts = Counter(train_ids.tolist())                                     # c(w)
logp_by_hand = math.log(word_counts[s_ids[0]] / len(train_ids))              # P(w1) = c(w1)/N
print("%-12s %-12s %8s %8s %10s" % ("context", "word", "c(h w)", "c(h)", "P(w | h)"))
for h, w in zip(s_ids[:-1], s_ids[1:]):
    # c(h) here is the number of times h is followed by something: sum over w of c(h w)
    c_h = sum(c for (a, _), c in pair_counts.items() if a == h)
    p = pair_counts[(h, w)] / c_h
    logp_by_hand += math.log(p)
    print("%-12s %-12s %8d %8d %10.4f" % (tok.itos[h], tok.itos[w], pair_counts[(h, w)], c_h, p))
logp_model = bigram.sequence_logprob(s_ids)                # tinylm.models.ngram: the same rule
print("log P(sentence): by hand %.6f, NGramLM.sequence_logprob %.6f  (P = %.3g)"
      % (logp_by_hand, logp_model, math.exp(logp_model)))
L.check("the chain rule over counted bigrams equals NGramLM's log-probability",
        abs(logp_by_hand - logp_model) < 1e-9, "%.3g" % abs(logp_by_hand - logp_model))
p_next = bigram.distribution([tok.stoi["the"]])
L.check("P(. | 'the') is a probability distribution (sums to 1)",
        abs(p_next.sum() - 1) < 1e-12 and p_next.min() >= 0, "sum %.15f" % p_next.sum())
top = np.argsort(p_next)[::-1][:8]
print("most likely words after 'the':", ", ".join("%s %.3f" % (tok.itos[i], p_next[i]) for i in top))

# %%
L.step("3. Sampling: a language model can write")
# Sampling = draw w_1 ~ P(.|start), then w_2 ~ P(.|w_1), ... (tinylm.generate.generate_ids, the
# same sampler as for every tinylm model; the n-gram model gives it log-probabilities as logits).
for order in (1, 2, 3):
    m = NGramLM(order=order, smoothing="kneser_ney", vocab_size=tok.vocab_size).fit(train_ids)
    out = generate_ids(m, [tok.stoi["the"]], max_length=26, do_sample=True, seed=L.seed)[0].tolist()
    print("order %d: %s" % (order, tok.decode(out)))
print("(unigrams are word salad; each extra word of context makes the text more local-grammatical)")

# %%
L.step("4. Perplexity, and why raw counts fail on new text")
# Perplexity = exp(-(1/N) log P(w_1..w_N)) = exp(mean cross-entropy): "as unsure as a uniform
# choice among this many words". Lower is better; a uniform guess over V words scores V.
orders = [1, 2, 3, 4, 5]
rows = {"train_kn": [], "val_kn": [], "val_mle": [], "unseen": []}
train_probe = train_ids[:len(val_ids)]                      # the same number of training words
for n in orders:
    kn = NGramLM(order=n, smoothing="kneser_ney", vocab_size=tok.vocab_size).fit(train_ids)
    mle = NGramLM(order=n, smoothing="mle", vocab_size=tok.vocab_size).fit(train_ids)
    rows["train_kn"].append(kn.perplexity(train_probe))
    rows["val_kn"].append(kn.perplexity(val_ids))
    rows["val_mle"].append(mle.perplexity(val_ids))
    rows["unseen"].append(mle.unseen_fraction(val_ids))
    print("order %d: unseen n-grams in validation %5.1f%%   perplexity  train(KN) %8.1f   "
          "val(KN) %8.1f   val(no smoothing) %s"
          % (n, 100 * rows["unseen"][-1], rows["train_kn"][-1], rows["val_kn"][-1],
             "%.1f" % rows["val_mle"][-1] if math.isfinite(rows["val_mle"][-1]) else "inf"))
print("uniform guess: perplexity V = %d" % tok.vocab_size)
print("Without smoothing one unseen n-gram gets P = 0, so P(text) = 0 and perplexity = inf.\n"
      "Kneser-Ney smoothing (see the NGramLM docstring) lends mass to unseen n-grams.\n"
      "Training perplexity keeps falling with n (memorising); validation perplexity falls far less\n"
      "and the gap widens: the long contexts of new text were mostly never counted.\n"
      "Neural LMs (lesson 02_1 on) share strength between similar contexts instead of\n"
      "counting each one separately.")

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
ax = axes[0]
ax.plot(orders, rows["train_kn"], "o-", label="training text (Kneser-Ney)")
ax.plot(orders, rows["val_kn"], "s-", label="validation text (Kneser-Ney)")
ax.set_yscale("log")
ax.set_xlabel("n-gram order n (context = n-1 previous words)")
ax.set_ylabel("perplexity (log scale, lower is better)")
ax.set_title("Counting memorises: train vs held-out perplexity")
ax.set_xticks(orders)
ax.legend()
ax = axes[1]
ax.bar(orders, [100 * u for u in rows["unseen"]], color="tab:red")
ax.set_xlabel("n-gram order n")
ax.set_ylabel("% of validation n-grams never seen in training")
ax.set_title("Why counts fail: unseen contexts")
ax.set_xticks(orders)
ax.set_ylim(0, 100)
L.savefig(fig, "ngram_perplexity.png")

# %%
L.step("5. Checks")
L.check("unsmoothed bigram..5-gram give held-out text probability 0 (perplexity inf)",
        all(math.isinf(p) for p in rows["val_mle"][1:]))
L.check("the unseen share grows with every order, to over 15% of validation 5-grams",
        all(a < b for a, b in zip(rows["unseen"], rows["unseen"][1:])) and rows["unseen"][4] > 0.15,
        ", ".join("%.2f" % u for u in rows["unseen"]))
L.check("training perplexity falls with every extra word of context",
        all(a > b for a, b in zip(rows["train_kn"], rows["train_kn"][1:])))
L.check("a smoothed bigram beats the unigram on held-out text",
        rows["val_kn"][1] < 0.8 * rows["val_kn"][0],
        "%.1f vs %.1f" % (rows["val_kn"][1], rows["val_kn"][0]))
gap = [v / t for v, t in zip(rows["val_kn"], rows["train_kn"])]
L.check("the held-out gap (val / train perplexity) widens with every order, past 2x at n=5",
        all(a < b for a, b in zip(gap, gap[1:])) and gap[4] > 2,
        ", ".join("%.2f" % g for g in gap))
L.check("every smoothed model beats the uniform guess (perplexity < V)",
        max(rows["val_kn"]) < tok.vocab_size)

# %%
L.finish()
