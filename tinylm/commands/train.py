"""`tinylm train`: train a language model, save a checkpoint and a loss plot.

With no arguments it trains the default GPT preset (gpt-s: 4 layers, 4 heads,
d=128, context 128) on the default corpus (the English text of Python's
pydoc topics, character tokens) for about five minutes, printing progress,
then writes runs/gpt/checkpoint.npz, runs/gpt/best.npz and runs/gpt/loss.png
and prints a sample.
"""

import argparse
import dataclasses
import os
import sys

EPILOG = """examples:
  tinylm train                                  # gpt-s on the pydoc text, ~5 minutes
  tinylm train --steps 200 --out runs/quick     # a short run
  tinylm train --time 60                        # stop after a minute (schedule fitted to it)
  tinylm train --data notes/ --glob '*.md' --tokenizer bpe
  tinylm train --out runs/quick --resume --steps 400   # continue a run
  tinylm train --config n_layer=6 --config d_model=192 --lr 1e-3 --warmup 200
  tinylm generate runs/gpt/best.npz --prompt 'The ' --max-length 200
  mpiexec -n 2 tinylm train --steps 200         # data parallel on 2 processes (tinylm[mpi])
"""


# Flags that are not TrainConfig fields: what to train on, where to write, what to print.
def add_arguments(parser):
    from tinylm.commands.args import checked
    from tinylm.training import PRESETS, TrainConfig
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
    parser.add_argument("--max-chars", type=checked(int, low=1), default=None,
                        help="use only about this many characters of the corpus (quick runs)")
    parser.add_argument("--vocab-size", type=checked(int, low=2, high=10 ** 6), default=None,
                        help="vocabulary size for word (>= 2) and bpe (>= 256) tokenizers")
    parser.add_argument("--dropout", type=checked(float, low=0, below=1), default=None,
                        help="dropout probability in the model (same as --config dropout=P)")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="set a field of the model's config, e.g. --config n_layer=6 "
                             "(repeatable)")
    parser.add_argument("--out", default=None,
                        help="folder for checkpoint.npz, best.npz, loss.png "
                             "(default: runs/<model>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in --out (same losses as an "
                             "uninterrupted run)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --out (without it, an existing "
                             "run is never overwritten)")
    parser.add_argument("--backend", choices=["c", "numpy"], default=None,
                        help="kernel backend (default: c when built)")
    parser.add_argument("--sample-length", type=checked(int, low=0, high=100000), default=200,
                        help="length of the sample printed at the end (0: none)")
    settings = parser.add_argument_group(
        "training settings (TrainConfig; default: the preset's, else the value shown)")
    for f in dataclasses.fields(TrainConfig):
        settings.add_argument(*FLAG_ALIASES.get(f.name, ()), "--" + f.name.replace("_", "-"),
                              dest=f.name, default=None, **_flag(f))


FLAG_ALIASES = {"time_budget": ("--time",)}   # older spellings that still work


def _flag(field):
    """argparse keywords for a TrainConfig field: type with range check, help, default."""
    meta = field.metadata
    shown = meta["help"] if field.default is None else \
        "%s (default %s)" % (meta["help"], field.default)
    if field.type is bool:
        return dict(action=argparse.BooleanOptionalAction, help=shown)
    if meta["choices"]:
        return dict(choices=meta["choices"], help=shown)
    from tinylm.commands.args import field_type
    return dict(type=field_type(field), help=shown, metavar=field.type.__name__.upper())


def _model_config(args):
    """--dropout and --config KEY=VALUE as a dict, each value typed by the model's config."""
    from tinylm.models import get_model_classes
    from tinylm.training import resolve
    name = resolve(args.model, args.preset)[0]
    fields = {f.name: f for f in dataclasses.fields(get_model_classes(name)[0])}
    out = {} if args.dropout is None else {"dropout": args.dropout}
    for item in args.config:
        key, sep, text = item.partition("=")
        if not sep or key not in fields:
            raise ValueError("--config %s: expected KEY=VALUE with KEY one of: %s"
                             % (item, ", ".join(sorted(fields))))
        kind = fields[key].type
        if key == "dropout":
            from tinylm.training.config import check_setting
            out[key] = check_setting("--config dropout", float, {"low": 0, "below": 1},
                                     _number(item, text))
            continue
        if kind is bool:
            out[key] = text.lower() in ("1", "true", "yes")
        else:
            try:
                out[key] = kind(text) if isinstance(kind, type) else text
            except ValueError:
                raise ValueError("--config %s: %s must be a %s" % (item, key, kind.__name__)) \
                    from None
    return out


def _number(item, text):
    try:
        return float(text)
    except ValueError:
        raise ValueError("--config %s: not a number" % item) from None


def run(args):
    from tinylm import kernels
    from tinylm.commands.args import fail
    from tinylm.generate import default_prompt, generate
    from tinylm.training.evaluation import perplexity
    from tinylm.training import (BEST_NAME, CHECKPOINT_NAME, PLOT_NAME, TrainConfig,
                                 distributed, load_trained, train)

    if args.backend:
        kernels.set_backend(args.backend)
    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                if getattr(args, f.name) is not None}
    if args.vocab_size is not None and not args.resume:
        if args.tokenizer == "char":
            return fail("train", "--vocab-size applies to --tokenizer word or bpe (a char "
                                 "vocabulary is the text's characters)")
        if args.tokenizer == "bpe" and args.vocab_size < 256:
            return fail("train", "--vocab-size for bpe must be >= 256 (the 256 byte values "
                                 "come first), got %d" % args.vocab_size)
    comm = None
    if distributed.launched_by_mpi():      # started by mpiexec -n N (N > 1): data parallel
        try:
            comm = distributed.world()
        except RuntimeError as exc:
            print("tinylm train: error: %s" % exc, file=sys.stderr)
            return 2
        distributed.install_abort_on_error(comm)   # any rank's crash ends the job
    try:
        trainer, result = train(
            model=args.model, preset=args.preset, data=args.data, glob=args.glob,
            tokenizer=args.tokenizer, vocab_size=args.vocab_size, max_chars=args.max_chars,
            out=args.out, resume=args.resume, model_config=_model_config(args),
            log=lambda s: print(s, flush=True), comm=comm, overwrite=args.overwrite,
            **settings)
    except (ValueError, OSError, KeyError) as exc:
        if comm is not None:               # the other ranks may be waiting for this one
            distributed.abort_with_message(comm, exc, code=2, prefix="tinylm train")
        return fail("train", exc)
    except MemoryError:
        return fail("train", "the model or data does not fit in memory (check --config "
                             "sizes, --batch-size, --block-size)")
    if comm is not None and not comm.is_root:
        return 0 if result.stopped != "non-finite" else 1
    out = trainer.out_dir
    print("stopped: %s after %d steps | best validation loss %.4f nats/token "
          "(perplexity %.2f)" % (result.stopped, result.step, result.best_val_loss,
                                 perplexity(result.best_val_loss)))
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

