"""The grader against hostile submissions.

Each test writes a submission whose ``numerical_gradient`` (assignment
"gradcheck", task 1) does something nasty, grades it with short limits, and
checks that the task scores 0 with a reason while the grader finishes and
leaves a valid results.json.  The other task is not graded here (``tasks=``)
to keep the suite fast; task independence is tested in test_assignments.py.
"""

import json
import os
import shutil
import textwrap

import numpy as np
import pytest

from tinylm.assignments import catalogue, grader, kit

TIMEOUT = 5.0
MEMORY = 1024 * 2 ** 20
STUB = "raise NotImplementedError('numerical_gradient: assignment 4 task 1 (numerical_gradient)')"


@pytest.fixture(scope="module")
def kits(tmp_path_factory):
    base = tmp_path_factory.mktemp("kits")
    kit.make_kit("gradcheck", str(base / "kit"))
    kit.make_kit("gradcheck", str(base / "sol"), solutions=True)
    return base


def submission(kits, tmp_path, body):
    """A copy of the student kit whose numerical_gradient runs ``body`` (then the stub)."""
    sub = tmp_path / "submission"
    shutil.copytree(kits / "kit", sub)
    path = sub / "tinylm" / "gradcheck.py"
    text = path.read_text()
    line = next(l for l in text.splitlines() if l.strip() == STUB)
    indent = line[:len(line) - len(line.lstrip())]
    new = textwrap.indent(textwrap.dedent(body).strip("\n"), indent) + "\n" + line
    path.write_text(text.replace(line, new, 1))
    return sub


def grade(sub, tmp_path, **kw):
    out = tmp_path / "results" / "results.json"
    kw.setdefault("timeout", TIMEOUT)
    res = grader.grade(str(sub), str(out), assignment="gradcheck", memory=MEMORY, seed=7,
                       tasks=["numerical_gradient"], echo=lambda *a: None, **kw)
    on_disk = json.loads(out.read_text())
    assert on_disk == res                      # what is on disk is the final result
    assert [f for f in os.listdir(out.parent) if f != "results.json"] == []   # no temp files
    return res


def assert_zero(res, *words):
    assert res["score"] == 0 and res["max_score"] == 10
    assert [t["status"] for t in res["tests"]] == ["failed", "failed"]
    text = res["tests"][0]["output"].lower()
    for w in words:
        assert w.lower() in text, (w, text)
    assert "the grader failed" not in text


def test_infinite_loop_times_out(kits, tmp_path):
    res = grade(submission(kits, tmp_path, "while True:\n    pass"), tmp_path, timeout=3.0)
    assert_zero(res, "timed out")


def test_infinite_loop_in_a_child_process_group_is_killed(kits, tmp_path):
    # signals ignored and a busy loop: only SIGKILL of the group ends it
    body = """
    import signal
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    x = 0
    while True:
        x += 1
    """
    res = grade(submission(kits, tmp_path, body), tmp_path, timeout=3.0)
    assert_zero(res, "timed out")


def test_memory_bomb(kits, tmp_path):
    # np.empty does not touch its pages, so this reaches the limit at once
    body = """
    hog = []
    while True:
        hog.append(np.empty(2 ** 25))
    """
    assert_zero(grade(submission(kits, tmp_path, body), tmp_path), "MemoryError", "memory limit")


def test_segfault_via_ctypes(kits, tmp_path):
    body = """
    import ctypes
    ctypes.string_at(0)
    """
    assert_zero(grade(submission(kits, tmp_path, body), tmp_path), "SIGSEGV")


def test_os_exit_zero_without_outputs(kits, tmp_path):
    assert_zero(grade(submission(kits, tmp_path, "import os\nos._exit(0)"), tmp_path),
                "without usable outputs")


def test_output_flood(kits, tmp_path):
    body = """
    import sys
    while True:
        sys.stdout.write("flood" * 20000)
    """
    res = grade(submission(kits, tmp_path, body), tmp_path)
    assert_zero(res, "file too large", "output flooding")
    assert all(len(t["output"]) < 5000 for t in res["tests"])   # the report stays small


def test_writing_to_the_results_path(kits, tmp_path):
    target = tmp_path / "results" / "results.json"
    body = """
    import os
    try:
        with open(%r, "w") as f:
            f.write('{"score": 100}')
    finally:
        os.open(%r, os.O_WRONLY | os.O_CREAT)
    """ % (str(target), str(target) + ".x")
    res = grade(submission(kits, tmp_path, body), tmp_path)
    assert_zero(res, "PermissionError", "may only write inside its temporary directory")
    assert json.loads(target.read_text())["score"] == 0
    assert not os.path.exists(str(target) + ".x")


def test_reading_the_reference_solution(kits, tmp_path):
    ref = os.path.join(catalogue.source_root(), "tinylm", "gradcheck.py")
    # if this worked, the submission would run the reference and get full marks
    body = """
    import importlib.util
    spec = importlib.util.spec_from_file_location("ref", %r)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    return ref.numerical_gradient(f, x, eps, indices)
    """ % ref
    assert_zero(grade(submission(kits, tmp_path, body), tmp_path),
                "PermissionError", "reference source and the grader's files are not readable")


def test_opening_the_reference_solution_and_the_checkout(kits, tmp_path):
    root = catalogue.source_root()
    body = """
    import os
    names = os.listdir(%r)
    source = open(%r).read()
    """ % (root, os.path.join(root, "tinylm", "gradcheck.py"))
    assert_zero(grade(submission(kits, tmp_path, body), tmp_path), "PermissionError")


def test_importing_the_reference_package_finds_only_the_sandbox_tree(kits, tmp_path):
    root = catalogue.source_root()
    body = """
    import importlib, sys
    sys.path.insert(0, %r)
    for name in [m for m in sys.modules if m.startswith("tinylm")]:
        del sys.modules[name]
    ref = importlib.import_module("tinylm.gradcheck")
    if ref.__file__.startswith(%r):
        return ref.numerical_gradient(f, x, eps, indices)   # the reference: full marks
    raise RuntimeError("only found " + ref.__file__)
    """ % (root, os.path.join(root, "tinylm"))
    res = grade(submission(kits, tmp_path, body), tmp_path)
    assert_zero(res)
    # Either the import found only the sandbox's own tree, or (when the reference is an
    # installed package whose folder is on the default path, as in CI) the audit hook
    # refused to read the reference's files: both leave the student with nothing.
    text = res["tests"][0]["output"].lower()
    assert "only found" in text or "reference source and the grader's files are not readable" \
        in text, text


def test_monkeypatching_numpy_and_the_harness(kits, tmp_path):
    body = """
    import numpy
    import tinylm.assignments.exercises as harness
    numpy.allclose = lambda *a, **k: True
    numpy.array_equal = lambda *a, **k: True
    numpy.testing.assert_allclose = lambda *a, **k: None
    harness.compare = lambda *a, **k: (True, "right")
    harness.grade = lambda name, got, expected: [(c, 1.0, "right") for c, _, _ in
                                                 harness.EXERCISES[name].checks]
    return numpy.zeros(numpy.shape(x))
    """
    res = grade(submission(kits, tmp_path, body), tmp_path)
    assert_zero(res, "grad[")


def test_reading_the_graders_memory(kits, tmp_path):
    body = """
    import os
    with open("/proc/%d/mem" % os.getppid(), "rb") as f:
        f.read(1)
    """
    assert_zero(grade(submission(kits, tmp_path, body), tmp_path), "other processes")


def test_starting_processes_and_signalling_the_grader(kits, tmp_path):
    body = """
    import os, subprocess
    try:
        os.kill(os.getppid(), 9)
    except PermissionError:
        pass
    subprocess.Popen(["sleep", "60"])
    """
    assert_zero(grade(submission(kits, tmp_path, body), tmp_path), "PermissionError")


@pytest.mark.parametrize("body, words", [
    ("return np.zeros(3)", ["shape"]),
    ("return np.zeros(np.shape(x), dtype=np.float32)", ["dtype float32"]),
    ("return np.full(np.shape(x), np.nan)", ["nan"]),
    ("return np.full(np.shape(x), np.inf)", ["inf"]),
    ("return 'a string'", ["not an array of numbers"]),
    ("return None", ["not an array of numbers"]),
    ("return np.array([object()])", ["not an array of numbers"]),
])
def test_wrong_shape_dtype_nan(kits, tmp_path, body, words):
    assert_zero(grade(submission(kits, tmp_path, body), tmp_path), *words)


def test_the_solution_passes_under_the_same_limits(kits, tmp_path):
    # the limits above are not what makes the hostile ones fail
    res = grade(kits / "sol", tmp_path)
    assert res["score"] == 10 and [t["status"] for t in res["tests"]] == ["passed", "passed"]
