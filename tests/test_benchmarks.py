"""The fair-benchmark runner (benchmarks/fair.py) works end to end.

These tests time nothing: they run the runner on the smallest workload with
one timed step, and check what it promises -- both sides compute the same
thing from the same weights (fingerprints), ``--strict`` fails when they do
not, the JSON has a ratio per item, and bad arguments get a one-line error.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAIR = os.path.join(ROOT, "benchmarks", "fair.py")


def run_fair(*args, timeout=300):
    return subprocess.run([sys.executable, FAIR, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def smoke(tmp_path, sides, *extra):
    out = tmp_path / "fair.json"
    proc = run_fair("tiny", "--sides", sides, "--pairs", "1", "--steps", "1", "--warmup", "0",
                    "--json", str(out), *extra)
    return proc, (json.loads(out.read_text()) if out.exists() else None)


def test_c_and_numpy_backends_agree(tmp_path):
    proc, data = smoke(tmp_path, "tinylm,tinylm-numpy", "--strict")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = data["results"]
    assert result["fingerprints_agree"] is True
    fp = result["fingerprints"]
    assert fp["tinylm"]["loss0"] == pytest.approx(fp["tinylm-numpy"]["loss0"], rel=1e-4)
    item = result["items"]["tiny"]
    assert item["tinylm"] > 0 and item["tinylm-numpy"] > 0
    assert item["ratio"] == pytest.approx(item["tinylm-numpy"] / item["tinylm"])


def test_strict_fails_when_the_sides_compute_different_things(tmp_path):
    # different seeds: different weights, so the losses differ and --strict must say so
    proc, data = smoke(tmp_path, "tinylm,tinylm-numpy", "--strict", "--seed", "0,1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert data["results"][0]["fingerprints_agree"] is False


def test_tinylm_and_torch_start_from_the_same_weights(tmp_path):
    pytest.importorskip("torch", reason="PyTorch is the optional oracle (CI installs it)")
    proc, data = smoke(tmp_path, "tinylm,torch", "--strict")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert data["results"][0]["fingerprints_agree"] is True


@pytest.mark.parametrize("args", [
    ["nosuch"], ["tiny", "--pairs", "0"], ["tiny", "--threads", "x"],
    ["tiny", "--sides", "tinylm"], ["tiny", "--sides", "tinylm,nosuch"],
    ["tiny", "--steps", "-1"], ["tiny", "--seed", "a,b"],
])
def test_bad_arguments_get_one_line_and_status_2(args):
    proc = run_fair(*args, timeout=60)
    assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("fair.py: error:")


NANOGPT = os.path.join(ROOT, "benchmarks", "nanogpt.py")


def test_nanogpt_runner_tinylm_side_runs_the_trainer(tmp_path):
    proc = subprocess.run([sys.executable, NANOGPT, "--worker", "tinylm", "--steps", "8",
                           "--eval-interval", "4", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["steps"] == 8 and out["step_s"] > 0
    assert [s for s, _ in out["val"]] == [4, 8]
    assert (tmp_path / "run" / "best.npz").exists()


@pytest.mark.parametrize("args", [[], ["--nanogpt", "/nonexistent"], ["--steps", "0"]])
def test_nanogpt_runner_bad_arguments(args):
    # nanoGPT is not bundled: without a checkout the runner says what it needs
    proc = subprocess.run([sys.executable, NANOGPT, *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("nanogpt.py: error:")
