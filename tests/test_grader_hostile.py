"""The grader against hostile submissions, with the real sandbox (bubblewrap).

Each test writes a submission whose ``numerical_gradient`` (assignment
"gradcheck", task 1) - or, for numerical differentiation, whose
``Linear.backward`` (assignment "backprop", task 1) - does something hostile,
grades it with short limits, and checks, for every attack:

* the task scores 0 and the report says why;
* the grader finishes within its limit;
* no process the submission started is alive afterwards (every child is
  started with a unique token in its command line; the probe itself is
  ``/task/_probe.py``, and the sandbox waits for its pid namespace to empty);
* no file outside the sandbox changed (the test's folder, the reference
  package, /tmp), and nothing was created where the attack aimed;
* ``results.json`` is the grader's: what ``grade`` returned, and still so
  after the attack's daemons would have woken up.

The honest solutions still score full marks under the same limits.
"""

import json
import os
import shutil
import socket
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pytest

import tinylm
from tinylm.assignments import catalogue, grader, kit, sandbox

TIMEOUT = 10.0
MEMORY = 1024 * 2 ** 20
ROOT = catalogue.source_root()
STUB = "raise NotImplementedError('numerical_gradient: assignment 4 task 1 (numerical_gradient)')"
LINEAR_STUB = ("raise NotImplementedError('Linear.backward: assignment 1 task 1 "
               "(linear_backward)')")

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the grading sandbox (bubblewrap) is Linux only")


@pytest.fixture(scope="module")
def kits(tmp_path_factory):
    sandbox.check_sandbox()       # no bwrap: fail loudly (CI installs it), never skip
    base = tmp_path_factory.mktemp("kits")
    for name in ("gradcheck", "backprop"):
        kit.make_kit(name, str(base / name / "kit"))
        kit.make_kit(name, str(base / name / "sol"), solutions=True)
    return base


@pytest.fixture
def token():
    return "tinylm-hostile-" + uuid.uuid4().hex[:12]


def submission(kits, tmp_path, body, token, name="gradcheck"):
    """A copy of the student kit whose function under attack runs ``body`` (then the stub)."""
    sub = tmp_path / "submission"
    shutil.copytree(kits / name / "kit", sub)
    rel, stub = (("tinylm/gradcheck.py", STUB) if name == "gradcheck"
                 else ("tinylm/layers/core.py", LINEAR_STUB))
    path = sub / rel
    text = path.read_text()
    line = next(l for l in text.splitlines() if l.strip() == stub)
    indent = line[:len(line) - len(line.lstrip())]
    body = textwrap.dedent(body).strip("\n").replace("TOKEN", token)
    new = textwrap.indent(body, indent) + "\n" + line
    path.write_text(text.replace(line, new, 1))
    return sub


def _snapshot(*dirs):
    out = {}
    for d in dirs:
        for dirpath, dirnames, files in os.walk(d):
            dirnames[:] = [x for x in dirnames if x != "__pycache__" and x != ".pytest_cache"]
            for f in files:
                p = os.path.join(dirpath, f)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                out[p] = (st.st_size, st.st_mtime_ns)
    return out


def processes_with(*needles):
    """[(pid, command line)] of the processes whose command line holds a needle."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            if any(n in cmd for n in needles):
                found.append((pid, cmd.replace("\0", " ")))
    return found


def grade(sub, tmp_path, token, assignment="gradcheck", task="numerical_gradient",
          wait_after=0.0, **kw):
    """Grade ``sub`` and check everything every attack must leave true; returns results."""
    out = tmp_path / "results" / "results.json"
    kw.setdefault("timeout", TIMEOUT)
    before = _snapshot(str(tmp_path), os.path.join(ROOT, "tinylm"))
    before.pop(str(out), None)
    tmp_before = set(os.listdir("/tmp"))
    start = time.monotonic()
    res = grader.grade(str(sub), str(out), assignment=assignment, memory=MEMORY, seed=7,
                       tasks=[task], echo=lambda *a: None, **kw)
    elapsed = time.monotonic() - start
    # within the limit: one task's wall clock, plus starting and reading back
    assert elapsed < kw["timeout"] + 20, elapsed
    assert processes_with(token) == []
    if wait_after:
        time.sleep(wait_after)          # a daemon that survived would strike now
        assert processes_with(token) == []
    on_disk = json.loads(out.read_text())
    assert on_disk == res                      # what is on disk is the grader's result
    assert [f for f in os.listdir(out.parent) if f != "results.json"] == []
    after = _snapshot(str(tmp_path), os.path.join(ROOT, "tinylm"))
    after.pop(str(out))
    assert after == before, set(after.items()) ^ set(before.items())
    assert [f for f in set(os.listdir("/tmp")) - tmp_before if token in f] == []
    return res


def assert_zero(res, *words, points=10):
    assert res["score"] == 0 and res["max_score"] == points
    assert all(t["status"] == "failed" and t["score"] == 0 for t in res["tests"])
    text = res["tests"][0]["output"].lower()
    for w in words:
        assert w.lower() in text, (w, text)
    assert "the grader failed" not in text


# --------------------------------------------------------------------------
# the attacks of the issue
# --------------------------------------------------------------------------

def test_child_process_importing_the_reference(kits, tmp_path, token):
    # (subprocess goes through _posixsubprocess.fork_exec; without an audit hook to
    # dodge, calling it directly changes nothing)
    paths = [ROOT] + sandbox.package_dirs()
    body = """
    import subprocess, sys
    code = ("import sys; sys.path[:0] = %r; import tinylm.gradcheck as g; "
            "print(g.__file__)")
    child = subprocess.run([sys.executable, "-c", code, "TOKEN"], capture_output=True,
                           text=True)
    if child.returncode == 0:       # found it: load the reference and use it
        import importlib.util
        spec = importlib.util.spec_from_file_location("ref", child.stdout.strip())
        ref = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ref)
        return ref.numerical_gradient(f, x, eps, indices)
    raise RuntimeError("the child found no reference: " + child.stderr.strip().splitlines()[-1])
    """ % paths
    res = grade(submission(kits, tmp_path, body, token), tmp_path, token)
    assert_zero(res, "the child found no reference", "No module named 'tinylm'")


def test_setsid_daemon_rewriting_the_results(kits, tmp_path, token):
    target = str(tmp_path / "results" / "results.json")
    body = """
    import subprocess, sys
    code = '''
    import json, os, sys, time
    time.sleep(2)
    for p in [%r, "/autograder/results/results.json", "/tmp/results.json"]:
        try:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as fh:
                json.dump({"score": 10, "max_score": 10, "tests": []}, fh)
        except OSError:
            pass
    '''
    for _ in range(3):
        subprocess.Popen([sys.executable, "-c", code.replace("\\\\n    ", "\\\\n"), "TOKEN"],
                         start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    """ % target
    res = grade(submission(kits, tmp_path, body, token), tmp_path, token, wait_after=3.0)
    assert_zero(res, "NotImplementedError")
    assert not os.path.exists("/autograder/results/results.json")


def test_patching_os_fsdecode_to_read_the_reference(kits, tmp_path, token):
    ref = os.path.join(ROOT, "tinylm", "gradcheck.py")
    body = """
    import os
    os.fsdecode = lambda p: os.getcwd()
    ns = {}
    exec(open(%r).read(), ns)
    return ns["numerical_gradient"](f, x, eps, indices)
    """ % ref
    res = grade(submission(kits, tmp_path, body, token), tmp_path, token)
    assert_zero(res, "FileNotFoundError", "gradcheck.py")


def test_dir_fd_read_of_the_reference(kits, tmp_path, token):
    body = """
    import os
    parent = os.open(%r, os.O_RDONLY)
    fd = os.open("gradcheck.py", os.O_RDONLY, dir_fd=parent)
    ns = {}
    exec(os.read(fd, 10 ** 6).decode(), ns)
    return ns["numerical_gradient"](f, x, eps, indices)
    """ % os.path.join(ROOT, "tinylm")
    res = grade(submission(kits, tmp_path, body, token), tmp_path, token)
    assert_zero(res, "FileNotFoundError")


def test_dir_fd_write_outside(kits, tmp_path, token):
    body = """
    import os
    done = []
    for folder, name in [(%r, "TOKEN"), ("/", "usr/TOKEN"), ("/", "task/tree/TOKEN"),
                         ("/task", "tree/tinylm/gradcheck.py")]:
        try:
            parent = os.open(folder, os.O_RDONLY)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, dir_fd=parent)
            os.write(fd, b"pwned")
            done.append(name)
        except OSError as exc:
            done.append("%%s: %%s" %% (name, type(exc).__name__))
    raise RuntimeError("writes: " + "; ".join(done))
    """ % str(tmp_path)
    res = grade(submission(kits, tmp_path, body, token), tmp_path, token)
    assert_zero(res, "writes:", "FileNotFoundError", "OSError")
    out = res["tests"][0]["output"]
    # the view is read-only: EROFS (OSError), never a successful write
    assert out.count("OSError") + out.count("PermissionError") >= 3, out
    assert not (tmp_path / token).exists()


def test_numerical_differentiation_of_the_forward(kits, tmp_path, token):
    # Linear.backward by central differences of self.forward: fine on the kit's tiny
    # public inputs, hopeless on the graded ones (see exercises.py for the arithmetic)
    body = """
    import numpy as np
    x2, lead = self._cache
    W, b = self.params["weight"], self.params["bias"]
    X = x2.reshape(lead + (self.in_features,)).copy()
    def L():
        return float(np.sum(dy * self.forward(X)))
    def num(arr):
        g = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + 1e-5
            fp = L()
            arr[i] = old - 1e-5
            fm = L()
            arr[i] = old
            g[i] = (fp - fm) / 2e-5
        return g
    dx = num(X)
    self.grads["weight"] += num(W)
    self.grads["bias"] += num(b)
    return dx
    """
    sub = submission(kits, tmp_path, body, token, name="backprop")
    res = grade(sub, tmp_path, token, assignment="backprop", task="linear_backward")
    assert_zero(res, "timed out")


def test_infinite_loop_ignoring_signals(kits, tmp_path, token):
    body = """
    import signal
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    n = 0
    while True:
        n += 1
    """
    res = grade(submission(kits, tmp_path, body, token), tmp_path, token, timeout=3.0)
    assert_zero(res, "timed out")


def test_memory_bomb(kits, tmp_path, token):
    # np.empty does not touch its pages: the address-space limit stops it at once
    body = """
    hog = []
    while True:
        hog.append(np.empty(2 ** 25))
    """
    res = grade(submission(kits, tmp_path, body, token), tmp_path, token)
    assert_zero(res, "MemoryError", "memory limit")


def test_segfault_through_ctypes(kits, tmp_path, token):
    body = """
    import ctypes
    ctypes.string_at(0)
    """
    res = grade(submission(kits, tmp_path, body, token), tmp_path, token)
    assert_zero(res, "SIGSEGV")


def test_os_exit_zero_without_outputs(kits, tmp_path, token):
    res = grade(submission(kits, tmp_path, "import os\nos._exit(0)", token), tmp_path, token)
    assert_zero(res, "without usable outputs", "no outputs")


def test_bounded_fork_bomb(kits, tmp_path, token):
    body = """
    import os, sys, time
    started = 0
    try:
        for _ in range(50):
            pid = os.fork()
            if pid == 0:
                try:
                    os.execv(sys.executable, [sys.executable, "-c",
                                              "import time; time.sleep(120)", "TOKEN"])
                finally:
                    os._exit(0)
            started += 1
    finally:
        print("started", started, "processes", flush=True)
    time.sleep(60)
    """
    res = grade(submission(kits, tmp_path, body, token), tmp_path, token, timeout=4.0)
    # either the process limit stopped it (BlockingIOError) or the clock did
    assert_zero(res)
    text = res["tests"][0]["output"]
    assert "BlockingIOError" in text or "timed out" in text, text


def test_fake_results_json_everywhere(kits, tmp_path, token):
    targets = [str(tmp_path / "results" / "results.json"), "/autograder/results/results.json",
               "/tmp/results.json", "results.json", "/task/results.json",
               os.path.join(ROOT, "results.json"), str(tmp_path / "submission" / "results.json")]
    body = """
    import json, os
    wrote = []
    for p in %r:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
            with open(p, "w") as fh:
                json.dump({"score": 10, "max_score": 10, "tests": []}, fh)
            wrote.append(p)
        except OSError:
            pass
    print("wrote", wrote)
    """ % targets
    res = grade(submission(kits, tmp_path, body, token), tmp_path, token)
    assert_zero(res, "NotImplementedError")
    for p in targets[1:]:
        assert not os.path.exists(p) or p.startswith("/tmp/") and \
            json.load(open(p)).get("score") != 10, p


def test_printing_fake_json(kits, tmp_path, token):
    body = """
    import json, sys
    fake = json.dumps({"score": 10, "max_score": 10, "tests": [{"name": "x", "score": 10}]})
    print(fake)
    print(fake, file=sys.stderr)
    """
    res = grade(submission(kits, tmp_path, body, token), tmp_path, token)
    assert_zero(res, "NotImplementedError")


def test_output_flood(kits, tmp_path, token):
    body = """
    import sys
    while True:
        sys.stdout.write("flood" * 20000)
    """
    res = grade(submission(kits, tmp_path, body, token), tmp_path, token)
    assert_zero(res, "file too large", "output flooding")
    assert all(len(t["output"]) < 5000 for t in res["tests"])   # the report stays small


def test_reading_files_outside_the_view(kits, tmp_path, token):
    secret = tmp_path / "secret.txt"
    secret.write_text("the answer")
    paths = [str(secret), os.path.join(ROOT, "tinylm", "gradcheck.py"),
             os.path.join(ROOT, "tinylm", "layers", "core.py"),
             str(tmp_path / "submission" / "tinylm" / "gradcheck.py"),
             "/etc/passwd", "/etc/hostname", os.path.expanduser("~/.bash_history"),
             os.path.realpath(tinylm.__file__)]
    numpy_init = os.path.realpath(np.__file__)
    paths.append(numpy_init)
    body = """
    import os
    readable = []
    for p in %r:
        try:
            with open(p, "rb") as fh:
                fh.read(1)
            readable.append(p)
        except OSError:
            pass
    raise RuntimeError("readable: %%r; / holds %%s" %% (readable, sorted(os.listdir("/"))))
    """ % paths
    res = grade(submission(kits, tmp_path, body, token), tmp_path, token)
    assert_zero(res, "readable:")
    out = res["tests"][0]["output"]
    # only numpy, which the view holds on purpose, may be read
    assert "readable: []" in out or "readable: [%r]" % numpy_init in out, out
    listing = out.split("/ holds")[1]
    assert "'task'" in listing and "'etc'" not in listing
    # the checkout's top folder is not in the view, unless the Python runtime or NumPy (which
    # the view holds) lives under the same top folder, e.g. a CI venv inside the clone
    top = lambda p: os.path.realpath(p).split(os.sep)[1]
    if top(ROOT) not in {top(sys.prefix), top(sys.base_prefix), top(numpy_init), "tmp"}:
        assert "'%s'" % top(ROOT) not in listing, listing


def test_network_connection_to_localhost(kits, tmp_path, token):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                pass
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    body = """
    import socket
    s = socket.create_connection(("127.0.0.1", %d), timeout=3)
    s.sendall(b"hello")
    """ % port
    try:
        res = grade(submission(kits, tmp_path, body, token), tmp_path, token)
    finally:
        stop.set()
        th.join()
        server.close()
    assert accepted == []            # the sandbox's 127.0.0.1 is its own loopback
    assert_zero(res)
    text = res["tests"][0]["output"].lower()
    assert "connection refused" in text or "unreachable" in text, text


def test_signalling_the_parent(kits, tmp_path, token):
    body = """
    import os, signal
    errors = []
    for pid in (os.getppid(), 1, -1):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError as exc:
            errors.append(type(exc).__name__)
    print("kill errors:", errors)
    """
    res = grade(submission(kits, tmp_path, body, token), tmp_path, token)
    assert res["score"] == 0 and all(t["status"] == "failed" for t in res["tests"])
    assert res["tests"][0]["output"]          # a reason (what killed it, or the stub)
    assert os.getpid() and os.path.exists("/proc/%d" % os.getppid())


# --------------------------------------------------------------------------
# shapes, dtypes, and the honest solutions under the same limits
# --------------------------------------------------------------------------

@pytest.mark.parametrize("body, words", [
    ("return np.zeros(3)", ["shape"]),
    ("return np.full(np.shape(x), np.nan)", ["nan"]),
    ("return np.array([object()])", ["not an array of numbers"]),
])
def test_wrong_shape_nan_object(kits, tmp_path, token, body, words):
    assert_zero(grade(submission(kits, tmp_path, body, token), tmp_path, token), *words)


def test_the_solutions_pass_under_the_same_limits(kits, tmp_path, token):
    res = grade(kits / "gradcheck" / "sol", tmp_path, token)
    assert res["score"] == 10 and all(t["status"] == "passed" for t in res["tests"])
    # the numerical-differentiation attack's task: a real backward is far inside the limit
    res = grade(kits / "backprop" / "sol", tmp_path, token, assignment="backprop",
                task="linear_backward")
    assert res["score"] == 10 and all(t["status"] == "passed" for t in res["tests"])
