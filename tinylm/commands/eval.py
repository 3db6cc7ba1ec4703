"""`tinylm eval CHECKPOINT`: validation loss and perplexity of a trained model.

By default it scores exactly the validation windows training scored (the
same split of the same text, the same windows), so it prints the validation
loss training reported for this checkpoint.  ``--all`` scores the whole
validation split when training used only its first ``--eval-batches``.
"""

import math
import sys


def add_arguments(parser):
    from tinylm.commands.args import checked
    parser.add_argument("checkpoint", help="a checkpoint written by `tinylm train` (.npz)")
    parser.add_argument("--data", default=None,
                        help="text to evaluate on: 'pydoc', 'code' or a UTF-8 file/folder "
                             "(default: the validation split of the training data)")
    parser.add_argument("--glob", default=None, help="with a folder for --data: which files")
    parser.add_argument("--max-batches", type=checked(int, low=1), default=None,
                        help="score at most this many batches (default: the windows "
                             "training scored)")
    parser.add_argument("--all", action="store_true",
                        help="score every window (training may have scored only the first "
                             "--eval-batches)")
    parser.add_argument("--batch-size", type=checked(int, low=1, high=1 << 20), default=None)


def run(args):
    import numpy as np
    from tinylm.commands.args import fail
    from tinylm.training import evaluate, load_trained, prepare_data
    from tinylm.training.evaluation import describe_windows, perplexity
    try:
        model, tok, meta, _ = load_trained(args.checkpoint)
    except (OSError, ValueError, KeyError) as exc:
        return fail("eval", exc)
    tc = meta["train_config"]
    batch_size = args.batch_size or tc["batch_size"]
    max_batches = args.max_batches
    if max_batches is None and not args.all and args.data is None:
        max_batches = tc.get("eval_batches")       # what training scored
    try:
        if args.data is None:
            _, _, ids = prepare_data(meta.get("data") or "pydoc", tok, glob=meta.get("glob"),
                                     val_fraction=tc["val_fraction"],
                                     max_chars=meta.get("max_chars"),
                                     split=tc.get("val_split", "tail"))
            what = "validation split of %s" % (meta.get("data") or "pydoc")
        else:
            from tinylm.data import load_corpus
            text = load_corpus(source=args.data, glob=args.glob)
            ids = np.asarray(tok.encode(text), dtype=np.int64)
            what = args.data
        loss = evaluate(model, ids, tc["block_size"], batch_size, max_batches=max_batches)
    except (ValueError, OSError) as exc:
        return fail("eval", exc)
    print("checkpoint       %s (step %d, model %s)" % (args.checkpoint, meta["step"],
                                                        meta["model"]))
    print("data             %s: %s" % (what, describe_windows(ids, tc["block_size"],
                                                              batch_size, max_batches)))
    print("loss             %.4f nats/token" % loss)
    print("perplexity       %.3f" % perplexity(loss))
    if type(tok).__name__ == "CharTokenizer":
        print("bits per char    %.4f" % (loss / math.log(2)))
    return 0
