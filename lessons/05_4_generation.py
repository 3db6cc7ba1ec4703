"""Lesson 05_4 - generating text: greedy, sampling, temperature, top-k, top-p, the KV cache.

Accompanies: 001 §5 项目实践：代码实例和详细解释说明, 003 §5 项目实践：代码实例和详细解释说明 (⚠ its
openai.Completion call: removed API, retired model).

001 §5 calls Hugging Face's model.generate(input_ids, max_length=100, num_return_sequences=1);
003 §5 sends a prompt to a hosted model. You take the small GPT that ships with tinylm and call
tinylm.generate with the same argument names, see what greedy decoding and sampling produce, how temperature, top-k and
top-p reshape the next-token distribution, what a key/value cache saves, and what prompting a
plain (not instruction-tuned) language model can and cannot do; 003 §5's completion call, rebuilt;
and beam search beside greedy decoding and sampling.
"""

# %%
import math
import time

import numpy as np

from tinylm.complete import Completion, complete
from tinylm.data import load_corpus, split_train_val
from tinylm.generate import generate, generate_ids, next_token_distribution
from tinylm.teaching.lesson import Lesson, matplotlib_agg
from tinylm.pretrained.packaged import load_packaged_model
from tinylm.train import evaluate

L = Lesson(__doc__)
plt = matplotlib_agg()

# %%
L.step("1. A small GPT to generate from")
# The GPT that ships inside tinylm (tinylm/assets; scripts/train_packaged_model.py trained it:
# 4 layers, d_model 128, 1500 steps on Python's reference documentation, characters as tokens).
# Lesson 05_3 shows how such a model is trained; here we only use it.
model, tok, meta = load_packaged_model()
ids = np.array(tok.encode(load_corpus("pydoc")), dtype=np.int64)
train_ids, val_ids = split_train_val(ids, meta["train_config"]["val_fraction"])
val_loss = evaluate(model, val_ids, model.config.block_size, 16, max_batches=L.pick(16, 4))
print("GPT with %s parameters, trained %d steps: validation loss %.3f (perplexity %.1f)"
      % ("{:,}".format(model.num_parameters()), meta["step"], val_loss, math.exp(val_loss)))

# %%
L.step("2. Greedy decoding vs sampling")
# tinylm.generate.generate(model, tokenizer, prompt, max_length, num_return_sequences,
#                          do_sample, temperature, top_k, top_p, seed)
# max_length counts the prompt too, as in Hugging Face. Greedy (do_sample=False) takes the most
# likely token every time; sampling draws from p = softmax(z / temperature).
prompt = "The "
greedy = generate(model, tok, prompt, max_length=L.pick(120, 60))[0]
greedy2 = generate(model, tok, prompt, max_length=L.pick(120, 60))[0]
print("greedy:\n  %r" % greedy)
samples = generate(model, tok, prompt, max_length=L.pick(120, 60), num_return_sequences=3,
                   do_sample=True, temperature=0.8, seed=1)
print("sampling, temperature 0.8, 3 sequences:")
for s in samples:
    print("  %r" % s)
L.check("greedy decoding is deterministic", greedy == greedy2)
L.check("sampled sequences differ from one another", len(set(samples)) > 1)
# greedy text of a small model tends to fall into a loop: the most likely continuation of a
# phrase often leads back to the same phrase. Count repeated 8-character pieces:


def repeated_share(s, n=8):
    grams = [s[i:i + n] for i in range(len(s) - n + 1)]
    return 1 - len(set(grams)) / max(len(grams), 1)


print("share of repeated 8-grams: greedy %.2f, sampled %.2f"
      % (repeated_share(greedy), np.mean([repeated_share(s) for s in samples])))

# %%
L.step("3. Temperature, top-k, top-p: reshaping one distribution")
ids = tok.encode("The return value of the ")
model.eval()
z = model.forward(np.array([ids]))[:, -1]                           # (1, V) next-token logits
temps = [0.25, 0.5, 0.8, 1.0, 1.5, 2.0, 4.0]
entropy = []
for t in temps:
    p = next_token_distribution(z, temperature=t)[0]
    entropy.append(float(-(p[p > 0] * np.log(p[p > 0])).sum()))
    print("temperature %4.2f: entropy %.2f nats, top token %r with p=%.2f"
          % (t, entropy[-1], tok.decode([int(p.argmax())]), p.max()))
p1 = next_token_distribution(z)[0]
pk = next_token_distribution(z, top_k=5)[0]
pp = next_token_distribution(z, top_p=0.9)[0]
order = np.argsort(-p1)
kept = int((pp > 0).sum())
print("top_k=5 keeps %d tokens; top_p=0.9 keeps the %d most likely (their mass %.3f)"
      % ((pk > 0).sum(), kept, p1[order[:kept]].sum()))
L.check("higher temperature, flatter distribution (entropy rises with temperature)",
        all(a < b for a, b in zip(entropy, entropy[1:])), " ".join("%.2f" % e for e in entropy))
L.check("top_k=5 leaves exactly the 5 most likely tokens, renormalised",
        (pk > 0).sum() == 5 and set(np.flatnonzero(pk)) == set(order[:5])
        and abs(pk.sum() - 1) < 1e-12)
L.check("top_p=0.9 keeps the smallest set of most likely tokens with mass >= 0.9",
        p1[order[:kept]].sum() >= 0.9 - 1e-12 and p1[order[:kept - 1]].sum() < 0.9
        and set(np.flatnonzero(pp)) == set(order[:kept]))

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
top = order[:15]
labels = [repr(tok.decode([int(i)]))[1:-1] or "?" for i in top]
w = 0.27
for j, (name, p) in enumerate((("temperature 1", p1), ("top_k=5", pk), ("top_p=0.9", pp))):
    axes[0].bar(np.arange(len(top)) + (j - 1) * w, p[top], width=w, label=name)
axes[0].set_xticks(np.arange(len(top)))
axes[0].set_xticklabels(labels)
axes[0].set_xlabel("next character (15 most likely)")
axes[0].set_ylabel("probability")
axes[0].set_title("After %r" % "The return value of the ")
axes[0].legend()
axes[1].plot(temps, entropy, "o-")
axes[1].axhline(math.log(tok.vocab_size), color="gray", ls="--", label="uniform over V")
axes[1].set_xscale("log", base=2)
axes[1].set_xlabel("temperature")
axes[1].set_ylabel("entropy of the next-token distribution (nats)")
axes[1].set_title("Temperature flattens or sharpens")
axes[1].legend()
L.savefig(fig, "sampling_controls.png")

# %%
L.step("4. The key/value cache")
# Without a cache, every new token re-runs the model over the whole context: O(t) work for
# token t. GPT.init_cache / GPT.forward_step keep each layer's keys and values, so each new token
# costs one position (tinylm/models/gpt.py). Same answers, less work.
p_ids = tok.encode(prompt)
lengths = L.pick([16, 32, 48, 64], [16, 32, 64])
t_cache, t_nocache = [], []
for n in lengths:
    t0 = time.perf_counter()
    a = generate_ids(model, p_ids, max_length=n, use_cache=True)
    t_cache.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    b = generate_ids(model, p_ids, max_length=n, use_cache=False)
    t_nocache.append(time.perf_counter() - t0)
    same = np.array_equal(a, b)
    print("max_length %3d: with cache %6.1f ms, without %6.1f ms, same tokens: %s"
          % (n, 1e3 * t_cache[-1], 1e3 * t_nocache[-1], same))
    L.check("cache and no cache give the same greedy tokens (max_length %d)" % n, same)
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(lengths, 1e3 * np.array(t_nocache), "o-", label="no cache (re-run the context)")
ax.plot(lengths, 1e3 * np.array(t_cache), "s-", label="key/value cache")
ax.set_xlabel("max_length (tokens generated + prompt)")
ax.set_ylabel("generation time (ms)")
ax.set_title("Greedy generation, %d-layer GPT, d_model=%d"
             % (model.config.n_layer, model.config.d_model))
ax.legend()
ax.grid(alpha=0.3)
L.savefig(fig, "kv_cache.png")

# %%
L.step("5. Prompting a plain language model")
# 003 §5 sends "Translate the following English text to French: '{}'" to a hosted model. Two
# remarks: the '{}' is never filled (there is no .format call), so the model receives literally
# '{}'; and such instructions work only with models tuned to follow instructions. A plain LM
# like ours only CONTINUES text - so a prompt is the beginning of the text you want.
for pr in ("The default value is ", "Changed in version ", "Translate to French: "):
    print("%-24r -> %r" % (pr, generate(model, tok, pr, max_length=len(pr) + 40, do_sample=True,
                                         temperature=0.6, seed=0)[0][len(pr):]))
# What the LM does know: which text is likely. Score sentences by their log-likelihood.
model.eval()


def log_likelihood(text):
    ids = np.array([tok.encode(text)])
    logits = model.forward(ids[:, :-1])[0]                            # (T-1, V)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    return float(logp[np.arange(ids.shape[1] - 1), ids[0, 1:]].sum())


val_text = tok.decode([int(i) for i in val_ids[:20000]])
pieces = [" ".join(s.split()) for s in val_text.replace("\n", " ").split(". ")]
sentences = [s + "." for s in pieces if 30 <= len(s) <= 60 and len(s.split()) >= 5][:20]
rng = np.random.default_rng(0)
wins = 0
for s in sentences:
    shuffled = "".join(rng.permutation(list(s)))            # same characters, order lost
    wins += log_likelihood(s) > log_likelihood(shuffled)
print("held-out sentences scored above the same characters shuffled: %d of %d"
      % (wins, len(sentences)))
L.check("the model prefers real held-out sentences to their characters shuffled",
        len(sentences) >= 5 and wins >= 0.9 * len(sentences), "%d/%d" % (wins, len(sentences)))

# %%
L.step("6. ⚠ 003 §5's openai.Completion.create, and what the call does")
# 003 §5 calls openai.Completion.create(engine="text-davinci-003", prompt=..., max_tokens=60) and
# prints response.choices[0].text.strip(). That code no longer runs: openai.Completion was removed
# from the openai package in version 1.0 (November 2023; calling it raises an error pointing to
# the new client, client.completions.create(model=...)), and OpenAI retired text-davinci-003 in
# January 2024. What the call did is simple, and runs here on any tinylm model: take the prompt,
# generate up to max_tokens more tokens, return the continuation (not the prompt) as "text".
prompt = "Translate the following English text to French: '{}'"   # 003 §5's prompt, verbatim:
# (its '{}' is never filled - no .format() - so the model receives the braces literally)
# tinylm.complete.Completion.create takes 003 §5's arguments; engine= is any tinylm checkpoint
# (a path) or a (model, tokenizer) pair.
response = Completion.create(engine=(model, tok), prompt=prompt, max_tokens=60, temperature=0.7,
                             seed=0)
text = response.choices[0].text
print("prompt: %r\nresponse.choices[0].text.strip(): %r  (finish_reason %r)"
      % (prompt, text.strip(), response.choices[0].finish_reason))
L.check("the completion is the prompt's continuation, max_tokens tokens long",
        len(tok.encode(text)) == 60 and response.choices[0].finish_reason == "length")
stopped = complete((model, tok), "The default value is ", max_tokens=60, temperature=0,
                   stop=["\n", "."]).choices[0]
print("with stop=['\\n', '.'] and temperature 0 (greedy): %r, finish_reason %r"
      % (stopped.text, stopped.finish_reason))
L.check("a stop string cuts the completion before it",
        "\n" not in stopped.text and "." not in stopped.text)
print("""
A plain LM continues the text; it does not follow the instruction (it was never tuned to). A
character model of Python's docs continues it with docs-like text. Instruction-following is
learned from (instruction, answer) examples after pretraining - a fine-tuning step (03_5).""")

# %%
L.step("7. Beam search vs greedy vs sampling")
# Greedy takes the single most likely token each step; the sequence it builds need not be the
# most likely sequence. Beam search (num_beams=k, Hugging Face's argument) keeps the k best
# partial sequences by their summed log-probability. Exact search is hopeless in general
# (V^n sequences) - but for 2 new tokens V^2 = %d is small: beam search with num_beams = V
# keeps every first token, so it must find the exact best pair.
V = tok.vocab_size


def seq_logprob(seq_ids, n_new):
    """Sum of log p of the last n_new tokens of each row of seq_ids (B, T)."""
    z = model.forward(seq_ids[:, :-1])                                  # (B, T-1, V)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    t = seq_ids[:, 1:]
    lp = np.take_along_axis(logp, t[..., None], axis=-1)[..., 0]        # (B, T-1)
    return lp[:, -n_new:].sum(1)


pairs = np.array([(a, b) for a in range(V) for b in range(V)])          # (V^2, 2)
# Several short prompts: for many of them greedy's pair IS the best pair (the model is sure of
# the first character); the loop stops at the first prompt where it is not, to show the point.
beam_exact, greedy_gap = [], []
for prompt_text in ["If ", "The ", "Return ", "a ", "is ", "x = ", "In ", "Note: "]:
    p_ids = tok.encode(prompt_text)
    all_seqs = np.concatenate([np.tile(p_ids, (len(pairs), 1)), pairs], axis=1)
    scores = np.concatenate([seq_logprob(all_seqs[i:i + 2048], 2)
                             for i in range(0, len(all_seqs), 2048)])
    exact = all_seqs[int(np.argmax(scores)), -2:]
    beam_v = generate_ids(model, p_ids, max_length=len(p_ids) + 2, num_beams=V)[0, -2:]
    greedy_2 = generate_ids(model, p_ids, max_length=len(p_ids) + 2)[0, -2:]
    greedy_lp = scores[int(greedy_2[0]) * V + int(greedy_2[1])]        # same batch, same bits
    print("after %r: exhaustive best pair %r (log p %.2f), beam search (num_beams=V) %r, "
          "greedy %r (log p %.2f)" % (prompt_text, tok.decode(exact), scores.max(),
                                      tok.decode(beam_v), tok.decode(greedy_2), greedy_lp))
    beam_exact.append(np.array_equal(beam_v, exact))
    greedy_gap.append(scores.max() - greedy_lp)
    if greedy_gap[-1] > 1e-6:
        break
L.check("beam search with num_beams = V finds the exact most likely 2-token continuation",
        all(beam_exact))
L.check("greedy is never better than the best pair, and for some prompt it is worse",
        min(greedy_gap) >= 0 and max(greedy_gap) > 1e-6, "gap %.2f nats" % max(greedy_gap))
# Longer texts: summed log-probability (how likely the model finds its own output) and
# repetition, for greedy, beams of 4 and 8, and sampling at temperature 0.8.
n_new = L.pick(60, 40)
prompts = L.pick(["The return value of ", "If the argument is ", "Changed in version ",
                  "A class definition "], ["The return value of ", "If the argument is "])
rows = {}
for name, kw in (("greedy", {}), ("beam 4", {"num_beams": 4}), ("beam 8", {"num_beams": 8}),
                 ("beam 4, no repeated 4-grams", {"num_beams": 4, "no_repeat_ngram_size": 4}),
                 ("sampling T=0.8", {"do_sample": True, "temperature": 0.8, "seed": 0})):
    lps, reps, texts = [], [], []
    for pr in prompts:
        ids_ = tok.encode(pr)
        out = generate_ids(model, ids_, max_length=len(ids_) + n_new, **kw)
        lps.append(float(seq_logprob(out[:1], n_new)[0]))
        texts.append(tok.decode(out[0, len(ids_):]))
        reps.append(repeated_share(texts[-1]))
    rows[name] = (np.mean(lps), np.mean(reps), texts[0])
    print("%-28s log p %7.1f   repeated 8-grams %.2f   %r"
          % (name, rows[name][0], rows[name][1], texts[0][:50]))
# (A beam is not guaranteed to beat greedy: greedy's path can be pruned from a narrow beam
# early and the beam's survivors end lower. Wider beams search more.)
L.check("beam search with 8 beams finds continuations the model rates more likely than greedy's",
        rows["beam 8"][0] > rows["greedy"][0],
        "%.1f vs %.1f" % (rows["beam 8"][0], rows["greedy"][0]))
L.check("sampled text is far less likely under the model than greedy or beam text",
        rows["sampling T=0.8"][0] < min(rows["greedy"][0], rows["beam 4"][0]))
L.check("no_repeat_ngram_size=4 leaves no repeated 4-gram", all(
    len(set(t[i:i + 4] for i in range(len(t) - 3))) == len(t) - 3
    for t in [tok.decode(generate_ids(model, tok.encode(pr), max_length=len(tok.encode(pr))
                                      + n_new, num_beams=4, no_repeat_ngram_size=4)[0])
              for pr in prompts[:2]]))
print("""
The most likely text is not the best text: beam search raises the likelihood and, for a small
model, also the looping (the most likely continuation of a phrase is often the phrase again).
Sampling gives varied, less likely text. That is why open-ended generation samples (with
temperature / top-k / top-p) and beam search is used where one right answer exists
(translation, lesson 03_3's task).""")

# %%
L.finish()
