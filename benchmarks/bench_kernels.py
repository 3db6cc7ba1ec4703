"""tinylm's C kernels against NumPy/OpenBLAS (and PyTorch when installed).

    python benchmarks/bench_kernels.py            # full tables (a few minutes)
    python benchmarks/bench_kernels.py --quick    # fewer shapes and repeats
    python benchmarks/bench_kernels.py --only matmul|attention

Every comparison is made in one process, interleaved, as medians; quote the
ratios (this machine is shared and noisy).  The matmul and attention tables
come from benchmarks/bench_matmul.py and benchmarks/bench_attention.py.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, if tinylm is not installed

from _harness import print_table  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    ap.add_argument("--only", choices=["matmul", "attention"], help="run one table")
    args = ap.parse_args(argv)

    from tinylm import kernels
    if not kernels.c_available():
        sys.exit("bench_kernels: tinylm's C extension is not built; nothing to compare")
    info = kernels.info()
    print("tinylm C kernels: SIMD %s, OpenMP %s, %d threads"
          % (info["simd"], info["openmp"], info["num_threads"]))

    import bench_attention
    import bench_matmul
    for name, mod in (("matmul", bench_matmul), ("attention", bench_attention)):
        if args.only and args.only != name:
            continue
        print("\n== %s ==" % name)
        headers, rows = mod.run(quick=args.quick)
        print_table(headers, rows)


if __name__ == "__main__":
    main()
