"""Run one exercise on untrusted code in its own, limited subprocess.

:func:`run_exercise` starts ``python -I -B _probe.py`` (see ``_probe.py``)
in a fresh temporary directory with

* a new session (``start_new_session=True``), so on a wall-clock timeout the
  WHOLE process group is killed with ``os.killpg`` (and it is killed after a
  normal exit too, so nothing the code started survives);
* ``resource.setrlimit``: address space (RLIMIT_AS), CPU seconds, number of
  processes (RLIMIT_NPROC; not enforced for root), file size (RLIMIT_FSIZE,
  which also bounds the captured output), no core files;
* ``stdin=DEVNULL``; stdout and stderr captured to files and truncated;
* a scrubbed environment: only PATH, HOME (the temp dir), LANG, one BLAS/
  OpenMP thread, ``TINYLM_BACKEND=numpy`` and ``PYTHONHASHSEED=0``.

The outputs come back as ``outputs.npz`` and are read with
``allow_pickle=False`` after checking their declared sizes (a zip bomb is
refused before anything is decompressed).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_probe.py")

DEFAULT_TIMEOUT = 60.0              # seconds of wall clock per task
DEFAULT_MEMORY = 2 * 1024 ** 3      # bytes of address space
DEFAULT_FILE_SIZE = 16 * 1024 ** 2  # bytes per file written (outputs, captured output)
MAX_OUTPUT_CHARS = 4000             # captured stdout/stderr kept for the report
MAX_OUTPUTS_BYTES = 64 * 1024 ** 2  # uncompressed size of outputs.npz


class RunResult:
    """What came back from one sandboxed run.

    ok: the process exited 0 and left readable outputs; outputs: dict of
    arrays (or None); reason: why not ok; stdout/stderr: truncated text;
    seconds: wall-clock time.
    """

    def __init__(self, ok, outputs, reason, stdout, stderr, seconds, returncode):
        self.ok, self.outputs, self.reason = ok, outputs, reason
        self.stdout, self.stderr, self.seconds = stdout, stderr, seconds
        self.returncode = returncode


def scrubbed_env(home):
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1",
        "TINYLM_BACKEND": "numpy", "TINYLM_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
    }


def _user_tasks():
    """Processes + threads of this user now (RLIMIT_NPROC counts all of them)."""
    uid, n = os.getuid(), 0
    try:
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if os.stat("/proc/" + pid).st_uid == uid:
                        n += len(os.listdir("/proc/%s/task" % pid))
                except OSError:
                    pass
    except OSError:
        return 256
    return n


def _limits(memory, cpu_seconds, file_size, nproc):
    import resource     # POSIX only: imported here so that kits import on Windows too

    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    return apply


def _read_tail(path, limit=MAX_OUTPUT_CHARS):
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            if size <= limit:
                return f.read().decode("utf-8", "replace")
            head = f.read(limit // 4).decode("utf-8", "replace")
            f.seek(size - (limit - limit // 4))
            tail = f.read().decode("utf-8", "replace")
        return "%s\n... [%d bytes cut] ...\n%s" % (head, size - limit, tail)
    except OSError:
        return ""


def load_npz_safely(path, max_bytes=MAX_OUTPUTS_BYTES):
    """dict of arrays from an untrusted .npz; ValueError if it is not a sane one."""
    if not os.path.isfile(path) or os.path.islink(path):
        raise ValueError("no outputs were written")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > 1000:
                raise ValueError("too many arrays in the outputs")
            if sum(i.file_size for i in infos) > max_bytes:
                raise ValueError("the outputs are larger than %d bytes" % max_bytes)
            if any(not i.filename.endswith(".npy") for i in infos):
                raise ValueError("the outputs file holds something other than arrays")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError:
        raise
    except Exception as exc:  # BadZipFile, a pickled object array, a truncated file...
        raise ValueError("the outputs could not be read (%s: %s)" % (type(exc).__name__, exc))


def _signal_reason(sig, timed_out):
    if timed_out:
        return None
    name = {signal.SIGSEGV: "SIGSEGV (segmentation fault)",
            signal.SIGXFSZ: "SIGXFSZ (wrote more than the file-size limit; output flooding?)",
            signal.SIGXCPU: "SIGXCPU (CPU time limit)", signal.SIGKILL: "SIGKILL",
            signal.SIGABRT: "SIGABRT (aborted)", signal.SIGBUS: "SIGBUS"}.get(sig)
    return "killed by signal %d %s" % (sig, name or "")


def run_exercise(tree, exercise, inputs, deny=(), timeout=DEFAULT_TIMEOUT,
                 memory=DEFAULT_MEMORY, file_size=DEFAULT_FILE_SIZE, workdir=None):
    """Run exercise ``exercise`` with tinylm imported from ``tree``.

    tree: a directory holding a ``tinylm`` package (the per-task tree).
    inputs: dict of arrays, sent as inputs.npz.
    deny: directories the code must not read (the reference source).
    workdir: the sandbox directory (created and removed here if None).
    Returns a :class:`RunResult`.
    """
    own = workdir is None
    workdir = os.path.realpath(workdir or tempfile.mkdtemp(prefix="tinylm-grade-"))
    os.makedirs(workdir, exist_ok=True)
    try:
        shutil.copy(PROBE, os.path.join(workdir, "_probe.py"))
        inputs_path = os.path.join(workdir, "inputs.npz")
        outputs_path = os.path.join(workdir, "outputs.npz")
        np.savez(inputs_path, **inputs)
        cfg = {"inputs": inputs_path, "outputs": outputs_path, "exercise": exercise,
               "tree": os.path.realpath(tree), "sandbox": workdir,
               "deny": [os.path.realpath(d) for d in deny]}
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(cfg, f)
        out_path = os.path.join(workdir, "stdout.txt")
        err_path = os.path.join(workdir, "stderr.txt")
        cpu = int(timeout) + 2
        start = time.monotonic()
        timed_out = False
        with open(out_path, "wb") as fo, open(err_path, "wb") as fe:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", os.path.join(workdir, "_probe.py"),
                 os.path.join(workdir, "config.json")],
                cwd=workdir, env=scrubbed_env(workdir), stdin=subprocess.DEVNULL,
                stdout=fo, stderr=fe, start_new_session=True, close_fds=True,
                preexec_fn=_limits(memory, cpu, file_size, _user_tasks() + 16))
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)   # the whole group, always
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        seconds = time.monotonic() - start
        stdout, stderr = _read_tail(out_path), _read_tail(err_path)
        rc = proc.returncode
        if timed_out:
            reason = "timed out after %.0f s (infinite loop? too slow?)" % timeout
        elif rc < 0:
            reason = _signal_reason(-rc, False)
        elif rc != 0:
            last = [l for l in stderr.strip().splitlines() if l.strip()]
            reason = "your code raised an error: %s" % (last[-1] if last else "exit status %d" % rc)
            if "MemoryError" in stderr:
                reason += " (memory limit %d MB)" % (memory // 2 ** 20)
            if "[Errno 27]" in stderr:        # EFBIG: Python ignores SIGXFSZ
                reason += " (file-size limit %d MB: output flooding?)" % (file_size // 2 ** 20)
        else:
            reason = None
        outputs = None
        if reason is None:
            try:
                outputs = load_npz_safely(outputs_path)
            except ValueError as exc:
                reason = "exited without usable outputs: %s" % exc
        return RunResult(reason is None, outputs, reason, stdout, stderr, seconds, rc)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
