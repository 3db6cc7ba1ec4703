"""Importing tinylm makes glibc's malloc keep freed memory for reuse
(tinylm/kernels.py, _keep_freed_memory): a training step frees and
allocates the same tens of MB every step, and pages handed back to the
kernel come back as page faults and zeroing.

Each case runs in a fresh interpreter (malloc's settings are per process):
4 arrays of 4 MB allocated and freed 20 times, minor page faults counted.
"""

import os
import platform
import subprocess
import sys

import pytest

from tinylm import kernels as K

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(K.__file__)))

CHURN = r"""
import resource
import numpy as np
import tinylm
from tinylm import kernels
def churn():
    for _ in range(20):
        xs = [np.ones(1 << 20, np.float32) for _ in range(4)]   # 4 x 4 MB, then freed
        del xs
churn()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(kernels.info()["malloc_keeps_freed_memory"],
      resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def _churn(**env_extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "TINYLM_MALLOC"))}
    env.update(env_extra)
    r = subprocess.run([sys.executable, "-c", CHURN], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    tuned, faults = r.stdout.split()
    return tuned == "True", int(faults)


GLIBC_MALLOC = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc"
    or bool(os.environ.get("LD_PRELOAD")),
    reason="the setting is glibc malloc's (and LD_PRELOAD may put another allocator, or a "
           "sanitizer's, in its place)")


@GLIBC_MALLOC
def test_freed_memory_is_reused_without_page_faults():
    tuned, faults = _churn()
    off, faults_off = _churn(TINYLM_MALLOC_DEFAULTS="0")
    assert tuned and not off
    # glibc's default hands the 16 MB back each time: a page fault per 4 KB page
    assert faults_off > 10000, faults_off
    assert faults < 500, "%d page faults with tinylm's malloc settings" % faults


@GLIBC_MALLOC
def test_users_own_malloc_settings_are_left_alone():
    tuned, _ = _churn(MALLOC_TRIM_THRESHOLD_="131072", MALLOC_MMAP_THRESHOLD_="131072")
    assert not tuned
