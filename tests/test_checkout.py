"""Working inside a source checkout without the compiled extension.

A script or pytest run at the root of a clone imports ./tinylm.  Without an
in-place build the warning must say exactly that and the one command that
fixes it, and pytest must stop loudly instead of skipping every C test.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _checkout_without_c(tmp_path):
    root = tmp_path / "clone"
    shutil.copytree(REPO / "tinylm", root / "tinylm",
                    ignore=shutil.ignore_patterns("_C*.so", "_C*.pyd", "__pycache__"))
    shutil.copytree(REPO / "csrc", root / "csrc")
    for name in ("setup.py", "pytest.ini"):
        shutil.copy(REPO / name, root / name)
    (root / "tests").mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", root / "tests" / "conftest.py")
    (root / "tests" / "test_one.py").write_text(
        "def test_one():\n    assert 1 + 1 == 2\n")
    return root


def _run(root, args, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("TINYLM_BACKEND", "PYTHONPATH")}
    full.update(env)
    return subprocess.run([sys.executable] + args, cwd=str(root), env=full,
                          capture_output=True, text=True, timeout=300)


def test_import_in_a_checkout_without_build_names_the_fix(tmp_path):
    root = _checkout_without_c(tmp_path)
    r = _run(root, ["-c", "import tinylm, tinylm.kernels as k; print(k.__file__, k.get_backend())"])
    assert r.returncode == 0, r.stderr
    assert str(root / "tinylm") in r.stdout and r.stdout.split()[-1] == "numpy"
    assert "source checkout %s" % root in r.stderr
    assert "python setup.py build_ext --inplace" in r.stderr
    assert "when tinylm was installed" not in r.stderr


def test_pytest_in_a_checkout_without_build_fails_loudly(tmp_path):
    root = _checkout_without_c(tmp_path)
    r = _run(root, ["-m", "pytest", "-q"])
    assert r.returncode == 3, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "C extension is not available" in out and "build_ext --inplace" in out
    # The NumPy backend alone can still be tested, on purpose.
    r = _run(root, ["-m", "pytest", "-q"], TINYLM_BACKEND="numpy")
    assert r.returncode == 0, r.stdout + r.stderr
