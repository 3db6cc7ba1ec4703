"""Checkpoints under faults: SIGKILL between every file operation, NaN, umask, stale temps.

The kill test runs a small training-like loop (evaluate, save the best model,
save the checkpoint) in a child process whose fault hook SIGKILLs itself at
the n-th file operation, for every n.  After each kill the run is resumed
in-process and must finish with the best model of the whole sequence.
"""

import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tinylm
from tinylm import checkpoint as ck
from tinylm.checkpoint import NonFiniteError, load_checkpoint, save_best, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
SRC = str(Path(tinylm.__file__).resolve().parents[1])   # the tinylm these tests import

VALS = [3.0, 2.0, 2.5, 1.5, 1.7, 1.2]      # validation loss at each evaluation

RUN = textwrap.dedent("""
    import math, os
    import numpy as np
    from tinylm import checkpoint as ck

    def run(folder, vals):
        ckpath = os.path.join(folder, "checkpoint.npz")
        best = os.path.join(folder, "best.npz")
        ck.clean_stale_temps(folder)
        start, best_val = 0, math.inf
        if os.path.exists(ckpath):                   # --resume
            meta = ck.load_meta(ckpath)
            start, best_val = meta["step"] + 1, meta["best_val_loss"]
        for step in range(start, len(vals)):
            v = vals[step]
            w = {"model.w": np.full(100_000, v)}       # the weights 'are' the loss
            best_val = min(best_val, v)
            ck.save_best(best, w, {"step": step}, v)
            ck.save_checkpoint(ckpath, w, {"step": step, "best_val_loss": best_val})
""")

CHILD = RUN + textwrap.dedent("""
    import signal, sys
    calls = [0]
    def hook(label):
        calls[0] += 1
        if calls[0] == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
    ck._fault_hook = hook
    run(sys.argv[1], %r)
    print(calls[0])
""" % (VALS,))


def _child(folder, kill_at):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", CHILD, str(folder), str(kill_at)],
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=120)


def _check_best(folder, done_vals):
    """best.npz is consistent and holds the best of the evaluations that finished."""
    arrays, meta = load_checkpoint(folder / "best.npz")
    assert np.all(arrays["model.w"] == meta["val_loss"])
    return meta["val_loss"]


def test_sigkill_at_every_file_operation_never_loses_the_best_model(tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    r = _child(clean, 0)
    assert r.returncode == 0, r.stderr
    points = int(r.stdout.split()[-1])
    assert points >= 5 * len(VALS)                 # every save passed 5 fault points
    namespace = {}
    exec(RUN, namespace)
    kills, lost = 0, 0
    for kill_at in range(1, points + 1):
        folder = tmp_path / ("k%d" % kill_at)
        folder.mkdir()
        r = _child(folder, kill_at)
        assert r.returncode == -signal.SIGKILL, (kill_at, r.returncode, r.stderr)
        kills += 1
        # Right after the kill: any best.npz is whole, and no worse than what
        # checkpoint.npz believes is the best so far.
        if (folder / "checkpoint.npz").exists():
            believed = load_checkpoint(folder / "checkpoint.npz")[1]["best_val_loss"]
            if not (folder / "best.npz").exists() or _check_best(folder, None) > believed:
                lost += 1
        elif (folder / "best.npz").exists():
            _check_best(folder, None)
        # Resume to the end: the best model of the whole sequence, no temp files.
        namespace["run"](str(folder), VALS)
        if _check_best(folder, VALS) != min(VALS):
            lost += 1
        assert not [n for n in os.listdir(folder) if ck.TMP_MARK in n]
    assert (kills, lost) == (points, 0)
    print("kill test: %d kills (one per file operation), best model lost: %d" % (kills, lost))


def test_save_best_never_replaces_a_better_model(tmp_path):
    path = tmp_path / "best.npz"
    assert save_best(path, {"w": np.ones(3)}, {"step": 5}, 1.0)
    # a resumed or re-run trainer whose in-memory best is stale offers a worse model
    assert not save_best(path, {"w": np.zeros(3)}, {"step": 9}, 2.0)
    assert not save_best(path, {"w": np.zeros(3)}, {"step": 9}, 1.0)      # ties keep the old
    assert not save_best(path, {"w": np.zeros(3)}, {"step": 9}, float("nan"))
    arrays, meta = load_checkpoint(path)
    assert meta["step"] == 5 and meta["val_loss"] == 1.0 and arrays["w"].tolist() == [1, 1, 1]
    assert save_best(path, {"w": np.zeros(3)}, {"step": 12}, 0.5)
    assert load_checkpoint(path)[1]["val_loss"] == 0.5


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_is_never_saved(tmp_path, bad):
    w = np.ones(4)
    w[2] = bad
    with pytest.raises(NonFiniteError, match="model.w"):
        save_checkpoint(tmp_path / "c.npz", {"model.w": w}, {})
    with pytest.raises(NonFiniteError, match="val_loss"):
        save_checkpoint(tmp_path / "c.npz", {"model.w": np.ones(4)},
                        {"history": {"val_loss": [2.0, float(bad)]}})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_file_mode_follows_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "c.npz", {"w": np.ones(2)}, {})
    finally:
        os.umask(old)
    assert (tmp_path / "c.npz").stat().st_mode & 0o777 == mode


def test_stale_temporary_files_are_cleaned(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.npz", {"w": np.ones(2)}, {})
    for name in (".checkpoint.npz.tmp-abc123", ".best.npz.tmp-x9"):
        (tmp_path / name).write_bytes(b"\0" * 1000)
    (tmp_path / "notes.tmp-keep").write_text("a user's file")    # not ours: kept
    removed = ck.clean_stale_temps(tmp_path)
    assert removed == [".best.npz.tmp-x9", ".checkpoint.npz.tmp-abc123"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz", "notes.tmp-keep"]
