"""Checkpoints: round trip, atomic save under SIGKILL, clear errors, no pickle."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tinylm.checkpoint import (CheckpointError, join_state, load_checkpoint,
                               save_checkpoint, split_state)
from tinylm.optim import Adam
from tinylm.tokenizers import BPETokenizer, tokenizer_from_dict

REPO = Path(__file__).resolve().parents[1]


def test_round_trip_arrays_and_meta(tmp_path):
    rng = np.random.default_rng(0)
    gen = np.random.default_rng(7)
    arrays = {"model.W": rng.standard_normal((3, 4)),
              "model.b": rng.standard_normal(4).astype(np.float32),
              "data.ids": np.arange(10, dtype=np.int64)}
    tok = BPETokenizer.train("hello hello world world", vocab_size=260)
    meta = {"config": {"d_model": 16, "name": "gpt"}, "step": 42,
            "rng": gen.bit_generator.state,             # holds 128-bit integers
            "tokenizer": tok.to_dict(), "lr": np.float64(0.001)}
    path = tmp_path / "ck.npz"
    save_checkpoint(path, arrays, meta)
    back, meta2 = load_checkpoint(path)
    assert set(back) == set(arrays)
    for k in arrays:
        assert back[k].dtype == arrays[k].dtype
        np.testing.assert_array_equal(back[k], arrays[k])
    assert meta2["format"] == "tinylm-checkpoint" and meta2["format_version"] == 1
    assert meta2["step"] == 42 and meta2["config"] == meta["config"] and meta2["lr"] == 0.001
    restored = np.random.default_rng()
    restored.bit_generator.state = meta2["rng"]
    assert restored.random() == gen.random()
    assert tokenizer_from_dict(meta2["tokenizer"]).merges == tok.merges


def test_optimizer_state_through_checkpoint_continues_identically(tmp_path):
    rng = np.random.default_rng(1)
    init = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(4)]
    p, g = init.copy(), np.zeros(5)
    ref = Adam([(p, g)], lr=0.1)
    for k in range(4):
        g[...] = grads[k]
        ref.step()

    q, h = init.copy(), np.zeros(5)
    opt = Adam([(q, h)], lr=0.1)
    for k in range(2):
        h[...] = grads[k]
        opt.step()
    arrays, scalars = split_state(opt.state_dict(), "optim.")
    arrays["model.p"] = q
    save_checkpoint(tmp_path / "c.npz", arrays, {"optim": scalars})
    arrays2, meta = load_checkpoint(tmp_path / "c.npz")
    q2, h2 = arrays2["model.p"].copy(), np.zeros(5)
    opt2 = Adam([(q2, h2)], lr=0.5)
    opt2.load_state_dict(join_state(arrays2, meta["optim"], "optim."))
    for k in range(2, 4):
        h2[...] = grads[k]
        opt2.step()
    np.testing.assert_array_equal(q2, p)


def test_save_writes_exact_path_and_overwrites(tmp_path):
    path = tmp_path / "model.ckpt"               # no .npz appended
    save_checkpoint(path, {"a": np.zeros(2)}, {"v": 1})
    save_checkpoint(path, {"a": np.ones(2)}, {"v": 2})
    arrays, meta = load_checkpoint(path)
    assert meta["v"] == 2 and arrays["a"].tolist() == [1.0, 1.0]
    assert sorted(os.listdir(tmp_path)) == ["model.ckpt"]     # no temp files left


# ------------------------------------------------------------- crash safety
# The child saves in a loop and says "created" each time a save has opened its
# temporary file, so the parent can also aim a kill at a save in progress.
CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import tinylm.checkpoint as ck
    def say(label):
        if label == "created":
            print("created", flush=True)
    ck._fault_hook = say
    path = sys.argv[1]
    print("ready", flush=True)
    i = 0
    while True:
        ck.save_checkpoint(path, {"w": np.full(4_000_000, float(i))}, {"i": i})
        i += 1
""")


def _kill_saving_child(path, wait_for, delay):
    """SIGKILL a child that saves to ``path`` in a loop, ``delay`` s after it prints ``wait_for``.

    Returns True if the kill left the temporary file of a save in progress.
    Whatever was killed, ``path`` must then be a complete, consistent checkpoint.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=str(REPO),
                             env=env, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"ready"
        if wait_for == "created":
            assert child.stdout.readline().strip() == b"created"
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    folder = path.parent
    leftovers = [n for n in os.listdir(folder) if n != path.name]
    for n in leftovers:                          # the stray temp file of the killed save
        assert n.startswith("." + path.name + ".tmp-")
        os.unlink(folder / n)
    arrays, meta = load_checkpoint(path)
    assert arrays["w"].shape == (4_000_000,)
    assert np.all(arrays["w"] == meta["i"])
    return bool(leftovers)


def test_killed_writer_leaves_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"w": np.full(4_000_000, -1.0)}, {"i": -1})
    # Kills at arbitrary points of the save loop.
    for delay in (0.05, 0.2, 0.5):
        _kill_saving_child(path, "ready", delay)
    # Kills aimed just after a save opened its temporary file; the test is only
    # meaningful if at least one of them lands while that save is in progress
    # (a busy machine can let the child finish the save first, so try a few).
    hits = [_kill_saving_child(path, "created", delay) for delay in (0.0, 0.001, 0.0)]
    attempts = 3
    while not any(hits) and attempts < 12:
        hits.append(_kill_saving_child(path, "created", 0.0))
        attempts += 1
    assert any(hits), "no kill hit a save in progress in %d tries" % attempts


# ------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_checkpoint(tmp_path / "nope.npz")


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"w": np.arange(1000.0)}, {"step": 1})
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="ck.npz"):
            load_checkpoint(path)


def test_corrupt_bytes_are_detected(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"w": np.arange(1000.0)}, {"step": 1})
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF                  # inside the array data: CRC mismatch
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="ck.npz"):
        load_checkpoint(path)


def test_garbage_and_foreign_files(tmp_path):
    garbage = tmp_path / "g.npz"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="g.npz"):
        load_checkpoint(garbage)
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.zeros(3))                # an npz without tinylm metadata
    with pytest.raises(CheckpointError, match="__meta__"):
        load_checkpoint(plain)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(CheckpointError, match="single array"):
        load_checkpoint(single)
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)


def test_pickled_object_arrays_are_refused(tmp_path):
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(tmp_path / "x.npz", {"bad": np.array([{"a": 1}], dtype=object)}, {})
    assert not os.listdir(tmp_path)
    # A hand-made npz with a pickled object array must not be unpickled on load.
    evil = tmp_path / "evil.npz"
    np.savez(evil, __meta__=np.frombuffer(b'{"format": "tinylm-checkpoint", '
                                          b'"format_version": 1}', dtype=np.uint8),
             obj=np.array([object()], dtype=object))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(evil)


def test_bad_meta_and_names(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path / "x.npz", {}, {"f": object()})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x.npz", {"__meta__": np.zeros(1)}, {})
    with pytest.raises(FileNotFoundError, match="folder"):
        save_checkpoint(tmp_path / "no" / "x.npz", {}, {})
    newer = tmp_path / "newer.npz"
    np.savez(newer, __meta__=np.frombuffer(b'{"format": "tinylm-checkpoint", '
                                           b'"format_version": 99}', dtype=np.uint8))
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(newer)
