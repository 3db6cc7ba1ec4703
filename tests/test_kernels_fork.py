"""fork() after a kernel call must not hang (libgomp's thread pool is not
copied into the child; csrc/info.c makes such a child run single-threaded).

Each case runs in a fresh interpreter (the parent must have used the
pool for real), forks with multiprocessing's "fork" start method, and has
the child run the kernels; a hang shows up as a timeout.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from tinylm import kernels as K

# the folder holding the tinylm this process imported (the installed package in
# CI, whose _C is built; a fresh checkout's own tinylm/ has none)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(K.__file__)))

pytestmark = [
    pytest.mark.skipif(not K.c_available(), reason="tinylm's C extension is not built"),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform"),
]

SCRIPT = textwrap.dedent("""
    import multiprocessing as mp, sys
    import numpy as np
    from tinylm import kernels as K

    def work():
        rng = np.random.default_rng(0)
        a = rng.standard_normal((300, 200)).astype(np.float32)
        b = rng.standard_normal((200, 250)).astype(np.float32)
        q = rng.standard_normal((8, 70, 16))
        c = K.matmul(a, b)
        o, lse = K.attention(q, q, q, causal=True)
        dq, dk, dv = K.attention_backward(q, q, q, o, lse, q, causal=True)
        ok = (np.allclose(c, a.astype(np.float64) @ b, atol=1e-3)
              and np.allclose(o, K.attention_reference(q, q, q, True)[0]))
        return ok

    def child(queue):
        queue.put((work(), K.info().get("single_threaded_after_fork"), K.get_num_threads()))

    if __name__ == "__main__":
        K.set_num_threads(2)
        assert work()                               # the parent starts the pool
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        p = ctx.Process(target=child, args=(queue,))
        p.start()
        p.join(60)
        if p.is_alive():
            p.kill()
            sys.exit("child hung")
        ok, single, threads = queue.get(timeout=5)
        assert p.exitcode == 0 and ok, (p.exitcode, ok)
        if K.info()["openmp"]:                      # a serial build has no pool to lose
            assert single is True and threads == 1, (single, threads)
        assert work() and not K.info()["single_threaded_after_fork"]   # the parent keeps its pool
        print("fork ok")
""")


def test_fork_after_kernel_call_does_not_hang(tmp_path):
    path = tmp_path / "fork_case.py"
    path.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TINYLM_BACKEND", None)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         env=env, timeout=240)
    assert out.returncode == 0 and "fork ok" in out.stdout, out.stdout + out.stderr
