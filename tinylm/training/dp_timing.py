"""Time one data-parallel training step, part by part: compute, waiting, all-reduce, update.

    python -m tinylm.training.dp_timing --preset gpt-s              # one process
    mpiexec -n 2 python -m tinylm.training.dp_timing --preset gpt-s # 2 ranks, half a batch each

prints one JSON line (rank 0): median seconds per part over ``--steps``
steps after ``--warmup`` steps, tokens/s of the whole global batch, the
gradient bytes all-reduced per step and the number of buckets.  Lesson 08_2
and benchmarks/bench_data_parallel.py run it.
"""

import argparse
import json
import time

import numpy as np

from tinylm import kernels, optim
from tinylm.models import build_model
from tinylm.training import distributed
from tinylm.training.config import PRESETS

__all__ = ["measure_step"]


def measure_step(comm, model_config, batch_size, steps=5, warmup=2, vocab_size=96, seed=0):
    """Median seconds of one data-parallel training step, split into its parts.

    Each rank runs forward + backward on its batch_size / N rows of random
    tokens (comm None: one process, the whole batch), waits for the other
    ranks (a barrier, so that the all-reduce is timed alone), averages the
    gradients and takes a clipped AdamW step.  Returns a dict, the same on
    every rank (rank 0's medians): compute_s, wait_s, allreduce_s, step_s,
    tokens_per_s (global tokens per second), grad_bytes (gradient bytes per
    all-reduce), buckets, ranks, threads, parameters, batch_size, block_size.
    """
    size = comm.size if comm is not None else 1
    rank = comm.rank if comm is not None else 0
    model = build_model("gpt", dict(model_config, vocab_size=vocab_size, seed=seed))
    T = model.config.block_size
    rows = distributed.shard_rows(batch_size, size, rank)
    rng = np.random.default_rng(seed)
    params = model.parameters()
    grads = [g for _, g in params]
    opt = optim.AdamW(params, lr=1e-4)
    if comm is not None:
        comm.broadcast_([p for p, _ in params])
    times = {"compute_s": [], "wait_s": [], "allreduce_s": [], "step_s": []}
    for i in range(warmup + steps):
        ids = rng.integers(0, vocab_size, size=(batch_size, T + 1))   # same on every rank
        x, y = ids[rows, :-1], ids[rows, 1:]
        if comm is not None:
            comm.barrier()                 # start together: time the step, not the skew
        t0 = time.perf_counter()
        model.loss(x, y)
        model.zero_grad()
        model.backward()
        t1 = time.perf_counter()
        if comm is not None:
            comm.barrier()                 # the slowest rank decides when all can go on
        t2 = time.perf_counter()
        if comm is not None:
            comm.average_(grads)
        t3 = time.perf_counter()
        optim.clip_grad_norm(params, 1.0)
        opt.step()
        t4 = time.perf_counter()
        if i >= warmup:
            for k, v in (("compute_s", t1 - t0), ("wait_s", t2 - t1),
                         ("allreduce_s", t3 - t2), ("step_s", t4 - t0)):
                times[k].append(v)
    out = {k: float(np.median(v)) for k, v in times.items()}
    out.update(tokens_per_s=batch_size * T / out["step_s"],
               grad_bytes=int(sum(g.nbytes for g in grads)),
               buckets=comm.num_buckets(grads) if comm is not None else 0,
               ranks=size, threads=kernels.get_num_threads(),
               parameters=int(model.num_parameters()), batch_size=batch_size, block_size=T)
    return comm.bcast(out) if comm is not None else out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tinylm.training.dp_timing",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpt-s", choices=sorted(PRESETS))
    ap.add_argument("--batch-size", type=int, default=None,
                    help="global batch (default: the preset's)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args(argv)
    p = PRESETS[args.preset]
    batch = args.batch_size or p["train"]["batch_size"]
    comm = distributed.world() if distributed.launched_by_mpi() else None
    if comm is not None:
        distributed.install_abort_on_error(comm)
        kernels.set_num_threads(distributed.default_threads(comm))
    r = measure_step(comm, p["model_config"], batch, steps=args.steps, warmup=args.warmup)
    if comm is None or comm.is_root:
        print(json.dumps(dict(r, preset=args.preset)))


if __name__ == "__main__":
    main()
