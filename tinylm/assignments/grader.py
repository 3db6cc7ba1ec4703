"""Grade a submission: one sandboxed subprocess per task, Gradescope JSON out.

For every task of the assignment the grader

1. builds a per-task source tree in a fresh temporary directory: a copy of
   the grader's own tinylm (Python files only, so the NumPy backend runs) in
   which EVERY solution region is replaced by its ``NotImplementedError`` stub,
   and then the task's functions are replaced by the student's versions of
   them.  The student's process therefore holds no reference code for the
   task under test nor for any other task (unless a task lists others in
   ``needs``), and a broken task 1 cannot break task 3: task 3's tree contains
   none of the student's task-1 code;
2. draws fresh random inputs (``--seed`` to repeat a run), large enough that
   differentiating the forward pass numerically cannot finish in time
   (see :mod:`.exercises`);
3. runs the exercise on the student's tree in the OS sandbox
   (:mod:`tinylm.assignments.sandbox`: bubblewrap), which gets only the
   inputs and hands back arrays (an .npz, no pickle);
4. once the sandbox and everything it started are gone, computes the
   reference outputs HERE, in the grader's process, with its own tinylm, and
   compares.

``results.json`` is written once, at the end (atomically: a temporary file,
then ``os.replace``), and no path the sandbox can see names it.

results.json follows Gradescope's autograder format: score, max_score,
execution_time, output, stdout_visibility, tests[name, score, max_score,
status, output, visibility].
"""

import json
import os
import shutil
import tempfile
import time
import zipfile

import numpy as np

from tinylm.assignments import catalogue, exercises, regions, sandbox

MAX_SOURCE_BYTES = 2 * 1024 ** 2     # a submitted .py file larger than this is refused
ASSIGNMENT_FILE = "assignment.json"


class SubmissionError(ValueError):
    """The submission cannot be read (missing file, bad zip...)."""


class GraderError(RuntimeError):
    """The grader cannot run (no reference solution available...)."""


# --------------------------------------------------------------------------
# Reading a submission (a folder or a zip), never trusting it
# --------------------------------------------------------------------------

def _norm(name):
    """A zip member name as a safe relative posix path, or None."""
    name = name.replace("\\", "/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or name.startswith("/") or ".." in parts or ":" in parts[0]:
        return None
    return "/".join(parts)


def read_submission(path, wanted):
    """{relative path: text} for the files in ``wanted`` found in ``path``.

    path: a folder or a .zip.  A file may sit at its path or one folder deeper
    (a zip of the kit folder).  Missing files are simply absent from the
    result; symlinks, oversized and non-UTF-8 files raise SubmissionError.
    """
    found = {}
    if os.path.isdir(path):
        base = os.path.realpath(path)
        for rel in wanted:
            candidates = [os.path.join(base, *rel.split("/"))]
            try:
                candidates += [os.path.join(base, d, *rel.split("/")) for d in sorted(os.listdir(base))
                               if os.path.isdir(os.path.join(base, d))]
            except OSError as exc:
                raise SubmissionError("cannot list %s: %s" % (path, exc))
            for c in candidates:
                if not os.path.lexists(c):
                    continue
                # no symbolic link anywhere on the way: a link could point at the reference
                if os.path.realpath(c) != os.path.normpath(c):
                    raise SubmissionError("%s is (or is reached through) a symbolic link; "
                                          "submit real files" % os.path.relpath(c, base))
                if os.path.isfile(c):
                    if os.path.getsize(c) > MAX_SOURCE_BYTES:
                        raise SubmissionError("%s is larger than %d bytes" % (rel, MAX_SOURCE_BYTES))
                    with open(c, "rb") as f:
                        found[rel] = f.read()
                    break
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = _norm(info.filename)
                if name is None or info.is_dir():
                    continue
                for rel in wanted:
                    if rel in found:
                        continue
                    if name == rel or (name.endswith("/" + rel) and name.count("/") == rel.count("/") + 1):
                        if info.file_size > MAX_SOURCE_BYTES:
                            raise SubmissionError("%s is larger than %d bytes"
                                                  % (rel, MAX_SOURCE_BYTES))
                        found[rel] = zf.read(info)[:MAX_SOURCE_BYTES + 1]
    elif os.path.exists(path):
        raise SubmissionError("%s is neither a folder nor a zip file" % path)
    else:
        raise SubmissionError("%s does not exist" % path)
    out = {}
    for rel, data in found.items():
        try:
            out[rel] = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SubmissionError("%s is not UTF-8 text" % rel)
    return out


def submission_assignment(path):
    """The assignment name recorded in the submission's assignment.json, or None."""
    try:
        text = read_submission(path, [ASSIGNMENT_FILE]).get(ASSIGNMENT_FILE)
        return json.loads(text).get("assignment") if text else None
    except (SubmissionError, ValueError, AttributeError):
        return None


# --------------------------------------------------------------------------
# Source trees
# --------------------------------------------------------------------------

def _stub_messages(assignments=None):
    """{(file, qualname): stub text} over the whole catalogue."""
    msgs = {}
    for a in assignments or catalogue.ASSIGNMENTS:
        for t in a.tasks:
            for f, q in t.regions:
                msgs[(f, q)] = t.stub_message(q)
    return msgs


def copy_package(root, dest, transform=None):
    """Copy root/tinylm to dest/tinylm: .py files only (no C extension).

    transform(rel_path, text) -> text is applied to every file.
    """
    src = os.path.join(root, "tinylm")
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            full = os.path.join(dirpath, fn)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            with open(full, encoding="utf-8") as f:
                text = f.read()
            if transform is not None:
                text = transform(rel, text)
            out = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open(out, "w", encoding="utf-8") as f:
                f.write(text)


def stub_transform(keep=()):
    """A copy_package transform that stubs every region except ``keep`` [(file, qualname)]
    and cuts every ### BEGIN ANSWER block (see :func:`regions.cut_answers`)."""
    msgs = _stub_messages()

    def transform(rel, text):
        text = regions.cut_answers(text, rel)
        if regions.BEGIN not in text:
            return text
        m = {q: v for (f, q), v in msgs.items() if f == rel}
        return regions.stub_source(text, m, rel, keep={q for f, q in keep if f == rel})
    return transform


def build_task_tree(root, dest, task, student_files):
    """The per-task tree: stubs everywhere, the student's functions for ``task``.

    Raises SubmissionError when a file or function is missing or does not parse.
    """
    keep = [r for tid in task.needs for r in task.assignment.task(tid).regions]
    copy_package(root, dest, stub_transform(keep))
    for rel in task.files:
        if rel not in student_files:
            raise SubmissionError("%s is missing from the submission" % rel)
        target = os.path.join(dest, rel)
        with open(target, encoding="utf-8") as f:
            text = f.read()
        quals = [q for f, q in task.regions if f == rel]
        try:
            text = regions.splice_functions(text, student_files[rel], quals, rel, rel)
        except regions.RegionError as exc:
            raise SubmissionError(str(exc))
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)


# --------------------------------------------------------------------------
# results.json
# --------------------------------------------------------------------------

def write_json_atomically(path, obj):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".json", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _results(tests, start, output):
    return {
        "score": round(sum(t["score"] for t in tests), 6),
        "max_score": round(sum(t["max_score"] for t in tests), 6),
        "execution_time": round(time.monotonic() - start, 3),
        "output": output,
        "stdout_visibility": "visible",
        "tests": tests,
    }


def _clip(text, n=3000):
    text = text or ""
    return text if len(text) <= n else text[:n // 3] + "\n...\n" + text[-(2 * n) // 3:]


# --------------------------------------------------------------------------
# Grading
# --------------------------------------------------------------------------

def task_checks(task):
    """[(check name, max score)]: the task's points split by the exercise's check weights."""
    checks = exercises.EXERCISES[task.exercise].checks
    total = sum(w for _, w, _ in checks)
    return [(name, task.points * w / total) for name, w, _ in checks]


def grade_task(task, student_files, root, seed, timeout, memory, sandboxed=True):
    """[(check name, score, max_score, passed, output)] for one task."""
    ex = exercises.EXERCISES[task.exercise]
    rows = task_checks(task)

    def all_failed(msg):
        short = msg.splitlines()[0] if msg else ""
        return [(n, 0.0, m, False, msg if k == 0 else short + "  (details in the first test)")
                for k, (n, m) in enumerate(rows)]

    rng = np.random.default_rng(seed)
    inputs = ex.make_inputs(rng, large=True)
    work = tempfile.mkdtemp(prefix="tinylm-grade-")
    try:
        try:
            build_task_tree(root, os.path.join(work, "tree"), task, student_files)
        except SubmissionError as exc:
            return all_failed("not graded: %s" % exc)
        res = sandbox.run_exercise(os.path.join(work, "tree"), task.exercise, inputs,
                                   timeout=timeout, memory=memory, sandboxed=sandboxed,
                                   extra_masks=[root])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not res.ok:
        detail = res.reason
        if res.stderr.strip():
            detail += "\n--- stderr (last part) ---\n" + _clip(res.stderr, 2000)
        if res.stdout.strip():
            detail += "\n--- stdout (last part) ---\n" + _clip(res.stdout, 1000)
        return all_failed(detail)
    # the reference, computed only now: while the student's code ran, the expected
    # arrays did not exist anywhere
    from tinylm import kernels
    with kernels.backend("numpy"), np.errstate(all="ignore"):
        expected = {k: np.asarray(v).copy()
                    for k, v in exercises.run(task.exercise, dict(inputs)).items()}
    out = []
    verdicts = {name: (frac, msg) for name, frac, msg in exercises.grade(task.exercise, res.outputs,
                                                                         expected)}
    for name, max_score in rows:
        frac, msg = verdicts.get(name, (0.0, "not checked"))
        frac = min(1.0, max(0.0, float(frac)))
        out.append((name, max_score * frac, max_score, frac == 1.0, msg))
    return out


def grade(submission, out_path, assignment=None, timeout=sandbox.DEFAULT_TIMEOUT,
          memory=sandbox.DEFAULT_MEMORY, seed=None, tasks=None, root=None, echo=print,
          unsafe_no_sandbox=False):
    """Grade ``submission`` (folder or zip) and write Gradescope JSON to ``out_path``.

    Every task runs in the OS sandbox (:mod:`.sandbox`); without a working
    bwrap this refuses (SandboxUnavailable) unless ``unsafe_no_sandbox``.
    ``out_path`` is written ONCE, after every sandbox (and every process the
    submission started) is gone; an older file there is removed first.
    Returns the results dict.  ``echo`` receives the human-readable lines.
    """
    start = time.monotonic()
    root = root or catalogue.source_root()
    if not os.path.exists(submission):
        raise SubmissionError("submission %s does not exist" % submission)
    name = assignment or submission_assignment(submission)
    if name is None:
        raise SubmissionError("which assignment? the submission has no readable %s; pass "
                              "--assignment NAME" % ASSIGNMENT_FILE)
    a = catalogue.get(name)
    chosen = [a.task(t) for t in tasks] if tasks else a.tasks
    # the reference is the tinylm running this grader: it must hold the solutions
    # (a student kit imported by mistake, e.g. from the kit folder, would grade
    # every submission against itself)
    missing = {k: v for k, v in catalogue.status(a, root).items() if v}
    if missing:
        raise GraderError("the tinylm running the grader (%s) does not hold the solutions "
                          "(%s); run the grader from the solution checkout, not from a "
                          "student kit" % (os.path.join(root, "tinylm"), "; ".join(
                              "%s: %s" % kv for kv in missing.items())))
    if not unsafe_no_sandbox:
        sandbox.check_sandbox()          # refuses, saying how to install bubblewrap
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    out_path = os.path.abspath(out_path)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    if os.path.lexists(out_path):
        os.unlink(out_path)              # no stale results while grading
    header = "assignment %d (%s): %s" % (a.number, a.name, a.title)
    if unsafe_no_sandbox:
        header += ("\nUNSAFE: graded WITHOUT a sandbox (--unsafe-no-sandbox): the submission "
                   "ran as an ordinary process and these scores cannot be trusted")
    try:
        student_files = read_submission(submission, a.files)
        problem = None
    except SubmissionError as exc:
        student_files, problem = {}, str(exc)
    tests = []
    echo(header)
    width = max(len(_test_name(a, t, c)) for t in chosen for c, _ in task_checks(t))
    echo("%-*s %8s  %s" % (width, "test", "score", "result"))
    for t in chosen:
        if problem:
            rows = [(n, 0.0, m, False, "not graded: %s" % problem) for n, m in task_checks(t)]
        else:
            try:
                rows = grade_task(t, student_files, root, seed + t.number, timeout, memory,
                                  sandboxed=not unsafe_no_sandbox)
            except sandbox.SandboxUnavailable:
                raise
            except Exception as exc:  # a grader bug must not lose the other tasks
                rows = [("grading", 0.0, float(t.points), False,
                         "the grader failed on this task (%s: %s); tell your instructor"
                         % (type(exc).__name__, exc))]
        for check, score, max_score, passed, msg in rows:
            tname = _test_name(a, t, check)
            tests.append({"name": tname, "score": round(score, 6),
                          "max_score": round(max_score, 6),
                          "status": "passed" if passed else "failed",
                          "output": _clip(msg), "visibility": "visible"})
            first = (msg or "").strip().splitlines()[0] if (msg or "").strip() else ""
            echo("%-*s %8s  %s" % (width, tname, "%g/%g" % (round(score, 3), round(max_score, 3)),
                                   "ok" if passed else "FAIL: " + first[:120]))
    results = _results(tests, start, header + " (seed %d)" % seed)
    results["extra_data"] = {"sandbox": "none (--unsafe-no-sandbox)" if unsafe_no_sandbox
                             else "bubblewrap", "seed": seed}
    write_json_atomically(out_path, results)
    echo("total: %g / %g   (%s, %.1f s)" % (results["score"], results["max_score"], out_path,
                                             results["execution_time"]))
    if unsafe_no_sandbox:
        echo("UNSAFE: graded without a sandbox (--unsafe-no-sandbox); recorded in %s" % out_path)
    return results


def _test_name(a, t, check):
    return "%d.%d %s: %s" % (a.number, t.number, t.title, check)
