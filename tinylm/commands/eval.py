"""`tinylm eval CHECKPOINT`: validation loss and perplexity of a trained model."""

import math
import sys


def add_arguments(parser):
    parser.add_argument("checkpoint", help="a checkpoint written by `tinylm train` (.npz)")
    parser.add_argument("--data", default=None,
                        help="text to evaluate on: 'pydoc', 'code' or a UTF-8 file/folder "
                             "(default: the validation split of the training data)")
    parser.add_argument("--glob", default=None, help="with a folder for --data: which files")
    parser.add_argument("--max-batches", type=int, default=None,
                        help="evaluate at most this many batches (default: all)")
    parser.add_argument("--batch-size", type=int, default=None)


def run(args):
    import numpy as np
    from tinylm.checkpoint import CheckpointError
    from tinylm.training import evaluate, load_trained, prepare_data
    try:
        model, tok, meta, _ = load_trained(args.checkpoint)
    except (OSError, ValueError, KeyError, CheckpointError) as exc:
        print("tinylm eval: error: %s" % exc, file=sys.stderr)
        return 2
    tc = meta["train_config"]
    try:
        if args.data is None:
            _, _, ids = prepare_data(meta.get("data") or "pydoc", tok, glob=meta.get("glob"),
                                     val_fraction=tc["val_fraction"],
                                     max_chars=meta.get("max_chars"))
            what = "validation split of %s" % (meta.get("data") or "pydoc")
        else:
            from tinylm.data import load_corpus
            text = load_corpus(source=args.data, glob=args.glob)
            ids = np.asarray(tok.encode(text), dtype=np.int64)
            what = args.data
        loss = evaluate(model, ids, tc["block_size"], args.batch_size or tc["batch_size"],
                        max_batches=args.max_batches)
    except ValueError as exc:
        print("tinylm eval: error: %s" % exc, file=sys.stderr)
        return 2
    print("checkpoint       %s (step %d, model %s)" % (args.checkpoint, meta["step"],
                                                        meta["model"]))
    print("data             %s (%d tokens)" % (what, len(ids)))
    print("loss             %.4f nats/token" % loss)
    print("perplexity       %.3f" % math.exp(min(loss, 50)))
    if type(tok).__name__ == "CharTokenizer":
        print("bits per char    %.4f" % (loss / math.log(2)))
    return 0
