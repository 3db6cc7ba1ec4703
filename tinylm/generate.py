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
"""

import numpy as np

__all__ = ["generate", "generate_ids", "next_token_distribution", "default_prompt"]


def _check_args(max_length, num_return_sequences, do_sample, temperature, top_k, top_p):
    if not isinstance(max_length, (int, np.integer)) or max_length < 1:
        raise ValueError("generate: max_length must be a positive integer, got %r"
                         % (max_length,))
    if not isinstance(num_return_sequences, (int, np.integer)) or num_return_sequences < 1:
        raise ValueError("generate: num_return_sequences must be a positive integer, got %r"
                         % (num_return_sequences,))
    if not do_sample and num_return_sequences > 1:
        raise ValueError("generate: greedy decoding (do_sample=False) gives the same "
                         "sequence every time; use do_sample=True for "
                         "num_return_sequences=%d" % num_return_sequences)
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature)
            and temperature > 0):
        raise ValueError("generate: temperature must be a finite number > 0, got %r"
                         % (temperature,))
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError("generate: top_k must be None or an integer >= 1, got %r" % (top_k,))
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError("generate: top_p must be None or a number in (0, 1], got %r"
                         % (top_p,))


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


def generate_ids(model, prompt_ids, max_length=100, num_return_sequences=1,
                 do_sample=False, temperature=1.0, top_k=None, top_p=None,
                 seed=None, use_cache=True):
    """Continue a prompt of token ids; returns an int64 array (N, max_length).

    prompt_ids: sequence of ints (length >= 1).  The model is put in eval mode
    while generating (no dropout) and its mode is restored afterwards.
    """
    _check_args(max_length, num_return_sequences, do_sample, temperature, top_k, top_p)
    prompt = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
    if prompt.size == 0:
        raise ValueError("generate: the prompt is empty; give at least one token to "
                         "start from")
    if prompt.size > max_length:
        raise ValueError("generate: the prompt has %d tokens but max_length is %d; "
                         "max_length counts the prompt too (as in Hugging Face)"
                         % (prompt.size, max_length))
    N = int(num_return_sequences)
    rng = np.random.default_rng(seed)
    # the longest context the model can take at all (GPT: its positions); None = any
    limit = getattr(model, "max_context", None)
    # without a cache, the context re-run each step is cropped to this many tokens
    block = limit or getattr(getattr(model, "config", None), "block_size", None)
    cached = use_cache and hasattr(model, "init_cache") and hasattr(model, "forward_step")

    out = np.empty((N, max_length), dtype=np.int64)                  # (N, L)
    out[:, :prompt.size] = prompt
    cur = prompt.size
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        cache = None
        if cached and (limit is None or cur <= limit):
            cache = model.init_cache(N)
            logits = model.forward_step(out[:, :cur], cache)[:, -1]   # (N, V)
        while cur < max_length:
            if cache is None:
                ctx = out[:, :cur] if block is None else out[:, max(0, cur - block):cur]
                logits = model.forward(ctx)[:, -1]                    # (N, V)
            out[:, cur] = _pick(logits, do_sample, temperature, top_k, top_p, rng)
            cur += 1
            if cache is not None and cur < max_length:
                if limit is not None and cur > limit:
                    cache = None        # past the longest context: crop and recompute
                else:
                    logits = model.forward_step(out[:, cur - 1:cur], cache)[:, -1]
    finally:
        model.train(was_training)
    return out


def generate(model, tokenizer, prompt, max_length=100, num_return_sequences=1,
             do_sample=False, temperature=1.0, top_k=None, top_p=None, seed=None,
             use_cache=True):
    """Continue a text prompt; returns a list of ``num_return_sequences`` strings.

    Each string is the prompt followed by its continuation (decoded from
    ``max_length`` tokens in total).  A prompt the tokenizer cannot encode
    (e.g. a character outside a character tokenizer's vocabulary) raises the
    tokenizer's ``ValueError``, which names the character and its position.
    """
    if not isinstance(prompt, str):
        raise TypeError("generate: prompt must be a str, got %s" % type(prompt).__name__)
    try:
        ids = tokenizer.encode(prompt)
    except ValueError as exc:
        raise ValueError("generate: cannot encode the prompt: %s" % exc) from exc
    rows = generate_ids(model, ids, max_length=max_length,
                        num_return_sequences=num_return_sequences, do_sample=do_sample,
                        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                        use_cache=use_cache)
    return [tokenizer.decode([int(t) for t in row]) for row in rows]


def default_prompt(tokenizer):
    """A short prompt the tokenizer can encode: "The ", "the ", "def ", "a", else token 0."""
    for p in ("The ", "the ", "def ", "a"):
        try:
            tokenizer.encode(p)
            return p
        except ValueError:
            continue
    return tokenizer.decode([0])
