"""Make a student kit (or the instructor's copy) for one assignment.

``make_kit("backprop", "kit/")`` writes::

    kit/
      README.md            what to do, how to check, how to submit
      assignment.json      which assignment, tasks, files to submit
      pyproject.toml       ``pip install -e ".[test]"`` (numpy, and pytest for the checks)
      setup.py
      tinylm/              the tinylm package, Python files only (NumPy backend),
                           every solution region replaced by
                           raise NotImplementedError("<what>: assignment N task M")
      public/<task>.npz    public test data: inputs and expected outputs
      tests/test_public.py the public tests (pytest), one per task
      starters/<task>.py   a notebook-openable starter per task (# %% cells)

With ``solutions=True`` the regions are kept (markers included): the
instructor's copy, which scores full marks.
"""

import json
import os
import textwrap

import numpy as np

from tinylm.assignments import catalogue, exercises
from tinylm.assignments.grader import ASSIGNMENT_FILE, copy_package, stub_transform

PUBLIC_SEED = 20240901


class KitError(ValueError):
    pass


def public_fixture(task, rng=None):
    """{'in.<k>': ..., 'out.<k>': ...} for a task, computed by THIS tinylm (the reference)."""
    ex = exercises.EXERCISES[task.exercise]
    rng = rng or np.random.default_rng(PUBLIC_SEED + task.assignment.number * 100 + task.number)
    inputs = ex.make_inputs(rng)
    data = {"in." + k: v for k, v in inputs.items()}
    if ex.public:
        from tinylm import kernels
        with kernels.backend("numpy"):
            out = exercises.run(task.exercise, inputs)
        data.update({"out." + k: np.asarray(v) for k, v in out.items()})
    return data


_SETUP = '''"""The {title} kit: `pip install -e .` (needs pip and numpy only)."""
from setuptools import find_packages, setup

setup(
    name="tinylm-{name}-kit",
    version="0.1.0",
    description="tinylm course kit: {title}",
    python_requires=">=3.9",
    packages=find_packages(include=["tinylm", "tinylm.*"]),
    package_data={{"tinylm": ["PURE_PYTHON"]}},
    install_requires=["numpy>=1.23.2"],
    extras_require={{"test": ["pytest>=7"]}},
    entry_points={{"console_scripts": ["tinylm=tinylm.cli:main"]}},
)
'''

_PYPROJECT = '''[build-system]
requires = ["setuptools>=61", "wheel"]
build-backend = "setuptools.build_meta"
'''

_PUBLIC_TESTS = '''"""Public tests: one per task.  Run: python -m pytest -q tests/"""

import pytest

from tinylm.assignments.checker import check_task

TASKS = {tasks!r}


@pytest.mark.parametrize("task", TASKS)
def test_task(task):
    result = check_task(task)
    assert result.ok, result.report()
'''


def _readme(a, solutions):
    rows = "\n".join("| %d | `%s` | %s | %g | %s |" % (
        t.number, t.id, t.title, t.points,
        "<br>".join("`%s` in `%s`" % (q, f) for f, q in t.regions)) for t in a.tasks)
    tasks = "\n".join("%d. **%s** (`%s`, %g points). %s" % (t.number, t.title, t.id, t.points,
                                                             t.summary) for t in a.tasks)
    note = ("\n> INSTRUCTOR COPY: the solutions are in place between `### BEGIN SOLUTION` and "
            "`### END SOLUTION`. Do not hand this folder out.\n" if solutions else "")
    return textwrap.dedent("""\
        # tinylm assignment %(num)d: %(title)s
        %(note)s
        You write the parts of tinylm that are marked
        `raise NotImplementedError("...: assignment %(num)d task N ...")`.
        Everything else in `tinylm/` is working code you can read and use.

        | task | id | what | points | where |
        |---|---|---|---|---|
        %(rows)s

        %(tasks)s

        ## Set up

        You need Python >= 3.9.  In this folder (a fresh virtual environment is a good
        idea: `python -m venv .venv` and activate it):

            python -m pip install -e ".[test]"    # tinylm from this kit, NumPy and pytest

        This tinylm is pure Python and runs on its NumPy backend (a warning that the
        C extension is not available is expected).  Without installing, run every
        command below from this folder with `python -m tinylm.cli` in place of `tinylm`.

        ## Work

        * Open `starters/<task>.py` (a script with `# %%%%` cells: it opens as a notebook
          in VS Code or Jupyter with jupytext).  It explains the task and runs the check.
        * Write your code in the function named in the table, in place of the
          `raise NotImplementedError(...)` line.  Change nothing else: the grader takes
          exactly those functions from your files (keep their names and signatures;
          put any extra imports or helpers INSIDE the function).
        * Use float64 when you experiment; every answer is compared in float64.

        ## Check

            tinylm assignment check               # every task
            tinylm assignment check %(first)s     # one task
            python -m pytest -q tests/            # the same checks as pytest tests

        A failing check says which array, which index, your value, the expected value
        and the relative error.  The public checks use fixed inputs (in `public/`); the
        grader uses fresh random inputs, so code that only works on these will fail.%(formonly)s

        ## Submit

            tinylm assignment submit              # writes submission.zip

        It checks that the files to submit exist and parse, tells you which tasks still
        raise NotImplementedError, and zips: %(files)s and `%(afile)s`.
        Upload `submission.zip` where your instructor tells you (e.g. Gradescope).
        """) % {"num": a.number, "title": a.title, "note": note, "rows": rows, "tasks": tasks,
                "first": a.tasks[0].id, "files": ", ".join("`%s`" % f for f in a.files),
                "afile": ASSIGNMENT_FILE,
                "formonly": "".join(
                    "\n\nFor `%s` the check looks only at the FORM of your answers (the "
                    "expected values\nwould give them away): whether they are right is for "
                    "your own gradient checks\nto find out." % t.id
                    for t in a.tasks if not exercises.EXERCISES[t.exercise].public)}


_BUGHUNT_CELLS = '''
# %% [markdown]
# The public check above looks only at the FORM of your answers.  Which
# backward passes are wrong is for your gradient check to find.  Here is one
# check, of candidate B's given backward against YOUR numerical_gradient, with
# a random upstream gradient.  Do the same for every candidate (and try
# dout = np.ones_like(out): what does it hide?).

# %%
from tinylm.assignments import bughunt
from tinylm.gradcheck import numerical_gradient, relative_error

rng = np.random.default_rng(0)
ins = bughunt.make_inputs("B", rng)
out, cache = bughunt.forward_B(**ins)
dout = rng.standard_normal(out.shape)
analytic = bughunt.backward_B(dout, cache)
for name, x0 in ins.items():
    def L(x):
        return float(np.sum(dout * bughunt.forward_B(**dict(ins, **{name: x}))[0]))
    numeric = numerical_gradient(L, x0)
    print(name, "max relative error", relative_error(analytic[name], numeric).max())
'''


def _starter(t):
    regions = "\n".join("#   %s in %s" % (q, f) for f, q in t.regions)
    return textwrap.dedent('''\
        # %%%% [markdown]
        # # Assignment %(an)d, task %(tn)d: %(title)s  (%(points)g points)
        #
        # %(summary)s
        #
        # Write your code in:
        %(regions)s
        #
        # Then run the cells below (VS Code / Jupyter with jupytext), or
        # `python starters/%(id)s.py`.

        # %%%%
        import os
        import sys

        try:                        # run as a script: the kit is the starters/ folder's parent
            KIT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        except NameError:           # in a notebook: the working directory
            KIT = os.path.dirname(os.getcwd()) if os.path.basename(os.getcwd()) == "starters" \
                else os.getcwd()
        sys.path.insert(0, KIT)     # this kit's tinylm, even if another one is installed

        import numpy as np

        import tinylm
        from tinylm.assignments.checker import check_task, public_inputs

        print("tinylm imported from", tinylm.__file__)

        # %%%% [markdown]
        # The public inputs of this task (the grader uses other, random ones):

        # %%%%
        for name, value in public_inputs(%(id)r, KIT).items():
            print("%%-24s %%-12s %%s" %% (name, value.dtype, value.shape))

        # %%%% [markdown]
        # Run the public check.  A failure names the array and index where your
        # result differs, with your value, the expected one and the relative error.

        # %%%%
        result = check_task(%(id)r, KIT)
        print(result.report())
        %(extra)s''') % {"extra": _BUGHUNT_CELLS if t.id == "find_the_bug" else "",
                "an": t.assignment.number, "tn": t.number, "title": t.title, "points": t.points,
                "summary": "\n# ".join(textwrap.wrap(t.summary, 76)), "regions": regions,
                "id": t.id}


def make_kit(name, out, solutions=False, root=None, force=False):
    """Write the kit for assignment ``name`` into ``out``; returns the Assignment."""
    root = root or catalogue.source_root()
    a = catalogue.ready(name, root)
    if os.path.exists(out) and os.listdir(out) and not force:
        raise KitError("%s exists and is not empty (use --force to write into it)" % out)
    os.makedirs(out, exist_ok=True)
    copy_package(root, out, None if solutions else stub_transform())
    # The kit's tinylm is Python only: tell tinylm.kernels so it runs on NumPy
    # without warning students to "reinstall with a C compiler".
    with open(os.path.join(out, "tinylm", "PURE_PYTHON"), "w", encoding="utf-8") as f:
        f.write("This copy of tinylm has no C extension by design (an assignment kit); "
                "it runs on the NumPy backend.\n")

    def write(rel, text):
        p = os.path.join(out, rel)
        os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)

    for t in a.tasks:
        os.makedirs(os.path.join(out, "public"), exist_ok=True)
        np.savez(os.path.join(out, "public", t.id + ".npz"), **public_fixture(t))
        write("starters/%s.py" % t.id, _starter(t))
    write("tests/test_public.py", _PUBLIC_TESTS.format(tasks=[t.id for t in a.tasks]))
    write("README.md", _readme(a, solutions))
    write("setup.py", _SETUP.format(name=a.name, title=a.title))
    write("pyproject.toml", _PYPROJECT)
    write(ASSIGNMENT_FILE, json.dumps({
        "assignment": a.name, "number": a.number, "title": a.title, "solutions": solutions,
        "tasks": [{"id": t.id, "number": t.number, "title": t.title, "points": t.points,
                   "functions": ["%s:%s" % r for r in t.regions]} for t in a.tasks],
        "files": a.files}, indent=2) + "\n")
    return a
