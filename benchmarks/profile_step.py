"""Where the time of one GPT training step goes: per layer type, per kernel, per phase.

    python benchmarks/profile_step.py [gpt-s|gpt-m] [--steps 20] [--backend c|numpy]

The step is the one benchmarks/workloads.py times (forward + cross-entropy,
zero_grad, backward, clip_grad_norm 1.0, AdamW).  Every layer class's forward
and backward and every public function of tinylm.kernels is wrapped with a
timer; a layer's *exclusive* time is its own time minus the time of the
layers and kernels it calls, so the rows add up to the step.  Rows:

  layer:<Class>.forward/backward   NumPy and Python work in the layer itself
  kernel:<name>                    a call into tinylm.kernels (C or NumPy backend)
  step:<phase>                     zero_grad, clip_grad_norm, optimizer.step, the rest

It also prints the cores busy on average (process CPU time / wall time) over
untimed steps, and the peak memory traced during one step (tracemalloc).  The timers cost a few microseconds per
call: compare the shares, and the plain ms/step printed first.

Measured on a shared, loaded 2-core machine: quote shares and ratios, not
absolute milliseconds.
"""

import argparse
import collections
import functools
import inspect
import os
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the tinylm to profile: this checkout's, or another's with TINYLM_ROOT=/path/to/checkout
sys.path.insert(0, os.environ.get("TINYLM_ROOT",
                                  os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import workloads  # noqa: E402


class Profiler:
    """Exclusive wall time per label, with a stack of open timers."""

    def __init__(self):
        self.total = collections.defaultdict(float)
        self.calls = collections.Counter()
        self.stack = []                      # [label, start, time spent in children]
        self.on = False

    def wrap(self, label, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if not self.on:
                return fn(*args, **kwargs)
            self.stack.append([label, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                lab, t0, child = self.stack.pop()
                dt = time.perf_counter() - t0
                self.total[lab] += dt - child
                self.calls[lab] += 1
                if self.stack:
                    self.stack[-1][2] += dt
        return timed


def instrument(prof):
    import tinylm.kernels as K
    from tinylm.layers.base import Layer
    # every Layer subclass that defines forward/backward itself
    seen, todo = set(), [Layer]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    for cls in seen:
        for meth in ("forward", "backward", "_forward", "_backward", "loss"):
            if meth in cls.__dict__:
                setattr(cls, meth, prof.wrap("layer:%s.%s" % (cls.__name__, meth.lstrip("_")),
                                             cls.__dict__[meth]))
    # every public kernel
    for name in dir(K):
        fn = getattr(K, name)
        if (not name.startswith("_") and inspect.isfunction(fn) and fn.__module__ == K.__name__
                and name not in ("get_backend", "set_backend", "backend", "available_backends",
                                 "backend_reason", "get_num_threads", "set_num_threads",
                                 "c_available", "info")):
            setattr(K, name, prof.wrap("kernel:%s" % name, fn))


def build_step(case, prof):
    from tinylm import optim
    c = workloads.CASES[case]
    model = workloads.tinylm_model(case)
    params = model.parameters()
    opt = optim.AdamW(params, lr=1e-3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, workloads.V, (c["B"], c["T"]))
    y = rng.integers(0, workloads.V, (c["B"], c["T"]))
    zero = prof.wrap("step:zero_grad", model.zero_grad)
    clip = prof.wrap("step:clip_grad_norm", optim.clip_grad_norm)
    update = prof.wrap("step:optimizer.step", opt.step)

    def step():
        model.loss(x, y)
        zero()
        model.backward()
        clip(params, 1.0)
        update()
    return prof.wrap("step:other (glue)", step)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", nargs="?", default="gpt-s", choices=[c for c in workloads.CASES
                                                                  if c.startswith("gpt")])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--backend", choices=("c", "numpy"), default=None)
    args = ap.parse_args()
    import tinylm.kernels as K
    if args.backend:
        K.set_backend(args.backend)
    prof = Profiler()
    instrument(prof)
    step = build_step(args.case, prof)
    for _ in range(3):
        step()                                        # warm up
    # plain timing (timers off): ms per step and cores busy
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        step()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    ms = 1e3 * wall / args.steps
    # peak of memory NumPy holds during one step (temporaries included)
    tracemalloc.start()
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # the breakdown
    prof.on = True
    for _ in range(args.steps):
        step()
    prof.on = False
    total = sum(prof.total.values())
    print("tinylm from %s" % os.path.dirname(os.path.dirname(K.__file__)))
    print("%s, backend %s, %d threads: %.1f ms/step, %.2f cores busy on average "
          "(%d steps; machine shared: compare shares)"
          % (args.case, K.get_backend(), K.get_num_threads() or os.cpu_count(), ms,
             cpu / wall, args.steps))
    print("peak memory traced in one step: %.1f MiB" % (peak / 2**20))
    print("profiled: %.1f ms/step (timer overhead included)\n" % (1e3 * total / args.steps))
    groups = collections.defaultdict(float)
    for lab, t in prof.total.items():
        kind = lab.split(":")[0]
        if kind == "layer":
            groups["layers' own NumPy/Python: " + lab.rsplit(".", 1)[1]] += t
        else:
            groups[kind] += t
    print("%-50s %9s %6s %7s" % ("row", "ms/step", "share", "calls"))
    for lab, t in sorted(prof.total.items(), key=lambda kv: -kv[1]):
        if t / total < 0.002:
            continue
        print("%-50s %9.2f %5.1f%% %7d" % (lab, 1e3 * t / args.steps, 100 * t / total,
                                          prof.calls[lab] // args.steps))
    print("\n%-50s %9s %6s" % ("group", "ms/step", "share"))
    for lab, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        print("%-50s %9.2f %5.1f%%" % (lab, 1e3 * t / args.steps, 100 * t / total))


if __name__ == "__main__":
    main()
