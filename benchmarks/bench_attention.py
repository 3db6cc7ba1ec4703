"""Benchmark: tinylm's fused C attention kernel against the NumPy reference and torch.

An in-process table (all sides in one process): the torch column is indicative only, since
the thread pools interfere; the figures to quote come from benchmarks/fair.py, which runs each
side in its own process.

    python benchmarks/bench_attention.py            # full table
    python benchmarks/bench_attention.py --quick    # one shape, float32 only

Each row times, interleaved in one process (see _harness.py), on the same
arrays of shape (B, H, T, D):

* tinylm  ``kernels.attention`` (+ ``kernels.attention_backward``), C backend
* numpy   ``kernels.attention_reference`` (+ ``attention_backward_reference``),
          which is what tinylm's NumPy backend runs
* torch   ``torch.nn.functional.scaled_dot_product_attention`` (forward under
          ``no_grad``; forward + backward through autograd), if torch imports

``pass`` is ``fwd`` or ``fwd+bwd``.  Ratios are other / tinylm, so > 1 means
tinylm is faster.  Both tinylm and torch use 2 threads (the target machine
has 2 cores); NumPy's BLAS uses its own default.  The machine may be shared
and noisy: read the ratios, not the absolute times.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.dirname(HERE))  # the checkout, if tinylm is not installed
sys.path.insert(0, HERE)

from _harness import interleaved, print_table  # noqa: E402

SHAPES = [(8, 4, 256, 32), (1, 12, 1024, 64)]   # (B, H, T, D)
THREADS = 2


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    return torch


def time_case(shape, causal, dtype, rng, torch=None, repeats=5):
    """{pass: {name: seconds}} for one shape, causal flag and dtype."""
    from tinylm import kernels as K
    q, k, v, dout = (rng.standard_normal(shape).astype(dtype) for _ in range(4))

    def tl_fwd():
        return K.attention(q, k, v, causal)

    def tl_fwd_bwd():
        o, lse = K.attention(q, k, v, causal)
        return K.attention_backward(q, k, v, o, lse, dout, causal)

    def np_fwd():
        return K.attention_reference(q, k, v, causal)

    def np_fwd_bwd():
        o, lse = K.attention_reference(q, k, v, causal)
        with np.errstate(over="ignore"):  # masked future scores may overflow exp()
            return K.attention_backward_reference(q, k, v, o, lse, dout, causal)

    fwd = {"tinylm": tl_fwd, "numpy": np_fwd}
    fwd_bwd = {"tinylm": tl_fwd_bwd, "numpy": np_fwd_bwd}
    if torch is not None:
        F = torch.nn.functional
        tq_, tk_, tv_ = (torch.from_numpy(x.copy()) for x in (q, k, v))
        leaves = [x.clone().requires_grad_(True) for x in (tq_, tk_, tv_)]
        tdo = torch.from_numpy(dout.copy())

        def torch_fwd():
            with torch.no_grad():
                return F.scaled_dot_product_attention(tq_, tk_, tv_, is_causal=causal)

        def torch_fwd_bwd():
            for x in leaves:
                x.grad = None
            o = F.scaled_dot_product_attention(*leaves, is_causal=causal)
            o.backward(tdo)

        fwd["torch"] = torch_fwd
        fwd_bwd["torch"] = torch_fwd_bwd

    with K.backend("c"):
        return {"fwd": interleaved(fwd, repeats=repeats),
                "fwd+bwd": interleaved(fwd_bwd, repeats=repeats)}


def run(quick=False):
    """Return (headers, rows) of the comparison table."""
    from tinylm import kernels as K
    if not K.c_available():
        raise SystemExit("bench_attention: the C extension is not built "
                         "(python csrc/build_ffi.py)")
    torch = _torch()
    old_threads = K.get_num_threads()
    K.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    shapes = SHAPES[:1] if quick else SHAPES
    dtypes = (np.float32,) if quick else (np.float32, np.float64)
    headers = ["shape (B,H,T,D)", "causal", "dtype", "pass", "tinylm ms", "numpy ms",
               "numpy/tinylm", "torch ms", "torch/tinylm"]
    rows = []
    try:
        for dtype in dtypes:
            for shape in shapes:
                for causal in (False, True):
                    t = time_case(shape, causal, dtype, rng, torch, repeats=3 if quick else 5)
                    for pass_name, times in t.items():
                        tl, nu = times["tinylm"], times["numpy"]
                        row = ["x".join(map(str, shape)), str(causal), np.dtype(dtype).name,
                               pass_name, tl * 1e3, nu * 1e3, nu / tl]
                        if "torch" in times:
                            row += [times["torch"] * 1e3, times["torch"] / tl]
                        else:
                            row += ["-", "-"]
                        rows.append(row)
    finally:
        K.set_num_threads(old_threads)
    return headers, rows


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one shape, float32 only")
    args = p.parse_args(argv)
    headers, rows = run(quick=args.quick)
    torch = _torch()
    print("threads: tinylm %d, torch %s" % (THREADS, torch.get_num_threads() if torch
                                             else "not installed"))
    print_table(headers, rows)


if __name__ == "__main__":
    main()
