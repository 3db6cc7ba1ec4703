"""Backend selection and the install path without the C extension."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tinylm
from tinylm import kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run Python with tinylm._C hidden, as on a machine where the install found no
# C compiler (the package itself is imported from wherever it is installed).
_HIDE_C = textwrap.dedent("""
    import sys, importlib.abc
    class _NoC(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tinylm._C":
                raise ModuleNotFoundError("No module named 'tinylm._C'", name=name)
            return None
    sys.meta_path.insert(0, _NoC())
""")


def _run(code, **env):
    full_env = dict(os.environ)
    full_env.pop("TINYLM_BACKEND", None)
    full_env.update(env)
    return subprocess.run([sys.executable, "-W", "default", "-c", _HIDE_C + textwrap.dedent(code)],
                          capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=120)


def test_without_c_extension_runs_on_numpy_and_says_so_once():
    r = _run("""
        import numpy as np, tinylm
        from tinylm import kernels
        import tinylm.kernels  # a second import must not warn again
        assert kernels.get_backend() == "numpy", kernels.get_backend()
        assert not kernels.c_available()
        a = np.arange(6.0).reshape(2, 3); b = np.arange(12.0).reshape(3, 4)
        assert np.allclose(kernels.matmul(a, b), a @ b)
        q = np.random.default_rng(0).standard_normal((1, 2, 5, 4))
        o, lse = kernels.attention(q, q, q, causal=True)
        assert o.shape == q.shape and lse.shape == q.shape[:-1]
        print("OK", kernels.backend_reason())
    """)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout
    assert r.stderr.count("C extension not available") == 1, r.stderr
    assert "NumPy backend" in r.stderr


def test_explicit_c_backend_without_extension_is_a_clear_error():
    r = _run("import tinylm", TINYLM_BACKEND="c")
    assert r.returncode != 0
    assert "TINYLM_BACKEND=c" in r.stderr and "not available" in r.stderr


def test_bad_backend_name_in_environment():
    r = _run("import tinylm", TINYLM_BACKEND="cuda")
    assert r.returncode != 0
    assert "'cuda' is not a backend" in r.stderr


def test_bad_thread_count_in_environment():
    r = _run("import tinylm", TINYLM_NUM_THREADS="two")
    assert r.returncode != 0
    assert "TINYLM_NUM_THREADS" in r.stderr


def test_set_backend_and_context_manager():
    before = tinylm.get_backend()
    with kernels.backend("numpy"):
        assert tinylm.get_backend() == "numpy"
    assert tinylm.get_backend() == before
    with pytest.raises(ValueError, match="backend must be"):
        tinylm.set_backend("gpu")


def test_set_num_threads_validates():
    old = kernels._NUM_THREADS
    try:
        with pytest.raises(ValueError):
            tinylm.set_num_threads(0)
        tinylm.set_num_threads(1)
        assert tinylm.get_num_threads() == 1
    finally:
        kernels._NUM_THREADS = old


@pytest.mark.skipif(not kernels.c_available(), reason="C extension not built")
def test_info_reports_c_build():
    d = kernels.info()
    assert d["simd"] in ("avx512f", "avx2+fma", "avx", "neon", "sse2", "generic")
    assert isinstance(d["openmp"], bool)
    assert "-O3" in d["build_flags"] or "-O1" in d["build_flags"]
    assert "fast-math" not in d["build_flags"]


def test_info_command_prints_backend(capsys):
    from tinylm.cli import main
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backend" in out and tinylm.get_backend() in out
    assert "numpy" in out
