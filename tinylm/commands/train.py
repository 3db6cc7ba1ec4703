"""`tinylm train`: train a language model, save a checkpoint and a loss plot.

With no arguments it trains the default GPT preset (gpt-s: 4 layers, 4 heads,
d=128, context 128) on the default corpus (the English text of Python's
pydoc topics, character tokens) for about five minutes, printing progress,
then writes runs/gpt/checkpoint.npz, runs/gpt/best.npz and runs/gpt/loss.png
and prints a sample.
"""

import argparse
import os
import sys

EPILOG = """examples:
  tinylm train                                  # gpt-s on the pydoc text, ~5 minutes
  tinylm train --steps 200 --out runs/quick     # a short run
  tinylm train --time 60                        # stop after a minute (schedule fitted to it)
  tinylm train --data notes/ --glob '*.md' --tokenizer bpe
  tinylm train --out runs/quick --resume --steps 400   # continue a run
  tinylm generate runs/gpt/best.npz --prompt 'The ' --max-length 200
"""


def add_arguments(parser):
    from tinylm.training import PRESETS
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--model", default=None,
                        help="model name from the registry (default: gpt)")
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS),
                        help="model size + training settings (default for gpt: gpt-s)")
    parser.add_argument("--data", default="pydoc",
                        help="'pydoc' (Python's documentation text, default), 'code' "
                             "(the standard library's .py files), or a UTF-8 file or folder")
    parser.add_argument("--glob", default=None,
                        help="with a folder for --data: which files, e.g. '*.txt'")
    parser.add_argument("--tokenizer", default="char", choices=["char", "word", "bpe"],
                        help="how text becomes tokens (default: char)")
    parser.add_argument("--max-chars", type=int, default=None,
                        help="use only about this many characters of the corpus (quick runs)")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="vocabulary size for word/bpe tokenizers")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps (replaces the preset's time cap)")
    parser.add_argument("--time", type=float, default=None, metavar="SECONDS",
                        help="time budget in seconds; the LR schedule is fitted to it")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--dropout", type=float, default=None,
                        help="dropout probability in the model")
    parser.add_argument("--patience", type=int, default=None,
                        help="early stopping: evaluations without improvement")
    parser.add_argument("--eval-interval", type=int, default=None,
                        help="steps between validation evaluations and checkpoints")
    parser.add_argument("--out", default=None,
                        help="folder for checkpoint.npz, best.npz, loss.png "
                             "(default: runs/<model>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in --out (same losses as an "
                             "uninterrupted run)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--backend", choices=["c", "numpy"], default=None,
                        help="kernel backend (default: c when built)")
    parser.add_argument("--sample-length", type=int, default=200,
                        help="length of the sample printed at the end (0: none)")


def run(args):
    from tinylm import kernels
    from tinylm.generate import default_prompt, generate
    from tinylm.training import train, BEST_NAME, PLOT_NAME, CHECKPOINT_NAME, load_trained

    if args.backend:
        kernels.set_backend(args.backend)
    settings = {}
    for key, attr in (("batch_size", "batch_size"), ("lr", "lr"), ("patience", "patience"),
                      ("eval_interval", "eval_interval")):
        v = getattr(args, attr)
        if v is not None:
            settings[key] = v
    model_config = {}
    if args.dropout is not None:
        model_config["dropout"] = args.dropout
    tokenizer = args.tokenizer
    try:
        trainer, result = train(
            model=args.model, preset=args.preset, data=args.data, glob=args.glob,
            tokenizer=tokenizer, vocab_size=args.vocab_size, max_chars=args.max_chars,
            out=args.out,
            resume=args.resume, seed=args.seed, steps=args.steps, time_budget=args.time,
            model_config=model_config, log=lambda s: print(s, flush=True), **settings)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print("tinylm train: error: %s" % exc, file=sys.stderr)
        return 2
    out = trainer.out_dir
    print("stopped: %s after %d steps | best validation loss %.4f nats/token "
          "(perplexity %.2f)" % (result.stopped, result.step, result.best_val_loss,
                                 _exp(result.best_val_loss)))
    for name, what in ((CHECKPOINT_NAME, "checkpoint (latest, for --resume)"),
                       (BEST_NAME, "checkpoint (best validation loss)"),
                       (PLOT_NAME, "loss curve")):
        path = os.path.join(out, name)
        if os.path.exists(path):
            print("%-34s %s" % (what, path))
    best = os.path.join(out, BEST_NAME)
    if args.sample_length > 0 and os.path.exists(best) and result.stopped != "non-finite":
        model, tok, _, _ = load_trained(best)
        prompt = default_prompt(tok)
        n = min(args.sample_length, 10000)
        try:
            text = generate(model, tok, prompt, max_length=n + len(tok.encode(prompt)),
                            do_sample=True, temperature=0.8, top_k=None, seed=0)[0]
            print("\nsample (temperature 0.8):\n" + "-" * 60 + "\n" + text + "\n" + "-" * 60)
        except ValueError as exc:
            print("(no sample: %s)" % exc)
    return 0 if result.stopped != "non-finite" else 1


def _exp(x):
    import math
    return math.exp(min(x, 50)) if math.isfinite(x) else float("nan")
