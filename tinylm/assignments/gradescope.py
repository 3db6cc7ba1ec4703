"""The Gradescope autograder zip: ``tinylm assignment gradescope NAME --out autograder.zip``.

Gradescope unpacks the zip into ``/autograder/source``, runs ``setup.sh`` once
(as root, on its Ubuntu image) and then, for every submission,
``run_autograder``, which must leave ``/autograder/results/results.json``.
The zip holds::

    setup.sh          apt: bubblewrap and Python; a venv at /autograder/venv with NumPy
    run_autograder    tinylm assignment grade /autograder/submission
                          --out /autograder/results/results.json --assignment NAME
    tinylm/           the reference (pure Python, solutions included): the grader's,
                      never inside the sandbox, which is where the submission runs
    assignment.json   which assignment, and the limits

``run_autograder`` reads ``AUTOGRADER_ROOT`` (default ``/autograder``) and
``TINYLM_PYTHON`` (default ``$AUTOGRADER_ROOT/venv/bin/python``), so the
same script runs in a folder laid out like Gradescope's (the tests do that).
"""

import json
import os
import stat
import tempfile
import zipfile

from tinylm.assignments import catalogue, sandbox
from tinylm.assignments.grader import copy_package

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
# bubblewrap: the OS sandbox every submission runs in (grading refuses without it)
apt-get install -y --no-install-recommends bubblewrap python3 python3-venv python3-pip
ROOT="${AUTOGRADER_ROOT:-/autograder}"
python3 -m venv "$ROOT/venv"
"$ROOT/venv/bin/python" -m pip install --quiet "numpy>=1.23.2"
"$ROOT/venv/bin/python" -c "import numpy; print('numpy', numpy.__version__)"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission; it must leave results/results.json.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${TINYLM_PYTHON:-$ROOT/venv/bin/python}"
mkdir -p "$ROOT/results"
cd "$HERE"                      # the reference tinylm shipped in this folder
exec env -u PYTHONPATH TINYLM_BACKEND=numpy "$PY" -m tinylm.cli assignment grade \\
    "$ROOT/submission" --out "$ROOT/results/results.json" --assignment %(name)s \\
    --timeout %(timeout)g --memory %(memory)d
"""


def make_autograder(name, out, root=None, timeout=sandbox.DEFAULT_TIMEOUT,
                    memory_mb=sandbox.DEFAULT_MEMORY // 2 ** 20):
    """Write Gradescope's autograder zip for assignment ``name`` to ``out``."""
    root = root or catalogue.source_root()
    a = catalogue.ready(name, root)
    with tempfile.TemporaryDirectory(prefix="tinylm-gradescope-") as d:
        copy_package(root, d)       # the reference, solutions and all: the grader's side
        with open(os.path.join(d, "tinylm", "PURE_PYTHON"), "w", encoding="utf-8") as f:
            f.write("The tinylm of a Gradescope autograder: pure Python, NumPy backend.\n")
        files = {"setup.sh": SETUP_SH,
                 "run_autograder": RUN_AUTOGRADER % {"name": a.name, "timeout": timeout,
                                                     "memory": memory_mb},
                 "assignment.json": json.dumps({"assignment": a.name, "timeout": timeout,
                                                "memory_mb": memory_mb}, indent=2) + "\n"}
        for fn, text in files.items():
            with open(os.path.join(d, fn), "w", encoding="utf-8") as f:
                f.write(text)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for dirpath, dirnames, filenames in os.walk(d):
                dirnames.sort()
                for fn in sorted(filenames):
                    full = os.path.join(dirpath, fn)
                    rel = os.path.relpath(full, d).replace(os.sep, "/")
                    info = zipfile.ZipInfo(rel, date_time=(2024, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    mode = 0o755 if fn in ("setup.sh", "run_autograder") else 0o644
                    info.external_attr = (stat.S_IFREG | mode) << 16
                    with open(full, "rb") as f:
                        zf.writestr(info, f.read())
    return a
