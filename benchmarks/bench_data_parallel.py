"""Data-parallel training on one machine: 1 process x T threads vs N MPI ranks x T/N threads.

Each measurement is its own job (`python -m tinylm.training.dp_timing`, under
`mpiexec -n N` for N ranks): a few training steps of a preset on random tokens,
with the same global batch, reporting median seconds per step, per part. The
configurations are alternated, `--repeats` times, and the medians of the runs
reported, with the all-reduce's share of a data-parallel step.

    python benchmarks/bench_data_parallel.py                    # gpt-s and gpt-m, 2 cores
    python benchmarks/bench_data_parallel.py --ranks 2 --cores 2 --repeats 5 --steps 8

Needs mpi4py and mpiexec (pip install ".[mpi]").
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(preset, ranks, threads, steps):
    env = dict(os.environ, TINYLM_NUM_THREADS=str(threads))
    try:
        import tinylm   # noqa: F401  (installed)
    except ImportError:
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "tinylm.training.dp_timing", "--preset", preset,
           "--steps", str(steps), "--warmup", "2"]
    if ranks > 1:
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        cmd = [mpiexec if os.path.exists(mpiexec) else shutil.which("mpiexec"),
               "-n", str(ranks)] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if r.returncode:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), r.stderr[-2000:]))
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["gpt-s", "gpt-m"])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    configs = [(1, args.cores), (args.ranks, max(1, args.cores // args.ranks))]
    print("| preset | configuration | tokens/s (median of %d runs) | step ms | compute ms "
          "| waiting for the slower rank ms | all-reduce ms | all-reduce share |" % args.repeats)
    print("|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        got = {c: [] for c in configs}
        for _ in range(args.repeats):
            for c in configs:                              # alternated
                got[c].append(run(preset, c[0], c[1], args.steps))
        base = None
        for (n, t), rs in got.items():
            tps = float(np.median([r["tokens_per_s"] for r in rs]))
            step = float(np.median([r["step_s"] for r in rs]))
            comp = float(np.median([r["compute_s"] for r in rs]))
            wait = float(np.median([r["wait_s"] for r in rs]))
            red = float(np.median([r["allreduce_s"] for r in rs]))
            base = base or tps
            print("| %s | %d process%s x %d thread%s | %.0f (%.2fx) | %.0f | %.0f | %.1f | %.1f "
                  "| %.1f%% |" % (preset, n, "es" if n > 1 else "", t, "s" if t > 1 else "",
                                  tps, tps / base, 1e3 * step, 1e3 * comp, 1e3 * wait,
                                  1e3 * red, 100 * red / step))


if __name__ == "__main__":
    main()
