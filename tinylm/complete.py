"""Text completion shaped like the (retired) OpenAI Completions call of seed 003 section 5.

Seed 003 calls ``openai.Completion.create(engine="text-davinci-003", prompt=...,
max_tokens=60)`` and prints ``response.choices[0].text``.  That API was removed
from the ``openai`` package in version 1.0 and text-davinci-003 was retired, so
the code no longer runs.  What the call did is simple, and this module does it
with any tinylm language model:

1. encode the prompt;
2. sample ``max_tokens`` new tokens ``n`` times (``temperature``, ``top_p``;
   temperature 0 means greedy decoding, the same text ``n`` times);
3. decode each continuation; if it contains one of the ``stop`` strings, cut it
   just before the first one (the stop string is not returned) and report
   ``finish_reason="stop"``, else ``"length"`` (max_tokens reached); generation
   ends as soon as every choice has reached a stop string;
4. return an object with ``choices[i].text``, ``choices[i].finish_reason``,
   ``choices[i].index`` and ``usage`` (token counts), like the old response
   (attributes or ``response["choices"][0]["text"]``).

::

    from tinylm.complete import complete, Completion
    r = complete("runs/gpt/best.npz", "The list ", max_tokens=40, temperature=0.7,
                 n=2, stop="\\n")
    print(r.choices[0].text, r.choices[0].finish_reason)
    # the seed's spelling (engine = a checkpoint path or a (model, tokenizer) pair):
    r = Completion.create(engine="runs/gpt/best.npz", prompt="The ", max_tokens=60)

A prompt may also be a list of strings: the choices are then the n completions
of the first prompt, then the n of the second, and so on (``index`` counts
them all), as in the old API.
"""

import os
from dataclasses import dataclass, field

import numpy as np

from tinylm.generate import generate_ids

__all__ = ["complete", "Completion", "CompletionChoice"]


class _Mapping:
    """``obj["name"]`` reads the attribute, as the old openai objects allowed."""

    def __getitem__(self, key):
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None


@dataclass
class CompletionChoice(_Mapping):
    text: str                 # the continuation only (not the prompt), cut before a stop string
    index: int                # position in ``choices``
    finish_reason: str        # "stop" (a stop string was hit) or "length" (max_tokens)
    logprobs: object = None   # not computed (the old API's default)


@dataclass
class Completion(_Mapping):
    choices: list
    model: str
    usage: dict = field(default_factory=dict)   # prompt_tokens, completion_tokens, total_tokens
    object: str = "text_completion"

    @classmethod
    def create(cls, engine=None, prompt="", max_tokens=16, temperature=1.0, top_p=1.0, n=1,
               stop=None, model=None, seed=None, tokenizer=None):
        """The seed's spelling: ``Completion.create(engine=..., prompt=..., max_tokens=...)``.

        ``engine`` (or ``model``, the newer name) is a tinylm checkpoint path or a
        (model, tokenizer) pair; the rest are :func:`complete`'s arguments.
        """
        if (engine is None) == (model is None):
            raise ValueError("Completion.create: give exactly one of engine= or model= "
                             "(a tinylm checkpoint path or a (model, tokenizer) pair)")
        return complete(engine if model is None else model, prompt, max_tokens=max_tokens,
                        temperature=temperature, top_p=top_p, n=n, stop=stop, seed=seed,
                        tokenizer=tokenizer)


def _load(model, tokenizer):
    """-> (model, tokenizer, name) from a checkpoint path, a pair, or a model + tokenizer."""
    if isinstance(model, (str, os.PathLike)):
        if tokenizer is not None:
            raise ValueError("complete: a checkpoint carries its own tokenizer; do not "
                             "pass tokenizer= with a path")
        from tinylm.training import load_trained
        m, tok, meta, _ = load_trained(os.fspath(model))
        return m, tok, str(meta.get("model", os.fspath(model)))
    if isinstance(model, tuple) and len(model) == 2 and tokenizer is None:
        model, tokenizer = model
    if tokenizer is None:
        raise ValueError("complete: give a checkpoint path, a (model, tokenizer) pair, or "
                         "a model with tokenizer=")
    if not hasattr(model, "forward"):
        raise TypeError("complete: %s is not a tinylm model (it has no forward)"
                        % type(model).__name__)
    return model, tokenizer, type(model).__name__


def _check(prompt, max_tokens, temperature, top_p, n, stop):
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not (isinstance(prompts, (list, tuple)) and prompts
            and all(isinstance(p, str) for p in prompts)):
        raise TypeError("complete: prompt must be a str or a non-empty list of str, got %r"
                        % (prompt,))
    if not isinstance(max_tokens, (int, np.integer)) or max_tokens < 1:
        raise ValueError("complete: max_tokens must be an integer >= 1, got %r" % (max_tokens,))
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError("complete: n must be an integer >= 1, got %r" % (n,))
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature)
            and temperature >= 0):
        raise ValueError("complete: temperature must be a finite number >= 0 (0 = greedy), "
                         "got %r" % (temperature,))
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError("complete: top_p must be a number in (0, 1], got %r" % (top_p,))
    stops = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
    if not all(isinstance(s, str) and s for s in stops):
        raise ValueError("complete: stop must be None, a non-empty str or a list of them, "
                         "got %r" % (stop,))
    return prompts, stops


def _cut_at_stop(text, stops):
    """(text before the earliest stop string, finish_reason)."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if hits:
        return text[:min(hits)], "stop"
    return text, "length"


def _continuation(tok, ids, row):
    """The text a generated row adds to its prompt ids.  The row is decoded whole:
    a byte-level token may complete a character the prompt's last bytes began."""
    head = tok.decode(list(ids))
    full = tok.decode([int(t) for t in row])
    return full[len(head):] if full.startswith(head) else tok.decode(
        [int(t) for t in row[len(ids):]])


def _tokens_used(tok, ids, row, stops):
    """How many new tokens a row needed: up to the one that completed a stop string."""
    new = len(row) - len(ids)
    for k in range(1, new + 1):
        if _cut_at_stop(_continuation(tok, ids, row[:len(ids) + k]), stops)[1] == "stop":
            return k
    return new


def complete(model, prompt, max_tokens=16, temperature=1.0, n=1, stop=None, top_p=1.0,
             seed=None, tokenizer=None):
    """Complete ``prompt`` with a tinylm model; returns a :class:`Completion`.

    model: a checkpoint path written by ``tinylm train``, a (model, tokenizer)
        pair, or a model together with ``tokenizer=``.
    prompt: a str (or a list of str: n choices per prompt, in order).
    max_tokens: new tokens to generate per choice (>= 1).
    temperature: >= 0; 0 is greedy decoding (then all n choices are equal).
    n: completions per prompt.  stop: None, a str or a list of str.
    top_p: nucleus sampling (1 = off).  seed: makes sampling reproducible.
    The defaults (max_tokens 16, temperature 1, n 1, top_p 1) are the old API's.
    """
    prompts, stops = _check(prompt, max_tokens, temperature, top_p, n, stop)
    model, tok, name = _load(model, tokenizer)
    rng = np.random.default_rng(seed)
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for prompt_text in prompts:
        try:
            ids = tok.encode(prompt_text)
        except ValueError as exc:
            raise ValueError("complete: cannot encode the prompt: %s" % exc) from exc
        if not ids:
            raise ValueError("complete: the prompt is empty after tokenization; give at "
                             "least one token to start from")
        greedy = temperature == 0

        def finished(rows):                        # rows (N, t) -> has each hit a stop?
            return [_cut_at_stop(_continuation(tok, ids, r), stops)[1] == "stop"
                    for r in rows]
        rows = generate_ids(model, ids, max_length=len(ids) + int(max_tokens),
                            num_return_sequences=1 if greedy else int(n),
                            do_sample=not greedy, temperature=temperature or 1.0,
                            top_p=None if top_p == 1 else top_p,
                            seed=None if greedy else int(rng.integers(2 ** 63)),
                            stopping_criteria=finished if stops else None)
        if greedy:
            rows = np.repeat(rows, int(n), axis=0)
        prompt_tokens += len(ids)
        for row in rows:
            text, reason = _cut_at_stop(_continuation(tok, ids, row), stops)
            completion_tokens += _tokens_used(tok, ids, row, stops)
            choices.append(CompletionChoice(text, len(choices), reason))
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    return Completion(choices, name, usage)
