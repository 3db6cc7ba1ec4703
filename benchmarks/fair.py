"""Fair comparisons: each side in its own process, alternated, medians and ratios.

    python benchmarks/fair.py gpt-s                       # tinylm C vs PyTorch, 3 pairs
    python benchmarks/fair.py gpt-m lstm --pairs 5
    python benchmarks/fair.py gpt-s --sides tinylm,tinylm-numpy   # C vs the NumPy backend
    python benchmarks/fair.py matmul                      # tinylm vs numpy.matmul (OpenBLAS)
    python benchmarks/fair.py matmul-thin                 # m = 1..16
    python benchmarks/fair.py gpt-s --json out.json       # also write the numbers

For each workload the runner starts one worker process per side and run, in
the order A B A B ... (``--pairs`` pairs); a worker imports only its own
library, warms up, times ``--steps`` calls and prints each item's median
seconds per call as JSON.  The runner reports, per item, the median of the
workers' medians for each side and the ratio for each pair (B time / A time,
so > 1 means side A is faster), then the median ratio.

Sides and their settings (the other side at its fastest ordinary settings):

* ``tinylm``        C backend, ``kernels.set_num_threads(THREADS)``
* ``tinylm-numpy``  tinylm's NumPy backend (the readable spec)
* ``torch``         PyTorch eager, ``torch.set_num_threads(THREADS)``,
                    F.scaled_dot_product_attention(is_causal=True), nn.LSTM,
                    AdamW(foreach=True), clip_grad_norm_(foreach=True)
* ``numpy``         numpy.matmul on OpenBLAS with OPENBLAS_NUM_THREADS=THREADS
                    (transposes passed as views, so BLAS gets them for free)
* ``tinylm@DIR``    tinylm (C backend) imported from the checkout DIR (built in
                    place), e.g. ``--sides tinylm,tinylm@/tmp/before`` for a
                    before/after comparison of a change

The runner prints the load average before and after: on a shared machine the
absolute times are noise; quote the ratios, and say the machine was loaded.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
THREADS = 2

TRAIN = ("gpt-s", "gpt-m", "lstm")
# (m, k, n, case): op(A) m x k, op(B) k x n; NN  Y = X W,  NT  dX = dY W^T,  TN  dW = X^T dY
MATMUL = [(m, k, n, c) for (m, k, n) in [(2048, 128, 384), (2048, 512, 128), (4096, 192, 768),
                                         (512, 512, 512), (1024, 1024, 1024)]
          for c in ("NN", "NT", "TN")]
# a few rows, as when generating with a KV cache: x W (NN) and x W^T (NT)
MATMUL_THIN = [(m, 512, 2048, c) for m in (1, 2, 4, 8, 16) for c in ("NN", "NT")]
WORKLOADS = TRAIN + ("matmul", "matmul-thin")
DEFAULT_SIDES = {w: ("tinylm", "torch") for w in TRAIN}
DEFAULT_SIDES.update({"matmul": ("tinylm", "numpy"), "matmul-thin": ("tinylm", "numpy")})


# --------------------------------------------------------------------------
# worker: one side, one workload, in this process
# --------------------------------------------------------------------------

def _time_calls(fn, steps, warmup):
    """Median seconds per call of fn over `steps` calls, after `warmup` calls;
    short calls are batched so that each sample lasts at least ~20 ms."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    inner = max(1, int(0.02 / max(time.perf_counter() - t0, 1e-7)))
    samples = []
    for _ in range(steps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def _setup_side(side):
    """Import and configure one side's library; returns the module used."""
    name, _, checkout = side.partition("@")
    if name in ("tinylm", "tinylm-numpy"):
        if checkout:                             # another checkout, e.g. before a change
            sys.path.insert(0, os.path.abspath(checkout))
        else:
            sys.path.append(os.path.dirname(HERE))   # this checkout, if tinylm is not installed
        from tinylm import kernels
        if checkout and not os.path.abspath(kernels.__file__).startswith(os.path.abspath(checkout)):
            raise SystemExit("side %s imported tinylm from %s" % (side, kernels.__file__))
        kernels.set_backend("c" if name == "tinylm" else "numpy")
        kernels.set_num_threads(THREADS)
        return kernels
    if side == "torch":
        import torch
        torch.set_num_threads(THREADS)
        return torch
    if side == "numpy":
        import numpy
        return numpy
    raise SystemExit("unknown side %r" % side)


def _matmul_fn(side, lib, m, k, n, case, dtype="float32"):
    import numpy as np
    rng = np.random.default_rng(0)
    ta, tb = case[0] == "T", case[1] == "T"
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    out = np.empty((m, n), dtype)
    if side == "numpy":
        A, B = (a.T if ta else a), (b.T if tb else b)
        return lambda: np.matmul(A, B, out=out)
    return lambda: lib.matmul(a, b, ta, tb, out=out)


def worker(side, workload, steps, warmup):
    """{item: median seconds per call} for one side of one workload."""
    if side == "numpy":
        os.environ["OPENBLAS_NUM_THREADS"] = str(THREADS)   # before numpy is imported
    lib = _setup_side(side)
    sys.path.insert(0, HERE)
    if workload in TRAIN:
        import workloads
        make = workloads.torch_step_fn if side == "torch" else workloads.tinylm_step_fn
        return {workload: _time_calls(make(workload), steps, warmup)}
    shapes = MATMUL if workload == "matmul" else MATMUL_THIN
    return {"%s %dx%dx%d" % (c, m, k, n): _time_calls(_matmul_fn(side, lib, m, k, n, c),
                                                      steps, warmup)
            for (m, k, n, c) in shapes}


# --------------------------------------------------------------------------
# runner: alternate the workers, collect, report
# --------------------------------------------------------------------------

def run_worker(side, workload, steps, warmup):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, workload,
           "--steps", str(steps), "--warmup", str(warmup)]
    env = dict(os.environ)
    env.pop("TINYLM_BACKEND", None)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit("worker %s %s failed:\n%s" % (side, workload, out.stderr[-2000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(workload, sides, pairs, steps, warmup, log=print):
    """Alternate the sides' workers `pairs` times; returns a result dict."""
    a, b = sides
    runs = {a: [], b: []}
    for i in range(pairs):
        for side in (a, b) if i % 2 == 0 else (b, a):   # A B, B A, ...: no side always first
            runs[side].append(run_worker(side, workload, steps, warmup))
        log("  pair %d done" % (i + 1), flush=True)
    items = {}
    for item in runs[a][0]:
        ta = [r[item] for r in runs[a]]
        tb = [r[item] for r in runs[b]]
        ratios = [y / x for x, y in zip(ta, tb)]    # B time / A time: > 1, A is faster
        items[item] = {a: statistics.median(ta), b: statistics.median(tb),
                       "ratios": ratios, "ratio": statistics.median(ratios)}
    return {"workload": workload, "sides": [a, b], "pairs": pairs, "steps": steps,
            "threads": THREADS, "items": items}


def print_result(res, out=sys.stdout):
    a, b = res["sides"]
    w = res["workload"]
    per = "tok/s" if w in TRAIN else "ms/call"
    print("\n%s: %s vs %s, %d alternated pairs, %d threads (ratio = %s speed / %s speed)"
          % (w, a, b, res["pairs"], res["threads"], a, b), file=out)
    print("%-22s %12s %12s %8s   per-pair ratios" % ("item", a, b, "ratio"), file=out)
    for item, r in res["items"].items():
        if w in TRAIN:
            sys.path.insert(0, HERE)
            from workloads import tokens_per_step
            va, vb = (tokens_per_step(w) / r[s] for s in (a, b))
            fa, fb = "%.0f" % va, "%.0f" % vb
        else:
            fa, fb = "%.3f" % (1e3 * r[a]), "%.3f" % (1e3 * r[b])
        print("%-22s %12s %12s %7.2fx   %s" % (item, fa, fb, r["ratio"],
                                                " ".join("%.2f" % x for x in r["ratios"])),
              file=out)
    print("(%s)" % per, file=out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", nargs="+", choices=WORKLOADS)
    ap.add_argument("--sides", help="A,B (default: tinylm,torch for training, "
                                    "tinylm,numpy for matmul)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=7, help="timed calls per worker")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", metavar="SIDE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.workload[0], args.steps, args.warmup)))
        return
    load0 = os.getloadavg()
    print("load average %.1f %.1f %.1f on %d CPUs%s" % (
        load0 + (os.cpu_count(), " -- LOADED machine: absolute figures are noise, "
                 "read the ratios" if load0[0] > 0.5 * os.cpu_count() else "")))
    results = []
    for w in args.workload:
        sides = tuple(args.sides.split(",")) if args.sides else DEFAULT_SIDES[w]
        if len(sides) != 2:
            raise SystemExit("--sides takes two names, e.g. tinylm,torch")
        print("%s: %s vs %s ..." % (w, *sides), flush=True)
        res = compare(w, sides, args.pairs, args.steps, args.warmup)
        print_result(res)
        results.append(res)
    load1 = os.getloadavg()
    print("\nload average after: %.1f %.1f %.1f" % load1)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load_before": load0, "load_after": load1, "results": results}, f,
                      indent=1)


if __name__ == "__main__":
    main()
