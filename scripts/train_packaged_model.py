"""Reproduce the small GPT that ships inside tinylm (tinylm/assets/gpt-pydoc-char.npz).

    python scripts/train_packaged_model.py            # ~4-5 min on a quiet 2-core machine

It is the `tinylm train` default recipe (preset gpt-s: 4 layers, 4 heads, d_model 128,
context 128, AdamW 2e-3 with warm-up and cosine decay) on the "pydoc" corpus (CPython's
reference text, in every Python install) with the character tokenizer, for a fixed number of
steps (step-budgeted runs are reproducible; the preset's time budget is switched off).  The
best-validation checkpoint is kept, stripped to the model weights, the tokenizer and the
metadata tinylm.train.load_trained needs (no optimizer state), and written to the package.
The figures printed at the end are the ones quoted in the README.
"""

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tinylm import checkpoint as ckpt  # noqa: E402
from tinylm.train import BEST_NAME, evaluate, load_trained, prepare_data, train  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(HERE), "tinylm", "assets", "gpt-pydoc-char.npz")
KEEP_META = ("kind", "model", "data", "glob", "max_chars", "model_config", "tokenizer",
             "train_config", "step", "best_val_loss", "elapsed")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=DEFAULT_OUT)
    a = ap.parse_args(argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer, res = train(preset="gpt-s", data="pydoc", tokenizer="char", out=run_dir,
                             steps=a.steps, seed=a.seed, plot=False)
        arrays, meta = ckpt.load_checkpoint(os.path.join(run_dir, BEST_NAME))
    slim = {k: v for k, v in arrays.items() if k.startswith("model.")}
    meta = {k: meta[k] for k in KEEP_META if k in meta}
    meta["trained_by"] = "scripts/train_packaged_model.py --steps %d --seed %d" % (a.steps,
                                                                                   a.seed)
    ckpt.save_checkpoint(a.out, slim, meta)
    os.chmod(a.out, 0o644)                   # save_checkpoint's temporary file is private
    # Check the written file the way users load it, on the full validation split.
    model, tok, m, _ = load_trained(a.out)
    _, _, val_ids = prepare_data("pydoc", tok, val_fraction=m["train_config"]["val_fraction"])
    val = evaluate(model, val_ids, m["model_config"]["block_size"], 16)
    print("wrote %s: %.2f MB, %s parameters, best step %d of %d, validation loss %.4f "
          "nats/char on all %d validation characters; %.0f s in all"
          % (a.out, os.path.getsize(a.out) / 1e6, "{:,}".format(model.num_parameters()),
             m["step"], a.steps, val, len(val_ids), time.time() - t0))


if __name__ == "__main__":
    main()
