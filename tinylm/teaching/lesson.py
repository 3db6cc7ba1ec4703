"""What every lesson script in ``lessons/`` shares: options, steps, plots, checks.

A lesson is a plain script made of ``# %%`` cells (so Jupyter/jupytext and
VS Code open it as a notebook).  It starts with::

    from tinylm.teaching.lesson import Lesson
    L = Lesson(__doc__)          # parses --fast, --step, --out, --seed

and then, cell by cell::

    L.step("1. Counting n-grams")          # a heading; pauses under --step
    ...
    L.savefig(fig, "ngram_counts.png")     # writes into the output folder, says where
    L.check("perplexity fell below 20", ppl < 20, "ppl=%.1f" % ppl)

and ends with ``L.finish()``, which prints every check and exits with status 1
if any failed (the test suite runs each lesson with ``--fast`` and relies on
this).

Options every lesson takes:

* ``--fast``   a smaller run that takes seconds (what the tests run);
* ``--step``   pause after each step until Enter is pressed (never pauses when
  standard input is not a terminal);
* ``--out DIR`` where plots go (default ``./lesson_output/<lesson name>``);
* ``--seed N`` the random seed (default 0).

In Jupyter (where ``sys.argv`` belongs to the kernel) the options are read
from the environment variable ``TINYLM_LESSON_ARGS`` instead, e.g. a first
cell ``%env TINYLM_LESSON_ARGS=--fast``; plots are saved and also shown
inline.  ``tinylm lesson NAME --notebook [PATH]`` writes such a notebook.
"""

import argparse
import os
import sys
import time


class Lesson:
    def __init__(self, doc, argv=None, name=None):
        main = sys.modules.get("__main__")
        path = getattr(main, "__file__", None) or "lesson"
        if _in_notebook():
            # a notebook written by `tinylm lesson NAME --notebook` sets its lesson's name
            path = os.environ.get("TINYLM_LESSON_NAME", "lesson")
        self.name = name or os.path.splitext(os.path.basename(path))[0]
        first = (doc or "").strip().splitlines()
        ap = argparse.ArgumentParser(
            prog=self.name, description=first[0] if first else None,
            epilog="The lesson's full description is its docstring.")
        ap.add_argument("--fast", action="store_true",
                        help="small, quick run (seconds); what the tests run")
        ap.add_argument("--step", action="store_true",
                        help="pause between steps (only when stdin is a terminal)")
        ap.add_argument("--out", default=None,
                        help="folder for plots (default ./lesson_output/<lesson>)")
        ap.add_argument("--seed", type=int, default=0, help="random seed")
        if argv is None:
            if _in_notebook():
                # Inside Jupyter sys.argv belongs to the kernel; options come from
                # the environment instead: %env TINYLM_LESSON_ARGS=--fast
                import shlex
                argv = shlex.split(os.environ.get("TINYLM_LESSON_ARGS", ""))
            else:
                argv = sys.argv[1:]
        self.args = ap.parse_args(argv)
        self.fast = self.args.fast
        self.seed = self.args.seed
        self.out = self.args.out or os.path.join("lesson_output", self.name)
        self._pause = self.args.step and sys.stdin is not None and sys.stdin.isatty()
        self.checks = []
        self._t0 = time.time()
        self._steps = 0
        print("=" * 72)
        print(self.name + ("  [--fast]" if self.fast else ""))
        if doc:
            print(doc.strip())
        print("=" * 72)

    # -- sizes -----------------------------------------------------------------
    def pick(self, full, fast):
        """``fast`` under --fast, else ``full`` (for sizes, steps, ...)."""
        return fast if self.fast else full

    # -- steps -----------------------------------------------------------------
    def step(self, title):
        """Start a step: pause for the previous one under --step, print a heading."""
        if self._steps and self._pause:
            try:
                input("\n[press Enter for the next step] ")
            except EOFError:
                self._pause = False
        self._steps += 1
        print("\n--- %s %s" % (title, "-" * max(3, 68 - len(title))))

    # -- output ----------------------------------------------------------------
    def path(self, filename):
        os.makedirs(self.out, exist_ok=True)
        return os.path.join(self.out, filename)

    def savefig(self, fig, filename):
        """Save a matplotlib figure as PNG in the output folder and say where."""
        p = self.path(filename)
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        import matplotlib.pyplot as plt
        if _in_notebook():                 # Jupyter: show the figure in the notebook too
            from IPython.display import display
            display(fig)
        plt.close(fig)
        print("  plot saved: %s" % p)
        return p

    # -- checks ----------------------------------------------------------------
    def check(self, claim, ok, detail=""):
        """Record (and print) whether one of the lesson's claims held."""
        ok = bool(ok)
        self.checks.append((claim, ok, detail))
        print("  [%s] %s%s" % ("ok" if ok else "FAILED", claim,
                               ("  (%s)" % detail) if detail else ""))
        return ok

    def finish(self):
        """Print the checks; exit 1 if any failed."""
        failed = [c for c in self.checks if not c[1]]
        print("\n" + "=" * 72)
        print("%s: %d checks, %d failed, %.1f s"
              % (self.name, len(self.checks), len(failed), time.time() - self._t0))
        for claim, ok, detail in self.checks:
            print("  %s %s%s" % ("PASS" if ok else "FAIL", claim,
                                 ("  (%s)" % detail) if detail else ""))
        if failed:
            print("some checks FAILED")
            sys.exit(1)
        print("all checks passed")


def _in_notebook():
    """True inside a Jupyter kernel (the lesson runs as notebook cells)."""
    return "ipykernel" in sys.modules


def matplotlib_agg():
    """Import pyplot with a non-interactive backend: on the command line lessons write PNGs.

    In Jupyter the kernel's backend (inline) is kept, and ``Lesson.savefig`` also shows each
    figure in the notebook."""
    import matplotlib
    if not _in_notebook():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
