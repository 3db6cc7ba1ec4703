"""Run by tests/test_distributed.py, under `mpiexec -n N` or as one process.

python mpi_worker.py MODE OUT [options]

MODE train:  train a small GPT (Trainer(..., comm=...)) and write, per rank,
             OUT/rank<r>.npz with the final parameters and the loss history.
MODE fail:   like train, but rank --fail-rank raises at step 3.
"""

import argparse
import json
import os
import sys

import numpy as np

from tinylm.models import build_model
from tinylm.training import TrainConfig, Trainer, distributed, prepare_data


class Boom(RuntimeError):
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["train", "fail"])
    ap.add_argument("out")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--until", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--fail-rank", type=int, default=1)
    args = ap.parse_args()

    comm = distributed.world() if distributed.launched_by_mpi() else None
    rank = comm.rank if comm is not None else 0
    tok, train_ids, val_ids = prepare_data("pydoc", "char", max_chars=20000)
    model = build_model("gpt", vocab_size=tok.vocab_size, n_layer=1, n_head=2, d_model=32,
                        block_size=32, dropout=0.0, seed=0).astype(args.dtype)
    if args.mode == "fail" and rank == args.fail_rank:
        real_loss = model.loss
        calls = []

        def loss(x, y):
            calls.append(1)
            if len(calls) == 3 * args.grad_accum:
                raise Boom("rank %d broke on purpose at step 3" % rank)
            return real_loss(x, y)
        model.loss = loss
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, block_size=32, lr=3e-3,
                      min_lr=3e-4, warmup=2, eval_interval=3, eval_batches=2, seed=0,
                      grad_accum=args.grad_accum, plot=False)
    trainer = Trainer(model, tok, train_ids, val_ids, cfg, out_dir=args.out, model_name="gpt",
                      log=None, comm=comm)
    if args.resume:
        from tinylm import checkpoint as ckpt
        arrays, meta = ckpt.load_checkpoint(os.path.join(args.out, "checkpoint.npz"))
        trainer.load_state(arrays, meta)
    result = trainer.fit(until=args.until)
    params = {n: p for n, p, _ in model.named_parameters()}
    np.savez(os.path.join(args.out, "rank%d.npz" % rank), **params)
    with open(os.path.join(args.out, "rank%d.json" % rank), "w") as f:
        from tinylm import kernels
        json.dump({"train_loss": result.history["train_loss"],
                   "val_loss": result.history["val_loss"], "step": result.step,
                   "threads": kernels.get_num_threads(),
                   "size": comm.size if comm is not None else 1}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
