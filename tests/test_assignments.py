"""Assignments: regions, catalogue, kits, public checks, submit, grading."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from tinylm.assignments import bughunt, catalogue, exercises, grader, kit, regions
from tinylm.gradcheck import numerical_gradient, relative_error

ROOT = catalogue.source_root()
TIMEOUT = 20.0


# --------------------------------------------------------------------------
# regions: a small fake module
# --------------------------------------------------------------------------

FAKE = '''\
"""A fake module.  This docstring shows a marker that is NOT a region:

    ### BEGIN SOLUTION
"""


class Square:
    def backward(self, dy):
        x = self.x                      # (N,)
        ### BEGIN SOLUTION
        dx = 2 * x * dy
        ### END SOLUTION
        return dx


def helper(a):
    if a:
        ### BEGIN SOLUTION
        return a + 1
        ### END SOLUTION
    return 0
'''


def test_find_regions_names_the_enclosing_function():
    rs = regions.find_regions(FAKE, "fake.py")
    assert [(r.qualname, r.begin, r.end) for r in rs] == [("Square.backward", 10, 12),
                                                          ("helper", 18, 20)]
    assert rs[0].indent == " " * 8 and rs[1].indent == " " * 8


@pytest.mark.parametrize("text, what", [
    ("def f():\n    ### BEGIN SOLUTION\n    pass\n", "never closed"),
    ("def f():\n    pass\n    ### END SOLUTION\n", "without"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    pass\n"
     "    ### END SOLUTION\n", "inside the region"),
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n", "inside a function"),
])
def test_bad_markers_are_reported(text, what):
    with pytest.raises(regions.RegionError, match=what):
        regions.find_regions(text, "bad.py")


def test_stub_and_splice_round_trip():
    stub = regions.stub_source(FAKE, {"Square.backward": "Square.backward: assignment 9 task 1"})
    assert "2 * x * dy" not in stub and "return a + 1" not in stub
    assert "        raise NotImplementedError('Square.backward: assignment 9 task 1')\n" in stub
    assert "### BEGIN SOLUTION\n\"\"\"" in stub          # the docstring is left alone
    ns = {}
    exec(compile(stub, "stub", "exec"), ns)
    with pytest.raises(NotImplementedError, match="assignment 9 task 1"):
        sq = ns["Square"]()
        sq.x = np.ones(2)
        sq.backward(np.ones(2))
    # a student's version of ONE function goes in; the rest stays the target's
    student = stub.replace("        raise NotImplementedError('Square.backward: assignment 9 "
                           "task 1')\n", "        dx = 3 * x * dy\n")
    spliced = regions.splice_functions(FAKE, student, ["Square.backward"])
    assert "3 * x * dy" in spliced and "return a + 1" in spliced
    with pytest.raises(regions.RegionError, match="not found"):
        regions.splice_functions(FAKE, "def other():\n    pass\n", ["Square.backward"])


# --------------------------------------------------------------------------
# the catalogue
# --------------------------------------------------------------------------

def _all_regions():
    found = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "tinylm")):
        for fn in files:
            if fn.endswith(".py"):
                full = os.path.join(dirpath, fn)
                rel = os.path.relpath(full, ROOT).replace(os.sep, "/")
                with open(full, encoding="utf-8") as f:
                    found += [(rel, r.qualname) for r in regions.find_regions(f.read(), rel)]
    return found


def test_every_task_is_available_and_every_region_has_one_task():
    claimed = [r for a in catalogue.ASSIGNMENTS for t in a.tasks for r in t.regions]
    assert len(claimed) == len(set(claimed)), "a function is claimed by two tasks"
    for a in catalogue.ASSIGNMENTS:
        assert catalogue.status(a) == {t.id: None for t in a.tasks}
        for t in a.tasks:
            assert t.exercise in exercises.EXERCISES
            assert t.points > 0
    marked = set(_all_regions())
    assert marked == set(claimed), ("marked but in no task: %s; in a task but not marked: %s"
                                    % (marked - set(claimed), set(claimed) - marked))


# --------------------------------------------------------------------------
# find the bug: the exercise itself is right
# --------------------------------------------------------------------------

def _agrees(c, grads, ins, dout):
    for k, x0 in ins.items():
        def L(x, k=k):
            return float(np.sum(dout * bughunt.FORWARD[c](**dict(ins, **{k: x}))[0]))
        if not np.all(relative_error(grads[k], numerical_gradient(L, x0), 1e-2) <= 1e-6):
            return False
    return True


def test_find_the_bug_candidates_are_broken_exactly_as_claimed():
    rng = np.random.default_rng(3)
    truth = set()
    for c in bughunt.CANDIDATES:
        ins = bughunt.make_inputs(c, rng)
        out, cache = bughunt.FORWARD[c](**ins)
        dout = rng.standard_normal(out.shape)                  # random upstream gradient
        if not _agrees(c, bughunt.BACKWARD[c](dout, cache), ins, dout):
            truth.add(c)
        assert _agrees(c, bughunt.FIXED[c](dout, cache), ins, dout), c
    assert truth == set(bughunt.broken_candidates())
    assert 2 <= len(truth) <= 4                                  # not all, not none
    # an all-ones upstream gradient hides A's bug
    ins = bughunt.make_inputs("A", rng)
    out, cache = bughunt.FORWARD["A"](**ins)
    ones = np.ones_like(out)
    assert _agrees("A", bughunt.BACKWARD["A"](ones, cache), ins, ones)


# --------------------------------------------------------------------------
# kits
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kits(tmp_path_factory):
    base = tmp_path_factory.mktemp("kits")
    for a in catalogue.ASSIGNMENTS:
        kit.make_kit(a.name, str(base / a.name / "kit"))
        kit.make_kit(a.name, str(base / a.name / "sol"), solutions=True)
    return base


def _outside_regions():
    """Every line of the reference package that is NOT inside a solution region."""
    out = set()
    for dirpath, _, files in os.walk(os.path.join(ROOT, "tinylm")):
        for fn in files:
            if fn.endswith(".py"):
                text = open(os.path.join(dirpath, fn), encoding="utf-8").read()
                lines = text.splitlines()
                inside = {i for r in regions.find_regions(text, fn)
                          for i in range(r.begin - 1, r.end)}
                out |= {_code(l) for i, l in enumerate(lines) if i not in inside}
    return out


def _code(line):
    """A line without indentation and trailing comment."""
    return re.sub(r"\s+#.*$", "", line).strip()


def _solution_lines(rel, outside):
    """Code lines of a file's solution regions that occur nowhere else in tinylm."""
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines()
    out = []
    for r in regions.find_regions(text, rel):
        for line in lines[r.begin:r.end - 1]:
            s = _code(line)
            if len(s) > 12 and not s.startswith("#") and s not in outside:
                out.append(s)
    return out


def test_kit_holds_no_solution_and_the_instructor_copy_does(kits):
    outside = _outside_regions()
    for a in catalogue.ASSIGNMENTS:
        student = kits / a.name / "kit"
        every = set()
        for dirpath, _, files in os.walk(student):
            for f in files:
                if f.endswith(".py"):
                    text = open(os.path.join(dirpath, f), encoding="utf-8").read()
                    assert regions.marker_lines(text, f) == [], f     # no marker comment
                    every |= {_code(l) for l in text.splitlines()}
        for t in a.tasks:
            for rel, q in t.regions:
                assert t.stub_message(q) in (student / rel).read_text()
                for line in _solution_lines(rel, outside):
                    assert line not in every, (rel, line)
        # text fenced as an answer (a backward formula in a docstring) is cut too
        for dirpath, _, files in os.walk(os.path.join(ROOT, "tinylm")):
            for fn in files:
                if not fn.endswith(".py"):
                    continue
                full = os.path.join(dirpath, fn)
                ref = open(full, encoding="utf-8").read()
                if regions.ANSWER_BEGIN not in [l.strip() for l in ref.splitlines()]:
                    continue
                rel = os.path.relpath(full, ROOT)
                kit_text = (student / rel).read_text()
                assert regions.ANSWER_BEGIN not in [l.strip() for l in kit_text.splitlines()]
                assert regions.ANSWER_CUT in kit_text
                cut = set(ref.splitlines()) - set(regions.cut_answers(ref).splitlines())
                for line in cut:
                    if len(line.strip()) > 12:
                        assert line not in kit_text.splitlines(), (rel, line)
        sol = (kits / a.name / "sol" / a.files[0]).read_text()
        assert regions.BEGIN in sol
        assert not any(f.endswith(".so") for _, _, fs in os.walk(student) for f in fs)
        for name in ("README.md", "setup.py", "pyproject.toml", "assignment.json",
                     "tests/test_public.py"):
            assert (student / name).is_file(), name
        for t in a.tasks:
            assert (student / "starters" / (t.id + ".py")).read_text().count("# %%") >= 3
        meta = json.loads((student / "assignment.json").read_text())
        assert meta["assignment"] == a.name and meta["files"] == a.files


def _kit_python(kit_dir, code, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TINYLM"))}
    return subprocess.run([sys.executable, "-c", code], cwd=str(kit_dir), env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_kit_tinylm_imports_without_the_c_extension(kits):
    d = kits / "backprop" / "kit"
    r = _kit_python(d, "import tinylm, tinylm.layers, tinylm.gradcheck, tinylm.cli\n"
                       "from tinylm import kernels\n"
                       "print(tinylm.__file__, kernels.c_available(), kernels.get_backend())")
    assert r.returncode == 0, r.stderr
    path, c, backend = r.stdout.split()
    assert path.startswith(str(d)) and c == "False" and backend == "numpy"


def _cli(kit_dir, *args):
    return _kit_python(kit_dir, "import sys; from tinylm.cli import main; "
                                "sys.exit(main(%r))" % (list(args),))


def test_check_in_kit_and_instructor_copy(kits):
    r = _cli(kits / "gradcheck" / "kit", "assignment", "check")
    assert r.returncode == 1
    assert "not written yet" in r.stdout and "0 of 2 tasks pass" in r.stdout
    r = _cli(kits / "gradcheck" / "sol", "assignment", "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 of 2 tasks pass" in r.stdout
    r = _kit_python(kits / "attention" / "sol", "import sys, pytest; "
                    "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests']))")
    assert r.returncode == 0, r.stdout


def test_check_says_which_array_index_and_values(kits, tmp_path):
    d = tmp_path / "kit"
    shutil.copytree(kits / "backprop" / "kit", d)
    core = d / "tinylm" / "layers" / "core.py"
    stub = "        raise NotImplementedError('Linear.backward: assignment 1 task 1 (linear_backward)')\n"
    # a plausible mistake: dx right, but the weight gradient is overwritten, not accumulated
    wrong = textwrap.indent(textwrap.dedent("""\
        dy2 = dy.reshape(-1, self.out_features)
        self.grads["weight"][...] = dy2.T @ x2
        if self.use_bias:
            self.grads["bias"] += dy2.sum(axis=0)
        dx2 = dy2 @ W
        """), " " * 8)
    core.write_text(core.read_text().replace(stub, wrong))
    r = _cli(d, "assignment", "check", "linear_backward")
    assert r.returncode == 1
    assert "[ok] dx: right" in r.stdout
    m = re.search(r"dweight\.c\d\[\d+, \d+\]: yours (\S+), expected (\S+) \(relative error "
                  r"(\S+);", r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) != float(m.group(2)) and float(m.group(3)) > 1e-3


# --------------------------------------------------------------------------
# grading
# --------------------------------------------------------------------------

def _grade(sub, tmp_path, name, **kw):
    out = tmp_path / ("results-%s.json" % name)
    return grader.grade(str(sub), str(out), assignment=name, timeout=TIMEOUT, seed=11,
                        echo=lambda *a: None, **kw)


@pytest.fixture(scope="module")
def graded(kits, tmp_path_factory):
    """{(assignment, "kit" | "sol"): (results, results.json path)}, graded once."""
    out = tmp_path_factory.mktemp("graded")
    res = {}
    for a in catalogue.ASSIGNMENTS:
        for which in ("kit", "sol"):
            path = out / ("%s-%s.json" % (a.name, which))
            res[a.name, which] = (grader.grade(str(kits / a.name / which), str(path),
                                               assignment=a.name, timeout=TIMEOUT, seed=11,
                                               echo=lambda *a: None), path)
    return res


def test_unmodified_kit_scores_zero_and_solutions_full_marks(graded):
    for a in catalogue.ASSIGNMENTS:
        res = graded[a.name, "kit"][0]
        assert res["score"] == 0 and res["max_score"] == a.points
        for t in res["tests"]:
            assert t["status"] == "failed" and t["score"] == 0
            assert "grader failed" not in t["output"] and "not graded" not in t["output"]
        assert any("NotImplementedError" in t["output"] for t in res["tests"])
        res = graded[a.name, "sol"][0]
        assert res["score"] == a.points, [t for t in res["tests"] if t["status"] != "passed"]
        assert all(t["status"] == "passed" for t in res["tests"])


def test_results_json_is_gradescope_format(graded):
    for (name, which), (res, path) in graded.items():
        assert json.loads(path.read_text()) == res
        assert set(res) == {"score", "max_score", "execution_time", "output",
                            "stdout_visibility", "tests", "extra_data"}
        assert res["extra_data"]["sandbox"] == "bubblewrap"
        assert isinstance(res["execution_time"], float) and res["execution_time"] > 0
        assert res["stdout_visibility"] == "visible"
        for t in res["tests"]:
            assert set(t) == {"name", "score", "max_score", "status", "output", "visibility"}
            assert t["status"] in ("passed", "failed") and t["visibility"] == "visible"
            assert isinstance(t["score"], float) and isinstance(t["max_score"], float)
            assert isinstance(t["output"], str) and t["output"]
        assert sum(t["max_score"] for t in res["tests"]) == res["max_score"] == \
            catalogue.get(name).points


def test_partial_credit_and_independent_tasks(kits, tmp_path):
    sub = tmp_path / "sub"
    shutil.copytree(kits / "gradcheck" / "kit", sub)
    # task 1 right (the instructor's file), task 2 untouched -> exactly task 1's points
    shutil.copy(kits / "gradcheck" / "sol" / "tinylm" / "gradcheck.py", sub / "tinylm")
    res = _grade(sub, tmp_path, "gradcheck")
    assert res["score"] == 10
    assert [t["status"] for t in res["tests"]] == ["passed", "passed", "failed", "failed"]
    # task 1 a syntax error, task 2 right -> task 2 still gets its points
    (sub / "tinylm" / "gradcheck.py").write_text("def numerical_gradient(:\n")
    shutil.copy(kits / "gradcheck" / "sol" / "tinylm" / "assignments" / "bughunt.py",
                sub / "tinylm" / "assignments")
    res = _grade(sub, tmp_path, "gradcheck")
    assert res["score"] == 10
    assert [t["status"] for t in res["tests"]] == ["failed", "failed", "passed", "passed"]
    assert "syntax error" in res["tests"][0]["output"]


def test_find_the_bug_cannot_be_had_for_free(kits, tmp_path):
    sub = tmp_path / "sub"
    shutil.copytree(kits / "gradcheck" / "kit", sub)
    path = sub / "tinylm" / "assignments" / "bughunt.py"
    text = path.read_text()
    for c in bughunt.CANDIDATES:       # "fix" = hand back the given backward, untouched
        text = text.replace("    raise NotImplementedError('fixed_backward_%s: assignment 4 task 2 "
                            "(find_the_bug)')" % c, "    return backward_%s(dout, cache)" % c)
    text = text.replace("    raise NotImplementedError('broken_candidates: assignment 4 task 2 "
                        "(find_the_bug)')", "    return set('ABCDEF')")
    path.write_text(text)
    res = _grade(sub, tmp_path, "gradcheck", tasks=["find_the_bug"])
    assert res["score"] == 0
    assert "0 of 4 broken backward passes fixed" in res["tests"][1]["output"]


def test_submit_zip_and_grade_the_zip(kits, tmp_path):
    d = tmp_path / "sol"
    shutil.copytree(kits / "gradcheck" / "sol", d)
    r = _cli(d, "assignment", "submit", "--out", str(tmp_path / "s.zip"))
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(tmp_path / "s.zip") as zf:
        assert sorted(zf.namelist()) == sorted(
            ["assignment.json", "tinylm/gradcheck.py", "tinylm/assignments/bughunt.py"])
    res = grader.grade(str(tmp_path / "s.zip"), str(tmp_path / "r.json"), timeout=TIMEOUT,
                       echo=lambda *a: None)             # the assignment comes from the zip
    assert res["score"] == 20
    d = tmp_path / "kit"
    shutil.copytree(kits / "gradcheck" / "kit", d)
    r = _cli(d, "assignment", "submit")
    assert r.returncode == 0 and "not written yet" in r.stdout
    assert (d / "submission.zip").is_file()


def test_hostile_zip_members_and_symlinks(kits, tmp_path):
    sol = kits / "gradcheck" / "sol"
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../../tinylm/gradcheck.py", "evil = 1\n")
        zf.writestr("/abs/tinylm/gradcheck.py", "evil = 1\n")
        zf.write(sol / "tinylm" / "gradcheck.py", "my-kit/tinylm/gradcheck.py")
    files = grader.read_submission(str(z), ["tinylm/gradcheck.py", "tinylm/x.py"])
    assert list(files) == ["tinylm/gradcheck.py"] and "evil" not in files["tinylm/gradcheck.py"]
    assert not (tmp_path.parent / "tinylm").exists()
    d = tmp_path / "linked"
    shutil.copytree(kits / "gradcheck" / "kit", d)
    os.remove(d / "tinylm" / "gradcheck.py")
    os.symlink(os.path.join(ROOT, "tinylm", "gradcheck.py"), d / "tinylm" / "gradcheck.py")
    res = _grade(d, tmp_path, "gradcheck")
    assert res["score"] == 0 and "symbolic link" in res["tests"][0]["output"]
    # a linked folder one level down, pointing at the reference checkout
    e = tmp_path / "linked-dir"
    e.mkdir()
    os.symlink(ROOT, e / "innocent")
    with pytest.raises(grader.SubmissionError, match="symbolic link"):
        grader.read_submission(str(e), ["tinylm/gradcheck.py"])


def test_results_json_is_written_once_at_the_end(kits, tmp_path, monkeypatch):
    out = tmp_path / "results-gradcheck.json"
    out.write_text('{"score": 99}')                  # a stale file is removed first
    real = grader.grade_task
    seen = []

    def crash_on_second(task, *a, **k):
        seen.append(out.exists())                    # nothing on disk while grading
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(task, *a, **k)
    monkeypatch.setattr(grader, "grade_task", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        _grade(kits / "gradcheck" / "sol", tmp_path, "gradcheck")
    assert seen == [False, False] and not out.exists()


def test_each_activation_is_scored_and_checked_on_its_own(kits, tmp_path):
    d = tmp_path / "kit"
    shutil.copytree(kits / "backprop" / "kit", d)
    act = d / "tinylm" / "layers" / "activations.py"
    sol = (kits / "backprop" / "sol" / "tinylm" / "layers" / "activations.py").read_text()
    # Sigmoid written (the instructor's version), Tanh and GELU not
    text = regions.splice_functions(act.read_text(), sol, ["Sigmoid.backward"])
    act.write_text(text)
    res = _grade(d, tmp_path, "backprop", tasks=["activations_backward"])
    by = {t["name"].split(": ")[-1]: t for t in res["tests"]}
    assert by["Sigmoid"]["status"] == "passed" and by["Sigmoid"]["score"] == 2
    for name in ("Tanh", "GELU (erf)", "GELU (tanh)"):
        assert by[name]["score"] == 0 and "NotImplementedError" in by[name]["output"]
    r = _cli(d, "assignment", "check", "activations_backward")
    assert r.returncode == 1
    assert "[ok] Sigmoid: right" in r.stdout and "[FAIL] Tanh:" in r.stdout, r.stdout
    assert "[FAIL] GELU (erf):" in r.stdout and "[FAIL] GELU (tanh):" in r.stdout


def test_grade_prints_whole_test_names(kits, tmp_path):
    lines = []
    grader.grade(str(kits / "attention" / "sol"), str(tmp_path / "r.json"), timeout=TIMEOUT,
                 seed=1, echo=lines.append)
    names = [t["name"] for t in json.loads((tmp_path / "r.json").read_text())["tests"]]
    assert any(len(n) > 60 for n in names)
    for n in names:
        assert any(l.startswith(n + " ") for l in lines), (n, lines)


def test_grade_refuses_without_a_sandbox_unless_told(kits, tmp_path, monkeypatch):
    from tinylm.assignments import sandbox
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    out = tmp_path / "r.json"
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
        grader.grade(str(kits / "gradcheck" / "sol"), str(out), assignment="gradcheck",
                     echo=lambda *a: None)
    assert not out.exists()
    lines = []
    res = grader.grade(str(kits / "gradcheck" / "sol"), str(out), assignment="gradcheck",
                       timeout=TIMEOUT, echo=lines.append, unsafe_no_sandbox=True)
    assert res["score"] == 20
    saved = json.loads(out.read_text())
    assert saved["extra_data"]["sandbox"].startswith("none") and "UNSAFE" in saved["output"]
    assert any("UNSAFE" in l for l in lines)


def test_kit_readme_installs_what_its_checks_need(kits):
    readme = (kits / "backprop" / "kit" / "README.md").read_text()
    assert 'python -m pip install -e ".[test]"' in readme
    ns = {}
    setup = (kits / "backprop" / "kit" / "setup.py").read_text()
    assert '"test": ["pytest>=7"]' in setup and '"numpy>=1.23.2"' in setup


def test_cli_list_and_clear_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tinylm.cli", "assignment", "list"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "find_the_bug" in r.stdout and "not available" not in r.stdout
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "tinylm.cli", "assignment", "grade",
                        str(tmp_path / "empty"), "--out", str(tmp_path / "r.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--assignment" in r.stderr
    r = subprocess.run([sys.executable, "-m", "tinylm.cli", "assignment", "make", "nope",
                        "--out", str(tmp_path / "k")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "no assignment 'nope'" in r.stderr


def test_grader_refuses_a_reference_without_solutions(kits, tmp_path):
    # grading from inside a student kit would compare every submission with itself
    with pytest.raises(grader.GraderError, match="does not hold the solutions"):
        grader.grade(str(kits / "gradcheck" / "kit"), str(tmp_path / "r.json"),
                     assignment="gradcheck", root=str(kits / "gradcheck" / "kit"),
                     echo=lambda *a: None)
    r = _cli(kits / "gradcheck" / "kit", "assignment", "grade", ".", "--out",
             str(tmp_path / "r.json"))
    assert r.returncode == 2 and "does not hold the solutions" in r.stderr
