"""Lesson 03_5 - pretraining objectives (causal vs masked), then fine-tuning vs training from scratch.

Accompanies: 004 核心算法原理具体操作步骤 (预训练过程：, 细调过程：), 000 §5.2 模型构建.

004 names two pretraining objectives: the masked language model and a "顺序对齐损失
(Sequence-to-Sequence Loss)" - and describes both as predicting the word at one position while the
rest of the input stays unchanged, which fits only the masked LM (⚠ step 2 sorts the names out and
checks the description against both objectives). The objective of GPT-style LLMs is the causal
(next-token) loss. You train the same Transformer encoder both ways on unlabelled English text - masked (BERT: hide 15% of the
tokens, predict them from both sides) and causal (GPT: predict every next token) - and see what
each learns from. Then you fine-tune the pretrained model on a small amount of text from another
domain (Python source) and compare it with the same model trained on that data from scratch,
which is what 000 §5.2 means by starting from a pretrained model and fine-tuning it.
"""

# %%
import numpy as np

from tinylm.data import BatchSampler, load_corpus, split_train_val
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.models.bert import BERT, BERTConfig
from tinylm.tokenizers import CharTokenizer
from tinylm.train import TrainConfig, Trainer

L = Lesson(__doc__)
plt = matplotlib_agg()


def train(bert, train_ids, val_ids, steps, lr=2e-3):
    c = TrainConfig(steps=steps, batch_size=16, block_size=T, lr=lr, min_lr=lr / 10,
                    warmup=max(steps // 10, 1), eval_interval=max(steps // 5, 1),
                    eval_batches=L.pick(8, 2), seed=0, plot=False)
    tr = Trainer(bert, tok, train_ids, val_ids, c, log=None)   # BERT.loss(x, y=None) masks x itself
    return tr.fit()


# %%
L.step("1. Data: unlabelled English to pretrain on, a little Python to fine-tune on")
english = load_corpus("pydoc", max_chars=L.pick(465_000, 120_000))
python = load_corpus("code", max_chars=L.pick(60_000, 30_000))
tok = CharTokenizer.train(english + python)          # one vocabulary for both domains
en_train, en_val = split_train_val(np.array(tok.encode(english)), 0.1)
py_train, py_val = split_train_val(np.array(tok.encode(python)), 0.2)
print("English (pydoc): %d train / %d validation characters" % (len(en_train), len(en_val)))
print("Python (stdlib): %d train / %d validation characters - the small downstream task"
      % (len(py_train), len(py_val)))
T = L.pick(64, 32)
base = dict(vocab_size=tok.vocab_size, block_size=T, n_layer=2, n_head=4, d_model=64,
            dropout=0.1, seed=0)

# %%
L.step("2. The masked-LM objective: what the model sees")
# BERT.mask_tokens (tinylm/models/bert.py): select 15% of the tokens; of those, 80% become
# [MASK], 10% a random token, 10% stay; the loss counts only the selected positions.
mlm = BERT(BERTConfig(objective="mlm", **base))
x = en_train[:64 * 200].reshape(200, 64)
inputs, targets = mlm.mask_tokens(x, rng=np.random.default_rng(0))
sel = targets != mlm.ignore_index
print("selected for prediction: %.1f%% of tokens; of those: [MASK] %.1f%%, random %.1f%%, "
      "unchanged %.1f%%" % (100 * sel.mean(), 100 * (inputs[sel] == mlm.mask_id).mean(),
                            100 * ((inputs[sel] != mlm.mask_id) & (inputs[sel] != x[sel])).mean(),
                            100 * (inputs[sel] == x[sel]).mean()))
show = "".join("_" if i == mlm.mask_id else tok.decode([int(i)]) for i in inputs[0])
print("original: %r\nmasked:   %r   (_ = [MASK])" % (tok.decode([int(i) for i in x[0]]), show))
L.check("about 15% of the tokens are selected, 80% of them replaced by [MASK]",
        abs(sel.mean() - 0.15) < 0.02 and abs((inputs[sel] == mlm.mask_id).mean() - 0.8) < 0.05)
# The causal objective predicts EVERY position from its left context: 100% of tokens give a
# training signal, each seeing only one side. The masked one sees both sides, but learns from
# only 15% of the tokens per pass (and its [MASK] token never appears in real inputs).
# ⚠ 004's "顺序对齐损失 (Sequence-to-Sequence Loss)": "sequence-to-sequence loss" is the loss of an
# encoder-decoder (the decoder's cross-entropy on the target sequence; T5 and BART pretrain that
# way, on corrupted -> original text). The objective GPT and most LLMs pretrain with is the
# causal LM loss: predict every next token. 004's description - predict the word at a position
# while the other positions stay unchanged - is the masked LM. Check it against both:
# The causal batches the Trainer feeds (tinylm.data.BatchSampler): target = input moved by one.
ci, ct = BatchSampler(en_train, batch_size=200, block_size=64, seed=0).next_batch()
unchanged_mlm = float((inputs[~sel] == x[~sel]).mean())
print("masked LM: %.0f%% of unselected positions unchanged, targets at %.0f%% of positions"
      % (100 * unchanged_mlm, 100 * sel.mean()))
print("causal LM: targets at 100%% of positions, and target t is input t+1 (%s)"
      % np.array_equal(ct[:, :-1], ci[:, 1:]))
L.check("004's description (predict one position, the rest unchanged) is the masked LM",
        unchanged_mlm == 1.0 and sel.mean() < 0.2)
L.check("the causal objective is a different one: every position is a target, the next token",
        np.array_equal(ct[:, :-1], ci[:, 1:]) and bool(np.all(ct != mlm.ignore_index)))

# %%
L.step("3. Pretrain the same encoder both ways")
PRE = L.pick(800, 80)
pre = {}
for objective in ("mlm", "causal"):
    bert = BERT(BERTConfig(objective=objective, **base))
    res = train(bert, en_train, en_val, PRE)
    pre[objective] = (bert, res)
    print("%-6s pretraining: %d steps in %.0f s, validation loss %.3f nats per predicted char"
          % (objective, res.step, res.elapsed, res.val_loss))
fig, ax = plt.subplots(figsize=(6.5, 4))
for objective, (bert, res) in pre.items():
    ax.plot(res.history["val_step"], res.history["val_loss"], "o-",
            label={"mlm": "masked LM (15% of tokens, both sides)",
                   "causal": "causal LM (every token, left side)"}[objective])
ax.set_xlabel("pretraining step")
ax.set_ylabel("validation loss on predicted tokens (nats)")
ax.set_title("Two pretraining objectives, one architecture")
ax.legend()
ax.grid(alpha=0.3)
L.savefig(fig, "pretraining_objectives.png")
for objective, (bert, res) in pre.items():
    L.check("%s pretraining: validation loss well below a uniform guess, ln V = %.2f"
            % (objective, np.log(tok.vocab_size)), res.val_loss < np.log(tok.vocab_size) - 1.0,
            "%.2f" % res.val_loss)
print("""The two losses are not the same quantity (the masked LM is scored on its 15%, with context on
both sides), so do not rank the objectives by these numbers. What they are good for differs:
a causal LM can generate text (lesson 05_4); a masked LM gives each token a representation that
has seen the whole sentence - what classification and search want (lesson 06_1).""")

# %%
L.step("4. Fine-tune on a small downstream corpus vs train from scratch")
# Downstream task: model Python source, with only a few thousand characters of it. Same model,
# same steps, same data; the only difference is the starting weights.
FT = L.pick(300, 40)
pretrained, _ = pre["causal"]
scratch = BERT(BERTConfig(objective="causal", **base))
res_ft = train(pretrained, py_train, py_val, FT, lr=1e-3)
res_sc = train(scratch, py_train, py_val, FT, lr=1e-3)
print("fine-tuned from English pretraining: validation loss on Python %.3f" % res_ft.val_loss)
print("trained from scratch on the same Python data: %.3f" % res_sc.val_loss)
fig, ax = plt.subplots(figsize=(6.5, 4))
ax.plot(res_ft.history["val_step"], res_ft.history["val_loss"], "o-",
        label="pretrained on English, then fine-tuned")
ax.plot(res_sc.history["val_step"], res_sc.history["val_loss"], "s-", label="from scratch")
ax.set_xlabel("fine-tuning step (on Python source)")
ax.set_ylabel("validation loss on held-out Python (nats/char)")
ax.set_title("Pretraining helps a small downstream task")
ax.legend()
ax.grid(alpha=0.3)
L.savefig(fig, "finetune_vs_scratch.png")
L.check("the fine-tuned model beats the from-scratch model on held-out Python",
        res_ft.val_loss < res_sc.val_loss - 0.05,
        "%.3f vs %.3f" % (res_ft.val_loss, res_sc.val_loss))
L.check("and it is ahead from the first evaluation on (a head start, not luck at the end)",
        res_ft.history["val_loss"][0] < res_sc.history["val_loss"][0],
        "%.3f vs %.3f" % (res_ft.history["val_loss"][0], res_sc.history["val_loss"][0]))

# %%
L.finish()
