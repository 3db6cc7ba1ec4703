"""Numbers a student can trust, end to end through the `tinylm` command.

* `tinylm eval` on a checkpoint reproduces the validation loss training reported for it;
* a run folder is never silently overwritten (--resume or --overwrite);
* a diverged run saves nothing non-finite; perplexity is not capped;
* a real training run SIGKILLed at random moments, then resumed, never loses its best model.
"""

import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tinylm
from tinylm import checkpoint as ck

REPO = Path(__file__).resolve().parents[1]
SRC = str(Path(tinylm.__file__).resolve().parents[1])   # the tinylm these tests import
# (also the subprocesses' cwd: `python -m` puts the cwd first on sys.path, so a cwd
# of REPO would run the checkout's unbuilt tinylm/ instead of the installed one)
TINY = ["--preset", "gpt-tiny", "--max-chars", "20000", "--sample-length", "0"]


def tinylm(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "tinylm.cli"] + [str(a) for a in args],
                          cwd=SRC, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _loss(text, pattern):
    m = re.search(pattern, text)
    assert m, text
    return float(m.group(1))


def test_eval_reproduces_the_validation_loss_training_reported(tmp_path):
    out = tmp_path / "run"
    r = tinylm("train", *TINY, "--steps", 30, "--eval-interval", 10, "--out", out)
    assert r.returncode == 0, r.stderr
    best = _loss(r.stdout, r"best validation loss ([0-9.]+)")
    assert re.search(r"validation: .*whole split", r.stdout), r.stdout     # the log says which
    ev = tinylm("eval", out / "best.npz")
    assert ev.returncode == 0, ev.stderr
    assert "%.4f" % _loss(ev.stdout, r"loss\s+([0-9.]+) nats") == "%.4f" % best
    assert ck.load_meta(out / "best.npz")["val_loss"] == pytest.approx(best, abs=5e-5)


def test_an_existing_run_folder_is_never_silently_overwritten(tmp_path):
    out = tmp_path / "run"
    assert tinylm("train", *TINY, "--steps", 10, "--out", out).returncode == 0
    before = (out / "best.npz").read_bytes()
    r = tinylm("train", *TINY, "--steps", 1, "--out", out)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "--resume" in r.stderr and "--overwrite" in r.stderr
    assert (out / "best.npz").read_bytes() == before
    # --overwrite with a run that cannot start (bad data) leaves the old run alone
    r = tinylm("train", *TINY, "--steps", 3, "--out", out, "--overwrite", "--data",
               tmp_path / "missing.txt")
    assert r.returncode == 2 and (out / "best.npz").read_bytes() == before
    r = tinylm("train", *TINY, "--steps", 3, "--out", out, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert ck.load_meta(out / "checkpoint.npz")["step"] == 3
    # --out naming an existing file: refused before any training
    f = tmp_path / "file.txt"
    f.write_text("x")
    r = tinylm("train", *TINY, "--steps", 1, "--out", f)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "file.txt" in r.stderr


def test_a_diverged_run_saves_nothing_non_finite(tmp_path):
    out = tmp_path / "run"
    r = tinylm("train", *TINY, "--steps", 40, "--eval-interval", 5, "--lr", 600, "--out", out)
    assert "non-finite" in r.stdout + r.stderr or "stopping" in r.stdout, r.stdout
    for name in ("checkpoint.npz", "best.npz"):
        if (out / name).exists():
            arrays, meta = ck.load_checkpoint(out / name)       # saving refuses NaN/inf
            assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")
            assert all(math.isfinite(v) for v in meta["history"]["val_loss"])


def test_perplexity_is_not_capped():
    from tinylm.training.evaluation import perplexity
    assert perplexity(math.log(3.5)) == pytest.approx(3.5)
    assert perplexity(5e5) == math.inf and "%.2f" % perplexity(5e5) == "inf"
    assert perplexity(60.0) == pytest.approx(math.exp(60.0))


def test_real_sigkills_during_training_never_lose_the_best_model(tmp_path):
    """SIGKILL `tinylm train` at random moments, resume, repeat; then check best.npz."""
    out = tmp_path / "run"
    args = ["train", *TINY, "--steps", 300, "--eval-interval", 3, "--out", out]
    env = dict(os.environ, PYTHONPATH=SRC, OPENBLAS_NUM_THREADS="1")
    rng = random.Random(0)
    kills = lost = 0
    for attempt in range(6):
        cmd = [sys.executable, "-m", "tinylm.cli"] + [str(a) for a in args]
        if (out / "checkpoint.npz").exists():
            cmd.append("--resume")
        p = subprocess.Popen(cmd, cwd=SRC, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        # wait until training has started, then kill at a random moment
        for line in p.stdout:
            if re.match(r"step \d+", line):
                break
        time.sleep(rng.uniform(0.0, 1.5))
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.wait(timeout=60)
        p.stdout.close()
        if (out / "checkpoint.npz").exists():
            meta = ck.load_meta(out / "checkpoint.npz")
            seen = min(meta["history"]["val_loss"], default=math.inf)
            if seen < math.inf and (not (out / "best.npz").exists()
                                    or ck.load_meta(out / "best.npz")["val_loss"] > seen):
                lost += 1
    r = tinylm(*args, "--resume")
    assert r.returncode == 0, r.stderr
    final = ck.load_meta(out / "checkpoint.npz")
    best = ck.load_meta(out / "best.npz")
    assert best["val_loss"] == min(final["history"]["val_loss"])
    assert not [n for n in os.listdir(out) if ck.TMP_MARK in n]
    assert kills >= 4 and lost == 0
    print("training SIGKILL test: %d kills, best model lost: %d" % (kills, lost))
