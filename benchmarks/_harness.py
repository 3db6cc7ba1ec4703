"""Timing helpers shared by the benchmark scripts.

The machine is shared and noisy (+-10-30%), so every comparison is made in one
process, *interleaved* (A, B, A, B, ...), and reported as medians and ratios.
"""

import statistics
import time


def interleaved(fns, repeats=7, warmup=1, min_time=0.05, clock=time.perf_counter):
    """Time several zero-argument callables, interleaved.

    fns: dict name -> callable.  Each timing sample runs the callable enough
    times to last about ``min_time`` seconds (decided during warm-up).
    ``clock``: wall time by default; ``time.process_time`` (CPU time of the
    process) is steadier on a busy machine for single-threaded code.
    Returns dict name -> median seconds per call.
    """
    inner = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        t0 = clock()
        fn()
        dt = max(clock() - t0, 1e-7)
        inner[name] = max(1, int(min_time / dt))
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            n = inner[name]
            t0 = clock()
            for _ in range(n):
                fn()
            samples[name].append((clock() - t0) / n)
    return {name: statistics.median(s) for name, s in samples.items()}


def print_table(headers, rows, out=None):
    """Print rows (lists of str/float) as an aligned text table."""
    import sys
    out = out or sys.stdout
    cells = [[h for h in headers]] + [
        [("%.2f" % c) if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for j, r in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))),
              file=out)
        if j == 0:
            print("  ".join("-" * w for w in widths), file=out)
