"""Lesson 02_2 - tokenization: cutting text into the units a model predicts.

Accompanies: 000 §2.2 自然语言处理, 002 §3 核心算法原理具体操作步骤 (step 1: 分词、去停用词、词向量化),
003 §3.1 数据预处理.

You cut the same English text three ways - characters, words, and byte-level byte-pair encoding
(BPE, as in GPT-2) - and see the trade-off between vocabulary size and sequence length. You write
the BPE training loop yourself in a dozen lines and check it learns exactly the merges of
tinylm.tokenizers.BPETokenizer. Finally you test a step of 002 §3, removing stop words, and see
by experiment why a language model must keep them, and run Chinese text through all three.
Last, 000 §2.2's other sub-fields of NLP, as a small trained language model meets them.
"""

# %%
import math
import re
from collections import Counter

import numpy as np

from tinylm.data import load_corpus, split_train_val
from tinylm.generate import generate_ids
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models.ngram import NGramLM
from tinylm.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer

L = Lesson(__doc__)
plt = matplotlib_agg()

text = load_corpus("pydoc", max_chars=L.pick(300_000, 60_000))
sample = "The expression x not in s returns True if x isn't a member of s."
print("corpus: %d characters of Python's reference documentation" % len(text))

# %%
L.step("1. Characters and words")
char_tok = CharTokenizer.train(text)
word_tok = WordTokenizer.train(text)           # rule: \w+ runs, or one punctuation mark
for name, t in (("char", char_tok), ("word", word_tok)):
    ids = t.encode(sample)
    print("%-5s vocab %5d  %3d tokens: %s" % (name, t.vocab_size, len(ids),
                                              " | ".join(t.decode([i]) for i in ids[:16])))
print("word decode(encode(s)):", word_tok.decode(word_tok.encode(sample)))
rare = WordTokenizer.train(text, min_count=3)
print("a word vocabulary keeping words seen >= 3 times has %d entries; the rest become <unk>:"
      % rare.vocab_size)
print("   ", rare.decode(rare.encode("The frobnicated expression is unhashable.")))

# %%
L.step("2. Byte-pair encoding, written out")
# BPE starts from the 256 byte values (so any text can be encoded) and repeatedly merges the most
# frequent adjacent pair of tokens into a new token. Text is first pre-split into pieces
# (BPETokenizer.split: words with their leading space, numbers, punctuation runs), and merges never
# cross piece boundaries. This is the whole algorithm; tinylm's BPETokenizer.train does the same
# with incremental counting so it is fast.


def learn_bpe(text, num_merges):
    """The plain BPE training loop: returns a list of merged pairs (a, b) -> new id 256 + r."""
    piece_counts = Counter(BPETokenizer.split(text))
    words = {tuple(p.encode("utf-8")): c for p, c in piece_counts.items()}   # bytes -> count
    merges = []
    for r in range(num_merges):
        pairs = Counter()
        for w, c in words.items():                       # count adjacent pairs, weighted
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))  # most frequent; ties -> smallest pair
        if pairs[best] < 2:
            break
        new_id = 256 + r
        merges.append(best)
        merged_words = {}
        for w, c in words.items():                       # replace every (a, b) by new_id
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged_words[tuple(out)] = c
        words = merged_words
    return merges


n_merges = L.pick(60, 30)
small = text[:L.pick(60_000, 20_000)]
mine = learn_bpe(small, n_merges)
lib = BPETokenizer.train(small, vocab_size=256 + n_merges)
lib_view = BPETokenizer(mine)
print("first merges:", ", ".join(repr(lib_view.token_str(256 + r)) for r in range(15)))
L.check("the dozen-line BPE loop learns exactly BPETokenizer.train's merges",
        [tuple(m) for m in lib.merges] == mine, "%d merges" % len(mine))

bpe = BPETokenizer.train(text, vocab_size=L.pick(1024, 512))
ids = bpe.encode(sample)
print("bpe   vocab %5d  %3d tokens: %s" % (bpe.vocab_size, len(ids),
                                           " | ".join(bpe.token_str(i) for i in ids)))
odd = "naïve café 🙂 ∑x²"
L.check("byte-level BPE encodes any string, even unseen characters, and decodes it exactly",
        bpe.decode(bpe.encode(odd)) == odd and bpe.decode(bpe.encode(sample)) == sample)
try:
    char_tok.encode(odd)
    char_fails = False
except ValueError as e:
    char_fails = True
    print("the character tokenizer cannot:", e)
L.check("the character tokenizer rejects characters it never saw (with a clear error)", char_fails)

# %%
L.step("3. Vocabulary size vs sequence length")
# A bigger vocabulary means fewer tokens per text (shorter sequences, cheaper attention) but a
# bigger embedding table and output layer, and rarer tokens with fewer training examples each.
probe = text[-L.pick(40_000, 10_000):]                    # measure on a stretch of text
bpe_sizes = L.pick([256, 320, 512, 1024, 2048], [256, 320, 512, 768])
train_part = text[:-len(probe)]
tokens_per_char = []
for V in bpe_sizes:
    t = BPETokenizer.train(train_part, vocab_size=V)
    tokens_per_char.append(len(t.encode(probe)) / len(probe))
    print("bpe  vocab %5d: %.3f tokens per character" % (V, tokens_per_char[-1]))
char_tpc = len(char_tok.encode(probe)) / len(probe)
word_probe = WordTokenizer.train(train_part)
word_tpc = len(word_probe.encode(probe)) / len(probe)
word_unk = np.mean(np.array(word_probe.encode(probe)) == 0)
print("char vocab %5d: %.3f tokens per character" % (char_tok.vocab_size, char_tpc))
print("word vocab %5d: %.3f tokens per character, but %.1f%% of the words are <unk> (lost)"
      % (word_probe.vocab_size, word_tpc, 100 * word_unk))

fig, ax = plt.subplots(figsize=(7, 4.5))
ax.plot(bpe_sizes, tokens_per_char, "o-", label="byte-level BPE (lossless)")
ax.plot([char_tok.vocab_size], [char_tpc], "s", ms=9, label="characters")
ax.plot([word_probe.vocab_size], [word_tpc], "^", ms=9,
        label="words (%.1f%% <unk> on new text)" % (100 * word_unk))
ax.set_xscale("log")
ax.set_xlabel("vocabulary size (log scale)")
ax.set_ylabel("tokens per character of text (lower = shorter sequences)")
ax.set_title("The tokenizer trade-off: vocabulary size vs sequence length")
ax.legend()
L.savefig(fig, "vocab_vs_length.png")
L.check("every extra BPE merge shortens the text (tokens/char falls with vocabulary size)",
        all(a > b for a, b in zip(tokens_per_char, tokens_per_char[1:])),
        ", ".join("%.3f" % x for x in tokens_per_char))
L.check("words give the shortest sequences, characters the longest",
        word_tpc < tokens_per_char[-1] < char_tpc)

# %%
L.step("4. Stop words: 002 §3 removes them - a language model must not")
# 002 §3 step 1 lists "去停用词" (removing stop words: the, of, is, not, ...) as preprocessing for a
# language model. That step comes from bag-of-words retrieval and classification, where frequent
# function words carry little about the topic. A language model's job is different: to give a
# probability to real text and to write real text - and real text is full of stop words.
STOP = set("""a an the of to in on at by for from with as and or but if then so than is are was
were be been being it its this that these those there here which who what when where how not no
do does did can could will would should may might must have has had you he she we they them
his her our your their all any each some such only also into out up over""".split())
word_lc = WordTokenizer.train(text, lowercase=True)
ids = np.array(word_lc.encode(text), dtype=np.int64)
stop_ids = np.array(sorted(word_lc.stoi[w] for w in STOP if w in word_lc.stoi))
train_ids, val_all = split_train_val(ids, 0.1)
val_ids = val_all[:L.pick(15_000, 3_000)]               # scoring is a Python loop: keep it short
is_stop = np.isin(train_ids, stop_ids)
print("stop words are %.0f%% of the word tokens" % (100 * is_stop.mean()))
for s in ("x in s", "x not in s", "x is y", "x is not y"):
    kept = [w for w in WordTokenizer.split(s, True) if w not in STOP]
    print("   %-12r -> %r" % (s, " ".join(kept)))
print("   (in Python's docs 'in' and 'not in' are opposite operators: without stop words they are "
      "the same text)")

order = 3
full = NGramLM(order=order, vocab_size=word_lc.vocab_size).fit(train_ids)
nostop = NGramLM(order=order, vocab_size=word_lc.vocab_size).fit(train_ids[~is_stop])
# (a) As a model of real text: score the same held-out text (stop words and all) with both.
ppl_full, ppl_nostop = full.perplexity(val_ids), nostop.perplexity(val_ids)
print("perplexity on real held-out text:  trained with stop words %.1f,  without %.1f"
      % (ppl_full, ppl_nostop))
# (b) As a writer: sample from both, and ask how many adjacent word pairs of the sample occur
# anywhere in real held-out text.
real_pairs = set(zip(val_all[:-1].tolist(), val_all[1:].tolist()))
start = [word_lc.stoi["the"]]
real_share = {}
for name, m in (("with stop words", full), ("without", nostop)):
    samples = [generate_ids(m, start, max_length=31, do_sample=True, seed=L.seed + k)[0].tolist()
               for k in range(L.pick(20, 8))]
    pairs = [p for s in samples for p in zip(s[:-1], s[1:])]
    real_share[name] = np.mean([p in real_pairs for p in pairs])
    print("%-16s sample: %s" % (name, word_lc.decode(samples[0])))
    print("%-16s %.0f%% of its word pairs occur in real held-out text" % ("", 100 * real_share[name]))
# (c) The honest other side: on the content words alone the stop-word-free model does about as
# well (its 2-word context holds more content words). That is why classifiers drop stop words -
# and why it does not matter here: an LM must predict every token of the text.
val_stop = np.isin(val_ids, stop_ids)
vl, vn = val_ids.tolist(), val_ids[~val_stop].tolist()
nll_full = -np.mean([full.logprob(vl[:i], vl[i]) for i in range(1, len(vl)) if not val_stop[i]])
nll_nostop = -np.mean([nostop.logprob(vn[:i], vn[i]) for i in range(1, len(vn))])
print("content words only, nats/word: with stop words in the context %.2f, without %.2f"
      % (nll_full, nll_nostop))

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
axes[0].bar(["trained with\nstop words", "trained without\n(002 §3)"], [ppl_full, ppl_nostop],
            color=["tab:blue", "tab:red"])
axes[0].set_ylabel("perplexity on real held-out text")
axes[0].set_title("Scoring real text (trigram LM)")
axes[1].bar(["with stop words", "without"], [100 * v for v in real_share.values()],
            color=["tab:blue", "tab:red"])
axes[1].set_ylabel("% of sampled word pairs found in real text")
axes[1].set_ylim(0, 100)
axes[1].set_title("Writing text: samples that look real")
L.savefig(fig, "stop_words.png")
L.check("without stop words the LM is far worse at real text (perplexity over 3x)",
        ppl_nostop > 3 * ppl_full, "%.1f vs %.1f" % (ppl_nostop, ppl_full))
L.check("samples of the stop-word-free LM look less like real text",
        real_share["without"] < 0.85 * real_share["with stop words"],
        "%.2f vs %.2f" % (real_share["without"], real_share["with stop words"]))

# %%
L.step("5. Chinese text through the same tokenizers")
# The course is read in Chinese; the corpus above is English. These sentences are written for
# this lesson (they are not quoted from the documents).
zh = """语言模型给每一段文字一个概率。
它一个字一个字地读，然后猜下一个字是什么。
训练数据就是文字本身，不需要人来标注。
模型越大，需要的数据和计算也越多。
小模型也能学会常见的词语和标点。
我们用同一段文字比较三种分词方法。
"""
zh_test = "模型读文字，然后猜下一个字。"
# Characters: each Chinese character is one token; the vocabulary must hold every character
# that will ever occur (thousands for real Chinese text) - an unseen character is an error.
zh_char = CharTokenizer.train(zh)
print("char: vocabulary %d from %d characters; %r -> %d tokens"
      % (zh_char.vocab_size, len(zh), zh_test, len(zh_char.encode(zh_test))))
try:
    zh_char.encode("机器翻译")
except ValueError as e:
    print("char: an unseen character is refused:", e)
# Words: a "word" used to be a run of \w characters - and Chinese characters are \w, with no
# spaces between words, so a whole clause came out as ONE token. tinylm's WordTokenizer now
# puts each CJK ideograph in its own token (as BERT does). Real Chinese word segmentation
# (语言 | 模型) needs a dictionary or a trained segmenter; the word tokenizer does not do it.
old_rule = re.findall(r"\w+|[^\w\s]", zh_test)
new_rule = WordTokenizer.split(zh_test)
print("word, old rule \\w+: %s" % " | ".join(old_rule))
print("word, tinylm now:  %s" % " | ".join(new_rule))
L.check("the old \\w+ rule turns each Chinese clause into one token",
        old_rule == ["模型读文字", "，", "然后猜下一个字", "。"], str(old_rule))
L.check("WordTokenizer gives one token per ideograph (and per punctuation mark)",
        new_rule == list(zh_test))
# Byte-level BPE: every string is UTF-8 bytes, and a Chinese character is 3 bytes. A BPE trained
# on English has no merges for them: 3 tokens per character. Trained on Chinese text it learns
# merges inside characters (and across frequent pairs), so the same text takes fewer tokens.
en_bpe = BPETokenizer.train(text[:50_000], vocab_size=400)
zh_bpe = BPETokenizer.train(zh * 3, vocab_size=400)
for name, t in (("BPE trained on English", en_bpe), ("BPE trained on the Chinese", zh_bpe)):
    ids = t.encode(zh_test)
    print("%-27s %2d tokens for %d characters (%.2f per character): %s"
          % (name, len(ids), len(zh_test), len(ids) / len(zh_test),
             " | ".join(t.decode_bytes([i]).decode("utf-8", "replace") for i in ids[:12])))
L.check("byte-level BPE encodes any Chinese text and decodes it exactly (both BPEs)",
        en_bpe.decode(en_bpe.encode(zh_test)) == zh_test
        and zh_bpe.decode(zh_bpe.encode(zh_test)) == zh_test)
L.check("the English-trained BPE needs 3 tokens per Chinese character (UTF-8 bytes)",
        len(en_bpe.encode("模型读文字然后猜下一个字")) == 3 * 12)
L.check("BPE trained on Chinese text needs fewer tokens than the English one",
        len(zh_bpe.encode(zh_test)) < len(en_bpe.encode(zh_test)),
        "%d vs %d" % (len(zh_bpe.encode(zh_test)), len(en_bpe.encode(zh_test))))
print("""
(A piece shown as '\ufffd' is part of a character: BPE merges bytes, and a merge may hold
1 or 2 of a character's 3 bytes. Decoding whole sequences is always exact.)""")

# %%
L.step("6. NLP's sub-fields, as a language model meets them (000 §2.2)")
# 000 §2.2 lists 词法分析 (lexical analysis), 句法分析 (syntax), 语义分析 (semantics) and 语用分析
# (pragmatics). Classical NLP built a separate tool for each; a language model is trained on
# none of them, only to predict the next token. Lexical analysis is what this lesson did:
# cutting text into units. Syntax it picks up from text alone - test it with minimal pairs
# (a grammatical sentence and the same with one agreement error, in the style of the corpus)
# on the small GPT that ships with tinylm (0.8M parameters, trained on this corpus; lesson 05_4).
from tinylm.pretrained.packaged import load_packaged_model  # noqa: E402
pm, ptok, _ = load_packaged_model()


def logprob(text_):
    ids_ = np.array([ptok.encode(text_)])
    z = pm.forward(ids_[:, :-1])[0]
    z = z - z.max(-1, keepdims=True)
    lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(lp[np.arange(ids_.shape[1] - 1), ids_[0, 1:]].sum())


minimal_pairs = [("The function returns a list.", "The function return a list."),
                 ("This method is called when", "This method are called when"),
                 ("An object has a type.", "An object have a type."),
                 ("These objects are compared", "These objects is compared"),
                 ("It raises an exception.", "It raise an exception."),
                 ("The arguments are evaluated", "The arguments is evaluated"),
                 ("If the value is true", "If the value are true"),
                 ("Each element is a string", "Each element are a string"),
                 ("The keys must be hashable", "The keys must is hashable"),
                 ("A module can contain classes", "A module can contains classes"),
                 ("an integer", "a integer"), ("an exception", "a exception")]
prefers = [logprob(good) > logprob(bad) for good, bad in minimal_pairs]
for (good, bad), ok in zip(minimal_pairs, prefers):
    print("  %-32s vs %-32s %s" % (good, bad, "prefers the grammatical one" if ok else "WRONG"))
L.check("the LM prefers the grammatical sentence in >= 10 of 12 minimal pairs (句法)",
        sum(prefers) >= 10, "%d/12" % sum(prefers))
print("""Semantics is harder: the same model answers factual questions at chance (lesson 06_1
step 5), and pragmatics (what a speaker means in context) is beyond any model this size.""")

# %%
L.finish()
