"""The Gradescope autograder zip, end to end, in a folder laid out like Gradescope's.

``tinylm assignment gradescope`` writes the zip; the test unpacks it into
<tmp>/autograder/source, puts a submission in <tmp>/autograder/submission and
runs ``run_autograder`` (with AUTOGRADER_ROOT=<tmp>/autograder and this
Python in place of the venv setup.sh would make), then reads
<tmp>/autograder/results/results.json.  Done for a correct submission and a
hostile one (a daemon that tries to rewrite the results, fake JSON printed,
fake results.json files written).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile

import pytest

from tinylm.assignments import catalogue, kit, sandbox
from test_grader_hostile import processes_with

ROOT = catalogue.source_root()


@pytest.fixture(scope="module")
def autograder(tmp_path_factory):
    sandbox.check_sandbox()
    base = tmp_path_factory.mktemp("gs")
    z = base / "autograder.zip"
    r = subprocess.run([sys.executable, "-m", "tinylm.cli", "assignment", "gradescope",
                        "gradcheck", "--out", str(z), "--timeout", "20"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    kit.make_kit("gradcheck", str(base / "sol"), solutions=True)
    kit.make_kit("gradcheck", str(base / "kit"))
    return base


def _run(base, tmp_path, files_from, edit=None):
    ag = tmp_path / "autograder"
    with zipfile.ZipFile(base / "autograder.zip") as zf:
        names = zf.namelist()
        zf.extractall(ag / "source")
        for info in zf.infolist():                    # keep the executable bits
            os.chmod(ag / "source" / info.filename, info.external_attr >> 16 & 0o777)
    assert {"setup.sh", "run_autograder", "tinylm/__init__.py"} <= set(names)
    assert "### BEGIN SOLUTION" in (ag / "source" / "tinylm" / "gradcheck.py").read_text()
    sub = ag / "submission"
    sub.mkdir()
    a = catalogue.get("gradcheck")
    for rel in a.files + ["assignment.json"]:         # what `tinylm assignment submit` zips
        (sub / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(files_from / rel, sub / rel)
    if edit:
        edit(sub)
    env = dict(os.environ, AUTOGRADER_ROOT=str(ag), TINYLM_PYTHON=sys.executable)
    start = time.monotonic()
    r = subprocess.run([str(ag / "source" / "run_autograder")], cwd="/", env=env,
                       capture_output=True, text=True, timeout=300)
    return r, ag, time.monotonic() - start


def test_setup_sh_installs_bubblewrap_and_parses(autograder, tmp_path):
    r, ag, _ = _run(autograder, tmp_path, autograder / "sol")
    setup = (ag / "source" / "setup.sh").read_text()
    assert "apt-get install" in setup and "bubblewrap" in setup
    assert subprocess.run(["bash", "-n", str(ag / "source" / "setup.sh")]).returncode == 0
    assert os.access(ag / "source" / "run_autograder", os.X_OK)


def test_correct_submission_full_marks(autograder, tmp_path):
    r, ag, _ = _run(autograder, tmp_path, autograder / "sol")
    assert r.returncode == 0, r.stderr
    res = json.loads((ag / "results" / "results.json").read_text())
    assert res["score"] == res["max_score"] == 20
    assert res["extra_data"]["sandbox"] == "bubblewrap"
    assert "total: 20 / 20" in r.stdout


def test_untouched_kit_zero(autograder, tmp_path):
    r, ag, _ = _run(autograder, tmp_path, autograder / "kit")
    assert r.returncode == 0, r.stderr
    res = json.loads((ag / "results" / "results.json").read_text())
    assert res["score"] == 0 and res["max_score"] == 20


def test_hostile_submission(autograder, tmp_path):
    stub = ("raise NotImplementedError('numerical_gradient: assignment 4 task 1 "
            "(numerical_gradient)')")
    token = "tinylm-gs-hostile-%d" % os.getpid()

    def edit(sub):
        p = sub / "tinylm" / "gradcheck.py"
        shutil.copy(autograder / "kit" / "tinylm" / "gradcheck.py", p)   # task 1 hostile
        results = str(tmp_path / "autograder" / "results" / "results.json")
        attack = textwrap.dedent("""\
            import json, os, subprocess, sys
            fake = json.dumps({"score": 20, "max_score": 20, "tests": []})
            print(fake)
            for q in [RESULTS, "/autograder/results/results.json", "../results/results.json"]:
                try:
                    open(q, "w").write(fake)
                except OSError:
                    pass
            code = "import time; time.sleep(2); open(%r, 'w').write(%r)" % (RESULTS, fake)
            subprocess.Popen([sys.executable, "-c", code, TOKEN], start_new_session=True)
            """).replace("RESULTS", repr(results)).replace("TOKEN", repr(token))
        text = p.read_text()
        line = next(l for l in text.splitlines() if l.strip() == stub)
        ind = line[:len(line) - len(line.lstrip())]
        attack = "".join(ind + l + "\n" for l in attack.splitlines())
        p.write_text(text.replace(line, attack + line))
    r, ag, seconds = _run(autograder, tmp_path, autograder / "sol", edit)
    assert r.returncode == 0, r.stderr
    time.sleep(3)                              # the daemon would have written by now
    res = json.loads((ag / "results" / "results.json").read_text())
    # task 1 (the hostile function) scores 0; task 2 (honest) keeps its 10
    assert res["score"] == 10, res
    assert [t["status"] for t in res["tests"]] == ["failed", "failed", "passed", "passed"]
    assert "NotImplementedError" in res["tests"][0]["output"]
    assert not os.path.exists("/autograder/results/results.json")
    assert processes_with(token) == []

