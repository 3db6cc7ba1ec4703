"""Lesson 06_1 - applications, in small and honest versions.

Accompanies: 000 §6 实际应用场景, 001 §6 实际应用场景, 002 §6 实际应用场景, 003 §6 实际应用场景,
004 实际应用场景.

The documents list applications - text generation, translation, question answering, sentiment,
summarisation, semantic search, code completion. You build laptop-sized versions of five of them
with tinylm: generation and code completion (two small GPTs, one on English, one on Python),
translation-like seq2seq, classification by fine-tuning an encoder, and semantic search with a
real pretrained sentence encoder (all-MiniLM-L6-v2) when it is installed. Each one is measured,
and the lesson says what a laptop version cannot show: question answering and summarising by
prompting, tried on the small GPT that ships with tinylm, measured against what it can do.
"""

# %%
import math

import numpy as np

from tinylm import optim
from tinylm.data import load_corpus, split_train_val
from tinylm.generate import generate
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models import build_model
from tinylm.models.bert import BERT, BERTConfig, SequenceClassifier
from tinylm.models.seq2seq import Seq2Seq, Seq2SeqConfig
from tinylm.pretrained.packaged import load_packaged_model
from tinylm.teaching.tasks import SequenceTask, sequence_accuracy
from tinylm.tokenizers import CharTokenizer
from tinylm.train import TrainConfig, Trainer, evaluate

L = Lesson(__doc__)
plt = matplotlib_agg()
rng = np.random.default_rng(L.seed)

# %%
L.step("1. Text generation and code completion: one recipe, two corpora")
# 003 §6 and 004 list code generation beside text generation: to a language model both are just
# text. Same GPT, same training; one reads English (pydoc), the other Python (the stdlib source).
english = load_corpus("pydoc", max_chars=L.pick(300_000, 100_000))
python = load_corpus("code", max_chars=L.pick(300_000, 100_000))
tok = CharTokenizer.train(english + python)
data = {name: split_train_val(np.array(tok.encode(t)), 0.1)
        for name, t in (("English", english), ("Python", python))}
STEPS = L.pick(600, 100)
lms = {}
for name, (tr_ids, va_ids) in data.items():
    m = build_model("gpt", vocab_size=tok.vocab_size, n_layer=2, n_head=4, d_model=64,
                    block_size=64, seed=0)
    cfg = TrainConfig(steps=STEPS, batch_size=16, lr=3e-3, min_lr=3e-4, warmup=20,
                      eval_interval=10 ** 9, eval_batches=4, seed=0, plot=False)
    res = Trainer(m, tok, tr_ids, va_ids, cfg, log=None).fit()
    lms[name] = m
    print("GPT on %-7s: %d steps in %.0f s, validation loss %.3f" % (name, res.step,
                                                                    res.elapsed, res.val_loss))
cross = {(mn, dn): evaluate(lms[mn], data[dn][1], 64, 16, max_batches=4)
         for mn in lms for dn in data}
print("validation loss (nats/char)    on English   on Python")
for mn in lms:
    print("  model trained on %-9s    %6.3f      %6.3f" % (mn, cross[(mn, "English")],
                                                         cross[(mn, "Python")]))
fig, ax = plt.subplots(figsize=(5.5, 4))
names = list(lms)
grid = np.array([[cross[(mn, dn)] for dn in names] for mn in names])
im = ax.imshow(grid, cmap="viridis_r")
for i in range(len(names)):
    for j in range(len(names)):
        ax.text(j, i, "%.2f" % grid[i, j], ha="center", va="center", color="white",
                fontsize=12)
ax.set_xticks(range(len(names)))
ax.set_xticklabels(["test: " + n for n in names])
ax.set_yticks(range(len(names)))
ax.set_yticklabels(["trained on " + n for n in names])
ax.set_title("Validation loss (nats/char), lower is better")
fig.colorbar(im, ax=ax)
L.savefig(fig, "domain_losses.png")
for prompt, mn in (("The value of ", "English"), ("    def __init__(self", "Python"),
                   ("import ", "Python")):
    out = generate(lms[mn], tok, prompt, max_length=len(prompt) + L.pick(80, 40),
                   do_sample=True, temperature=0.7, seed=0)[0]
    print("%s model, prompt %r:\n  %r" % (mn, prompt, out))
L.check("each model is better on its own kind of text (a code model is a code model)",
        cross[("English", "English")] < cross[("Python", "English")] and
        cross[("Python", "Python")] < cross[("English", "Python")],
        "%.2f<%.2f, %.2f<%.2f" % (cross[("English", "English")], cross[("Python", "English")],
                                  cross[("Python", "Python")], cross[("English", "Python")]))

# %%
L.step("2. Translation-like sequence-to-sequence")
# A real translation model needs millions of sentence pairs. tinylm.teaching.tasks gives a toy language
# pair with a known answer (reverse the sentence, map every word through a dictionary), which is
# enough to see an encoder-decoder with attention learn a mapping (lesson 03_3 goes deeper).
task = SequenceTask(num_symbols=8, min_len=2, max_len=6, transform="translate", seed=0)
s2s = Seq2Seq(Seq2SeqConfig(src_vocab_size=task.vocab_size, tgt_vocab_size=task.vocab_size,
                            emb_dim=16, hidden=32, attention="dot", seed=0))
params = s2s.parameters()
opt = optim.Adam(params, lr=1e-2)
for _ in range(L.pick(500, 200)):           # a seq2seq batch is not a token stream: own loop
    s2s.loss(*task.batch(32))
    s2s.zero_grad()
    s2s.backward()
    optim.clip_grad_norm(params, 1.0)
    opt.step()
src, _, tgt_out, src_len = task.batch(200, rng=np.random.default_rng(9))
pred, _ = s2s.translate(src, src_len=src_len)
acc = sequence_accuracy(pred, tgt_out)
for i in range(3):
    print("  source %-20s -> %-20s (reference %s)"
          % (src[i, :src_len[i]].tolist(), [t for t in pred[i].tolist() if t > 2],
             task.target_of(src[i, :src_len[i]]).tolist()))
print("whole sentences translated exactly: %.0f%%" % (100 * acc))
L.check("the toy translator gets most sentences exactly right", acc > 0.6, "%.2f" % acc)

# %%
L.step("3. Classification by fine-tuning an encoder")
# 000 §6 lists sentiment analysis; we have no labelled reviews, so the labels here are ones the
# corpora give for free: is a 64-character snippet English prose or Python code? The recipe is
# the one used for sentiment: an encoder (tinylm.models.bert.BERT), mean-pooled, a linear head
# (SequenceClassifier), all fine-tuned on a few labelled examples.
T = 64


def snippets(ids, n, r):
    starts = r.integers(0, len(ids) - T, size=n)
    return np.stack([ids[s:s + T] for s in starts])


n_train = 128
Xtr = np.concatenate([snippets(data["English"][0], n_train // 2, rng),
                      snippets(data["Python"][0], n_train // 2, rng)])
ytr = np.repeat([0, 1], n_train // 2)
Xte = np.concatenate([snippets(data["English"][1], 200, rng), snippets(data["Python"][1], 200,
                                                                         rng)])
yte = np.repeat([0, 1], 200)
encoder = BERT(BERTConfig(vocab_size=tok.vocab_size, block_size=T, n_layer=1, n_head=4,
                          d_model=48, dropout=0.0, seed=0))
clf = SequenceClassifier(encoder, num_classes=2, seed=0)
params = clf.parameters()
opt = optim.AdamW(params, lr=3e-3, weight_decay=0.01)
for _ in range(L.pick(300, 120)):
    b = rng.integers(0, n_train, size=16)
    clf.loss(Xtr[b], ytr[b])
    clf.zero_grad()
    clf.backward()
    optim.clip_grad_norm(params, 1.0)
    opt.step()
clf.eval()
acc = float(np.mean(np.argmax(clf.forward(Xte), axis=-1) == yte))
print("trained on %d labelled snippets; accuracy on 400 held-out snippets: %.1f%%"
      % (n_train, 100 * acc))
print("(not 100%: Python files are full of English - docstrings and comments - so some snippets "
      "are genuinely ambiguous)")
L.check("the classifier tells prose from code far better than chance (50%) on held-out snippets",
        acc > 0.7, "%.3f" % acc)

# %%
L.step("4. Semantic search: find paragraphs by meaning")
# Queries that share (almost) no words with the paragraph that answers them.
from tinylm.pretrained.search import load_paragraphs
queries = [("leave a loop before it has finished", 'The "break" statement'),
           ("skip the rest of this iteration and go on with the next one",
            'The "continue" statement'),
           ("check a condition while debugging and stop if it is false",
            'The "assert" statement'),
           ("remove a name so it is no longer bound", 'The "del" statement'),
           ("a function without a name, written inline", "Lambdas")]
paragraphs = load_paragraphs("pydoc")
if L.fast:         # a smaller index: the answers' sections plus a few hundred distractors
    wanted = {s for _, s in queries}
    keep = [p for p in paragraphs if p.section in wanted]
    paragraphs = keep + [p for p in paragraphs if p.section not in wanted][:80]
try:
    from tinylm.pretrained import ModelNotFoundError, load_sentence_encoder
    encoder = load_sentence_encoder()
except (ImportError, ModelNotFoundError, FileNotFoundError) as exc:
    encoder = None
    print("the pretrained all-MiniLM-L6-v2 is not installed (%s)" % exc)
if encoder is not None:
    from tinylm.pretrained.search import SearchIndex
    print("pretrained sentence encoder: all-MiniLM-L6-v2 (6-layer BERT, 384-dim embeddings); "
          "indexing %d paragraphs" % len(paragraphs))
    index = SearchIndex.build(encoder, paragraphs, cache_dir=L.path("search_cache"))
    K = L.pick(10, 3)            # the whole corpus has more near-misses than the small index
    hits = 0
    for q, section in queries:
        top = index.search(q, k=K)
        found = any(p.section == section for _, p in top)
        hits += found
        print("query %r\n  best: [%s] %.2f %r  %s" % (q, top[0][1].section, top[0][0],
                                                    top[0][1].text[:70],
                                                    "(expected section in top %d)" % K if found
                                                    else "(expected %s: missed)" % section))
    L.check("most queries find their section in the top %d without sharing its keywords" % K,
            hits >= len(queries) - 1, "%d of %d" % (hits, len(queries)))
    print("(near-misses are often fair: pdb's 'continue' and 'alias' commands really are about\n"
          " continuing and deleting - an embedding ranks meaning, it does not know which manual\n"
          " section you had in mind)")
else:
    # Fallback: an encoder we train ourselves - a small masked LM on the same text, mean-pooled.
    # Far weaker than MiniLM (trained on a billion sentence pairs); we only check that a
    # paragraph's own opening words find it.
    print("FALLBACK: training a small masked-LM encoder on pydoc instead (much weaker)")
    mlm = BERT(BERTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=4,
                          d_model=64, dropout=0.1, seed=0))
    params = mlm.parameters()
    opt = optim.AdamW(params, lr=2e-3)
    en_ids = data["English"][0]
    for _ in range(L.pick(300, 60)):
        s = rng.integers(0, len(en_ids) - 64, size=16)
        mlm.loss(np.stack([en_ids[i:i + 64] for i in s]))
        mlm.zero_grad()
        mlm.backward()
        opt.step()
    mlm.eval()

    def embed(texts):
        ids = np.array([(tok.encode(t[:64]) + [0] * 64)[:64] for t in texts])
        mask = np.array([[1] * min(len(t), 64) + [0] * (64 - min(len(t), 64)) for t in texts])
        h = mlm.encode(ids, mask)                                          # (n, 64, D)
        e = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    usable = [p for p in paragraphs if all(ch in tok.stoi for ch in p.text[:64])][:200]
    E = embed([p.text for p in usable])
    found = 0
    for i in range(0, len(usable), 10):
        q = embed([usable[i].text[:30]])[0]
        found += i in np.argsort(-(E @ q))[:5]
    n_q = len(range(0, len(usable), 10))
    print("a paragraph's first 30 characters find it in the top 5: %d of %d" % (found, n_q))
    L.check("the self-trained encoder finds paragraphs from their opening words (most of them)",
            found >= 0.5 * n_q, "%d/%d" % (found, n_q))
    for q, section in queries[:2]:             # meaning, not spelling: expect misses here
        best_p = usable[int(np.argmax(E @ embed([q])[0]))]
        print("query %r -> [%s] (wanted %s)" % (q, best_p.section, section))

# %%
print("""
What a laptop cannot show: question answering, summarisation and translation of real language
need models trained on far more data (and, for QA and summaries, instruction tuning). The
mechanisms are the ones above - next-token generation, an encoder-decoder with attention, an
encoder with a task head, embeddings compared by cosine - scaled up by orders of magnitude.""")
# %%
L.step("5. Question answering and summarising by prompting: what a small LM can do")
# 001 §6 and 002 §6 list question answering, dialogue and summarisation. Large models do them by
# prompting. Try the small GPT that ships with tinylm (0.8M parameters, Python's docs, 1500
# steps): score each candidate answer by its log-likelihood after the question (no sampling
# noise), for ten multiple-choice questions about Python whose answers are in its training text,
# written in its documents' style. As a contrast, the same scoring on something a character model
# does learn: telling a correctly spelled keyword from a misspelling.
pm, ptok, _ = load_packaged_model()


def answer_logprob(question, answer):
    ids = np.array([ptok.encode(question + answer)])
    logits = pm.forward(ids[:, :-1])[0]                              # (T-1, V)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    t = ids[0, 1:]
    n_q = len(ptok.encode(question))
    return float(logp[np.arange(len(t)), t][n_q - 1:].sum())        # the answer's tokens only


QA = [("A function is defined with the keyword ", ['"def"', '"class"', '"lambda"', '"import"']),
      ("A class is defined with the keyword ", ['"class"', '"def"', '"return"', '"import"']),
      ("A missing dictionary key raises ", ['"KeyError"', '"IndexError"', '"ValueError"',
                                            '"TypeError"']),
      ("An index out of range raises ", ['"IndexError"', '"KeyError"', '"NameError"',
                                         '"OSError"']),
      ("To leave a loop early, use ", ['"break"', '"continue"', '"return"', '"pass"']),
      ("Division by zero raises ", ['"ZeroDivisionError"', '"KeyError"', '"ImportError"',
                                    '"SyntaxError"']),
      ("Modules are loaded with the statement ", ['"import"', '"def"', '"while"', '"yield"']),
      ("A generator function produces values with ", ['"yield"', '"import"', '"raise"',
                                                      '"del"']),
      ("An exception is raised with the statement ", ['"raise"', '"yield"', '"import"',
                                                      '"global"']),
      ("Code that always runs after a try block goes in ", ['"finally"', '"else"', '"elif"',
                                                            '"with"'])]
qa_right = 0
for q, options in QA:                      # the first option is the right one
    pick = int(np.argmax([answer_logprob(q, o) for o in options]))
    qa_right += pick == 0
    print("%-52s -> %-20s %s" % (q, options[pick], "right" if pick == 0 else "wrong"))
spell = [("def", "dfe"), ("class", "calss"), ("return", "retrun"), ("import", "imprt"),
         ("lambda", "lamdba"), ("yield", "yeild"), ("raise", "rasie"), ("while", "whlie"),
         ("except", "excpet"), ("global", "golbal")]
spell_right = sum(answer_logprob("The statement ", '"%s"' % a) >
                  answer_logprob("The statement ", '"%s"' % b) for a, b in spell)
print("facts: %d of %d right (chance 2.5); spelling: %d of %d right (chance 5)"
      % (qa_right, len(QA), spell_right, len(spell)))
prompt = ("The \"break\" statement may only occur in a loop. It terminates the nearest "
          "enclosing loop.\nIn short:")
summary = generate(pm, ptok, prompt, max_length=len(ptok.encode(prompt)) + 60, seed=0)[0]
print("summarise by prompting ('In short:'):\n  %r" % summary[len(prompt):])
L.check("the small LM knows spelling (>= 9 of 10 keywords preferred to a misspelling)",
        spell_right >= 9, "%d/10" % spell_right)
L.check("it knows spelling far better than facts (factual QA needs a much larger model)",
        spell_right >= qa_right + 3, "spelling %d/10, facts %d/10" % (spell_right, qa_right))
print("""
So at this size, prompting gives fluent-looking text in its corpus's style, spelling and phrasing;
it does not give answers or summaries - those abilities appear with far more parameters and
data (lesson 08_1) and, for following instructions, with instruction tuning (lesson 05_4).
A small model's honest route to QA or summarisation is fine-tuning on examples of the task
(step 3) or retrieval (step 4: find the paragraph that holds the answer).""")

# %%
L.finish()
