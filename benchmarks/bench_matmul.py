"""Benchmark: tinylm's C matmul kernel against numpy.matmul (OpenBLAS).

    python benchmarks/bench_matmul.py            # full table
    python benchmarks/bench_matmul.py --quick    # fewer shapes, f32 only
    python benchmarks/bench_matmul.py --single-thread  # 1 thread each, CPU time
    python benchmarks/bench_matmul.py --spin     # the OpenMP/OpenBLAS spin-wait test

Each row times ``tinylm.kernels.matmul`` (C backend, the thread count tinylm
would use) and ``numpy.matmul`` on the same operands, interleaved in one
process (see _harness.py), and reports GFLOP/s and the ratio tinylm/numpy
(> 1: tinylm is faster).  The transpose cases are the three a linear layer
needs:  NN  Y = X W,   NT  dX = dY W^T,   TN  dW = X^T dY.

``--spin`` measures what happens when tinylm's OpenMP threads and OpenBLAS's
threads take turns on the same cores (see ``spin_run``).
"""

import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.dirname(HERE))  # the checkout, if tinylm is not installed
sys.path.insert(0, HERE)

from _harness import interleaved, print_table  # noqa: E402

# (m, k, n): op(A) is m x k, op(B) is k x n.
SQUARES = [(s, s, s) for s in (128, 256, 512, 1024, 2048)]
MODEL_SHAPES = [(2048, 128, 384), (2048, 512, 128), (4096, 192, 768)]
# A few rows: one token while generating (m=1), a small RNN batch (m=16).
THIN_SHAPES = [(1, 768, 2304), (16, 512, 2048)]
CASES = ("NN", "NT", "TN")


def _operands(case, m, k, n, dtype, rng):
    """Arrays stored the way the case says, and the numpy expression for it."""
    ta, tb = case[0] == "T", case[1] == "T"
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b, ta, tb


def time_case(case, m, k, n, dtype, rng, repeats=5, min_time=0.2, clock=None):
    """(tinylm GFLOP/s, numpy GFLOP/s) for one shape/case/dtype.

    Each timing sample lasts ~min_time seconds: OpenBLAS's threads keep
    spinning for a few ms after numpy's last call and slow down the first
    tinylm calls of the next sample, so samples must be long against that."""
    from tinylm import kernels
    a, b, ta, tb = _operands(case, m, k, n, dtype, rng)
    A = a.T if ta else a                 # views: numpy passes the transpose to BLAS
    B = b.T if tb else b
    out_t = np.empty((m, n), dtype)
    out_n = np.empty((m, n), dtype)
    with kernels.backend("c"):
        t = interleaved({
            "tinylm": lambda: kernels.matmul(a, b, ta, tb, out=out_t),
            "numpy": lambda: np.matmul(A, B, out=out_n),
        }, repeats=repeats, min_time=min_time, clock=clock or time.perf_counter)
    flops = 2.0 * m * n * k
    return flops / t["tinylm"] / 1e9, flops / t["numpy"] / 1e9


def run(quick=False, single_thread=False):
    """Return (headers, rows) of the comparison table.

    single_thread=True: both libraries on one thread, timed by the CPU time
    of the process - a measure of the kernel itself that stays steady on a
    busy machine.  It runs in a child process, because OpenBLAS fixes its
    thread count when numpy is imported."""
    if single_thread and os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", TINYLM_NUM_THREADS="1")
        cmd = [sys.executable, os.path.abspath(__file__), "--single-thread", "--json"]
        res = subprocess.run(cmd + (["--quick"] if quick else []), env=env,
                             capture_output=True, text=True, check=True)
        headers, rows = json.loads(res.stdout)
        return headers, rows
    from tinylm import kernels
    if not kernels.c_available():
        raise SystemExit("bench_matmul: the C extension is not built "
                         "(python csrc/build_ffi.py)")
    rng = np.random.default_rng(0)
    shapes = ([(256, 256, 256), (1024, 1024, 1024)] + MODEL_SHAPES[:1] if quick
              else SQUARES + MODEL_SHAPES + THIN_SHAPES)
    dtypes = (np.float32,) if quick else (np.float32, np.float64)
    threads = "1 thread, CPU time" if single_thread else "%d threads" % kernels.get_num_threads()
    headers = ["shape (m x k @ k x n)", "case", "dtype", "tinylm GFLOP/s",
               "numpy GFLOP/s", "ratio (%s)" % threads]
    rows = []
    for dtype in dtypes:
        for (m, k, n) in shapes:
            for case in CASES:
                g_t, g_n = time_case(case, m, k, n, dtype, rng, repeats=3 if quick else 5,
                                     clock=time.process_time if single_thread else None)
                rows.append(["%dx%d @ %dx%d" % (m, k, k, n), case,
                             np.dtype(dtype).name, g_t, g_n, g_t / g_n])
    return headers, rows


# --------------------------------------------------------------------------
# The spin-wait problem
# --------------------------------------------------------------------------
# After a parallel region, OpenMP (libgomp) worker threads keep spinning for a
# while in case more work comes; OpenBLAS's threads do the same after a BLAS
# call.  On a machine with few cores, a numpy matmul started right after a
# tinylm kernel has to share its cores with spinning tinylm threads (and vice
# versa).  spin_run measures each library alone and both alternating, in a
# fresh process per setting because libgomp reads its environment only once,
# when it is loaded.

_SPIN_CHILD = r"""
import sys, json, time
sys.path.append(%(root)r)
import numpy as np
from tinylm import kernels
s, mode, seconds = %(size)d, %(mode)r, %(seconds)r
rng = np.random.default_rng(0)
a = rng.standard_normal((s, s)).astype(np.float32)
b = rng.standard_normal((s, s)).astype(np.float32)
o1 = np.empty((s, s), np.float32); o2 = np.empty((s, s), np.float32)
tl = lambda: kernels.matmul(a, b, out=o1)
npm = lambda: np.matmul(a, b, out=o2)
fns = {"tinylm": [tl], "numpy": [npm], "both": [tl, npm]}[mode]
for f in fns:
    f()
samples = []
t_end = time.perf_counter() + seconds
while time.perf_counter() < t_end:
    t0 = time.perf_counter()
    for f in fns:
        f()
    samples.append(time.perf_counter() - t0)
samples.sort()
burnt = []          # CPU seconds the process uses in the 50 ms after a call
for _ in range(5):
    fns[-1]()
    c0 = time.process_time()
    time.sleep(0.05)
    burnt.append(time.process_time() - c0)
burnt.sort()
print(json.dumps([samples[len(samples) // 2], burnt[2]]))
"""

SPIN_SETTINGS = [
    ("libgomp default", {}),
    ("GOMP_SPINCOUNT=1000", {"GOMP_SPINCOUNT": "1000"}),
    ("OMP_WAIT_POLICY=passive", {"OMP_WAIT_POLICY": "passive"}),
]


def spin_run(sizes=(128, 256, 512), settings=None, seconds=1.0):
    """(headers, rows): median ms per call of tinylm alone, numpy alone, and
    one of each back to back ('both'), each in its own fresh process (a
    library's threads keep spinning after its calls, so the three must not
    share a process).  'slowdown' = both / (tinylm + numpy): 1.0 = no harm.
    'idle-spin ms': CPU time the process burns in the 50 ms after one call
    while the caller sleeps (median of 5) - the spinning itself, and a number
    that stays meaningful on a busy machine where the timings do not.

    Every setting but the last runs with TINYLM_OMP_DEFAULTS=0 (tinylm leaves
    the OpenMP environment alone, see tinylm/kernels.py) and only the listed
    variables; the last row, "tinylm's default", shows what users get."""
    settings = list(settings or SPIN_SETTINGS)
    root = os.path.dirname(HERE)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("OMP_", "GOMP_", "TINYLM_"))}
    runs = [(name, dict(base, TINYLM_OMP_DEFAULTS="0", **env)) for name, env in settings]
    runs.append(("tinylm's default", dict(base)))
    rows = []
    for size in sizes:
        for name, env in runs:
            t, burnt = {}, {}
            for mode in ("tinylm", "numpy", "both"):
                code = _SPIN_CHILD % {"root": root, "size": size, "mode": mode,
                                      "seconds": seconds}
                res = subprocess.run([sys.executable, "-c", code], env=env,
                                     capture_output=True, text=True, check=True)
                t[mode], burnt[mode] = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(["%d^3 f32" % size, name, t["tinylm"] * 1e3, t["numpy"] * 1e3,
                         t["both"] * 1e3, t["both"] / (t["tinylm"] + t["numpy"]),
                         burnt["tinylm"] * 1e3, burnt["numpy"] * 1e3])
    headers = ["shape", "setting", "tinylm ms", "numpy ms", "both ms", "slowdown",
               "tinylm idle-spin ms", "numpy idle-spin ms"]
    return headers, rows


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer shapes, float32 only")
    p.add_argument("--single-thread", action="store_true",
                   help="one thread each, timed by CPU time (steady on a busy machine)")
    p.add_argument("--spin", action="store_true",
                   help="measure the OpenMP/OpenBLAS spin-wait interaction")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.spin:
        headers, rows = spin_run()
    else:
        headers, rows = run(quick=args.quick, single_thread=args.single_thread)
    if args.json:
        print(json.dumps([headers, rows]))
    else:
        print_table(headers, rows)


if __name__ == "__main__":
    main()
