"""Text generation for every autoregressive tinylm model.

:func:`generate` follows Hugging Face's argument names (``max_length``,
``num_return_sequences``, ``do_sample``, ``temperature``, ``top_k``,
``top_p``), as in seed 001's ``model.generate(max_length=100,
num_return_sequences=1)``.  ``max_length`` is the TOTAL length in tokens,
prompt included, as in Hugging Face.

How a model is stepped (see ``tinylm/models/__init__.py``):

* with ``model.init_cache(batch)`` and ``model.forward_step(idx, cache)`` the
  prompt is run once and then one new token per step (GPT's key/value cache,
  an RNN's hidden state);
  A model that also has ``model.decoder(batch)`` (GPT; it may return None)
  is stepped by that object instead: ``prefill(idx)``, then ``step(ids)`` per token and
  ``reorder(rows)`` for beam search; the same logits, with the per-step
  Python cost taken out (``tinylm/models/_gpt_decode.py``);
* otherwise ``model.forward(idx)`` is re-run on the whole growing sequence,
  cropped to ``model.config.block_size`` when the model has one.

A model with a hard limit on its context (GPT: learned positions) says so with
``model.max_context``; past it, generation crops the context to the last
``max_context`` tokens and recomputes (the cache cannot grow further).  A
recurrent model has no such limit: its cache (the hidden state) carries on.

Picking the next token from the last position's logits z (shape (V,)):

* greedy (``do_sample=False``): argmax z;
* sampling: p = softmax(z / temperature), restricted to the ``top_k`` most
  likely tokens and/or to the smallest set whose probability reaches
  ``top_p`` (nucleus sampling), renormalised, then one draw.

Beam search (``num_beams`` > 1, Hugging Face's semantics and argument names).
Keep the ``num_beams`` best partial sequences ("beams"), scored by the sum of
their tokens' log-probabilities.  Each step:

* every beam b proposes every token w: score(b, w) = score(b) + log p(w | beam b);
* the best 2 * num_beams of these num_beams * V candidates are ranked;
* a candidate that ends (its token is ``eos_token_id``, or it reaches
  ``max_length``) and ranks among the first num_beams joins the *finished*
  list with the score  sum_logprobs / generated_length ** length_penalty
  (generated_length counts the new tokens, eos included).  The finished list
  keeps the num_beams best;
* the best num_beams candidates that did not end are the next beams.

So ``length_penalty`` > 0 favours longer sequences, < 0 shorter ones; it only
matters when sequences end at different lengths, i.e. with ``eos_token_id``.
The search stops when no running beam can beat the worst finished sequence
(``early_stopping=False``: judged at the current length, a heuristic;
``"never"``: judged at the length where the beam could score best, so the
result is exact), or as soon as num_beams sequences are finished
(``early_stopping=True``).  At the start only beam 0 is live (the others score
-inf) so the first step does not pick the same token num_beams times.

``eos_token_id`` (any decoding mode): a row that produces this token has
ended; later positions are padded with it, and generation stops once every row
has ended.

``no_repeat_ngram_size=n`` (any decoding mode): a token that would complete an
n-gram already present in the sequence (prompt included) gets probability 0.

Caches and beams: when beams are re-ranked, beam b's next step continues the
sequence of some earlier beam, so the cache rows are reordered: a model may
define ``reorder_cache(cache, index)``; otherwise every array in the cache
(nested in dicts, lists, tuples) whose first axis is the batch is indexed
along that axis (GPT's keys/values (B, H, t, dh)).  A model whose cache has
its batch elsewhere must define ``reorder_cache`` (the recurrent LMs do: a
stacked state is (L, B, H)).
"""

import numpy as np

from tinylm.layers.losses import log_softmax

__all__ = ["generate", "generate_ids", "next_token_distribution", "banned_ngram_mask",
           "reorder_cache", "default_prompt", "sequence_log_prob"]


def _check_args(max_length, num_return_sequences, do_sample, temperature, top_k, top_p,
                num_beams, length_penalty, early_stopping, no_repeat_ngram_size):
    if not isinstance(max_length, (int, np.integer)) or max_length < 1:
        raise ValueError("generate: max_length must be a positive integer, got %r"
                         % (max_length,))
    if not isinstance(num_return_sequences, (int, np.integer)) or num_return_sequences < 1:
        raise ValueError("generate: num_return_sequences must be a positive integer, got %r"
                         % (num_return_sequences,))
    if not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
        raise ValueError("generate: num_beams must be a positive integer, got %r"
                         % (num_beams,))
    if num_beams > 1:
        if do_sample:
            raise ValueError("generate: beam search (num_beams=%d) is deterministic; "
                             "use do_sample=False with it (beam sampling is not "
                             "implemented)" % num_beams)
        if num_return_sequences > num_beams:
            raise ValueError("generate: num_return_sequences=%d is more than num_beams=%d; "
                             "beam search returns at most num_beams sequences"
                             % (num_return_sequences, num_beams))
    elif not do_sample and num_return_sequences > 1:
        raise ValueError("generate: greedy decoding (do_sample=False) gives the same "
                         "sequence every time; use do_sample=True or num_beams >= %d for "
                         "num_return_sequences=%d" % (num_return_sequences,
                                                      num_return_sequences))
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature)
            and temperature > 0):
        raise ValueError("generate: temperature must be a finite number > 0, got %r"
                         % (temperature,))
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError("generate: top_k must be None or an integer >= 1, got %r" % (top_k,))
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError("generate: top_p must be None or a number in (0, 1], got %r"
                         % (top_p,))
    if not (isinstance(length_penalty, (int, float)) and np.isfinite(length_penalty)):
        raise ValueError("generate: length_penalty must be a finite number, got %r"
                         % (length_penalty,))
    if early_stopping not in (True, False, "never"):
        raise ValueError("generate: early_stopping must be True, False or \"never\", got %r"
                         % (early_stopping,))
    if (not isinstance(no_repeat_ngram_size, (int, np.integer))
            or no_repeat_ngram_size < 0):
        raise ValueError("generate: no_repeat_ngram_size must be an integer >= 0, got %r"
                         % (no_repeat_ngram_size,))


def next_token_distribution(logits, temperature=1.0, top_k=None, top_p=None):
    """Sampling probabilities from one row of logits per sequence.

    logits: (N, V)  ->  p: (N, V) float64, each row sums to 1, zero outside
    the top-k / nucleus set.
    """
    z = np.asarray(logits, dtype=np.float64) / temperature           # (N, V)
    V = z.shape[-1]
    if top_k is not None and top_k < V:
        # k-th largest value of each row; everything below it is dropped
        kth = np.partition(z, V - top_k, axis=-1)[:, V - top_k][:, None]  # (N, 1)
        z = np.where(z < kth, -np.inf, z)
    z = z - np.max(z, axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)                                # (N, V)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")                # most likely first
        sorted_p = np.take_along_axis(p, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p              # mass strictly before
        keep_sorted = before < top_p                                  # always keeps the first
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    return p


def _pick(logits, do_sample, temperature, top_k, top_p, rng):
    """logits: (N, V) -> next ids (N,)."""
    if not do_sample:
        return np.argmax(logits, axis=-1)
    p = next_token_distribution(logits, temperature, top_k, top_p)
    # inverse-CDF draw: one uniform number per row
    u = rng.random((p.shape[0], 1))
    c = np.cumsum(p, axis=-1)
    ids = (c <= u * c[:, -1:]).sum(axis=-1)   # first index with c > u
    return np.minimum(ids, p.shape[-1] - 1)


def banned_ngram_mask(seqs, n, vocab_size):
    """Hugging Face's ``no_repeat_ngram_size``: which next tokens would repeat an n-gram.

    seqs: (N, t) int, the sequences so far (prompt included).  Returns a bool
    array (N, V), True where token w would make the last n tokens an n-gram
    that already occurs in the row.  n = 0 (off) or t + 1 < n: nothing banned.
    """
    seqs = np.asarray(seqs)
    N, t = seqs.shape
    banned = np.zeros((N, vocab_size), dtype=bool)
    if n < 1 or t + 1 < n:
        return banned
    for row in range(N):
        s = seqs[row].tolist()
        tail = s[t - n + 1:] if n > 1 else []            # the n-1 tokens the next one extends
        for i in range(t - n + 1):                        # every n-gram s[i:i+n] seen so far
            if s[i:i + n - 1] == tail:
                banned[row, s[i + n - 1]] = True
    return banned


def reorder_cache(model, cache, index, batch_size):
    """The cache whose row r is row ``index[r]`` of ``cache`` (see the module doc)."""
    if hasattr(model, "reorder_cache"):
        return model.reorder_cache(cache, index)

    def pick(obj):
        if isinstance(obj, np.ndarray) and obj.ndim >= 1 and obj.shape[0] == batch_size:
            return obj[index]
        if isinstance(obj, dict):
            return {k: pick(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(pick(v) for v in obj)
        return obj
    return pick(cache)


class _Stepper:
    """Next-token logits for N growing sequences, with the model's cache when it has one.

    ``cache`` is the model's cache, or its decoder when it has one (see the module doc).

    ``first(seqs)`` runs the prompt; ``next(seqs, rows=None)`` gives the logits
    after the last token of ``seqs`` (N, t), where row r continues row
    ``rows[r]`` of the previous call (beam search) or itself (rows=None).
    """

    def __init__(self, model, N, use_cache):
        self.model, self.N = model, N
        # the longest context the model can take at all (GPT: its positions); None = any
        self.limit = getattr(model, "max_context", None)
        # without a cache, the context re-run each step is cropped to this many tokens
        self.block = self.limit or getattr(getattr(model, "config", None), "block_size", None)
        self.cached = use_cache and hasattr(model, "init_cache") and hasattr(model, "forward_step")
        # a model with a decoder object (GPT) is stepped by it; the cache is then that object
        self.fast = self.cached and callable(getattr(model, "decoder", None))
        self.cache = None

    def _recompute(self, seqs):
        t = seqs.shape[1]
        ctx = seqs if self.block is None else seqs[:, max(0, t - self.block):]
        return self.model.forward(ctx)[:, -1]                         # (N, V)

    def first(self, seqs):
        t = seqs.shape[1]
        if self.cached and (self.limit is None or t <= self.limit):
            decoder = self.model.decoder(self.N) if self.fast else None
            self.fast = decoder is not None                           # None: not for this model
            if self.fast:
                self.cache = decoder
                return decoder.prefill(seqs)                          # (N, V)
            self.cache = self.model.init_cache(self.N)
            return self.model.forward_step(seqs, self.cache)[:, -1]   # (N, V)
        return self._recompute(seqs)

    def next(self, seqs, rows=None):
        if self.cache is not None and self.limit is not None and seqs.shape[1] > self.limit:
            self.cache = None           # past the longest context: crop and recompute
        if self.cache is None:
            return self._recompute(seqs)
        if self.fast:
            if rows is not None:
                self.cache.reorder(rows)
            return self.cache.step(seqs[:, -1])
        if rows is not None:
            self.cache = reorder_cache(self.model, self.cache, rows, self.N)
        return self.model.forward_step(seqs[:, -1:], self.cache)[:, -1]


def _check_prompt(prompt_ids, max_length):
    prompt = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
    if prompt.size == 0:
        raise ValueError("generate: the prompt is empty; give at least one token to "
                         "start from")
    if prompt.size > max_length:
        raise ValueError("generate: the prompt has %d tokens but max_length is %d; "
                         "max_length counts the prompt too (as in Hugging Face)"
                         % (prompt.size, max_length))
    return prompt


def generate_ids(model, prompt_ids, max_length=100, num_return_sequences=1,
                 do_sample=False, temperature=1.0, top_k=None, top_p=None,
                 num_beams=1, length_penalty=1.0, early_stopping=False,
                 no_repeat_ngram_size=0, eos_token_id=None, seed=None, use_cache=True,
                 stopping_criteria=None):
    """Continue a prompt of token ids; returns an int64 array (N, L), L <= max_length.

    prompt_ids: sequence of ints (length >= 1).  N = num_return_sequences.
    Without ``eos_token_id`` every row has max_length tokens.  With it, a row
    that produced eos is padded with eos after it, and generation stops once
    every row has ended (then L < max_length is possible), as in Hugging Face.
    stopping_criteria (greedy and sampling only): a function of the rows so
    far, ids (N, t) -> bool (N,), True for a row that is finished (e.g. its
    text reached a stop string); generation stops once every row is finished.
    Finished rows are not padded: the caller cuts them.
    Beam search rows come best first.  The model is put in eval mode while
    generating (no dropout) and its mode is restored afterwards.
    """
    _check_args(max_length, num_return_sequences, do_sample, temperature, top_k, top_p,
                num_beams, length_penalty, early_stopping, no_repeat_ngram_size)
    prompt = _check_prompt(prompt_ids, max_length)
    if stopping_criteria is not None and num_beams > 1:
        raise ValueError("generate: stopping_criteria works with greedy decoding and "
                         "sampling, not with beam search (num_beams=%d)" % num_beams)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        if num_beams > 1:
            return _beam_search(model, prompt, max_length, num_return_sequences, num_beams,
                                length_penalty, early_stopping, no_repeat_ngram_size,
                                eos_token_id, use_cache)
        return _decode(model, prompt, max_length, num_return_sequences, do_sample,
                       temperature, top_k, top_p, no_repeat_ngram_size, eos_token_id,
                       seed, use_cache, stopping_criteria)
    finally:
        model.train(was_training)


def _decode(model, prompt, max_length, N, do_sample, temperature, top_k, top_p,
            no_repeat_ngram_size, eos_token_id, seed, use_cache, stopping_criteria):
    """Greedy or sampled decoding, one token per step for all N rows."""
    rng = np.random.default_rng(seed)
    out = np.empty((N, max_length), dtype=np.int64)                  # (N, L)
    out[:, :prompt.size] = prompt
    cur = prompt.size
    done = np.zeros(N, dtype=bool)                                    # rows that produced eos
    stepper = _Stepper(model, N, use_cache)
    logits = stepper.first(out[:, :cur]) if cur < max_length else None
    while cur < max_length:
        if no_repeat_ngram_size:
            ban = banned_ngram_mask(out[:, :cur], no_repeat_ngram_size, logits.shape[-1])
            logits = np.where(ban, -np.inf, logits)
        nxt = _pick(logits, do_sample, temperature, top_k, top_p, rng)
        if eos_token_id is not None:
            nxt = np.where(done, eos_token_id, nxt)                  # ended rows: padding
            done |= nxt == eos_token_id
        out[:, cur] = nxt
        cur += 1
        if done.all() or (stopping_criteria is not None
                          and np.all(stopping_criteria(out[:, :cur]))):
            return out[:, :cur]
        if cur < max_length:
            logits = stepper.next(out[:, :cur])
    return out


def _beam_search(model, prompt, max_length, num_return_sequences, K, length_penalty,
                 early_stopping, no_repeat_ngram_size, eos_token_id, use_cache):
    """Beam search with K beams (see the module docstring); rows best first."""
    P = prompt.size
    pad = eos_token_id if eos_token_id is not None else 0
    running = np.full((K, max_length), pad, dtype=np.int64)          # (K, L) live beams
    running[:, :P] = prompt
    run_score = np.full(K, -np.inf)                                   # sum of log-probs
    run_score[0] = 0.0                                                # only beam 0 is live
    fin_seq = np.full((K, max_length), pad, dtype=np.int64)           # finished hypotheses
    fin_len = np.zeros(K, dtype=np.int64)
    fin_score = np.full(K, -np.inf)                                   # length-penalised
    cur = P
    stepper = _Stepper(model, K, use_cache)
    logits = stepper.first(running[:, :cur]) if cur < max_length else None
    while cur < max_length:
        logp = log_softmax(np.asarray(logits, dtype=np.float64))      # (K, V)
        V = logp.shape[-1]
        if no_repeat_ngram_size:
            logp[banned_ngram_mask(running[:, :cur], no_repeat_ngram_size, V)] = -np.inf
        cand = (run_score[:, None] + logp).reshape(-1)                # (K*V,) beam-major
        top = np.argsort(-cand, kind="stable")[:2 * K]                # best 2K candidates
        beam, token, score = top // V, top % V, cand[top]
        seqs = running[beam].copy()                                   # (2K, L)
        seqs[:, cur] = token
        ends = np.full(2 * K, cur + 1 == max_length)                  # reached max_length
        if eos_token_id is not None:
            ends |= token == eos_token_id
        # finished: only candidates ranked in the first K may join, penalised by length
        new_fin = np.where(ends & (np.arange(2 * K) < K),
                           score / float(cur + 1 - P) ** length_penalty, -np.inf)
        full = np.all(np.isfinite(fin_score))
        if not (early_stopping is True and full):
            all_score = np.concatenate([fin_score, new_fin])
            keep = np.argsort(-all_score, kind="stable")[:K]
            fin_seq = np.concatenate([fin_seq, seqs])[keep]
            fin_len = np.concatenate([fin_len, np.full(2 * K, cur + 1)])[keep]
            fin_score = all_score[keep]
        # running: the best K candidates that did not end
        live = np.argsort(-np.where(ends, -np.inf, score), kind="stable")[:K]
        running, run_score = seqs[live], np.where(ends[live], -np.inf, score[live])
        cur += 1
        if cur >= max_length or not _can_improve(run_score, fin_score, cur - P,
                                                  max_length - P, length_penalty,
                                                  early_stopping):
            break
        logits = stepper.next(running[:, :cur], rows=beam[live])
    n = num_return_sequences
    L = int(fin_len[:n].max()) if np.isfinite(fin_score[:n]).all() else max_length
    return fin_seq[:n, :L]


def _can_improve(run_score, fin_score, gen_len, max_gen_len, length_penalty, early_stopping):
    """Can a running beam still beat the worst of the K finished sequences?"""
    if not np.all(np.isfinite(fin_score)):
        return True                       # fewer than K finished: keep going
    if early_stopping is True:
        return False                      # K finished: stop (Hugging Face's early_stopping)
    # the best running beam's score can only fall as it grows; its penalised score is best at
    # the longest length when length_penalty > 0 ("never": exact) or now (False: a heuristic)
    length = max_gen_len if (early_stopping == "never" and length_penalty > 0) else gen_len
    return bool(run_score.max() / float(length) ** length_penalty > fin_score.min())


def generate(model, tokenizer, prompt, max_length=100, num_return_sequences=1,
             do_sample=False, temperature=1.0, top_k=None, top_p=None, num_beams=1,
             length_penalty=1.0, early_stopping=False, no_repeat_ngram_size=0,
             eos_token_id=None, seed=None, use_cache=True):
    """Continue a text prompt; returns a list of ``num_return_sequences`` strings.

    Each string is the prompt followed by its continuation (decoded from at
    most ``max_length`` tokens in total; with ``eos_token_id``, up to and
    including the first eos).  A prompt the tokenizer cannot encode (e.g. a
    character outside a character tokenizer's vocabulary) raises the
    tokenizer's ``ValueError``, which names the character and its position.
    The decoding arguments are those of :func:`generate_ids`.
    """
    if not isinstance(prompt, str):
        raise TypeError("generate: prompt must be a str, got %s" % type(prompt).__name__)
    try:
        ids = tokenizer.encode(prompt)
    except ValueError as exc:
        raise ValueError("generate: cannot encode the prompt: %s" % exc) from exc
    rows = generate_ids(model, ids, max_length=max_length,
                        num_return_sequences=num_return_sequences, do_sample=do_sample,
                        temperature=temperature, top_k=top_k, top_p=top_p,
                        num_beams=num_beams, length_penalty=length_penalty,
                        early_stopping=early_stopping,
                        no_repeat_ngram_size=no_repeat_ngram_size,
                        eos_token_id=eos_token_id, seed=seed, use_cache=use_cache)
    texts = []
    for row in rows:
        row = [int(t) for t in row]
        if eos_token_id is not None and eos_token_id in row[len(ids):]:
            row = row[:row.index(eos_token_id, len(ids)) + 1]      # drop the padding
        texts.append(tokenizer.decode(row))
    return texts


def sequence_log_prob(model, rows, prompt_length):
    """Sum of log p(token | everything before it) over each row's generated part.

    rows: (N, L) int token ids (e.g. from :func:`generate_ids`); prompt_length:
    how many leading tokens are the prompt (not scored).  Returns float64 (N,).
    This is the score beam search maximises (before any length penalty), so
    greedy, beam and sampled continuations can be compared on it.  The model
    reads each row whole, so L must fit the model's ``max_context``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 2 or not 1 <= prompt_length <= rows.shape[1]:
        raise ValueError("sequence_log_prob: rows must be (N, L) with 1 <= prompt_length <= L, "
                         "got shape %s and prompt_length %r" % (rows.shape, prompt_length))
    limit = getattr(model, "max_context", None)
    if limit is not None and rows.shape[1] > limit:
        raise ValueError("sequence_log_prob: rows of %d tokens are longer than the model's "
                         "context (%d)" % (rows.shape[1], limit))
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        logp = log_softmax(np.asarray(model.forward(rows), dtype=np.float64))  # (N, L, V)
    finally:
        model.train(was_training)
    # position t - 1 predicts token t
    picked = np.take_along_axis(logp[:, :-1], rows[:, 1:, None], axis=-1)[..., 0]   # (N, L-1)
    return picked[:, prompt_length - 1:].sum(axis=1)


def default_prompt(tokenizer):
    """A short prompt the tokenizer can encode: "The ", "the ", "def ", "a", else token 0."""
    for p in ("The ", "the ", "def ", "a"):
        try:
            tokenizer.encode(p)
            return p
        except ValueError:
            continue
    return tokenizer.decode([0])
