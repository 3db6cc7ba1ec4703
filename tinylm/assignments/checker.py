"""Inside a kit: check tasks on the public data, and pack a submission.

``check_task("linear_backward")`` runs the task's exercise on the kit's
public inputs with the kit's own tinylm (the student's code) and compares
with the expected outputs stored in ``public/``; for "find the bug", whose
expected outputs would give the answer away, it compares every fixed
backward with the student's own numerical gradient instead.
"""

import ast
import json
import os
import traceback
import zipfile

import numpy as np

from tinylm.assignments import catalogue, exercises, regions
from tinylm.assignments.grader import ASSIGNMENT_FILE


class CheckError(RuntimeError):
    pass


def kit_root(start=None):
    """The kit: the nearest folder at or above ``start`` (default: cwd) holding
    assignment.json, else the folder of the imported tinylm if that is a kit
    (``pip install -e`` of a kit, run from elsewhere)."""
    d = os.path.abspath(start or os.getcwd())
    while True:
        if os.path.isfile(os.path.join(d, ASSIGNMENT_FILE)):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    if start is None:
        import tinylm
        d = os.path.dirname(os.path.dirname(os.path.abspath(tinylm.__file__)))
        if os.path.isfile(os.path.join(d, ASSIGNMENT_FILE)):
            return d
    raise CheckError("not inside an assignment kit: no %s in %s or above it. "
                     "cd into the kit folder first." % (ASSIGNMENT_FILE, start or os.getcwd()))


def kit_assignment(root):
    with open(os.path.join(root, ASSIGNMENT_FILE), encoding="utf-8") as f:
        return catalogue.get(json.load(f)["assignment"])


class CheckResult:
    """checks: [(name, ok, message)]; ok iff all pass."""

    def __init__(self, task, checks, note="", form_only=False):
        self.task, self.checks, self.note = task, checks, note
        self.form_only = form_only        # values not checked (find the bug)

    @property
    def ok(self):
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    def report(self):
        t = self.task
        verdict = "PASS" if self.ok else "FAIL"
        if self.ok and self.form_only:
            verdict = "FORM OK (the values are for your own gradient checks to judge)"
        lines = ["task %d.%d %s (%s): %s" % (t.assignment.number, t.number, t.title, t.id,
                                            verdict)]
        if self.note:
            lines.append("  note: " + self.note)
        for name, ok, msg in self.checks:
            lines.append("  [%s] %s: %s" % ("ok" if ok else "FAIL", name,
                                           msg.replace("\n", "\n        ")))
        return "\n".join(lines)


def public_inputs(task_id, root=None):
    """The public inputs of a task, {name: array}."""
    root = root or kit_root()
    with np.load(os.path.join(root, "public", task_id + ".npz"), allow_pickle=False) as z:
        return {k[3:]: z[k] for k in z.files if k.startswith("in.")}


def _expected(task_id, root):
    with np.load(os.path.join(root, "public", task_id + ".npz"), allow_pickle=False) as z:
        return {k[4:]: z[k] for k in z.files if k.startswith("out.")}


def check_task(task_id, root=None):
    """Run the public check of one task; returns a CheckResult."""
    import tinylm
    from tinylm import kernels
    root = root or kit_root()
    a = kit_assignment(root)
    t = a.task(task_id)
    note = ""
    here = os.path.realpath(os.path.dirname(tinylm.__file__))
    if not here.startswith(os.path.realpath(root) + os.sep):
        note = ("you are testing the tinylm in %s, not the one in this kit (%s): run from the "
                "kit folder or `pip install -e .` in it" % (here, root))
    inputs = public_inputs(t.id, root)
    try:
        with kernels.backend("numpy"):
            got = {k: np.asarray(v) for k, v in exercises.run(t.exercise, inputs).items()}
    except NotImplementedError as exc:
        return CheckResult(t, [("your code", False, "not written yet: NotImplementedError(%s)"
                                % exc)], note)
    except Exception:
        tb = traceback.format_exc(limit=-3)
        return CheckResult(t, [("your code", False, "raised an error:\n" + tb.strip())], note)
    ex = exercises.EXERCISES[t.exercise]
    if ex.public:
        checks = [(name, frac == 1.0, msg)
                  for name, frac, msg in exercises.grade(t.exercise, got, _expected(t.id, root))]
    else:
        try:
            checks = exercises.self_check(t.exercise, inputs, got)
        except NotImplementedError as exc:
            checks = [("your code", False, "not written yet (%s)" % exc)]
        return CheckResult(t, checks, note, form_only=True)
    return CheckResult(t, checks, note)


def check(task_id=None, root=None, echo=print):
    """Check one task or all; prints reports; returns True iff all pass."""
    root = root or kit_root()
    a = kit_assignment(root)
    tasks = [a.task(task_id)] if task_id else a.tasks
    passed = 0
    for t in tasks:
        r = check_task(t.id, root)
        echo(r.report())
        passed += r.ok
    if len(tasks) > 1:
        echo("%d of %d tasks pass the public checks" % (passed, len(tasks)))
    return passed == len(tasks)


def submit(root=None, out=None, echo=print):
    """Check the files to submit and zip them; returns the zip's path."""
    root = root or kit_root()
    a = kit_assignment(root)
    out = out or os.path.join(root, "submission.zip")
    problems, todo = [], []
    for rel in a.files:
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            problems.append("%s is missing" % rel)
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            ast.parse(text, rel)
        except SyntaxError as exc:
            problems.append("%s line %s: syntax error: %s" % (rel, exc.lineno, exc.msg))
            continue
        for t in a.tasks:
            for f, q in t.regions:
                if f != rel:
                    continue
                src = regions.function_source(text, q, rel)
                if src is None:
                    problems.append("%s: function %s is missing (do not rename it)" % (rel, q))
                elif t.stub_message(q) in src[2]:
                    todo.append("%s (task %d, %s)" % (q, t.number, t.id))
    if problems:
        raise CheckError("cannot submit:\n  " + "\n  ".join(problems))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in a.files + [ASSIGNMENT_FILE]:
            zf.write(os.path.join(root, rel), rel)
    if todo:
        echo("not written yet (they will score 0):\n  " + "\n  ".join(todo))
    echo("wrote %s (%s)" % (out, ", ".join(a.files + [ASSIGNMENT_FILE])))
    return out
