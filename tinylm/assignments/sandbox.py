"""Run one exercise on untrusted code in an OS sandbox (bubblewrap).

:func:`run_exercise` starts ``python -I -S -B /task/_probe.py`` under
``bwrap`` (bubblewrap, the sandbox Flatpak uses) with

* new pid, network, IPC, UTS (and, where possible, cgroup) namespaces, a new
  session, ``--die-with-parent``: when the grader kills the sandbox (wall
  clock) or it ends, the kernel kills every process left in its pid
  namespace; nothing reaches the network (only a loopback that is down);
* a filesystem view that holds only: ``/usr`` and the Python runtime
  (every site-packages folder masked by an empty tmpfs), NumPy, and
  ``/task`` - the per-task tinylm tree (the kit's tinylm with the student's
  functions spliced in), the probe and the inputs - all read-only; a fresh
  ``/proc`` and ``/dev``; and a small private tmpfs ``/tmp`` as the working
  folder.  The reference tinylm (the checkout and any installed copy) is not
  in it: it is masked by a tmpfs wherever it would fall inside a bound folder;
* limits on the sandbox's processes: address space, CPU seconds, file size,
  number of processes, no core files (``setrlimit`` before ``bwrap`` starts),
  the tmpfs size, the captured output, the outputs' size, and the wall clock;
* as root: every capability dropped except setuid/setgid, which the probe
  uses (before any student code runs) to become ``nobody``; the setuid
  clears the rest.  Not root: bwrap runs in a user namespace, unprivileged.

The inputs go in as ``/task/inputs.npz``; the outputs come back as an .npz
written to an inherited pipe (nothing the sandbox writes lands on the
grader's disk except its bounded stdout/stderr), read with
``allow_pickle=False`` after checking the declared sizes.  The sandbox is
given no path of the grader's: not the results file, not the submission,
not the reference.

``sandboxed=False`` (``tinylm assignment grade --unsafe-no-sandbox``) runs
the same probe as a plain subprocess with the same rlimits: for trusted code
only.
"""

import io
import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

import numpy as np

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_probe.py")

DEFAULT_TIMEOUT = 60.0              # seconds of wall clock per task
DEFAULT_MEMORY = 2 * 1024 ** 3      # bytes of address space
DEFAULT_FILE_SIZE = 16 * 1024 ** 2  # bytes per file written (captured output, files in /tmp)
TMPFS_SIZE = 64 * 1024 ** 2         # bytes in the sandbox's /tmp altogether
MAX_OUTPUT_CHARS = 4000             # captured stdout/stderr kept for the report
MAX_OUTPUTS_BYTES = 64 * 1024 ** 2  # size of the outputs .npz (and of its arrays)
EXTRA_PROCESSES = 32                # processes the student's code may start
NOBODY = 65534                      # the uid/gid the code runs as when the grader is root

INSTALL_HINT = ("install bubblewrap: `sudo apt-get install bubblewrap` (Debian/Ubuntu), "
                "`sudo dnf install bubblewrap` (Fedora); or grade anyway, WITHOUT isolation, "
                "with --unsafe-no-sandbox (only for code you trust)")


class SandboxUnavailable(RuntimeError):
    """No working sandbox tool on this machine."""


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


# --------------------------------------------------------------------------
# The filesystem view
# --------------------------------------------------------------------------

def bwrap_path():
    return shutil.which("bwrap")


def _inside(path, root):
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _python():
    """The real interpreter binary (a venv's python is a link to it)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _numpy_dirs():
    d = os.path.dirname(os.path.realpath(np.__file__))
    out = [d]
    libs = os.path.join(os.path.dirname(d), "numpy.libs")     # the wheels' bundled BLAS
    if os.path.isdir(libs):
        out.append(libs)
    return out


def package_dirs():
    """Every folder Python would look for installed packages in (to be masked)."""
    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    try:
        dirs.append(site.getusersitepackages())
    except Exception:
        pass
    dirs += [p for p in sys.path if p and os.path.basename(p) in ("site-packages",
                                                                  "dist-packages")]
    return sorted({os.path.realpath(d) for d in dirs if os.path.isdir(d)})


def reference_dirs(extra=()):
    """Where the reference tinylm lives: the imported package and its checkout."""
    import tinylm
    pkg = os.path.dirname(os.path.realpath(tinylm.__file__))
    out = [pkg, os.path.dirname(pkg)] + [os.path.realpath(e) for e in extra]
    return sorted(set(out))


def view_arguments(task_dir, extra_masks=()):
    """bwrap arguments for the filesystem view (see the module docstring)."""
    # the private /tmp comes first: a runtime or NumPy that lives under the host's /tmp (a
    # venv in a CI clone there) is then bound on top of it instead of hidden by it
    args = ["--perms", "1777", "--size", str(TMPFS_SIZE), "--tmpfs", "/tmp"]
    binds = ["/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            binds.append(top)
    prefix = os.path.realpath(sys.base_prefix)
    exe = _python()
    for p in (prefix, os.path.dirname(os.path.dirname(exe))):
        if not any(_inside(p, b) for b in binds):
            binds.append(p)
    made = set(binds)

    def ro_bind(path):
        # bwrap would give a parent folder it creates the host's mode (e.g. /root 0700,
        # closed to nobody): create the missing parents, world-readable, first
        parent, ancestors = os.path.dirname(path), []
        while parent not in ("/", "") and parent not in made:
            ancestors.insert(0, parent)
            parent = os.path.dirname(parent)
        for a in ancestors:
            if not any(_inside(a, b) for b in binds):
                args.extend(["--perms", "0755", "--dir", a])
            made.add(a)
        args.extend(["--ro-bind", path, path])
    for b in binds:
        ro_bind(b)
    # mask: installed packages (numpy is bound back below), the reference, its checkout
    masks = [m for m in sorted(set(package_dirs() + reference_dirs(extra_masks)))
             if any(_inside(m, b) for b in binds) and os.path.isdir(m)]
    for m in masks:
        args += ["--size", "4096", "--tmpfs", m]
    for d in _numpy_dirs():
        ro_bind(d)
    args += ["--proc", "/proc", "--dev", "/dev",
             "--ro-bind", task_dir, "/task", "--chdir", "/tmp"]
    # the masks and the root are tmpfs folders bwrap made: read-only too
    for m in masks + ["/"]:
        args += ["--remount-ro", m]
    return args


def bwrap_command(task_dir, argv, extra_masks=()):
    """The full bwrap command line that runs ``argv`` in the sandbox."""
    cmd = [bwrap_path(), "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
           "--unshare-cgroup-try", "--hostname", "sandbox", "--die-with-parent",
           "--new-session"]
    if os.geteuid() == 0:
        # privileged bwrap: drop every capability but the two the probe needs to become
        # nobody; setuid() to a non-root uid then clears those too
        cmd += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        cmd += ["--unshare-user"]
    return cmd + view_arguments(task_dir, extra_masks) + ["--"] + list(argv)


_CHECKED = {}      # bwrap's path -> True, or why it cannot be used


def check_sandbox():
    """Raise SandboxUnavailable (saying how to install one) unless bwrap works here."""
    exe = bwrap_path()
    if exe is None:
        raise SandboxUnavailable("grading needs a sandbox and bwrap is not installed; "
                                 + INSTALL_HINT)
    if exe not in _CHECKED:
        d = tempfile.mkdtemp(prefix="tinylm-sbx-check-")
        try:
            os.chmod(d, 0o755)
            r = subprocess.run(bwrap_command(d, [_python(), "-I", "-S", "-c", "pass"]),
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
            _CHECKED[exe] = True if r.returncode == 0 else (
                "bwrap is installed but cannot create a sandbox here (%s); it needs user "
                "or privileged namespaces; %s" % (r.stderr.decode("utf-8", "replace").strip()
                                                  or "exit %d" % r.returncode, INSTALL_HINT))
        except (OSError, subprocess.SubprocessError) as exc:
            _CHECKED[exe] = "bwrap could not be run (%s); %s" % (exc, INSTALL_HINT)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    if _CHECKED[exe] is not True:
        raise SandboxUnavailable(_CHECKED[exe])


# --------------------------------------------------------------------------
# Limits and reading back
# --------------------------------------------------------------------------

def _user_tasks(uid):
    """Processes + threads of ``uid`` now (RLIMIT_NPROC counts all of them)."""
    n = 0
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
        if nproc is not None:
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


def load_npz_safely(data, max_bytes=MAX_OUTPUTS_BYTES):
    """dict of arrays from untrusted .npz bytes; ValueError if it is not a sane one."""
    if not data:
        raise ValueError("no outputs were written")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if len(infos) > 1000:
                raise ValueError("too many arrays in the outputs")
            if sum(i.file_size for i in infos) > max_bytes:
                raise ValueError("the outputs are larger than %d bytes" % max_bytes)
            if any(not i.filename.endswith(".npy") for i in infos):
                raise ValueError("the outputs file holds something other than arrays")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError:
        raise
    except Exception as exc:  # BadZipFile, a pickled object array, a truncated file...
        raise ValueError("the outputs could not be read (%s: %s)" % (type(exc).__name__, exc))


def _signal_reason(sig):
    name = {signal.SIGSEGV: "SIGSEGV (segmentation fault)",
            signal.SIGXFSZ: "SIGXFSZ (wrote more than the file-size limit; output flooding?)",
            signal.SIGXCPU: "SIGXCPU (CPU time limit)", signal.SIGKILL: "SIGKILL",
            signal.SIGABRT: "SIGABRT (aborted)", signal.SIGBUS: "SIGBUS"}.get(sig)
    return "killed by signal %d %s" % (sig, name or "")


class _PipeReader(threading.Thread):
    """Reads the outputs pipe up to a cap (the rest is drained and counted)."""

    def __init__(self, fd, cap):
        super().__init__(daemon=True)
        self.fd, self.cap, self.chunks, self.size = fd, cap, [], 0

    def run(self):
        while True:
            try:
                b = os.read(self.fd, 1 << 16)
            except OSError:
                break
            if not b:
                break
            self.size += len(b)
            if self.size <= self.cap:
                self.chunks.append(b)

    @property
    def data(self):
        return b"".join(self.chunks) if self.size <= self.cap else None


def run_exercise(tree, exercise, inputs, timeout=DEFAULT_TIMEOUT, memory=DEFAULT_MEMORY,
                 file_size=DEFAULT_FILE_SIZE, sandboxed=True, extra_masks=()):
    """Run exercise ``exercise`` with tinylm imported from ``tree``.

    tree: a directory holding a ``tinylm`` package (the per-task tree); it is
    copied into the read-only view.  inputs: dict of arrays.  extra_masks:
    more folders to mask if they fall inside the view.  Returns a
    :class:`RunResult` once the sandbox and every process in it are gone.
    """
    if sandboxed:
        check_sandbox()
    work = tempfile.mkdtemp(prefix="tinylm-grade-")   # 0700: the grader's own
    try:
        task = os.path.join(work, "task")              # becomes /task, read-only
        shutil.copytree(tree, os.path.join(task, "tree"))
        shutil.copy(PROBE, os.path.join(task, "_probe.py"))
        np.savez(os.path.join(task, "inputs.npz"), **inputs)
        for dirpath, dirnames, filenames in os.walk(task):   # readable by nobody
            os.chmod(dirpath, 0o755)
            for fn in filenames:
                os.chmod(os.path.join(dirpath, fn), 0o644)
        numpy_parent = os.path.dirname(_numpy_dirs()[0])
        if sandboxed:
            base = "/task"
            home = "/tmp"
        else:
            base = task
            home = os.path.join(work, "home")
            os.makedirs(home)
        r, w = os.pipe()                               # the outputs come back through it
        argv = [_python(), "-I", "-S", "-B", base + "/_probe.py", base, exercise, numpy_parent,
                str(w), str(NOBODY) if sandboxed else "-"]
        if sandboxed:
            cmd = bwrap_command(task, argv, extra_masks)
            uid = NOBODY if os.geteuid() == 0 else os.getuid()
        else:
            cmd, uid = argv, os.getuid()
        nproc = None if uid == 0 else _user_tasks(uid) + EXTRA_PROCESSES
        out_path = os.path.join(work, "stdout.txt")
        err_path = os.path.join(work, "stderr.txt")
        cpu = int(timeout) + 2
        start = time.monotonic()
        timed_out = False
        reader = _PipeReader(r, MAX_OUTPUTS_BYTES)
        reader.start()
        info_r, info_w = os.pipe() if sandboxed else (None, None)
        if sandboxed:                  # bwrap says the host pid of the sandbox's pid 1
            cmd = cmd[:1] + ["--info-fd", str(info_w)] + cmd[1:]
        ns = None
        try:
            with open(out_path, "wb") as fo, open(err_path, "wb") as fe:
                proc = subprocess.Popen(
                    cmd, cwd=home if not sandboxed else "/", env=scrubbed_env(home),
                    stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, start_new_session=True,
                    close_fds=True, pass_fds=(w,) + ((info_w,) if sandboxed else ()),
                    preexec_fn=_limits(memory, cpu, file_size, nproc))
                os.close(w)
                w = None
                if sandboxed:
                    os.close(info_w)
                    info_w = None
                    ns = _pid_namespace(info_r, proc.pid)
                try:
                    timed_out = not _wait_unreaped(proc, timeout)
                finally:
                    _kill(proc)
            # the sandbox's pid 1 is gone, so the kernel is killing everything left in
            # its pid namespace: wait until that is done
            if ns is not None:
                _empty_namespace(ns)
            reader.join(10.0)
        finally:
            for fd in (w, info_w, info_r):
                if fd is not None:
                    os.close(fd)
        seconds = time.monotonic() - start
        stdout, stderr = _read_tail(out_path), _read_tail(err_path)
        rc = proc.returncode
        if timed_out:
            reason = "timed out after %.0f s (infinite loop? too slow?)" % timeout
        elif rc < 0 or rc >= 128 + 1 and sandboxed and rc - 128 in (9, 6, 7, 11, 24, 25):
            sig = -rc if rc < 0 else rc - 128          # bwrap reports a child's signal as 128+n
            reason = _signal_reason(sig)
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
            if reader.is_alive():
                reason = "processes of the submission were still running after it ended"
            elif reader.data is None:
                reason = "the outputs are larger than %d bytes" % MAX_OUTPUTS_BYTES
            else:
                try:
                    outputs = load_npz_safely(reader.data)
                except ValueError as exc:
                    reason = "exited without usable outputs: %s" % exc
        try:
            os.close(r)
        except OSError:
            pass
        return RunResult(reason is None, outputs, reason, stdout, stderr, seconds, rc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _parent(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _pid_namespace(info_fd, bwrap_pid):
    """The pid namespace ("pid:[inode]") of the sandbox, from bwrap's --info-fd.

    The sandbox's pid 1 is a child of ``bwrap_pid``: checked before and after
    reading its namespace, so a pid already reused by another process is never
    mistaken for it."""
    import json
    data = b""
    while True:
        b = os.read(info_fd, 4096)
        if not b:
            return None              # bwrap failed before it started the sandbox
        data += b
        try:
            pid = int(json.loads(data.decode())["child-pid"])
        except (ValueError, KeyError, TypeError):
            continue                 # not all of it yet
        try:
            if _parent(pid) != bwrap_pid:
                return None
            ns = os.readlink("/proc/%d/ns/pid" % pid)
            if _parent(pid) != bwrap_pid:
                return None
        except OSError:
            return None
        # never our own namespace (the pid could have been reused already)
        return None if ns == os.readlink("/proc/self/ns/pid") else ns


def _in_namespace(ns):
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.readlink("/proc/%s/ns/pid" % p) == ns:
                    pids.append(int(p))
            except OSError:
                pass
    return pids


def _empty_namespace(ns, limit=10.0):
    """Wait (killing stragglers) until no process is left in pid namespace ``ns``."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        left = _in_namespace(ns)
        if not left:
            return True
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.02)
    return False


def _wait_unreaped(proc, timeout):
    """Wait up to ``timeout`` s for ``proc`` to exit WITHOUT reaping it (its pid, and
    so its process group id, stays ours until :func:`_kill`); True if it exited."""
    end = time.monotonic() + timeout
    while True:
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)


def _kill(proc):
    """SIGKILL the sandbox's process group (bwrap's; the kernel kills the rest with
    its pid namespace), then reap bwrap."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
