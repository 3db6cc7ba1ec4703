"""Training throughput (tokens/s) of tinylm vs the same model in PyTorch eager.

One training step = forward + cross-entropy + backward + grad clipping +
AdamW update, on random token batches (the data pipeline is not timed).
Cases:

* GPT-S: 4 layers, 4 heads, d=128, T=128, batch 16, vocabulary 65
* GPT-M: 6 layers, 6 heads, d=192, T=256, batch 8, vocabulary 65
* LSTM LM: embedding 64 -> LSTM 256 -> vocabulary 65, T=128, batch 32

Runners: tinylm with the C backend, tinylm with the NumPy backend, and
PyTorch eager (if installed; same config and init scale, 2 threads),
interleaved in ONE process (benchmarks/_harness.py), reported as medians.
In-process figures favour tinylm (its OpenMP threads and PyTorch's pool spin
against each other and slow PyTorch more); benchmarks/fair.py runs each side
in its own process and is the one to quote.

    python benchmarks/bench_train.py                # all cases
    python benchmarks/bench_train.py --case gpt-s --profile   # + cProfile of a C step
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, if tinylm is not installed

from _harness import interleaved, print_table  # noqa: E402

from tinylm import kernels  # noqa: E402
from workloads import CASES, tinylm_step_fn, torch_step_fn  # noqa: E402


def with_backend(name, fn):
    def run():
        with kernels.backend(name):
            fn()
    return run

def have_torch():
    try:
        import torch
        torch.set_num_threads(2)
        return True
    except ImportError:
        return False


# --------------------------------------------------------------------------

def profile(case, n=5, top=25):
    import cProfile
    import pstats
    step = tinylm_step_fn(case)
    step()
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(n):
        step()
    pr.disable()
    print("\ncProfile of %d tinylm training steps (%s, backend %s), by own time:"
          % (n, case, kernels.get_backend()))
    pstats.Stats(pr).sort_stats("tottime").print_stats(top)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES),
                    help="which case(s) (default: all)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-numpy", action="store_true", help="skip the NumPy backend")
    ap.add_argument("--profile", action="store_true", help="also cProfile the C backend")
    args = ap.parse_args(argv)
    cases = args.case or list(CASES)
    torch_ok = have_torch()
    kernels.set_num_threads(2)
    print("threads: 2 | C backend available: %s | PyTorch: %s"
          % (kernels.c_available(), "yes" if torch_ok else "not installed"))
    rows = []
    for case in cases:
        c = CASES[case]
        tokens = c["B"] * c["T"]
        try:
            base = tinylm_step_fn(case)
        except Exception as exc:       # e.g. a model not in the registry yet
            print("%s: tinylm model unavailable: %s" % (case, exc))
            continue
        fns = {}
        if kernels.c_available():
            fns["tinylm C"] = with_backend("c", base)
        if not args.no_numpy:
            fns["tinylm NumPy"] = with_backend("numpy", tinylm_step_fn(case))
        if torch_ok:
            fns["PyTorch"] = torch_step_fn(case)
        t = interleaved(fns, repeats=args.repeats, warmup=1, min_time=0.3)
        tps = {k: tokens / v for k, v in t.items()}
        row = [case] + ["%.0f" % tps.get(k, float("nan")) if k in tps else "-"
                        for k in ("tinylm C", "tinylm NumPy", "PyTorch")]
        ratio = lambda a, b: ("%.2fx" % (tps[a] / tps[b])) if a in tps and b in tps else "-"
        row += [ratio("tinylm C", "PyTorch"), ratio("tinylm C", "tinylm NumPy")]
        rows.append(row)
        print("%s: %s" % (case, ", ".join("%s %.1f ms/step" % (k, v * 1e3)
                                          for k, v in t.items())), flush=True)
    print()
    print_table(["case", "C tok/s", "NumPy tok/s", "PyTorch tok/s", "C/PyTorch", "C/NumPy"],
                rows)
    if args.profile:
        with kernels.backend("c"):
            for case in cases:
                profile(case)


if __name__ == "__main__":
    main()
