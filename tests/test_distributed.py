"""Data-parallel training: --grad-accum on one process, and mpiexec -n 2 (needs mpi4py).

The MPI tests skip, with the reason, only where mpi4py or mpiexec is missing;
CI installs tinylm[mpi] and sets TINYLM_REQUIRE_MPI=1, which turns that skip
into a failure.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from tinylm.cli import main
from tinylm.training import distributed

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "mpi_worker.py")
TINY = ["--preset", "gpt-tiny", "--max-chars", "20000", "--batch-size", "8",
        "--eval-interval", "3", "--sample-length", "0"]

# float32: the shards' sums are added in another order than the whole batch's, so losses
# differ by rounding (~1e-7 relative per step), which AdamW's first steps can amplify a little.
RTOL32 = 1e-4
RTOL64 = 1e-10


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


def _mpi_missing():
    if not distributed.mpi_available():
        return "mpi4py is not installed (pip install \"tinylm[mpi]\")"
    if _mpiexec() is None:
        return "no mpiexec on PATH (pip install \"tinylm[mpi]\")"
    return None


_REASON = _mpi_missing()
if _REASON and os.environ.get("TINYLM_REQUIRE_MPI") == "1":
    raise RuntimeError("TINYLM_REQUIRE_MPI=1 but " + _REASON)
needs_mpi = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def _env():
    import tinylm
    root = os.path.dirname(os.path.dirname(os.path.abspath(tinylm.__file__)))
    path = os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, PYTHONPATH=root + (os.pathsep + path if path else ""),
               MPLBACKEND="Agg")
    env.pop("TINYLM_NUM_THREADS", None)
    return env


def _run(cmd, n=None, timeout=300):
    if n is not None:
        cmd = [_mpiexec(), "-n", str(n)] + cmd
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(),
                       stdin=subprocess.DEVNULL)
    return r, time.perf_counter() - t0


def _cli(*args):
    return [sys.executable, "-c", "import sys; from tinylm.cli import main; sys.exit(main())"] \
        + list(args)


def _history(out):
    from tinylm import checkpoint as ckpt
    _, meta = ckpt.load_checkpoint(os.path.join(out, "checkpoint.npz"))
    return meta["history"]


def _worker(out, *args, n=None):
    os.makedirs(out, exist_ok=True)
    r, dt = _run([sys.executable, WORKER, "train", out] + list(args), n=n)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = n or 1
    hist = [json.load(open(os.path.join(out, "rank%d.json" % k))) for k in range(ranks)]
    params = [dict(np.load(os.path.join(out, "rank%d.npz" % k))) for k in range(ranks)]
    return hist, params


# -- one process: gradient accumulation ------------------------------------

def test_shard_rule_refuses_uneven_batches():
    assert distributed.shard_rows(8, 2, 1) == slice(4, 8)
    assert distributed.shard_rows(12, 4, 3) == slice(9, 12)
    with pytest.raises(ValueError, match="does not split into 3 equal parts"):
        distributed.shard_rows(8, 3, 0)


@pytest.mark.parametrize("dtype,rtol", [("float32", RTOL32), ("float64", RTOL64)])
def test_grad_accum_equals_one_batch(tmp_path, dtype, rtol):
    one, p1 = _worker(str(tmp_path / "one"), "--dtype", dtype)
    acc, p2 = _worker(str(tmp_path / "acc"), "--dtype", dtype, "--grad-accum", "4")
    np.testing.assert_allclose(acc[0]["train_loss"], one[0]["train_loss"], rtol=rtol)
    np.testing.assert_allclose(acc[0]["val_loss"], one[0]["val_loss"], rtol=rtol)
    for name in p1[0]:
        np.testing.assert_allclose(p2[0][name], p1[0][name], rtol=rtol * 10, atol=rtol,
                                   err_msg=name)
    # and accumulation is not a no-op: a different batch gives different losses
    other, _ = _worker(str(tmp_path / "other"), "--dtype", dtype, "--batch-size", "4")
    assert not np.allclose(other[0]["train_loss"][1:], one[0]["train_loss"][1:], rtol=rtol)


def test_cli_grad_accum(tmp_path, capsys):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["train"] + TINY + ["--steps", "4", "--out", a]) == 0
    assert main(["train"] + TINY + ["--steps", "4", "--out", b, "--grad-accum", "2"]) == 0
    np.testing.assert_allclose(_history(b)["train_loss"], _history(a)["train_loss"],
                               rtol=RTOL32)
    capsys.readouterr()
    rc = main(["train"] + TINY + ["--steps", "4", "--out", str(tmp_path / "c"),
                                  "--grad-accum", "3"])
    err = capsys.readouterr().err
    assert rc == 2 and "does not split into 3 equal parts" in err and "Traceback" not in err


# -- several processes (mpiexec) ------------------------------------------

@needs_mpi
@pytest.mark.parametrize("dtype,rtol", [("float32", RTOL32), ("float64", RTOL64)])
def test_two_ranks_equal_one_process(tmp_path, dtype, rtol):
    one, p1 = _worker(str(tmp_path / "one"), "--dtype", dtype)
    two, p2 = _worker(str(tmp_path / "two"), "--dtype", dtype, n=2)
    assert [h["size"] for h in two] == [2, 2]
    np.testing.assert_allclose(two[0]["train_loss"], one[0]["train_loss"], rtol=rtol)
    np.testing.assert_allclose(two[0]["val_loss"], one[0]["val_loss"], rtol=rtol)
    for name in p1[0]:
        # parameters: bit-identical across the ranks, and close to the one-process run
        assert np.array_equal(p2[0][name], p2[1][name]), name
        np.testing.assert_allclose(p2[0][name], p1[0][name], rtol=rtol * 10, atol=rtol,
                                   err_msg=name)
    assert two[0]["train_loss"] == two[1]["train_loss"]     # every rank logs the same mean
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert [h["threads"] for h in two] == [max(1, cores // 2)] * 2   # no oversubscription


@needs_mpi
def test_two_ranks_with_grad_accum_equal_one_process(tmp_path):
    one, _ = _worker(str(tmp_path / "one"), "--dtype", "float64")
    both, _ = _worker(str(tmp_path / "both"), "--dtype", "float64", "--grad-accum", "2", n=2)
    np.testing.assert_allclose(both[0]["train_loss"], one[0]["train_loss"], rtol=RTOL64)


@needs_mpi
def test_two_ranks_resume_continues_exactly(tmp_path):
    full, _ = _worker(str(tmp_path / "full"), "--dtype", "float64", n=2)
    part = str(tmp_path / "part")
    _worker(part, "--dtype", "float64", "--until", "3", n=2)
    resumed, _ = _worker(part, "--dtype", "float64", "--resume", n=2)
    np.testing.assert_allclose(resumed[0]["train_loss"], full[0]["train_loss"], rtol=1e-12)


@needs_mpi
def test_cli_two_ranks_checkpoint_loads_in_one_process(tmp_path, capsys):
    out = str(tmp_path / "dp")
    r, _ = _run(_cli("train", *TINY, "--steps", "6", "--out", out), n=2)
    assert r.returncode == 0, r.stderr[-3000:]
    # rank 0 alone prints: one progress line per step shown, not two
    assert r.stdout.count("step 6/6") == 1, r.stdout
    assert "2 ranks" in r.stdout
    for name in ("checkpoint.npz", "best.npz", "loss.png"):
        assert os.path.exists(os.path.join(out, name))
    one = str(tmp_path / "one")
    assert main(["train"] + TINY + ["--steps", "6", "--out", one]) == 0
    np.testing.assert_allclose(_history(out)["train_loss"], _history(one)["train_loss"],
                               rtol=RTOL32)
    capsys.readouterr()
    assert main(["eval", os.path.join(out, "checkpoint.npz")]) == 0
    assert "perplexity" in capsys.readouterr().out
    # --resume under mpiexec: rank 0 reads the checkpoint and sends it to the others
    r, _ = _run(_cli("train", "--out", out, "--resume", "--steps", "9", "--sample-length", "0"),
                n=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("resumed from") == 1 and "step 9/9" in r.stdout, r.stdout
    assert main(["generate", os.path.join(out, "best.npz"), "--prompt", "The ",
                 "--max-length", "20", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("The ")


@needs_mpi
def test_a_failing_rank_ends_the_job_with_its_message(tmp_path):
    out = str(tmp_path / "fail")
    os.makedirs(out)
    r, dt = _run([sys.executable, WORKER, "fail", out, "--steps", "50"], n=2, timeout=120)
    assert r.returncode != 0
    assert "rank 1 of 2" in r.stderr and "rank 1 broke on purpose at step 3" in r.stderr, \
        r.stderr[-3000:]
    assert dt < 60, "the job took %.0f s to stop" % dt


@needs_mpi
def test_cli_uneven_batch_is_refused_on_every_rank(tmp_path):
    r, dt = _run(_cli("train", *TINY, "--steps", "2", "--batch-size", "9",
                      "--out", str(tmp_path / "x")), n=2, timeout=120)
    assert r.returncode != 0 and "does not split into 2 equal parts" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# -- two "hosts": two network namespaces joined by a virtual Ethernet link --------

NSSSH = """#!/bin/sh
# stands in for ssh in MPICH's launcher: runs the command "on host" = in its namespace,
# with its own host name
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
host=$1; shift
case "$host" in %(ipa)s) ns=%(a)s ;; %(ipb)s) ns=%(b)s ;; *) exit 255 ;; esac
exec ip netns exec $ns unshare --uts sh -c "hostname $ns; $*"
"""


def _sh(*cmd):
    return subprocess.run(list(cmd), capture_output=True, text=True)


@pytest.fixture
def two_hosts(tmp_path):
    """Two network namespaces a, b with 10.78.x.1 / .2 on a veth pair; yields their names."""
    if _REASON:
        pytest.skip(_REASON)
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare"):
        pytest.skip("two-host test needs root, ip (iproute2) and unshare")
    tag = "%d" % (os.getpid() % 100000)
    a, b = "tlm%sa" % tag, "tlm%sb" % tag
    net = "10.78.%d" % (os.getpid() % 250)
    if _sh("unshare", "--uts", "true").returncode:
        pytest.skip("cannot create UTS namespaces here (unshare --uts failed)")
    if _sh("ip", "netns", "add", a).returncode:
        pytest.skip("cannot create network namespaces here (no CAP_SYS_ADMIN)")
    try:
        steps = [("ip", "netns", "add", b),
                 ("ip", "link", "add", a + "v", "type", "veth", "peer", "name", b + "v"),
                 ("ip", "link", "set", a + "v", "netns", a),
                 ("ip", "link", "set", b + "v", "netns", b),
                 ("ip", "-n", a, "addr", "add", net + ".1/24", "dev", a + "v"),
                 ("ip", "-n", b, "addr", "add", net + ".2/24", "dev", b + "v"),
                 ("ip", "-n", a, "link", "set", a + "v", "up"),
                 ("ip", "-n", b, "link", "set", b + "v", "up"),
                 ("ip", "-n", a, "link", "set", "lo", "up"),
                 ("ip", "-n", b, "link", "set", "lo", "up")]
        for cmd in steps:
            r = _sh(*cmd)
            assert r.returncode == 0, (cmd, r.stderr)
        ssh = tmp_path / "nsssh"
        ssh.write_text(NSSSH % dict(a=a, b=b, ipa=net + ".1", ipb=net + ".2"))
        ssh.chmod(0o755)
        yield dict(a=a, b=b, hosts="%s.1,%s.2" % (net, net), ssh=str(ssh), dev=a + "v")
    finally:
        _sh("ip", "netns", "del", a)
        _sh("ip", "netns", "del", b)


def _rx_bytes(ns, dev):
    r = _sh("ip", "netns", "exec", ns, "cat", "/sys/class/net/%s/statistics/rx_bytes" % dev)
    return int(r.stdout)


def test_two_hosts_over_a_network(two_hosts, tmp_path):
    """Rank 0 in namespace a, rank 1 in b: the gradients cross the veth link (TCP)."""
    h = two_hosts
    one, p1 = _worker(str(tmp_path / "one"), "--dtype", "float64")
    out = str(tmp_path / "two")
    os.makedirs(out)
    before = _rx_bytes(h["a"], h["dev"])
    # MPIR_CVAR_NOLOCAL: the namespaces share this machine's kernel and /dev/shm, so without it
    # MPICH would see "one node" and use shared memory; FI_PROVIDER=tcp: plain TCP sockets.
    cmd = ["ip", "netns", "exec", h["a"], _mpiexec(), "-launcher", "ssh",
           "-launcher-exec", h["ssh"], "-hosts", h["hosts"], "-n", "2", "-ppn", "1",
           "-genv", "MPIR_CVAR_NOLOCAL", "1", "-genv", "MPIR_CVAR_CH4_NETMOD", "ofi",
           "-genv", "FI_PROVIDER", "tcp", "-genv", "PYTHONPATH", _env()["PYTHONPATH"],
           sys.executable, WORKER, "train", out, "--dtype", "float64"]
    r, _ = _run(cmd, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    two = [json.load(open(os.path.join(out, "rank%d.json" % k))) for k in range(2)]
    np.testing.assert_allclose(two[0]["train_loss"], one[0]["train_loss"], rtol=RTOL64)
    p2 = [dict(np.load(os.path.join(out, "rank%d.npz" % k))) for k in range(2)]
    for name in p2[0]:
        assert np.array_equal(p2[0][name], p2[1][name]), name
    grad_bytes = sum(p.nbytes for p in p1[0].values())
    received = _rx_bytes(h["a"], h["dev"]) - before
    # 6 steps: each all-reduce of a 2-rank ring receives >= the gradient bytes (float64)
    assert received >= 6 * grad_bytes, (received, grad_bytes)
